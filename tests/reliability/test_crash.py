"""SIGKILL at every recorded crash point of ``edgert pack`` and ``edgert convert``.

A first run of each command records the points it passes (EDGERT_CRASH_TRACE); then the
command is run again once per point with EDGERT_CRASH_POINT=name:N and kills itself there.
After every kill the bundle must open and verify, its old files must be byte-identical,
and nothing but temp files, journals and the complete files a journal names may sit beside
them; the cleanup the next run does first (``recover_interrupted``) must then leave the
bundle exactly as before, or exactly as after when the kill came after the manifest.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import pytest

from edgert.bundle import MANIFEST_NAME, Bundle
from edgert.bundle.writer import recover_interrupted
from edgert.fileio import CRASH_POINT_ENV, CRASH_TRACE_ENV, LOCK_NAME, PENDING_PREFIX, TEMP_PREFIX
from gguf_factory import default_metadata, write_gguf

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EDGERT = str(Path(sys.executable).with_name("edgert"))
STAGING_PREFIX = ".edgert-staging-"
PARALLEL = 2  # forked runs at a time
CONVERT_MANIFEST_RENAME = "atomic.renamed:2"  # the commit writes its journal, then the manifest


def snapshot(root: Path) -> Dict[str, str]:
    """sha256 of every file under ``root`` by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def hardlink_copy(src: Path, dst: Path) -> Path:
    """A copy sharing the files' inodes: atomic writes replace names, never bytes in place,
    so the original stays untouched unless a write goes wrong (which snapshot() would see)."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def run(args: Sequence[str], env_extra: Dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_POINT_ENV, CRASH_TRACE_ENV)}
    env.update(env_extra)
    return subprocess.run([EDGERT, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)


def hidden(rel: str) -> bool:
    name = Path(rel).name  # a killed writer's lock file is left too (unlocked; the next writer removes it)
    return name.startswith(TEMP_PREFIX) or name.startswith(PENDING_PREFIX) or name == LOCK_NAME


def journaled_names(bundle: Path) -> set:
    names = set()
    for journal in bundle.glob(f"{PENDING_PREFIX}*.json"):
        names.update(json.loads(journal.read_text()))
    return names


def check_after_kill(bundle: Path, point: str, before: Dict[str, str], after: Dict[str, str]) -> bool:
    """The state a kill may leave; returns whether the commit (manifest rename) had happened."""
    manifest = (bundle / MANIFEST_NAME).read_bytes()
    Bundle.open(bundle).verify()  # loadable, every named artifact matches its sha256
    committed = hashlib.sha256(manifest).hexdigest() != before[MANIFEST_NAME]
    files = snapshot(bundle)
    for rel, digest in before.items():
        if rel != MANIFEST_NAME:
            assert files.get(rel) == digest, f"{point}: {rel} changed or vanished"
    named = {e["file"] for v in Bundle.open(bundle).variants for e in v.all_files()}
    journaled = journaled_names(bundle)
    for rel, digest in files.items():
        if rel in before or hidden(rel) or rel == MANIFEST_NAME:
            continue
        top = rel.split("/")[0]
        assert rel in named or top in journaled, f"{point}: {rel} at a final path, neither in the manifest nor journaled"
        assert digest == after[rel], f"{point}: partial or wrong file at the final path {rel}"
    return committed


def check_recovered(bundle: Path, point: str, before: Dict[str, str], after: Dict[str, str], committed: bool) -> None:
    """What the next run does first leaves the bundle exactly as before (or exactly as after)."""
    recover_interrupted(bundle)
    files = snapshot(bundle)
    expected = dict(after) if committed else dict(before)
    if committed:  # the manifest carries timestamps of its own run; compare its variants instead
        files.pop(MANIFEST_NAME)
        expected.pop(MANIFEST_NAME)
    assert files == expected, f"{point}: after recovery {sorted(set(files) ^ set(expected))} differ"


# A conversion run spends most of its time importing torch and transformers. This driver
# imports them once (computing nothing, so no thread pools exist yet) and forks one child
# per run; each child runs the real `edgert` command line in-process. The first child
# records the crash points; then one child per chosen point kills itself there.
FORK_DRIVER = r"""
import importlib, json, os, shutil, sys, time, traceback
plan = json.loads(sys.argv[1])
for module in plan["preload"]:  # imported once, before any fork; nothing computed, so no thread pools yet
    importlib.import_module(module)
from edgert.cli.main import main

def start(bundle, env, log):
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.environ.update(env)
        os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        main([a.replace("{bundle}", bundle) for a in plan["argv"]], standalone_mode=False)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)

def copy(dst):
    shutil.copytree(plan["base"], dst, copy_function=os.link)
    return dst

def run_all(runs):
    statuses, seconds, waiting, queue = {}, {}, {}, list(enumerate(runs))
    while queue or waiting:
        while queue and len(waiting) < plan["parallel"]:
            index, run = queue.pop(0)
            waiting[start(*run)] = (index, time.monotonic())
        pid, status = os.wait()
        index, began = waiting.pop(pid)
        seconds[index] = time.monotonic() - began
        statuses[index] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return [statuses[i] for i in range(len(runs))], [seconds[i] for i in range(len(runs))]

work = plan["work"]
trace = os.path.join(work, "trace.txt")
finished = copy(os.path.join(work, "finished", "bundle"))
(trace_status,), (trace_s,) = run_all([(finished, {plan["trace_env"]: trace}, os.path.join(work, "trace.log"))])
points = open(trace).read().split() if trace_status == 0 else []
chosen = points if plan["names"] is None else [p for p in points if p.rsplit(":", 1)[0] in plan["names"]]
runs = [(copy(os.path.join(work, f"kill-{i:02d}", "bundle")), {plan["point_env"]: p}, os.path.join(work, f"kill-{i:02d}", "stderr.log"))
        for i, p in enumerate(chosen)]
statuses, seconds = run_all(runs)
print(json.dumps(dict(trace_status=trace_status, trace_s=trace_s, points=points, chosen=chosen,
                      bundles=[r[0] for r in runs], statuses=statuses, seconds=seconds)))
"""


CONVERT_MODULES = ("torch", "transformers", "transformers.models.llama.modeling_llama", "llama_cpp",
                   "edgert.converters.gguf_convert", "edgert.converters.pipeline", "edgert.converters.quality")
PACK_MODULES = ("edgert.bundle", "edgert.formats.gguf")


def forked_kills(argv: Sequence[str], base: Path, work: Path, preload: Sequence[str] = (),
                 names: Optional[Sequence[str]] = None) -> Dict:
    """Trace ``edgert <argv>`` on a copy of ``base``, then kill it at every point passed (or
    every hit of the ``names`` given), each time on a fresh copy of ``base``; see FORK_DRIVER."""
    plan = dict(argv=list(argv), base=str(base), work=str(work), names=None if names is None else list(names),
                preload=list(preload),
                parallel=PARALLEL, trace_env=CRASH_TRACE_ENV, point_env=CRASH_POINT_ENV)
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_POINT_ENV, CRASH_TRACE_ENV)}
    env["OMP_NUM_THREADS"] = "1"  # a 64-wide model: torch's thread pool only adds contention
    result = subprocess.run([sys.executable, "-c", FORK_DRIVER, json.dumps(plan)], env=env, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    out = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert out["trace_status"] == 0, (work / "trace.log").read_text()[-3000:]
    return out


@pytest.fixture(scope="module")
def small_base(tmp_path_factory) -> Path:
    """A bundle of one small GGUF: each of the ~35 pack runs re-verifies it, so it is kept small."""
    from edgert.bundle import pack

    tmp = tmp_path_factory.mktemp("crash-small")
    pack([synthetic_gguf(tmp / "base.gguf", "Base", 250_000)], tmp / "pristine", model_name="base")
    return tmp / "pristine"


def synthetic_gguf(path: Path, name: str, n_floats: int) -> Path:
    """A valid GGUF of ~4*n_floats bytes: several copy chunks, copied in milliseconds."""
    return write_gguf(path, metadata=default_metadata(name=name), tensors=[("token_embd.weight", [n_floats], 0)])


def test_sigkill_at_every_point_of_pack(small_base, tmp_path):
    base_bundle = small_base
    files = [synthetic_gguf(tmp_path / "a.gguf", "Alpha", 2_400_000), synthetic_gguf(tmp_path / "b.gguf", "Beta", 2_400_000)]
    argv = ["pack", *map(str, files), "--out", "{bundle}", "--name", "alpha", "--name", "beta"]
    before = snapshot(base_bundle)
    out = forked_kills(argv, base_bundle, tmp_path / "runs", PACK_MODULES)
    points = out["points"]
    after = snapshot(tmp_path / "runs" / "finished" / "bundle")
    assert set(after) - set(before) == {"alpha.gguf", "beta.gguf"}
    assert len(points) >= 25 and len(set(points)) == len(points) and out["chosen"] == points
    assert {p.rsplit(":", 1)[0] for p in points} >= {"pack.validated", "pack.journaled", "pack.copied", "copy.chunk",
                                                     "pack.before_manifest", "atomic.renamed", "pack.committed"}
    commits = 0
    for point, bundle, status in zip(points, map(Path, out["bundles"]), out["statuses"]):
        assert status == -signal.SIGKILL, (point, status, (bundle.parent / "stderr.log").read_text()[-3000:])
        committed = check_after_kill(bundle, point, before, after)
        check_recovered(bundle, point, before, after, committed)
        commits += committed
    # the kills at and after the manifest rename find the new bundle, every earlier one the old
    assert commits == len(points) - points.index("atomic.renamed:4")

    # the command itself cleans up before its own work: kill it half-way through a copy, run it again
    bundle = hardlink_copy(base_bundle, tmp_path / "rerun" / "bundle")
    make_args = [a.replace("{bundle}", str(bundle)) for a in argv]
    assert run(make_args, {CRASH_POINT_ENV: "copy.chunk:5"}).returncode == -signal.SIGKILL
    assert any(hidden(rel) for rel in snapshot(bundle)) and (bundle / "alpha.gguf").exists()
    result = run(make_args, {})
    assert result.returncode == 0, result.stderr.decode()
    rerun = snapshot(bundle)
    assert {k: v for k, v in rerun.items() if k != MANIFEST_NAME} == {k: v for k, v in after.items() if k != MANIFEST_NAME}


def test_sigkill_during_the_first_pack_leaves_nothing_that_blocks_the_next(tmp_path):
    src = synthetic_gguf(tmp_path / "a.gguf", "Alpha", 2_400_000)
    bundle = tmp_path / "new"
    assert run(["pack", str(src), "--out", str(bundle)], {CRASH_POINT_ENV: "pack.copied:1"}).returncode == -signal.SIGKILL
    assert not (bundle / MANIFEST_NAME).exists()
    result = run(["pack", str(src), "--out", str(bundle)], {})
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(p.name for p in bundle.iterdir()) == ["a-f32.gguf", MANIFEST_NAME]
    Bundle.open(bundle).verify()


def test_sigkill_at_the_stages_and_commit_of_convert(tiny_llama_source, small_base, tmp_path):
    argv = ["convert", str(tiny_llama_source), "--to", "gguf", "--quant", "F16", "--out", "{bundle}", "--threads", "1"]
    before = snapshot(small_base)
    out = forked_kills(argv, small_base, tmp_path, CONVERT_MODULES)
    points = out["points"]
    after = snapshot(tmp_path / "finished" / "bundle")
    assert len(set(after) - set(before)) == 1
    stages = {p.rsplit(":", 1)[0] for p in points if p.startswith("convert.")}
    assert stages == {"convert.staged", "convert.preflight_passed", "convert.converted", "convert.gated",
                      "convert.journaled", "convert.moved", "convert.before_manifest", "convert.committed"}
    assert len(points) >= 15 and out["chosen"] == points
    for point, bundle, status in zip(points, map(Path, out["bundles"]), out["statuses"]):
        assert status == -signal.SIGKILL, (point, status, (bundle.parent / "stderr.log").read_text()[-3000:])
        committed = check_after_kill(bundle, point, before, after)
        assert committed == (points.index(point) >= points.index(CONVERT_MANIFEST_RENAME)), point
        leftovers = [p.name for p in bundle.parent.iterdir() if p.name not in ("bundle", "stderr.log")]
        assert all(name.startswith(STAGING_PREFIX) for name in leftovers), (point, leftovers)
        check_recovered(bundle, point, before, after, committed)


# ------------------------------------------------------------------------ full disk
class Disk:
    """A filesystem with ``free_bytes`` left: the temp files of atomic writes draw from it."""

    def __init__(self, free_bytes: int, at_flush: bool = False):
        self.free_bytes = free_bytes
        self.at_flush = at_flush  # delayed allocation: writes succeed, flush/fsync reports ENOSPC
        self.opened = 0

    def open_temp(self, fd: int):
        self.opened += 1
        return FullDiskFile(os.fdopen(fd, "wb"), self)


class FullDiskFile:
    def __init__(self, handle, disk: Disk):
        self.handle, self.disk, self.over = handle, disk, False

    def write(self, data: bytes) -> int:
        room = max(self.disk.free_bytes, 0)
        if len(data) > room and not self.disk.at_flush:
            self.handle.write(data[:room])
            self.disk.free_bytes = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.over = self.over or len(data) > room
        self.disk.free_bytes -= len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        if self.over:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.handle.flush()

    def fileno(self) -> int:
        return self.handle.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def no_temp_files(root: Path) -> bool:
    return not any(hidden(p.name) for p in root.rglob("*"))


@pytest.mark.parametrize("at_flush, failing", [(False, "beta.gguf"), (True, "beta.gguf"), (False, MANIFEST_NAME)])
def test_a_full_disk_during_pack_is_one_clear_error_and_changes_nothing(small_base, tmp_path, monkeypatch,
                                                                        at_flush, failing):
    from edgert.bundle import pack
    from edgert.errors import DiskFullError
    from edgert import fileio

    files = [synthetic_gguf(tmp_path / "a.gguf", "Alpha", 2_400_000), synthetic_gguf(tmp_path / "b.gguf", "Beta", 2_400_000)]
    bundle = hardlink_copy(small_base, tmp_path / "bundle")
    before = snapshot(bundle)
    # room for the journal and the first file, and half the second; or for both but not the manifest
    room = files[0].stat().st_size + (files[1].stat().st_size + 100 if failing == MANIFEST_NAME else 5_000_000)
    disk = Disk(room, at_flush)
    monkeypatch.setattr(fileio, "_open_temp", disk.open_temp)
    with pytest.raises(DiskFullError) as caught:
        pack(files, bundle, names=["alpha", "beta"])
    message = str(caught.value)
    assert "\n" not in message and f"disk full while writing {bundle / failing}" in message and "B free" in message
    if failing != MANIFEST_NAME:
        assert "needs 9.6 MB" in message
    assert disk.opened >= 3 and snapshot(bundle) == before and no_temp_files(bundle)
    Bundle.open(bundle).verify()


def test_pack_refuses_up_front_when_the_files_cannot_fit(small_base, tmp_path, monkeypatch):
    from collections import namedtuple

    from edgert.errors import DiskFullError
    from edgert.cli.main import main
    from click.testing import CliRunner
    from edgert import fileio

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2_000_000, 2_000_000))
    files = [synthetic_gguf(tmp_path / "a.gguf", "Alpha", 2_400_000)]
    bundle = hardlink_copy(small_base, tmp_path / "bundle")
    before = snapshot(bundle)
    result = CliRunner().invoke(main, ["pack", str(files[0]), "--out", str(bundle)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == DiskFullError.exit_code and len(lines) == 1, result.output
    assert f"not enough disk space for packing 1 file(s) into {bundle}: needs 9.6 MB, 2.0 MB free" in lines[0]
    assert snapshot(bundle) == before


def test_a_full_disk_during_convert_leaves_the_bundle_and_no_staging(tiny_llama_source, small_base, tmp_path, monkeypatch):
    from edgert.converters.registry import converter_for
    from edgert.converters.pipeline import STAGING_PREFIX as staging_prefix, convert
    from edgert.errors import DiskFullError

    def fill_disk(self, source, options):
        (options.work_dir / "partial.gguf").write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(type(converter_for("gguf")), "convert", fill_disk)
    bundle = hardlink_copy(small_base, tmp_path / "bundle")
    before = snapshot(bundle)
    with pytest.raises(DiskFullError) as caught:
        convert(tiny_llama_source, "gguf", ["F16"], bundle)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"disk full while converting {tiny_llama_source}")
    assert "MB free" in message and f"the bundle {bundle} was left as it was" in message
    assert snapshot(bundle) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(staging_prefix)]
