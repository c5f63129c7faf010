"""Power knobs against a fake nvpmodel (recorded conf layout) and an autospec'd NVML."""

import types
from unittest import mock

import pytest

from device_fakes import replying
from edgert.errors import DeviceError
from edgert.devices.jetson import JetsonPowerModes, parse_nvpmodel_conf
from edgert.devices.nvidia import NvidiaPowerLimit

# the layout of /etc/nvpmodel.conf on an AGX Orin (L4T r35/r36): PARAM blocks, then one
# POWER_MODEL block per mode; MAXN has no watt rating
AGX_ORIN_CONF = """\
< PARAM TYPE=FILE NAME=CPU_ONLINE >
CORE_0 /sys/devices/system/cpu/cpu0/online

< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=MODE_15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=MODE_30W >
< POWER_MODEL ID=3 NAME=MODE_50W >
"""


def jetson(tmp_path, current="MODE_30W\n2", fail_set=False):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nvpmodel.conf").write_text(AGX_ORIN_CONF)
    calls = []
    outputs = {("nvpmodel", "-q"): f"NV Power Mode: {current.splitlines()[0]}\n{current.splitlines()[1]}\n"}
    query = replying(outputs)

    def run(argv):
        if argv[:2] == ("nvpmodel", "-m"):
            calls.append(argv[2])
            if fail_set:
                raise PermissionError("Operation not permitted")
            return ""
        return query(argv)

    return JetsonPowerModes(tmp_path, run=run), calls


def test_parse_conf():
    modes = parse_nvpmodel_conf(AGX_ORIN_CONF)
    assert [(m.id, m.label, m.power_w) for m in modes] == [
        ("0", "MAXN", None), ("1", "MODE_15W", 15.0), ("2", "MODE_30W", 30.0), ("3", "MODE_50W", 50.0)]


@pytest.mark.parametrize("limit,expected", [(None, "MAXN"), (60, "MODE_50W"), (35, "MODE_30W"), (15, "MODE_15W"),
                                            (5, "MODE_15W")])
def test_jetson_chooses_the_fastest_mode_within_the_limit(tmp_path, limit, expected):
    knob, _ = jetson(tmp_path)
    assert knob.choose(limit).label == expected


def test_jetson_applies_only_when_the_mode_changes(tmp_path):
    knob, calls = jetson(tmp_path, current="MODE_30W\n2")
    assert knob.apply_limit(35).label == "MODE_30W" and calls == []
    assert knob.apply_limit(20).label == "MODE_15W" and calls == ["1"]


def test_jetson_without_permission_is_a_device_error(tmp_path):
    knob, _ = jetson(tmp_path, fail_set=True)
    with pytest.raises(DeviceError, match="needs root"):
        knob.apply_limit(15)


def test_missing_conf_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceError, match="nvpmodel.conf"):
        JetsonPowerModes(tmp_path, run=replying({}))


def _nvml(limit_mw=450_000, set_error=None):
    spec = types.ModuleType("pynvml")

    def nvmlDeviceGetPowerManagementLimitConstraints(handle): ...
    def nvmlDeviceGetPowerManagementLimit(handle): ...
    def nvmlDeviceSetPowerManagementLimit(handle, limit): ...

    for fn in (nvmlDeviceGetPowerManagementLimitConstraints, nvmlDeviceGetPowerManagementLimit,
               nvmlDeviceSetPowerManagementLimit):
        setattr(spec, fn.__name__, fn)
    nvml = mock.create_autospec(spec)
    nvml.nvmlDeviceGetPowerManagementLimitConstraints.return_value = (150_000, 600_000)
    nvml.nvmlDeviceGetPowerManagementLimit.return_value = limit_mw
    if set_error:
        nvml.nvmlDeviceSetPowerManagementLimit.side_effect = set_error
    return nvml


def test_nvidia_limit_is_clamped_and_set_in_milliwatts():
    nvml = _nvml()
    knob = NvidiaPowerLimit(nvml, "h0")
    assert knob.apply_limit(200).power_w == 200
    nvml.nvmlDeviceSetPowerManagementLimit.assert_called_once_with("h0", 200_000)
    assert knob.choose(50).power_w == 150 and knob.choose(None).power_w == 600


def test_nvidia_without_permission_is_a_device_error():
    knob = NvidiaPowerLimit(_nvml(set_error=RuntimeError("Insufficient Permissions")), "h0")
    with pytest.raises(DeviceError, match="needs root"):
        knob.apply_limit(200)


def test_runtime_reports_a_knob_that_cannot_act(smollm2_bundle, tmp_path):
    from edgert.runtime import Runtime

    knob, _ = jetson(tmp_path, fail_set=True)
    with Runtime(smollm2_bundle, n_threads=2, power_knob=knob) as rt:
        result = rt.generate("Say yes.", strategy="greedy", max_tokens=4, power_w=15)
    assert result.power_setting is None and "needs root" in result.warnings[0]
    assert result.text  # the request was still answered
