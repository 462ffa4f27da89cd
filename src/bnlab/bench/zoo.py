"""Importing the model zoo's libraries, torchvision and timm, beside a CPU-only torch.

PyPI's torchvision wheel is built against CUDA torch. Beside a CPU-only torch its compiled
operators (nms, roi_align, ...) fail to register at import ("operator torchvision::nms does not
exist"), while its pure-Python models, and timm, which imports torchvision, work. So
``import_torchvision`` imports torchvision as is, and only when that import fails that way
imports it again with the two modules that register the compiled operators' meta and autograd
kernels replaced by empty ones. The zoo's models need no compiled torchvision operator.

Used by the real-model benchmark (``bnlab.bench.models``) and the model-zoo tests.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["import_torchvision", "import_zoo"]

_REGISTRATION_MODULES = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def import_torchvision() -> Any:
    """torchvision, imported as described in the module docstring (ImportError if missing)."""
    try:
        import torchvision
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        for name in _REGISTRATION_MODULES:
            sys.modules[name] = types.ModuleType(name)
        import torchvision
    return torchvision


def import_zoo() -> tuple[Any, Any]:
    """(torchvision, timm); ImportError if either is missing (``pip install bnlab[zoo]``)."""
    torchvision = import_torchvision()
    import timm

    return torchvision, timm
