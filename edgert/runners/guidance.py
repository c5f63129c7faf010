"""Constrained decoding: llguidance's token masks in edgert's sampler, for every runner.

A ``Guide`` belongs to one loaded model: llguidance's tokenizer (built once; 0.2 s for a
49k vocabulary, about 1 s for 262k) and, per token, how well it serves to close an open
structure. ``Guide.sequence(constraint)`` gives one sequence its ``GuidedSequence``: the
matcher that masks the logits before each token is drawn and follows the tokens drawn.

**Valid by the deadline.** Two steps. When the end is near (``STEER_STEPS`` decode steps
of time, or ``CLOSE_LOOKAHEAD`` tokens of budget, left) the sequence *steers*: tokens that
close what is open (quotes, brackets) get ``STEER_BONUS`` added to their logits, so the
model finishes its values and closes them itself. When decoding must stop, the grammar
alone closes what is still open (``GuidedSequence.closing_path``): closing quotes and
brackets and the tokens the grammar forces (a required key), one mask computation per
token (well under a millisecond), not a decode step. The grammar never supplies a value
(a number, an enum member, a string): where one is still missing the answer stays
incomplete and says so (``satisfied`` is False), and the request's fallback applies. An
answer is never passed off as valid, and never made up by the grammar.
"""

from __future__ import annotations

import time
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..constraint import Constraint
from ..errors import BackendUnavailableError, GenerationError, UsageError

#: most tokens a structure may take to close once decoding stops (a bound, rarely reached)
MAX_CLOSE_TOKENS = 64
#: closing tokens whose masks decoding keeps time for (quotes and brackets of a few levels)
RESERVE_CLOSE_TOKENS = 16
#: while this few tokens of the budget are left, the runner checks whether closing still fits
CLOSE_LOOKAHEAD = 16
#: what a fresh sequence assumes one mask costs before it has measured one
FIRST_MASK_S = 0.002
#: steer toward closing when this many decode steps of time are left
STEER_STEPS = 8
#: added to the logits of closing tokens while steering (e^8: ~3000x likelier)
STEER_BONUS = 8.0

# token classes for closing (lower closes sooner): a token made only of JSON's closing characters;
# other punctuation; digits; any other text (shortest first); whitespace; special and empty
_CLOSERS = frozenset(b'"}]')
_PUNCT = frozenset(b",:[{'()")
_CLASS_COST = {"closer": 0, "punct": 1000, "digit": 2000, "text": 3000, "space": 4000, "special": 9000}
_REUSE_COST = 500  # taking the same token again while closing (keeps a repeating pattern from looping)


def _llguidance():
    try:
        import llguidance
    except ImportError:  # pragma: no cover - a core dependency
        raise BackendUnavailableError("constrained decoding needs llguidance (an edgert dependency): reinstall edgert") from None
    return llguidance


def closing_cost(piece: bytes, special: bool) -> int:
    """How well a token serves to close an open structure (lower is better)."""
    if special or not piece:
        return _CLASS_COST["special"]
    if piece.isspace():
        return _CLASS_COST["space"] + len(piece)
    if all(b in _CLOSERS for b in piece):
        # a quote first (inside a string, brackets are text, only a quote closes it); then
        # the longest: "}] closes more than " (the mask keeps out what would close too much)
        return _CLASS_COST["closer"] + (0 if piece[:1] == b'"' else 100) + 50 - min(len(piece), 49)
    if all(b in _PUNCT or b in _CLOSERS for b in piece):
        return _CLASS_COST["punct"] + len(piece)
    if piece.isdigit():
        return _CLASS_COST["digit"] + len(piece)
    return _CLASS_COST["text"] + len(piece)


class Guide:
    """llguidance's tokenizer for one model, and each token's closing cost."""

    def __init__(self, tokenizer, n_vocab: int, end_ids: Sequence[int], build_ms: float):
        self.tokenizer = tokenizer
        self.n_vocab = n_vocab  # the width of the logits (may exceed the tokenizer's vocabulary)
        self.end_ids = np.asarray(sorted(set(int(t) for t in end_ids if 0 <= t < n_vocab)), dtype=np.int64)
        self.build_ms = build_ms
        costs = np.full(n_vocab, _CLASS_COST["special"], dtype=np.int64)
        for token in range(min(n_vocab, tokenizer.vocab_size)):
            costs[token] = closing_cost(tokenizer.decode_bytes([token]), tokenizer.is_special_token(token))
        costs[self.end_ids] = _CLASS_COST["special"]
        self.costs = costs
        self.closers = costs < _CLASS_COST["punct"]  # tokens made only of closing characters
        #: closers and other punctuation (never a value): the only tokens a closing walk may add
        self.structural_ids = np.flatnonzero(costs < _CLASS_COST["digit"])

    @classmethod
    def from_llama_vocab(cls, vocab, n_vocab: int, end_ids: Sequence[int]) -> "Guide":
        """From a llama.cpp vocab (llguidance reads every piece and calls llama.cpp's tokenizer)."""
        started = time.perf_counter()
        from llguidance.llamacpp import lltokenizer_from_vocab  # needs llama_cpp, imported by the caller already

        with warnings.catch_warnings():  # it calls a llama.cpp binding deprecated in 0.3.x once per token
            warnings.simplefilter("ignore", DeprecationWarning)
            tokenizer = lltokenizer_from_vocab(vocab, n_vocab=n_vocab, eos_token=list(end_ids) or None)
        return cls(tokenizer, n_vocab, end_ids, (time.perf_counter() - started) * 1000)

    @classmethod
    def from_tokenizer_json(cls, text: str, n_vocab: int, end_ids: Sequence[int]) -> "Guide":
        """From a Hugging Face ``tokenizer.json`` (the exported models' runners)."""
        started = time.perf_counter()
        tokenizer = _llguidance().LLTokenizer(text, n_vocab=n_vocab, eos_token=list(end_ids) or None)
        return cls(tokenizer, n_vocab, end_ids, (time.perf_counter() - started) * 1000)

    def sequence(self, constraint: Constraint) -> "GuidedSequence":
        matcher = _llguidance().LLMatcher(self.tokenizer, constraint.grammar(), log_level=0)
        if matcher.is_error():
            raise UsageError(f"the {constraint.describe()} constraint cannot be used with this model: "
                             f"{matcher.get_error()[:300]}", field="constraint")
        return GuidedSequence(self, matcher)


class GuidedSequence:
    """One sequence's matcher: masks logits, follows tokens, closes at the end."""

    def __init__(self, guide: Guide, matcher):
        self.guide = guide
        self.matcher = matcher
        self.mask_ms: List[float] = []  # time of every mask computed and applied
        self.closed_tokens = 0  # tokens appended by closing_path() without the model
        self.steering = False  # favour closing tokens (the end is near)
        self._close_len: Optional[int] = None  # tokens the last closing walk took (near the budget)
        self._masked: Optional[np.ndarray] = None
        self._since_walk = 0

    # ------------------------------------------------------------- decoding
    def blocked(self, matcher=None) -> np.ndarray:
        """The tokens the grammar forbids next, as a boolean array as wide as the logits."""
        matcher = matcher or self.matcher
        n = self.guide.n_vocab
        bits = np.invert(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8))  # set bit: forbidden
        blocked = np.unpackbits(bits, bitorder="little", count=min(n, bits.size * 8)).view(bool)
        if blocked.size < n:  # ids beyond the tokenizer's vocabulary are never drawn
            blocked = np.concatenate([blocked, np.ones(n - blocked.size, dtype=bool)])
        blocked[self.guide.end_ids] = not matcher.is_accepting()  # every end token of the model, only when complete
        return blocked

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """Logits with every token the grammar forbids at -inf (timed into ``mask_ms``)."""
        started = time.perf_counter()
        blocked = self.blocked()
        if blocked.size != logits.size:  # logits padded beyond the tokenizer's vocabulary (never drawn)
            blocked = np.resize(blocked, logits.size) if blocked.size > logits.size else np.concatenate(
                [blocked, np.ones(logits.size - blocked.size, dtype=bool)])
        if self.matcher.is_error():  # a dead end: the grammar allows nothing (llguidance's error state)
            raise GenerationError(f"the constraint allows no token here: {self.matcher.get_error()[:200] or 'dead end'}")
        # into a buffer kept per sequence (a fresh 1 MB array per token costs page faults): the
        # engine's logits stay as they were; the sampler reads the result before the next mask
        if self._masked is None or self._masked.size != logits.size:
            self._masked = np.empty(logits.size, dtype=np.float32)
        masked = self._masked
        np.copyto(masked, logits)
        masked[blocked] = -np.inf
        if self.steering:
            closers = self.guide.closers if self.guide.closers.size == masked.size else np.resize(self.guide.closers, masked.size)
            masked[closers] += np.float32(STEER_BONUS)
        self.mask_ms.append((time.perf_counter() - started) * 1000)
        return masked

    def accept(self, token: int) -> None:
        """Follow a drawn token (the end tokens are not the grammar's: they only end the answer)."""
        if token in self.guide.end_ids:
            return
        started = time.perf_counter()
        ok = self.matcher.consume_token(token)
        self.mask_ms[-1:] = [self.mask_ms[-1] + (time.perf_counter() - started) * 1000] if self.mask_ms else []
        if not ok:
            raise GenerationError(f"the sampler drew token {token}, which the constraint forbids: "
                                  f"{self.matcher.get_error()[:200]}")

    @property
    def satisfied(self) -> bool:
        """Whether the text so far is a complete, valid answer."""
        return (not self.matcher.is_error()) and self.matcher.is_accepting()

    @property
    def finished(self) -> bool:
        """Whether the grammar allows nothing more (the answer is complete and must end)."""
        return self.matcher.is_stopped()

    def mask_s(self) -> float:
        """The median time of one mask, in seconds (a first guess before any)."""
        return float(np.median(self.mask_ms)) / 1000 if self.mask_ms else FIRST_MASK_S

    def close_reserve_s(self) -> float:
        """Time to keep back for closing: a typical closing walk at the measured mask time
        (a longer walk is cut at the deadline and the answer flagged, never late)."""
        return RESERVE_CLOSE_TOKENS * self.mask_s()

    # -------------------------------------------------------------- closing
    def _allowed_structural(self, matcher) -> np.ndarray:
        """The structural tokens the grammar allows next (bits read for those ids only: a few
        thousand, not the whole vocabulary)."""
        bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        ids = self.guide.structural_ids
        ids = ids[(ids >> 3) < bits.size]
        return ids[((bits[ids >> 3] >> (ids & 7).astype(np.uint8)) & 1).astype(bool)]

    def must_close(self, remaining: int, budget: int) -> bool:
        """Whether to close now, ``remaining`` tokens before the end of a ``budget``: in the
        last CLOSE_LOOKAHEAD tokens the sequence steers (once past half the budget), and
        closes when closing would only just fit. The closing walk is cached and redone
        every 4 tokens or when the end nears it, so it costs a few masks, not one per token."""
        if remaining > CLOSE_LOOKAHEAD:
            return False
        self.steering = self.steering or remaining <= budget // 2
        if self._close_len is not None and remaining > self._close_len + 2 and self._since_walk < 3:
            self._since_walk += 1
            return False
        path, complete = self.closing_path(remaining)
        self._close_len, self._since_walk = (len(path) if complete else remaining), 0
        return complete and len(path) >= remaining - 1

    def closing_path(self, limit: int = MAX_CLOSE_TOKENS, until: Optional[float] = None,
                     commit: bool = False) -> Tuple[List[int], bool]:
        """The tokens that close the open structure soonest, and whether they complete it.

        Only structure is added: closing and other punctuation, and tokens the grammar forces;
        where a value is still needed the walk stops, incomplete.
        limit: most tokens; until: a ``time.perf_counter()`` to stop by; commit: follow the
        tokens on this sequence's matcher (otherwise on a copy, leaving the sequence as it was)."""
        matcher = self.matcher if commit else self.matcher.deep_copy()
        path: List[int] = []
        costs = self.guide.costs
        while not matcher.is_accepting() and not matcher.is_error() and len(path) < limit:
            if until is not None and time.perf_counter() >= until:
                break
            forced = matcher.compute_ff_tokens()[: limit - len(path)]
            if forced:
                if matcher.consume_tokens(forced):
                    path += forced
                continue
            candidates = self._allowed_structural(matcher)
            if candidates.size == 0:
                break
            cost = costs[candidates] + _REUSE_COST * np.isin(candidates, path)
            token = int(candidates[int(np.argmin(cost))])
            if not matcher.consume_token(token):
                break
            path.append(token)
        complete = matcher.is_accepting() and not matcher.is_error()
        if commit:
            self.closed_tokens += len(path)
        return path, complete

