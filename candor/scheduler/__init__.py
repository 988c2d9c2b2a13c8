"""Loaded models in runner processes, continuous batching, keep-alive, admission and counters."""

from candor.scheduler.handle import RequestHandle
from candor.scheduler.scheduler import LoadedModel, Scheduler, SchedulerConfig

__all__ = ["LoadedModel", "RequestHandle", "Scheduler", "SchedulerConfig"]
