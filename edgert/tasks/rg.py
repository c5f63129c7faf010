"""reasoning-gym as a task provider: ``rg:<dataset>[:key=value,...]`` and ``rg:mix``.

A spec names one reasoning-gym dataset and its options, e.g. ``rg:chain_sum``,
``rg:gsm_symbolic:seed=2,size=50`` or ``rg:basic_arithmetic:seed=1,size=40,min_terms=2,max_terms=3``.
``seed`` (default 0) and ``size`` (default 40) are edgert's; every other ``key=value`` goes to
the dataset's config. Values are read as booleans (true/false), integers or floats where they
look like one, else as words (letters, digits, ``_ . + -``). ``rg:mix`` (options ``seed`` and
``size`` only) interleaves ``MIX``: numeric-answer datasets at two difficulties.

The provider returns plain JSONL records (the task file format of ``edgert.tasks``), which the
task parser validates like any file, so a generated set and its saved copy are the same tasks.
Each record keeps where it came from, ``source`` (``rg:<dataset>[:options]``, without seed and
size) and ``entry`` (reasoning-gym's question, answer and metadata, made JSON), so that
``verify`` can score an answer with the dataset's own ``score_answer`` after a round trip
through a file.

Seeds: reasoning-gym seeds item ``i`` with ``seed + i``, so seeds 1 and 2 would share all but
one item. edgert therefore derives the reasoning-gym seed from a hash of (dataset, difficulty,
split, seed): different seeds, the test and shot splits and the parts of ``rg:mix`` draw
unrelated items. Three ``shot`` tasks (few-shot examples for base models) come from the shot
seed of the same datasets.

Answer types: a task is "number" when its gold answer is a number already in edgert's
canonical form (``answers.normalize_answer``: "42", "-4", "0.3125"), since that is the form
edgert's extracted answer takes when it reaches the verifier (every rg:mix verifier accepts it;
tests/test_tasks_rg.py checks); anything else is "text", and the verifier then sees edgert's
normalized text (lower case, no punctuation), so a case-sensitive verifier counts some right
answers wrong (calendar_arithmetic scores "wednesday" 0.05 against "Wednesday").

reasoning-gym (``pip install 'edgert[tasks]'``) is imported only here and only when a set is
generated or an answer verified: parsing a saved set, planning and the runtime never need it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..answers import is_number, normalize_answer
from ..errors import UsageError

PREFIX = "rg:"
MIX_NAME = "mix"
EDGERT_KEYS = ("seed", "size")
DEFAULT_SEED = 0
DEFAULT_SIZE = 40
MAX_SIZE = 10_000
MAX_SEED = 2**31 - 1
SHOTS = 3
INSTALL_HINT = "pip install 'edgert[tasks]'"
SYNTAX = "rg:<dataset>[:key=value,...] (e.g. rg:chain_sum:seed=1,size=40, or rg:mix)"

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_WORD = re.compile(r"[A-Za-z0-9_.+-]+\Z")
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?\Z")

Options = Tuple[Tuple[str, object], ...]


@dataclass(frozen=True)
class Part:
    """One dataset at one difficulty in ``rg:mix``."""

    dataset: str
    tag: str
    options: Options


#: rg:mix, in the order it interleaves them: cheap datasets with numeric answers and their own
#: verifiers, easy then hard, that 0.1-0.5B models sometimes solve (gsm_symbolic supports only
#: its difficulty 1.0)
MIX: Tuple[Part, ...] = (
    Part("basic_arithmetic", "easy", (("max_digits", 1), ("max_terms", 2), ("min_digits", 1), ("min_terms", 2))),
    Part("chain_sum", "easy", (("max_digits", 2), ("max_terms", 2), ("min_digits", 1), ("min_terms", 2))),
    Part("products", "easy", (("max_digits", 1), ("max_terms", 2), ("min_digits", 1), ("min_terms", 2))),
    Part("leg_counting", "easy", (("max_animals", 2), ("max_instances", 3), ("min_animals", 1), ("min_instances", 1))),
    Part("basic_arithmetic", "hard", (("max_digits", 2), ("max_terms", 4), ("min_digits", 1), ("min_terms", 3))),
    Part("chain_sum", "hard", (("max_digits", 3), ("max_terms", 5), ("min_digits", 2), ("min_terms", 3))),
    Part("products", "hard", (("max_digits", 2), ("max_terms", 2), ("min_digits", 2), ("min_terms", 2))),
    Part("gsm_symbolic", "hard", ()),
)


@dataclass(frozen=True)
class Spec:
    """A parsed ``rg:`` spec: the dataset (or "mix"), edgert's seed and size, the dataset's options (sorted)."""

    text: str
    dataset: str
    seed: int = DEFAULT_SEED
    size: int = DEFAULT_SIZE
    options: Options = ()

    @property
    def name(self) -> str:
        """The task set's name, a file stem naming everything that changes the tasks."""
        return f"rg-{self.dataset}{_options_part(self.options)}-seed{self.seed}-size{self.size}"

    @property
    def source(self) -> str:
        """What each task records as its verifier: the dataset and options, without seed and size."""
        return source_of(self.dataset, self.options)


def is_spec(text: object) -> bool:
    """Whether a task set source is an ``rg:`` spec."""
    return isinstance(text, str) and text.startswith(PREFIX)


def _format(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _options_part(options: Options) -> str:
    return "".join(f"-{key}={_format(value)}" for key, value in options)


def source_of(dataset: str, options: Options) -> str:
    """``rg:<dataset>[:key=value,...]`` in canonical form."""
    rest = ",".join(f"{key}={_format(value)}" for key, value in options)
    return f"{PREFIX}{dataset}{':' + rest if rest else ''}"


def _value(text: str, key: str, spec: str) -> object:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if not _WORD.match(text):
        raise UsageError(f"{spec}: expected {key} to be a number, true/false or a word of letters, digits, '_', '.', "
                         f"'+', '-'; found {text!r}")
    return text


def _bounded(value: object, key: str, low: int, high: int, spec: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{spec}: expected {key} to be an integer from {low} to {high}; found {_format(value)!r}")
    return value


def parse_spec(text: str) -> Spec:
    """The parts of an ``rg:`` spec, checked for syntax (reasoning-gym is not needed)."""
    if not is_spec(text):
        raise UsageError(f"expected {SYNTAX}; found {text!r}")
    parts = text[len(PREFIX):].split(":")
    if len(parts) > 2:
        raise UsageError(f"expected {SYNTAX}, one ':' between the dataset and its options; found {text!r}")
    if not _NAME.match(parts[0]):
        raise UsageError(f"expected {SYNTAX}, the dataset named in lower case letters, digits and '_'; found {text!r}")
    dataset, options = parts[0], {}
    for item in (parts[1].split(",") if len(parts) == 2 else []):
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not _KEY.match(key) or not raw:
            raise UsageError(f"{text}: expected options as key=value separated by commas; found {item!r}")
        if key in options:
            raise UsageError(f"{text}: expected each option once; found {key} twice")
        options[key] = _value(raw, key, text)
    seed = _bounded(options.pop("seed", DEFAULT_SEED), "seed", 0, MAX_SEED, text)
    size = _bounded(options.pop("size", DEFAULT_SIZE), "size", 1, MAX_SIZE, text)
    if dataset == MIX_NAME and options:
        raise UsageError(f"{text}: rg:mix takes only the options seed and size; found {', '.join(sorted(options))}")
    return Spec(text, dataset, seed, size, tuple(sorted(options.items())))


def spec_name(text: str) -> str:
    """The name of the task set an ``rg:`` spec makes (what ``load_tasks`` names it)."""
    return parse_spec(text).name


def check_source(text: object) -> Spec:
    """A task's ``source``: an ``rg:<dataset>[:options]`` spec without seed and size (syntax only)."""
    if not is_spec(text):
        raise UsageError(f"expected 'source' to be {SYNTAX}; found {text!r}")
    spec = parse_spec(text)
    bare = text[len(PREFIX):].split(":")[1] if ":" in text[len(PREFIX):] else ""
    if spec.dataset == MIX_NAME or any(item.partition("=")[0].strip() in EDGERT_KEYS for item in bare.split(",")):
        raise UsageError(f"expected 'source' to name one dataset and its options, without seed or size; found {text!r}")
    return spec


# ------------------------------------------------------------------ reasoning-gym
def _reasoning_gym():
    try:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise UsageError(f"rg: task sets need the reasoning-gym package, which is not installed; "
                         f"install it with: {INSTALL_HINT}") from None
    return reasoning_gym, DATASETS


def _type_ok(kind: object, value: object) -> Optional[bool]:
    """Whether ``value`` fits a config field's type; None for types a spec cannot express."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:
        return any(_type_ok(a, value) for a in args if a is not type(None))
    if origin is typing.Literal:
        return value in args
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return None


def _describe(kind: object) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "one of " + "/".join(_format(a) for a in args)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a word"}.get(kind, str(kind))


def _check_options(datasets: Mapping[str, Any], spec: Spec) -> None:
    if spec.dataset not in datasets:
        raise UsageError(f"{spec.text}: expected a reasoning-gym dataset (or mix); found {spec.dataset!r}; "
                         f"datasets: {', '.join(sorted(datasets))}")
    config = datasets[spec.dataset][1]
    try:
        hints = typing.get_type_hints(config)
    except Exception:  # a config whose annotations do not resolve: leave the checks to reasoning-gym
        hints = {}
    fields = {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(config) if f.name not in EDGERT_KEYS}
    described = ", ".join(f"{name} ({_describe(kind)})" for name, kind in fields.items())
    for key, value in spec.options:
        if key not in fields:
            raise UsageError(f"{spec.text}: expected options of {spec.dataset} among seed, size, {described}; found {key}")
        ok = _type_ok(fields[key], value)
        if ok is None:
            raise UsageError(f"{spec.text}: expected options an rg: spec can express ({described}); found {key}, "
                             f"which takes {_describe(fields[key])}")
        if not ok:
            raise UsageError(f"{spec.text}: expected {key} to be {_describe(fields[key])}; found {_format(value)!r}")


def _rg_seed(dataset: str, tag: str, split: str, seed: int) -> int:
    digest = hashlib.sha256(f"edgert-rg|{dataset}|{tag}|{split}|{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & MAX_SEED


def _entries(spec: Spec, dataset: str, options: Options, tag: str, split: str, count: int) -> List[Dict[str, Any]]:
    rg, _datasets = _reasoning_gym()
    seed = _rg_seed(dataset, tag, split, spec.seed)
    shown = source_of(dataset, options)
    try:
        data = rg.create_dataset(dataset, seed=seed, size=max(count, 1), **dict(options))
        return [_jsonable(data[i]) for i in range(count)]
    except UsageError:
        raise
    except Exception as exc:  # a third-party generator refusing its config: one line, not a traceback
        raise UsageError(f"{spec.text}: reasoning-gym could not generate {shown} ({type(exc).__name__}: {exc}); "
                         f"expected options its config accepts") from None


def _jsonable(entry: Mapping[str, Any]) -> Dict[str, Any]:
    """The entry as JSON gives it back (tuples as lists; other objects as strings), so a saved
    copy of a task equals the generated one."""
    return json.loads(json.dumps({k: entry[k] for k in ("question", "answer", "metadata") if k in entry}, default=str))


def _record(task_id: str, split: str, source: str, entry: Dict[str, Any]) -> Dict[str, Any]:
    gold = str(entry.get("answer", ""))
    numeric = is_number(gold) and normalize_answer(gold, "number") == gold.strip()
    record = {"id": task_id, "prompt": str(entry.get("question", "")), "answer": gold,
              "type": "number" if numeric else "text", "source": source, "entry": entry}
    if split != "test":
        record["split"] = split
    return record


def generate(text: str) -> Tuple[str, List[Dict[str, Any]]]:
    """(task set name, JSONL records) for an ``rg:`` spec: its test tasks, then SHOTS shot tasks."""
    spec = parse_spec(text)
    _rg, datasets = _reasoning_gym()
    if spec.dataset == MIX_NAME:
        return spec.name, _mix(spec)
    _check_options(datasets, spec)
    stem = f"rg-{spec.dataset}{_options_part(spec.options)}-seed{spec.seed}"
    tests = _entries(spec, spec.dataset, spec.options, "", "test", spec.size)
    shots = _entries(spec, spec.dataset, spec.options, "", "shot", SHOTS)
    return spec.name, ([_record(f"{stem}-{i:03d}", "test", spec.source, e) for i, e in enumerate(tests)]
                       + [_record(f"{stem}-shot{i}", "shot", spec.source, e) for i, e in enumerate(shots)])


def _mix(spec: Spec) -> List[Dict[str, Any]]:
    """MIX interleaved: task i is part i % len(MIX), its item i // len(MIX)."""
    counts = [len(range(k, spec.size, len(MIX))) for k in range(len(MIX))]
    tests = [_entries(spec, p.dataset, p.options, p.tag, "test", n) for p, n in zip(MIX, counts)]
    records = []
    for i in range(spec.size):
        part, j = MIX[i % len(MIX)], i // len(MIX)
        records.append(_record(f"rg-mix-{part.dataset}-{part.tag}-seed{spec.seed}-{j:03d}", "test",
                               source_of(part.dataset, part.options), tests[i % len(MIX)][j]))
    for k, part in enumerate(MIX[:SHOTS]):
        entry = _entries(spec, part.dataset, part.options, part.tag, "shot", 1)[0]
        records.append(_record(f"rg-mix-{part.dataset}-{part.tag}-seed{spec.seed}-shot{k}", "shot",
                               source_of(part.dataset, part.options), entry))
    return records


_VERIFIERS: Dict[str, Any] = {}


def verify(source: str, entry: Mapping[str, Any], answer: Optional[str]) -> float:
    """reasoning-gym's score in [0, 1] of ``answer`` for ``entry``, by the dataset named in
    ``source`` (made once per source with its options). No answer, or a verifier that fails on
    an odd answer, scores 0."""
    if answer is None:
        return 0.0
    if source not in _VERIFIERS:
        spec = check_source(source)
        _rg, datasets = _reasoning_gym()
        _check_options(datasets, spec)
        _VERIFIERS[source] = _reasoning_gym()[0].create_dataset(spec.dataset, seed=0, size=1, **dict(spec.options))
    try:
        return float(_VERIFIERS[source].score_answer(answer, dict(entry)))
    except Exception:  # third-party code on arbitrary model output: a crash is a wrong answer
        return 0.0
