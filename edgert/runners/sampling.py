"""Choosing the next token from logits, and turning chosen tokens into streamed text.

``TokenSampler`` is one sequence's sampler, the one place logits are changed before a
token is drawn: logit bias, presence and frequency penalties (OpenAI's definitions), the
constraint's mask (``guidance.py``), then ``sample``. ``sample`` draws one token (greedy at
temperature 0, else temperature and nucleus); it runs once per token over the whole
vocabulary, so it stays in float32 and avoids full sorts.
``StopDecoder`` decodes token bytes incrementally and holds back text that may begin a
stop string, so a stop string never reaches the caller.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .guidance import GuidedSequence
from .types import SamplingParams

NUCLEUS_CANDIDATES = 1024  # top-p looks at the most likely tokens first; full sort only if they fall short
#: temperatures below this decode greedily: the limit of sampling as T -> 0
GREEDY_BELOW = 1e-4
MAX_MARGIN = 1e4  # a margin this large means "certain" (also stands in for an infinite one, as JSON has none)


def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator):
    """Pick the next token; return it with its log-probability under the model.

    This runs once per token over the whole vocabulary (262k entries for Gemma 3), so it
    stays in float32 and avoids sorting the vocabulary."""
    shifted = logits - logits.max()
    log_norm = math.log(float(np.exp(shifted).sum(dtype=np.float64)))
    if temperature < GREEDY_BELOW:  # (1e-300 would be 0 in float32, and 0/0 no distribution at all)
        token = int(np.argmax(shifted))
        return token, float(shifted[token]) - log_norm
    probs = np.exp(shifted / temperature)
    probs /= probs.sum(dtype=np.float64)
    if top_p < 1.0:
        k = min(NUCLEUS_CANDIDATES, probs.size)
        while True:  # widen the candidate set (linear-time partitions) until it holds top_p of the mass
            candidates = np.argpartition(probs, probs.size - k)[probs.size - k:]
            if k == probs.size or probs[candidates].sum(dtype=np.float64) >= top_p:
                break
            k = min(8 * k, probs.size)
        order = candidates[np.argsort(-probs[candidates], kind="stable")]
        cumulative = np.cumsum(probs[order], dtype=np.float64)
        keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
        weights = np.cumsum(probs[keep], dtype=np.float64)
    else:
        keep = None
        weights = np.cumsum(probs)  # float32 is precise enough to place one uniform draw
    index = min(int(np.searchsorted(weights, rng.random() * weights[-1], side="right")), weights.size - 1)
    token = int(keep[index]) if keep is not None else index
    return token, float(shifted[token]) - log_norm


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - math.log(float(np.exp(shifted).sum(dtype=np.float64)))


def top_tokens(logits: np.ndarray, k: int) -> List[Tuple[int, float]]:
    """The k most likely tokens with their log-probabilities, most likely first."""
    k = min(k, logits.size)
    if k <= 0:
        return []
    logp = log_softmax(logits)
    top = np.argpartition(logp, logp.size - k)[logp.size - k:]
    top = top[np.argsort(-logp[top], kind="stable")]
    return [(int(t), float(logp[t])) for t in top if math.isfinite(logp[t])]


class TokenSampler:
    """One sequence's choice of the next token under its request's sampling settings.

    The log-probability reported for a token is under the distribution it was drawn from
    (after bias, penalties and the constraint's mask; before temperature)."""

    def __init__(self, params: SamplingParams, rng: np.random.Generator, is_end: Callable[[int], bool],
                 guided: Optional[GuidedSequence] = None):
        self.params = params
        self.rng = rng
        self.is_end = is_end
        self.guided = guided
        self.counts: Dict[int, int] = {}  # tokens drawn so far (penalties)
        bias = params.logit_bias or {}
        self._bias_ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
        self._bias = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
        #: per token drawn, the most likely alternatives (when params.top_logprobs is set)
        self.alternatives: List[List[Tuple[int, float]]] = []

    def adjusted(self, logits: np.ndarray) -> np.ndarray:
        p = self.params
        if self._bias_ids.size or (self.counts and (p.presence_penalty or p.frequency_penalty)):
            logits = logits.copy()
            if self._bias_ids.size:
                ok = self._bias_ids < logits.size
                logits[self._bias_ids[ok]] += self._bias[ok]
            if self.counts and (p.presence_penalty or p.frequency_penalty):
                ids = np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts))
                counts = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
                logits[ids] -= p.presence_penalty + p.frequency_penalty * counts
        if self.guided is not None:
            logits = self.guided.mask(logits)
        return logits

    def pick(self, logits: np.ndarray) -> Tuple[int, float]:
        """Draw the next token; return it with its log-probability."""
        p = self.params
        logits = self.adjusted(logits)
        token, logprob = sample(logits, p.temperature, p.top_p, self.rng)
        if p.ignore_eos and self.is_end(token) and (self.guided is None or not self.guided.satisfied):
            logits = logits.copy()
            while self.is_end(token) and np.isfinite(logits).sum() > 1:
                logits[token] = -np.inf
                token, logprob = sample(logits, p.temperature, p.top_p, self.rng)
        if p.top_logprobs:
            self.alternatives.append(top_tokens(logits, p.top_logprobs))
        return token, logprob

    def accept(self, token: int) -> None:
        """The token drawn joins the sequence (penalties count it; the constraint follows it)."""
        self.counts[token] = self.counts.get(token, 0) + 1
        if self.guided is not None:
            self.guided.accept(token)


def top2_margin(logits: np.ndarray) -> float:
    """The most likely token's logit minus the runner-up's: the gap of their log-probabilities
    (a confidence signal; one linear-time partition)."""
    if logits.size < 2:
        return MAX_MARGIN
    top = np.partition(logits, logits.size - 2)[logits.size - 2:]
    gap = float(top[1] - top[0])
    return min(gap, MAX_MARGIN) if math.isfinite(gap) else MAX_MARGIN


class StopDecoder:
    """Turns token ids into text incrementally, holding back text that might start a stop string.

    Bytes are decoded as UTF-8 only when complete, so multi-byte characters split across
    tokens are emitted whole.
    """

    def __init__(self, stop: Sequence[str], detokenize: Callable[[Sequence[int]], bytes]):
        self.stop = list(stop)
        self.detokenize = detokenize
        self.pending = b""
        self.text = ""  # emitted so far
        self.held = ""  # decoded but not yet emitted (may be a stop-string prefix)

    def push(self, token: int):
        self.pending += self.detokenize([token])
        try:
            new = self.pending.decode("utf-8")
            self.pending = b""
        except UnicodeDecodeError as exc:
            if exc.start == 0 and len(self.pending) - exc.start < 4:
                return "", False
            new = self.pending.decode("utf-8", errors="replace")
            self.pending = b""
        candidate = self.held + new
        for stop in self.stop:
            index = candidate.find(stop)
            if index >= 0:
                piece = candidate[:index]
                self.text += piece
                self.held = ""
                return piece, True
        hold = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(candidate)), 0, -1):
                if candidate.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        piece = candidate[: len(candidate) - hold]
        self.held = candidate[len(candidate) - hold :]
        self.text += piece
        return piece, False

    def flush(self) -> str:
        tail = self.held + (self.pending.decode("utf-8", errors="replace") if self.pending else "")
        self.held, self.pending = "", b""
        self.text += tail
        return tail
