"""bnlab: batch normalization for PyTorch, written from scratch, and a lab to study it.

Public API::

    bnlab.BatchNorm1d / BatchNorm2d / BatchNorm3d   drop-in for torch.nn.BatchNorm*
    bnlab.functional.batch_norm                      drop-in for torch.nn.functional.batch_norm
    bnlab.convert(model, to="bnlab" | "torch")       swap every BN layer of a model
"""

from bnlab import functional
from bnlab.layers import BatchNorm1d, BatchNorm2d, BatchNorm3d
from bnlab.transforms import convert

__version__ = "0.1.0"

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "__version__",
    "convert",
    "functional",
]
