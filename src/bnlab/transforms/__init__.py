"""Model transforms: functions that take a model and return the transformed model."""

from bnlab.transforms.convert import convert
from bnlab.transforms.fold import fold_batchnorm
from bnlab.transforms.freeze import freeze, unfreeze
from bnlab.transforms.insert import insert_batchnorm
from bnlab.transforms.recalibrate import recalibrate

__all__ = [
    "convert",
    "fold_batchnorm",
    "freeze",
    "insert_batchnorm",
    "recalibrate",
    "unfreeze",
]
