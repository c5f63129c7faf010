"""Answer extraction, normalization and scoring for calibration task sets.

Small models answer in free text ("The answer is 7 apples.", "B) Paris", "I think (c)").
``extract_answer`` pulls the answer out of such text and never raises on odd output (it
returns None when nothing is found); ``normalize_answer`` gives the canonical form used
for voting and scoring; ``is_correct`` compares a prediction with the gold answer.
"""

from __future__ import annotations

import re
import string
from decimal import Decimal, InvalidOperation
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from .chat_template import ThinkingFormat
from .errors import UsageError

ANSWER_TYPES = ("number", "choice", "text", "regex")
DEFAULT_CHOICE_LETTERS = "ABCD"

NUMBER_WORDS = {
    word: index
    for index, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}

_MINUS = "\u2212\u2013"  # unicode minus and en dash, both seen as minus signs in model output
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_WORDS = r"\b(?:" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")\b"
_NUMBER = re.compile(rf"(?P<sign>[-{_MINUS}])?(?:\$\s?)?(?P<digits>{_DIGITS})")
_NUMBER_WORD = re.compile(_WORDS, re.IGNORECASE)
_ANY_NUMBER = re.compile(rf"[-{_MINUS}]?(?:\$\s?)?{_DIGITS}|{_WORDS}", re.IGNORECASE)

#: answer markers, strongest tier first; within a tier the last occurrence wins
_NUMBER_MARKERS = (
    re.compile(r"\\boxed\{([^{}]*)\}"),
    re.compile(r"(?:####|\banswer\s*(?:is|:|=|would be|will be))\s*:?\s*([^\n]*)", re.IGNORECASE),
    re.compile(r"=\s*([^\n=]*)"),
)
_TEXT_MARKER = re.compile(r"\b(?:the\s+)?answer\s*(?:is|:)\s*:?\s*(.*)", re.IGNORECASE)
_CHOICE_MARKER = re.compile(
    r"\b(?:answer|correct (?:option|choice)|option|choice)\s*(?:is|:|would be|will be)?\s*:?\s*"
    r"(?:option|choice|letter)?\s*[(\[]?([A-Za-z])(?![A-Za-z])",
    re.IGNORECASE,
)
# "(B)", "[b]", or an upper-case letter followed by ) . : or the end of the line
_CHOICE_FORMATTED = re.compile(r"[(\[]([A-Za-z])[)\]]|(?<![A-Za-z])([A-Z])(?:[).:]|\s*$)", re.MULTILINE)
# a base model continuing the few-shot pattern writes the next question itself
_CONTINUATION = re.compile(r"\n\s*(?:Question|Q)\s*:", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation + "\u2018\u2019\u201c\u201d"})


def _check_kind(kind: str) -> None:
    if kind not in ANSWER_TYPES:
        raise UsageError(f"answer type must be one of {', '.join(ANSWER_TYPES)}; found {kind!r}")


def choice_letters(choices: Optional[Sequence[str]]) -> str:
    """The letters that name the options: A–D by default, else one per choice."""
    if not choices:
        return DEFAULT_CHOICE_LETTERS
    if len(choices) > 26:
        raise UsageError(f"at most 26 choices can be named by letters; found {len(choices)}")
    return string.ascii_uppercase[: len(choices)]


def extract_answer(
    text: str,
    kind: str,
    *,
    choices: Optional[Sequence[str]] = None,
    pattern: Optional[str] = None,
) -> Optional[str]:
    """The answer in a model's output, in the form it was written; None if there is none."""
    _check_kind(kind)
    if kind == "regex":
        if not pattern:
            raise UsageError("answer type 'regex' needs a pattern; found none")
        compiled = _compile(pattern)
    letters = choice_letters(choices) if kind == "choice" else ""
    if not isinstance(text, str):
        return None
    text = _CONTINUATION.split(text, maxsplit=1)[0]
    if kind == "number":
        return _extract_number(text)
    if kind == "choice":
        return _extract_choice(text, letters, choices)
    if kind == "text":
        return _extract_text(text)
    match = compiled.search(text)
    if match is None:
        return None
    return match.group(1) if compiled.groups else match.group(0)


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"answer pattern must be a valid regular expression; {pattern!r}: {exc}") from None


def _numbers(text: str) -> list:
    """Numbers in text as canonical strings, in order; a '-' right after a word or digit is
    a hyphen or a subtraction, not a sign."""
    found = []
    for match in _NUMBER.finditer(text):
        sign = match.group("sign")
        start = match.start()
        if sign and start > 0 and (text[start - 1].isalnum() or text[start - 1] in ")]"):
            sign = None
        found.append(_canonical_number(("-" if sign else "") + match.group("digits")))
    return found


def _first_number(fragment: str) -> Optional[str]:
    match = _ANY_NUMBER.search(fragment)
    if match is None:
        return None
    numbers = _numbers(fragment[match.start():match.end()]) or [str(NUMBER_WORDS[match.group(0).lower()])]
    return numbers[0]


def _extract_number(text: str) -> Optional[str]:
    for marker in _NUMBER_MARKERS:
        for match in reversed(list(marker.finditer(text))):
            fragment = re.split(r"(?<=[.!?])\s|;", match.group(1), maxsplit=1)[0]
            number = _first_number(fragment)
            if number is not None:
                return number
    numbers = _numbers(text)
    if numbers:
        return numbers[-1]
    words = _NUMBER_WORD.findall(text)
    return str(NUMBER_WORDS[words[-1].lower()]) if words else None


def _extract_choice(text: str, letters: str, choices: Optional[Sequence[str]]) -> Optional[str]:
    for match in _CHOICE_MARKER.finditer(text):
        letter = match.group(1).upper()
        # "the answer is a mammal": an 'a' followed by a lower-case word is an article
        if letter in letters and not (letter == "A" and re.match(r"\s+[a-z]", text[match.end():])):
            return letter
        if choices:
            by_text = _choice_by_text(text[match.start(1):], letters, choices)
            if by_text:
                return by_text
    formatted = []
    for match in _CHOICE_FORMATTED.finditer(text):
        letter = (match.group(1) or match.group(2)).upper()
        if letter in letters:
            formatted.append(letter)
    if len(letters) > 1 and set(formatted) >= set(letters):
        return None  # an echo of every option, without a marked answer, answers nothing
    if formatted:
        return formatted[0]
    if choices:
        return _choice_by_text(text, letters, choices)
    return None


def _choice_by_text(text: str, letters: str, choices: Sequence[str]) -> Optional[str]:
    """The letter of the choice whose text appears first (longest wins at a tie)."""
    lowered = text.lower()
    best = None
    for letter, choice in zip(letters, choices):
        needle = str(choice).strip()
        if not needle:
            continue
        # short options ("Fe", "S") must match in case; longer ones in any case
        haystack = text if len(needle) <= 2 else lowered
        needle = needle if len(needle) <= 2 else needle.lower()
        match = re.search(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", haystack)
        if match and (best is None or (match.start(), -len(needle)) < best[0]):
            best = ((match.start(), -len(needle)), letter)
    return best[1] if best else None


def _extract_text(text: str) -> Optional[str]:
    marked = [m.group(1) for m in _TEXT_MARKER.finditer(text)]
    lines = [line for line in text.splitlines() if not _bare_marker(line)]
    for candidate in marked + lines:
        sentence = re.split(r"(?<=[.!?])\s", candidate.strip(), maxsplit=1)[0].strip()
        if normalize_answer(sentence, "text"):
            return sentence
    return None


def _bare_marker(line: str) -> bool:
    match = _TEXT_MARKER.match(line.strip())
    return match is not None and not match.group(1).strip()


def _canonical_number(value: str) -> Optional[str]:
    cleaned = value.strip().lower().replace(",", "").replace("$", "").replace(" ", "")
    for minus in _MINUS:
        cleaned = cleaned.replace(minus, "-")
    cleaned = cleaned.rstrip(".")
    if cleaned.lstrip("-") in NUMBER_WORDS:
        number = Decimal(NUMBER_WORDS[cleaned.lstrip("-")]) * (-1 if cleaned.startswith("-") else 1)
    else:
        try:
            number = Decimal(cleaned)
        except InvalidOperation:
            return None
    if not number.is_finite():
        return None
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def normalize_answer(value: str, kind: str) -> str:
    """The canonical form of an answer, used for voting and scoring.

    number: "1,234" -> "1234", "4.0" -> "4", "$12" -> "12"; choice: upper-case letter;
    text: lower case without punctuation, articles or extra whitespace; regex: stripped.
    """
    _check_kind(kind)
    value = str(value)
    if kind == "number":
        canonical = _canonical_number(value)
        return canonical if canonical is not None else value.strip().lower()
    if kind == "choice":
        return value.strip().strip("()[].:").strip().upper()
    if kind == "text":
        lowered = value.lower().translate(_PUNCTUATION)
        return " ".join(_ARTICLES.sub(" ", lowered).split())
    return value.strip()


def is_number(value: str) -> bool:
    """Whether a string is a number in a form ``normalize_answer`` understands."""
    return _canonical_number(str(value)) is not None


def is_correct(predicted: Optional[str], gold: str, kind: str) -> bool:
    """Whether an extracted answer equals the gold one after normalization."""
    _check_kind(kind)
    if predicted is None:
        return False
    return normalize_answer(predicted, kind) == normalize_answer(gold, kind)


@dataclass
class AnswerSpec:
    """What kind of answer the request wants and how generation ends."""

    kind: Optional[str] = None  # number | choice | text | regex; None: the whole text is the answer
    choices: Tuple[str, ...] = ()
    pattern: Optional[str] = None
    stop: Tuple[str, ...] = ()
    thinking: Optional[ThinkingFormat] = None
    #: the answer's required shape (an ``edgert.constraint.Constraint``): the answer phase is
    #: decoded under it, and votes count only the samples that satisfy it
    constraint: Any = None

    def extract(self, text: str) -> Optional[str]:
        if self.kind is None and self.constraint is not None:
            return text.strip() or None  # the whole constrained text is the answer (JSON may span lines)
        if self.kind is None:
            first = text.strip().splitlines()[0] if text.strip() else ""
            return normalize_answer(first, "text") if first else None
        value = extract_answer(text, self.kind, choices=self.choices or None, pattern=self.pattern)
        return None if value is None else normalize_answer(value, self.kind)
