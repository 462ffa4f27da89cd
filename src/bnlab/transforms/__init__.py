"""Model transforms: functions that take a model and return the transformed model."""

from bnlab.transforms.convert import convert
from bnlab.transforms.insert import insert_batchnorm

__all__ = ["convert", "insert_batchnorm"]
