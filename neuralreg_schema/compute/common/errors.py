"""Errors the trainers raise, one class each, shared by every trainer (never imports datajoint)."""
from __future__ import annotations


class TrainingError(RuntimeError):
    """Training failed (a non-finite loss or non-finite predictions); the message names the epoch,
    the step where known, and the cause. No result is returned for such a run."""


__all__ = ["TrainingError"]
