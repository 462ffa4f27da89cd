"""bnlab's layers (nn.Modules), each a thin wrapper over a functional op."""

from bnlab.layers._base import BatchNormBase
from bnlab.layers.batch_renorm import BatchRenorm1d, BatchRenorm2d, BatchRenorm3d, RenormSchedule
from bnlab.layers.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from bnlab.layers.batchnorm_act import BatchNormAct1d, BatchNormAct2d
from bnlab.layers.frozen import (
    FrozenBatchNorm1d,
    FrozenBatchNorm2d,
    FrozenBatchNorm3d,
    FrozenBatchNormAct1d,
    FrozenBatchNormAct2d,
)
from bnlab.layers.ghost import GhostBatchNorm1d, GhostBatchNorm2d, GhostBatchNorm3d
from bnlab.layers.masked import MaskedBatchNorm1d

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchNormAct1d",
    "BatchNormAct2d",
    "BatchNormBase",
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
    "RenormSchedule",
]
