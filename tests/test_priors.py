"""Datasheet priors: every shipped prior validates, and bad priors fail with one clear line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edgert.errors import ProfileError
from edgert.profiler import priors
from edgert.profiler.priors import DevicePrior, list_priors, load_prior, validate_prior

EXPECTED_IDS = {
    "jetson-orin-nano-8gb",
    "jetson-orin-nano-super-8gb",
    "jetson-orin-nx-16gb",
    "jetson-agx-orin-64gb",
    "jetson-agx-xavier-32gb",
    "rtx-3060-12gb",
    "rtx-4060-8gb",
    "rtx-4090-24gb",
    "raspberry-pi-5-8gb",
    "generic-x86-laptop",
}


def _raw(prior_id: str) -> dict:
    return json.loads((priors.priors_dir() / f"{prior_id}.json").read_text())


def _write(tmp_path: Path, doc, name: str | None = None) -> Path:
    name = name or (doc.get("id") if isinstance(doc, dict) else None) or "x"
    path = tmp_path / f"{name}.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_all_expected_priors_ship():
    assert set(list_priors()) == EXPECTED_IDS


@pytest.mark.parametrize("prior_id", sorted(EXPECTED_IDS))
def test_every_prior_loads_and_is_consistent(prior_id):
    prior = load_prior(prior_id)
    assert isinstance(prior, DevicePrior)
    assert prior.id == prior_id == prior.path.stem
    assert prior.tdp_w == prior.power_mode().tdp_w == prior.default_mode.tdp_w
    assert sum(m.default for m in prior.power_modes) == 1
    assert prior.bandwidth_bytes_per_s == pytest.approx(prior.bandwidth_gbs * 1e9)
    assert prior.estimated is True and prior.kind == "prior"
    for precision, tflops in prior.peak_tflops.items():
        assert prior.peak_flops(precision) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("prior_id", sorted(EXPECTED_IDS))
def test_every_numeric_figure_has_a_dated_source(prior_id):
    raw = _raw(prior_id)
    prior = load_prior(prior_id)
    numeric = {
        fig for fig, value in priors._figures(raw)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    assert numeric <= set(prior.sources)
    for keys in prior.sources.values():
        for key in keys:
            ref = prior.references[key]
            assert ref["url"] and ref["title"]
            assert ref["accessed"] == "2026-11-23"


def test_ids_are_unique_and_match_file_names():
    ids = [_raw(p)["id"] for p in list_priors()]
    assert len(ids) == len(set(ids))
    assert ids == list_priors()


def test_sources_md_lists_every_reference_key():
    text = (Path(__file__).parents[1] / "profiles" / "priors" / "SOURCES.md").read_text()
    for prior_id in list_priors():
        assert f"## {prior_id}" in text
        for key in load_prior(prior_id).references:
            assert f"[{key}]" in text


def test_known_datasheet_figures():
    nano = load_prior("jetson-orin-nano-8gb")
    assert nano.peak_flops("int8") == pytest.approx(20e12)  # 40 sparse TOPS / 2
    assert nano.bandwidth_gbs == 68
    agx = load_prior("jetson-agx-orin-64gb")
    assert agx.peak_flops("int8") == pytest.approx(85e12)  # GPU 170 sparse / 2, without DLA
    assert agx.bandwidth_bytes_per_s == pytest.approx(204.8e9)
    assert load_prior("rtx-4090-24gb").peak_flops("fp32") == pytest.approx(82.6e12)


def test_power_mode_overrides_and_lookup():
    nx = load_prior("jetson-orin-nx-16gb")
    assert nx.power_mode("MAXN_SUPER").tdp_w == 40
    assert nx.peak_flops("int8", "MAXN_SUPER") == pytest.approx(38.5e12)
    assert nx.peak_flops("int8", "10W") == pytest.approx(30e12)  # falls back to top-level peak
    assert nx.mode_bandwidth_bytes_per_s("MAXN_SUPER") == nx.bandwidth_bytes_per_s
    with pytest.raises(ProfileError) as excinfo:
        nx.power_mode("99W")
    message = _one_line_error(excinfo)
    assert "'99W'" in message and "MAXN_SUPER" in message and "25W" in message


def test_missing_precision_names_the_available_ones():
    pi = load_prior("raspberry-pi-5-8gb")
    with pytest.raises(ProfileError) as excinfo:
        pi.peak_flops("int8")
    assert "fp32" in _one_line_error(excinfo)


def test_unknown_id_lists_known_ids():
    with pytest.raises(ProfileError) as excinfo:
        load_prior("jetson-nano-2gb")
    message = _one_line_error(excinfo)
    assert "'jetson-nano-2gb'" in message
    assert all(prior_id in message for prior_id in EXPECTED_IDS)


def test_load_by_path(tmp_path):
    path = _write(tmp_path, _raw("rtx-4060-8gb"))
    assert load_prior(path).id == "rtx-4060-8gb"
    assert load_prior(str(path)).id == "rtx-4060-8gb"


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError) as excinfo:
        load_prior(tmp_path / "nope.json")
    assert "not found" in _one_line_error(excinfo)


def test_malformed_json(tmp_path):
    path = _write(tmp_path, '{"schema_version": 1, "id": ', name="broken")
    with pytest.raises(ProfileError) as excinfo:
        load_prior(path)
    message = _one_line_error(excinfo)
    assert "invalid JSON" in message and "line 1" in message


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_wrong_schema_version(tmp_path, version):
    doc = _raw("rtx-4090-24gb")
    doc["schema_version"] = version
    with pytest.raises(ProfileError) as excinfo:
        load_prior(_write(tmp_path, doc))
    message = _one_line_error(excinfo)
    assert "schema_version" in message and "expected 1" in message


def _mutated(prior_id: str, mutate) -> dict:
    doc = copy.deepcopy(_raw(prior_id))
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["memory"].pop("bandwidth_gbs"), "missing field 'memory.bandwidth_gbs'"),
        (lambda d: d.pop("power_modes"), "missing field 'power_modes'"),
        (lambda d: d["sources"].pop("peak_tflops.fp16"), "'peak_tflops.fp16' has no source"),
        (lambda d: d.update(idle_w=3.5), "'idle_w' has no source"),
        (lambda d: d["sources"].update({"peak_tflops.fp16": "NOPE"}), "reference 'NOPE'"),
        (lambda d: d["sources"].update({"memory.speed": "AGX_DS"}), "'memory.speed', which is not a figure"),
        (lambda d: d["references"]["AGX_DS"].pop("accessed"), "missing field 'accessed'"),
        (lambda d: d.update(tdp_w=50), "does not match the default power mode 'MAXN'"),
        (lambda d: d["power_modes"][1].update(default=True), "exactly one default"),
        (lambda d: d["power_modes"].append({"name": "MAXN", "tdp_w": 60}), "'MAXN' appears twice"),
        (lambda d: d["peak_tflops"].update(bf8=1.0), "unknown precision"),
        (lambda d: d["peak_tflops"].update(fp32=-1), "positive number"),
        (lambda d: d["memory"].update(size_gb="64"), "'memory.size_gb' should be int or float"),
        (lambda d: d.update(kind="profile"), "expected 'prior'"),
        (lambda d: d["device"].update({"class": "tpu"}), "device.class 'tpu'"),
        (lambda d: d.update(id="other-id"), "does not match the file name"),
    ],
)
def test_invalid_priors_fail_with_one_line(tmp_path, mutate, expected):
    doc = _mutated("jetson-agx-orin-64gb", mutate)
    path = _write(tmp_path, doc, name="jetson-agx-orin-64gb")
    with pytest.raises(ProfileError) as excinfo:
        load_prior(path)
    message = _one_line_error(excinfo)
    assert expected in message
    assert str(path) in message


def test_validate_without_path():
    prior = validate_prior(_raw("raspberry-pi-5-8gb"))
    assert prior.path is None and prior.device_class == "sbc"
    with pytest.raises(ProfileError) as excinfo:
        validate_prior([1, 2])
    assert "expected a JSON object" in _one_line_error(excinfo)
