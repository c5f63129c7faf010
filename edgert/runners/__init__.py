"""Backends: one runner per engine, all with the interface of ``base.Runner``."""

from .base import CancelToken, Deadline, GenerationResult, Runner, SamplingParams, runner_for

__all__ = ["CancelToken", "Deadline", "GenerationResult", "Runner", "SamplingParams", "runner_for"]
