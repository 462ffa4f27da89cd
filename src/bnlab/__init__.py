"""bnlab: batch normalization for PyTorch, written from scratch, and a lab to study it.

Public API::

    bnlab.BatchNorm1d / BatchNorm2d / BatchNorm3d   drop-in for torch.nn.BatchNorm*
    bnlab.functional.batch_norm                      drop-in for torch.nn.functional.batch_norm
    bnlab.BatchNormAct1d/2d, functional.batch_norm_act   BN + ReLU/SiLU fused in one op
    bnlab.convert(model, to="bnlab" | "torch")       swap every BN layer of a model
    bnlab.insert_batchnorm(model, where=...)         add BN after every Linear/Conv
    bnlab.SyncBatchNorm                              BN synchronized over torch.distributed
    bnlab.convert_sync_batchnorm(model)              every BN layer -> SyncBatchNorm
    bnlab.BatchRenorm* / GhostBatchNorm* / MaskedBatchNorm1d / FrozenBatchNorm*   the BN family
    bnlab.fold_batchnorm / freeze / unfreeze / recalibrate   deployment and fine-tuning tools
    bnlab.keras.BatchNormalization                   Keras 3 layer (torch backend), imported apart
"""

from bnlab import functional
from bnlab.distributed import SyncBatchNorm, convert_sync_batchnorm
from bnlab.layers import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    BatchNormAct1d,
    BatchNormAct2d,
    BatchRenorm1d,
    BatchRenorm2d,
    BatchRenorm3d,
    FrozenBatchNorm1d,
    FrozenBatchNorm2d,
    FrozenBatchNorm3d,
    FrozenBatchNormAct1d,
    FrozenBatchNormAct2d,
    GhostBatchNorm1d,
    GhostBatchNorm2d,
    GhostBatchNorm3d,
    MaskedBatchNorm1d,
)
from bnlab.transforms import (
    convert,
    fold_batchnorm,
    freeze,
    insert_batchnorm,
    recalibrate,
    unfreeze,
)

__version__ = "0.1.0"

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchNormAct1d",
    "BatchNormAct2d",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "FrozenBatchNorm1d",
    "FrozenBatchNorm2d",
    "FrozenBatchNorm3d",
    "FrozenBatchNormAct1d",
    "FrozenBatchNormAct2d",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "GhostBatchNorm3d",
    "MaskedBatchNorm1d",
    "SyncBatchNorm",
    "__version__",
    "convert",
    "convert_sync_batchnorm",
    "fold_batchnorm",
    "freeze",
    "functional",
    "insert_batchnorm",
    "recalibrate",
    "unfreeze",
]
