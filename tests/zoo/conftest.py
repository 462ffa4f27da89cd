"""Real architectures from timm and torchvision, for the model-zoo conformance suite.

PyPI's torchvision wheel is built against CUDA torch. Beside a CPU-only torch its compiled
operators (nms, roi_align, ...) fail to register at import ("operator torchvision::nms does not
exist"), while its pure-Python models, and timm, which imports torchvision, work. So
``zoo_libraries`` imports torchvision as is, and only when that import fails that way imports it
again with the two modules that register the compiled operators' meta and autograd kernels
replaced by empty ones. The zoo needs no compiled torchvision operator.

Without timm or torchvision installed (``pip install bnlab[zoo]``), the zoo tests are skipped,
saying why.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

_REGISTRATION_MODULES = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def _import_torchvision() -> Any:
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


@pytest.fixture(scope="session")
def zoo_libraries() -> tuple[Any, Any]:
    """(torchvision, timm), or skip with the reason."""
    try:
        torchvision = _import_torchvision()
        import timm
    except ImportError as error:
        pytest.skip(f"the model zoo needs timm and torchvision (pip install bnlab[zoo]): {error}")
    return torchvision, timm
