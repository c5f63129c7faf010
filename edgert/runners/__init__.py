"""Backends: one runner per engine, all with the interface of ``base.Runner``."""

from .base import Runner
from .registry import open_runner, runner_for
from .types import CancelToken, Deadline, GenerationResult, SamplingParams

__all__ = ["CancelToken", "Deadline", "GenerationResult", "Runner", "SamplingParams", "open_runner", "runner_for"]
