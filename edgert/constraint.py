"""What shape an answer must have: a JSON schema, any JSON object, a regex, a list of
choices, or a grammar (Lark, or llama.cpp's GBNF converted to Lark).

A ``Constraint`` is plain data on a ``Request``; ``grammar()`` compiles it to an llguidance
grammar once, and ``check()`` refuses a constraint llguidance cannot build before any
generation runs. The runners turn the grammar into token masks (``runners/guidance.py``)
applied in edgert's own sampler, so every engine gets the same constraint.

JSON is generated compact (no whitespace between tokens) unless ``whitespace="flexible"``:
with flexible whitespace a weak model can spend its whole budget on spaces and newlines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Tuple

from .errors import BackendUnavailableError, UsageError

#: what a constraint may be, and what its ``value`` is for each kind
KINDS = {
    "json_schema": "a JSON schema (a dict, or its JSON text)",
    "json_object": "nothing (any JSON object)",
    "regex": "a regular expression (Rust regex syntax, as llguidance reads it)",
    "choices": "a list of strings, one of which is the whole answer",
    "lark": "a Lark grammar (llguidance's dialect)",
    "gbnf": "a GBNF grammar (llama.cpp's), converted to Lark",
}
WHITESPACE = ("compact", "flexible")
#: the largest constraint text accepted (a schema or grammar beyond this is a mistake or an attack)
MAX_CONSTRAINT_CHARS = 256 << 10


def _grammar_compiler():
    try:
        from llguidance import LLMatcher
    except ImportError:  # pragma: no cover - llguidance is a core dependency
        raise BackendUnavailableError("constrained decoding needs llguidance (an edgert dependency): reinstall edgert") from None
    return LLMatcher


@dataclass(frozen=True)
class Constraint:
    """An answer's required shape. Build with the class methods (``Constraint.json_schema(s)``...)."""

    kind: str
    value: Any = None
    whitespace: str = "compact"
    #: a short name for telemetry (a schema's title, the tool's name)
    name: Optional[str] = None
    _grammar: list = field(default_factory=list, compare=False, repr=False)  # memo of grammar()

    # ---------------------------------------------------------------- builders
    @classmethod
    def json_schema(cls, schema: Any, *, whitespace: str = "compact", name: Optional[str] = None) -> "Constraint":
        return cls("json_schema", schema, whitespace, name)

    @classmethod
    def json_object(cls, *, whitespace: str = "compact") -> "Constraint":
        return cls("json_object", None, whitespace)

    @classmethod
    def regex(cls, pattern: str) -> "Constraint":
        return cls("regex", pattern)

    @classmethod
    def choices(cls, options: Any) -> "Constraint":
        return cls("choices", tuple(options) if isinstance(options, (list, tuple)) else options)

    @classmethod
    def lark(cls, grammar: str) -> "Constraint":
        return cls("lark", grammar)

    @classmethod
    def gbnf(cls, grammar: str) -> "Constraint":
        return cls("gbnf", grammar)

    # ------------------------------------------------------------------ checks
    def describe(self) -> str:
        """One line for telemetry and messages."""
        return self.kind + (f" {self.name}" if self.name else "")

    def check(self) -> "Constraint":
        """Raise UsageError unless llguidance can build this constraint; return it."""
        if self.kind not in KINDS:
            raise UsageError(f"constraint kind must be one of {', '.join(KINDS)}, found {self.kind!r:.60}",
                             field="constraint")
        if self.whitespace not in WHITESPACE:
            raise UsageError(f"constraint whitespace must be compact or flexible, found {self.whitespace!r:.60}",
                             field="constraint")
        self.grammar()
        return self

    def grammar(self) -> str:
        """The llguidance grammar (JSON text), compiled and validated once."""
        if not self._grammar:
            grammar = self._compile()
            error = _grammar_compiler().validate_grammar(grammar)
            if error:
                raise UsageError(f"{self._what()} cannot be used as a constraint: {_first_line(error)}",
                                 field="constraint")
            self._grammar.append(grammar)
        return self._grammar[0]

    def _what(self) -> str:
        return {"json_schema": "the JSON schema", "regex": "the regex", "choices": "the choices",
                "lark": "the Lark grammar", "gbnf": "the GBNF grammar"}.get(self.kind, "the constraint")

    def _text(self, expected: str) -> str:
        if not isinstance(self.value, str) or not self.value.strip():
            raise UsageError(f"a {self.kind} constraint needs {expected}, found {self.value!r:.80}", field="constraint")
        if len(self.value) > MAX_CONSTRAINT_CHARS:
            raise UsageError(f"a {self.kind} constraint must be at most {MAX_CONSTRAINT_CHARS} characters, "
                             f"found {len(self.value)}", field="constraint")
        return self.value

    def _compile(self) -> str:
        matcher = _grammar_compiler()
        if self.kind == "json_object":
            return matcher.grammar_from_json_schema({"type": "object"}, defaults=self._json_options())
        if self.kind == "json_schema":
            schema = self.value
            if isinstance(schema, str):
                try:
                    schema = json.loads(schema)
                except ValueError as exc:
                    raise UsageError(f"a json_schema constraint must be JSON, found invalid text ({exc})",
                                     field="constraint") from None
            if not isinstance(schema, (dict, bool)):
                raise UsageError(f"a JSON schema must be an object (or true/false), found {type(schema).__name__}",
                                 field="constraint")
            text = json.dumps(schema)
            if len(text) > MAX_CONSTRAINT_CHARS:
                raise UsageError(f"a JSON schema must be at most {MAX_CONSTRAINT_CHARS} characters, found {len(text)}",
                                 field="constraint")
            try:
                return matcher.grammar_from_json_schema(text, defaults=self._json_options())
            except (ValueError, TypeError) as exc:
                raise UsageError(f"the JSON schema cannot be used: {_first_line(str(exc))}", field="constraint") from None
        if self.kind == "regex":
            return matcher.grammar_from_regex(self._text("a regular expression"))
        if self.kind == "choices":
            options = self.value
            if (not isinstance(options, tuple) or not options
                    or not all(isinstance(o, str) and o for o in options)):
                raise UsageError(f"a choices constraint needs a non-empty list of non-empty strings, "
                                 f"found {options!r:.80}", field="constraint")
            # a Lark alternation of literals (JSON string syntax is Lark's): no regex escaping to get wrong
            alternatives = " | ".join(json.dumps(o, ensure_ascii=False) for o in dict.fromkeys(options))
            return matcher.grammar_from_lark(f"start: {alternatives}\n")
        if self.kind == "lark":
            return matcher.grammar_from_lark(self._text("a Lark grammar"))
        from llguidance.gbnf_to_lark import gbnf_to_lark  # llguidance's converter (a module of the same package)
        try:
            lark = gbnf_to_lark(self._text("a GBNF grammar"))
        except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions for bad input
            raise UsageError(f"the GBNF grammar cannot be converted: {_first_line(str(exc))}", field="constraint") from None
        return matcher.grammar_from_lark(lark)

    def _json_options(self) -> dict:
        return {"whitespace_flexible": self.whitespace == "flexible"}


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "invalid"
    return line[:300]


def from_options(*, json_schema: Optional[Path] = None, regex: Optional[str] = None,
                 choices: Optional[str] = None, grammar: Optional[Path] = None,
                 names: Tuple[str, str, str, str] = ("json_schema", "regex", "choices", "grammar")) -> Optional[Constraint]:
    """The constraint of a front end's options (at most one): a JSON schema file, a regex,
    comma-separated choices, or a grammar file (``.gbnf`` is GBNF, anything else Lark).
    names: how the front end spells the options, for messages."""
    given = [(name, value) for name, value in zip(names, (json_schema, regex, choices, grammar)) if value is not None]
    if len(given) > 1:
        raise UsageError(f"give one constraint, found {' and '.join(name for name, _ in given)}", field="constraint")
    if json_schema is not None:
        return Constraint.json_schema(_read(json_schema, names[0]), name=Path(json_schema).stem).check()
    if regex is not None:
        return Constraint.regex(regex).check()
    if choices is not None:
        options = tuple(c.strip() for c in choices.split(",") if c.strip())
        return Constraint.choices(options).check()
    if grammar is not None:
        text = _read(grammar, names[3])
        return (Constraint.gbnf(text) if Path(grammar).suffix.lower() == ".gbnf" else Constraint.lark(text)).check()
    return None


def _read(path: Path, option: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option}: expected a readable UTF-8 file, found {path} ({exc.__class__.__name__})",
                         field="constraint") from None
