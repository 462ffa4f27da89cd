"""Model transforms: functions that take a model and return the transformed model."""

from bnlab.transforms.convert import convert

__all__ = ["convert"]
