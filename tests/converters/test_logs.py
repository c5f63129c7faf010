"""Third-party output during a conversion goes to a log file (or the screen with -v), and the
user-facing messages name only extras that exist."""

import logging
import re
import sys
import tomllib
import warnings
from pathlib import Path

from edgert.logs import log_dir, route_third_party

ROOT = Path(__file__).parents[2]


def chatter():
    """What onnxruntime, transformers and tqdm do during a conversion."""
    logging.basicConfig(level=logging.INFO)  # onnxruntime's MatMulNBits module does this on import
    logging.info("root INFO from a quantizer")
    logging.getLogger("onnxruntime.quantization").info("quantizer INFO")
    logging.getLogger("transformers.modeling_utils").warning("transformers warning")
    warnings.warn("a tracer warning")
    sys.stderr.write("\rLoading checkpoint shards: 100%|##########| 2/2\n")


def test_third_party_output_goes_to_the_log_file_under_xdg_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root_handlers = list(logging.getLogger().handlers)
    transformers_logger = logging.getLogger("transformers")
    level = transformers_logger.level  # an earlier conversion in this process may have quieted it to ERROR
    transformers_logger.setLevel(logging.WARNING)
    try:
        with route_third_party(kind="convert") as route:
            chatter()
    finally:
        transformers_logger.setLevel(level)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert route.path.parent == tmp_path / "cache" / "edgert" / "logs" == log_dir()
    assert route.path.name.startswith("convert-") and route.written
    text = route.path.read_text()
    for line in ("root INFO from a quantizer", "quantizer INFO", "transformers warning", "a tracer warning",
                 "Loading checkpoint shards"):
        assert line in text
    assert logging.getLogger().handlers == root_handlers  # everything is put back
    logging.info("after the route")
    assert "after the route" not in route.path.read_text()


def test_verbose_leaves_third_party_output_on_the_screen(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with route_third_party(verbose=True) as route:
        sys.stderr.write("tqdm bar\n")
    assert route.path is None and "tqdm bar" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_rich_keeps_drawing_on_the_terminal_inside_the_route(tmp_path):
    from rich.console import Console

    class Terminal:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    terminal = Terminal()
    previous = sys.stderr
    sys.stderr = terminal
    try:
        console = Console(stderr=True, force_terminal=False)
        with route_third_party(path=tmp_path / "x.log"):
            console.print("edgert progress")
            sys.stderr.write("third-party line\n")
    finally:
        sys.stderr = previous
    assert "edgert progress" in terminal.text and "third-party line" not in terminal.text
    assert "third-party line" in (tmp_path / "x.log").read_text()


def test_install_hints_name_extras_that_exist():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = {}
    for folder in ("converters", "edgert/bundle", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            for extra in re.findall(r"edgert\[(\w+)\]", path.read_text()):
                named.setdefault(extra, []).append(path.relative_to(ROOT).as_posix())
    assert set(named) <= extras, {e: files for e, files in named.items() if e not in extras}
