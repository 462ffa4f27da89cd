"""Batch normalization across processes with torch.distributed (gloo on CPU, NCCL on GPU).

``SyncBatchNorm`` (layer), ``sync_batch_norm`` (functional) and ``convert_sync_batchnorm``
(model transform). ``python -m bnlab.bench.sync`` measures the synchronization overhead.
"""

from bnlab.distributed.convert import convert_sync_batchnorm
from bnlab.distributed.layer import SyncBatchNorm
from bnlab.distributed.sync_batch_norm import sync_batch_norm

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm", "sync_batch_norm"]
