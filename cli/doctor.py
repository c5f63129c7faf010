"""``edgert doctor``: the checks of ``edgert.doctor`` as a table, or JSON."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table
from rich.text import Text

from edgert.doctor import ERROR, MISSING, OK, WARN, diagnose, exit_code

from .render import con

STYLES = {OK: "green", WARN: "yellow", MISSING: "dim", ERROR: "bold red"}


def doctor_table(checks) -> Table:
    table = Table(title="edgert doctor", show_lines=False)
    table.add_column("area", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("finding")
    table.add_column("fix")
    for check in checks:
        table.add_row(Text(check.area), Text(check.status, style=STYLES.get(check.status, "")), Text(check.summary),
                      Text(check.fix or ""))
    return table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print every check, with its details, as JSON.")
def doctor(as_json: bool) -> None:
    """Say what this machine can do and why not: CPU and memory (cgroup limits included), the
    llama.cpp build (GPU offload or not, and the command that rebuilds it for this GPU), ONNX
    Runtime providers, onnxruntime-genai, TensorRT, NVIDIA GPUs, Jetson or Raspberry Pi board,
    power sensors and power knobs (and why not), and the device state (clocks, temperatures,
    throttling).

    Exits 1 when an installation cannot be used as it is (an error), else 0.
    """
    checks = diagnose()
    if as_json:
        click.echo(json.dumps({"checks": [c.to_dict() for c in checks], "ok": exit_code(checks) == 0}, indent=2))
    else:
        con.print(doctor_table(checks))
    sys.exit(exit_code(checks))
