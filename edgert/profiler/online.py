"""The online half of the latency model: what the runtime learns while it serves.

The offline half (``roofline.py``, stored in a ``DeviceProfile``) predicts prefill and decode
times. A running device drifts from it (throttling, a busy CPU, a lower power mode), so
``LatencyCorrector`` compares every request's step records with the prediction and keeps:

- a correction factor per ``variant@threads`` (observed / predicted, smoothed), and per
  variant the largest one, used for thread counts not tried yet;
- the recent residuals per variant, whose spread (``sigma``) widens or narrows the
  planner's safety margin;
- the time an answer phase needs (``reserve_fn``), which budget forcing keeps free.

Corrections and spread belong to one *regime* of the device (``enter_state``: a power mode,
a governor, a throttled spell; ``edgert.devices.state.DeviceState.key``). When the regime
changes, the runtime switches to what it learned in the new one (or starts from the profile),
instead of averaging a throttled device with a cool one; going back restores the old regime's.

The helpers that scale a profile to another thread count (``at_threads``) and read its
prediction error (``profile_sigma``) live here too: the planner and the runtime share them.
"""

from __future__ import annotations

import math
from collections import deque
from statistics import NormalDist, median
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

from ..runners.types import StepRecord

#: weight of the newest observation in the online latency correction (per variant)
CORRECTION_ALPHA = 0.5
CORRECTION_RANGE = (0.25, 8.0)
#: how many observed requests the profile's sigma counts as (its weight against the runtime's
#: own observations), and how many recent observations the runtime keeps per variant
SIGMA_PRIOR_WEIGHT = 8
SIGMA_WINDOW = 64
#: observations needed before they count at all (fewer: a step change dominates the median)
SIGMA_MIN_OBSERVATIONS = 8
SIGMA_FLOOR = 0.05  # this machine's repeat-to-repeat spread of the same measurement is about 5%
IDLE_POWER_FRACTION = 0.1  # same load curve as devices.base.EstimatedSensor


def profile_sigma(profile, variant: str) -> float:
    """Relative standard deviation of the profile's predictions for a variant."""
    errors = profile.variant(variant).fit_error
    mapes = [errors.get(k, {}).get("mape_pct") for k in ("prefill_held_out", "decode_held_out")]
    mapes = [m for m in mapes if m is not None and math.isfinite(m)]
    if not mapes:
        return max(SIGMA_FLOOR, 0.25 if profile.kind == "prior" else SIGMA_FLOOR)
    return max(SIGMA_FLOOR, math.sqrt(math.pi / 2) * max(mapes) / 100)


def _load_power(load: float) -> float:
    return IDLE_POWER_FRACTION + (1 - IDLE_POWER_FRACTION) * load**3


def at_threads(profile, variant: str, threads: Optional[int]) -> Tuple[float, float, bool]:
    """(latency factor, average power W, whether scaled) of a variant run with ``threads``
    instead of the profiled count: fewer threads slow compute-bound steps in proportion and
    draw power along the estimate's load curve. Used by the planner and the runtime alike."""
    vp = profile.variant(variant)
    power = float(vp.energy.get("avg_power_w") or 0.0)
    if threads is None or threads == vp.threads:
        return 1.0, power, False
    cores = device_cores(profile)
    load_ratio = _load_power(threads / cores) / _load_power(vp.threads / cores) if cores else threads / vp.threads
    return vp.threads / threads, power * load_ratio, True


def device_cores(profile) -> Optional[int]:
    details = profile.device.get("details", {}) if isinstance(profile.device, dict) else {}
    cores = details.get("cores")
    return int(cores) if isinstance(cores, int) and cores > 0 else None


def thread_options(profile, variants: Sequence[str]) -> Dict[str, List[Optional[int]]]:
    """The thread counts the planner may choose for each variant: 1..profiled on CPUs."""
    out: Dict[str, List[Optional[int]]] = {}
    cpu = profile.device.get("kind") == "cpu" if isinstance(profile.device, dict) else False
    for name in variants:
        threads = profile.variant(name).threads
        out[name] = list(range(1, threads + 1)) if cpu and threads > 1 else [None]
    return out


class LatencyCorrector:
    """Corrections and latency spread learned from observed step times (see the module).

    profile: the DeviceProfile (None: nothing to correct, every method is a no-op);
    target: the probability with which a reserve must suffice."""

    def __init__(self, profile, target: float = 0.95):
        self.profile = profile
        self.target = target
        #: observed / predicted latency per "variant@threads" (1.0: as profiled); thread counts
        #: matter separately because on a busy CPU using every core suffers far more
        self.corrections: Dict[str, float] = {}
        #: per variant, recent log(observed / corrected prediction): the error the planner's
        #: latency bound must cover (see sigma())
        self.residuals: Dict[str, Deque[float]] = {}
        #: the regime the corrections belong to (None until the runtime names one), and what was
        #: learned in the other regimes seen
        self.state_key: Optional[str] = None
        self._other_states: Dict[str, Tuple[Dict[str, float], Dict[str, Deque[float]]]] = {}

    def enter_state(self, key: str) -> bool:
        """Make ``key`` the current regime; True when that changed it. The corrections learned
        so far stay with the regime they were learned in (the first key named adopts them)."""
        if self.state_key is None or key == self.state_key:
            self.state_key = key
            return False
        self._other_states[self.state_key] = (self.corrections, self.residuals)
        self.corrections, self.residuals = self._other_states.pop(key, ({}, {}))
        self.state_key = key
        return True

    def knows(self, variant: str) -> bool:
        return self.profile is not None and variant in self.profile.variants

    def reset(self) -> None:
        """Forget the corrections and the latency spread (back to the profile's models)."""
        self.corrections.clear()
        self.residuals.clear()
        self._other_states.clear()

    def planner_corrections(self) -> Dict[str, float]:
        """Corrections per variant@threads, plus per variant the largest one observed (used for
        thread counts not tried yet: assume the slowdown applies to them too)."""
        out = dict(self.corrections)
        for key, value in self.corrections.items():
            variant = key.rsplit("@", 1)[0]
            out[variant] = max(out.get(variant, 0.0), value)
        return out

    def correction(self, variant: str, threads: Optional[int]) -> float:
        return self.corrections.get(f"{variant}@{threads}", self.planner_corrections().get(variant, 1.0))

    def sigma(self, variant: str) -> float:
        """Relative standard deviation of the latency predictions for a variant.

        Starts as the profile's (from its held-out error) and moves to the spread seen here.
        The residuals are log(observed / corrected prediction) of the last SIGMA_WINDOW
        requests. From SIGMA_MIN_OBSERVATIONS of them on, their spread is the median absolute
        residual x 1.4826 (the standard deviation of a normal error with that median), pooled
        with the profile's figure weighted as SIGMA_PRIOR_WEIGHT requests. The median keeps
        the few residuals right after a step change in speed, which the correction absorbs
        within a few requests, from widening the margin for a whole window."""
        prior = profile_sigma(self.profile, variant)
        seen = self.residuals.get(variant) or ()
        if len(seen) < SIGMA_MIN_OBSERVATIONS:
            return prior
        observed = 1.4826 * median(abs(r) for r in seen)
        pooled = (SIGMA_PRIOR_WEIGHT * prior**2 + len(seen) * observed**2) / (SIGMA_PRIOR_WEIGHT + len(seen))
        return max(SIGMA_FLOOR, math.sqrt(pooled))

    def sigmas(self) -> Dict[str, float]:
        if self.profile is None:
            return {}
        return {name: self.sigma(name) for name in self.profile.variants}

    def thread_scale(self, variant: str, threads: Optional[int]) -> float:
        return at_threads(self.profile, variant, threads)[0]

    def observe(self, variant: str, threads: int, steps: Sequence[StepRecord]) -> None:
        """Compare one request's prefill and decode times with the profile's predictions and
        move the variant's correction factor toward the ratio."""
        if not self.knows(variant) or not steps:
            return
        observed = predicted = 0.0
        for record in steps:
            if record.kind.startswith("prefill"):
                if record.size < 1:
                    continue
                expected = self.profile.predict_prefill_ms(variant, record.size)
                if record.kind == "prefill-cut" and record.ms < expected:
                    continue  # a cut prefill only bounds the time from below: it can show a slowdown, not a speed-up
                predicted += expected
            else:
                predicted += self.profile.predict_decode_step_ms(variant, record.context, record.size)
            observed += record.ms
        if predicted <= 0 or observed <= 0:
            return
        ratio = observed / (predicted * self.thread_scale(variant, threads))
        ratio = min(max(ratio, CORRECTION_RANGE[0]), CORRECTION_RANGE[1])
        key = f"{variant}@{threads}"
        old = self.correction(variant, threads)
        if key in self.corrections:  # the first request only measures the profile's bias, not the spread
            self.residuals.setdefault(variant, deque(maxlen=SIGMA_WINDOW)).append(math.log(ratio / old))
        self.corrections[key] = math.exp((1 - CORRECTION_ALPHA) * math.log(old) + CORRECTION_ALPHA * math.log(ratio))

    def reserve_fn(self, variant: str, threads: int, context_tokens: int,
                   close_tokens: int) -> Optional[Callable[[int], float]]:
        """reserve_s(answer_tokens): the time an answer phase after ``context_tokens`` needs
        (a prefill of ``close_tokens``, then the answer), corrected and with the margin of the
        target probability; None when the profile does not know the variant."""
        if not self.knows(variant):
            return None
        z = NormalDist().inv_cdf(self.target)
        factor = self.correction(variant, threads) * self.thread_scale(variant, threads) * (1 + z * self.sigma(variant))
        profile = self.profile

        def reserve_s(answer_tokens: int) -> float:
            ms = (profile.predict_prefill_ms(variant, close_tokens)
                  + answer_tokens * profile.predict_decode_step_ms(variant, context_tokens + answer_tokens / 2))
            return ms * factor / 1000

        return reserve_s

    def estimate_energy(self, variant: str, threads: Optional[int], busy_ms: float) -> Tuple[Optional[float], str]:
        """Profile's average power (scaled for fewer threads) x time: an estimate, labelled so."""
        if not self.knows(variant):
            return None, "unknown"
        power = at_threads(self.profile, variant, threads)[1]
        return power * max(busy_ms, 0.0) / 1000, "estimated"
