"""Test-time strategies: how many samples to draw, how to pick the answer, when to stop.

One file per family: ``greedy``, ``consistency`` (sc, esc, bon), ``budget_forcing`` (bf);
``base`` holds what they share (``Config``, the vote, the registry, calibration's ``Draws``);
``confidence`` the signals a cascade reads off an answer.
Every strategy runs on a runner and returns by its deadline. Importing this package
registers them all, in this order (the CLI's choices and calibration's grid follow it).
"""

from .base import (SAMPLE_TEMPERATURE, SAMPLE_TOP_P, Config, Draws, Phase, Strategy, StrategyOutcome, Trial, strategy,
                   task_seed, vote, vote_decided)
from .greedy import Greedy
from .consistency import BestOfN, EarlyStoppingSelfConsistency, SelfConsistency  # noqa: I001 (registration order)
from .budget_forcing import FORCED_CLOSE_TOKENS, BudgetForcing
from .confidence import SIGNALS, Evidence, Signals, confident, signals

__all__ = [
    "SAMPLE_TEMPERATURE", "SAMPLE_TOP_P", "FORCED_CLOSE_TOKENS", "Config", "Draws", "Phase", "Strategy",
    "StrategyOutcome", "Trial", "strategy", "task_seed", "vote", "vote_decided",
    "Greedy", "SelfConsistency", "EarlyStoppingSelfConsistency", "BestOfN", "BudgetForcing",
    "SIGNALS", "Evidence", "Signals", "confident", "signals",
]
