"""Devices offer their power knob, and ``edgert.devices.power_knob`` finds it on a fake tree."""

import types

import pytest

from device_fakes import replying
from edgert.devices import CpuDevice, JetsonPowerModes, power_knob
from edgert.errors import DeviceError

# /etc/nvpmodel.conf of an Orin Nano 8GB on JetPack 6.2 (L4T R36.4): 15 W, 7 W and MAXN SUPER
ORIN_NANO_CONF = """\
< PARAM TYPE=FILE NAME=CPU_ONLINE >
CORE_0 /sys/devices/system/cpu/cpu0/online
< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=7W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
CPU_ONLINE CORE_0 1
"""


def no_nvml():
    """A pynvml stand-in whose driver is not loaded (Jetson before JetPack 7 has no NVML)."""
    class NVMLError(Exception):
        pass

    def nvmlInit():
        raise NVMLError("driver not loaded")

    return types.SimpleNamespace(NVMLError=NVMLError, nvmlInit=nvmlInit)


def jetson_runner(calls):
    query = replying({("nvpmodel", "-q"): "NV Power Mode: 15W\n0\n"})

    def run(argv):
        if tuple(argv[:2]) == ("nvpmodel", "-m"):
            calls.append(argv[2])
            return ""
        return query(argv)

    return run


def test_cpu_has_no_device_wide_knob(fake_root):
    assert CpuDevice(fake_root("x86-laptop")).power_knob() is None


def test_power_knob_on_the_jetson_tree_selects_an_nvpmodel_mode(fake_root):
    root = fake_root("jetson-orin-nano")
    (root / "etc" / "nvpmodel.conf").write_text(ORIN_NANO_CONF)
    calls = []
    knob = power_knob(root, nvml=no_nvml(), run=jetson_runner(calls))
    assert isinstance(knob, JetsonPowerModes)
    assert knob.apply_limit(10).label == "7W" and calls == ["1"]
    assert knob.apply_limit(None).label == "MAXN_SUPER" and calls == ["1", "2"]


def test_a_board_whose_knob_cannot_be_read_is_skipped_with_a_note(fake_root):
    root = fake_root("jetson-orin-nano")  # no /etc/nvpmodel.conf in this tree
    notes = []
    assert power_knob(root, nvml=no_nvml(), run=jetson_runner([]), notes=notes) is None
    assert any(note.startswith("jetson: cannot read the Jetson power modes") for note in notes)
    with pytest.raises(DeviceError, match="nvpmodel.conf"):
        JetsonPowerModes(root, run=jetson_runner([]))


def test_no_knob_off_boards_and_gpus(fake_root):
    assert power_knob(fake_root("x86-laptop"), nvml=no_nvml()) is None


def test_edgert_run_with_power_moves_nvpmodel_on_the_jetson_tree(fake_root, smollm2_bundle, monkeypatch):
    """The whole path: edgert run --power -> Runtime(power_knob="auto") -> the detected
    device's knob (the Jetson fake tree, nvpmodel faked) -> nvpmodel -m <mode>."""
    import json
    from functools import partial

    from click.testing import CliRunner

    import edgert.runtime
    from edgert.cli.main import main

    root = fake_root("jetson-orin-nano")
    (root / "etc" / "nvpmodel.conf").write_text(ORIN_NANO_CONF)
    calls = []
    monkeypatch.setattr(edgert.runtime, "find_power_knob",
                        partial(power_knob, root, nvml=no_nvml(), run=jetson_runner(calls)))
    out = CliRunner().invoke(main, ["run", str(smollm2_bundle), "Say yes.", "--strategy", "greedy", "--max-tokens", "2",
                                    "--power", "10W", "--threads", "1", "--json"])
    assert out.exit_code == 0, out.output
    assert calls == ["1"]  # the 7 W mode: the largest within 10 W
    assert json.loads(out.stdout)["power_setting"] == "7W"
