"""Confidence signals of an answer: what a cascade looks at to decide whether to escalate.

Computed the same way from a calibration replay (the first ``k`` tokens of a longer
generation) and from a real run, so a threshold fitted on calibration records means the
same thing at run time:

- ``lp_mean``: mean token log-probability of the answer text (of the samples that gave the
  winning answer, averaged);
- ``lp_min``: the lowest token log-probability in it (one unsure token);
- ``margin``: logit gap between the most likely first token and the runner-up (how sure the
  model was where the answer starts);
- ``agreement``: share of the samples that gave the winning answer (multi-sample only).

A signal is None where it does not exist (no answer, no tokens, one sample for agreement); a
cascade treats None as "not confident".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

SIGNALS = ("lp_mean", "lp_min", "margin", "agreement")

Signals = Dict[str, Optional[float]]


@dataclass(frozen=True)
class Evidence:
    """One sample as confidence sees it: its extracted answer, its token log-probabilities
    and its first-token margin."""

    answer: Optional[str]
    logprobs: Sequence[float]
    margin: Optional[float]


def signals(samples: Sequence[Evidence], winner: Optional[str]) -> Signals:
    """The confidence signals of ``winner`` given the samples it was chosen from."""
    out: Signals = {name: None for name in SIGNALS}
    backing = [s for s in samples if winner is not None and s.answer == winner]
    if not backing:
        return out
    with_tokens = [s for s in backing if len(s.logprobs) > 0]
    if with_tokens:
        out["lp_mean"] = round(sum(sum(s.logprobs) / len(s.logprobs) for s in with_tokens) / len(with_tokens), 4)
        out["lp_min"] = round(sum(min(s.logprobs) for s in with_tokens) / len(with_tokens), 4)
    margins = [s.margin for s in backing if s.margin is not None]
    if margins:
        out["margin"] = round(sum(margins) / len(margins), 4)
    if len(samples) > 1:
        out["agreement"] = round(len(backing) / len(samples), 4)
    return out


def confident(value: Optional[float], threshold: float) -> bool:
    """Whether a signal clears a cascade's threshold (a missing signal never does)."""
    return value is not None and value >= threshold
