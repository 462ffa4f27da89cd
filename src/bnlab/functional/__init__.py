"""Functional batch-norm ops (the layers are thin wrappers around these)."""

from bnlab.functional.batch_norm import batch_norm
from bnlab.functional.running_stats import update_running_stats

__all__ = ["batch_norm", "update_running_stats"]
