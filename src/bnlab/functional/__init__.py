"""Functional batch-norm ops (the layers are thin wrappers around these)."""

from bnlab.functional.batch_norm import batch_norm
from bnlab.functional.batch_norm_act import batch_norm_act
from bnlab.functional.batch_renorm import batch_renorm
from bnlab.functional.ghost_batch_norm import ghost_batch_norm
from bnlab.functional.masked_batch_norm import masked_batch_norm
from bnlab.functional.running_stats import update_running_stats

__all__ = [
    "batch_norm",
    "batch_norm_act",
    "batch_renorm",
    "ghost_batch_norm",
    "masked_batch_norm",
    "update_running_stats",
]
