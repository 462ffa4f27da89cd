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

The names load on first use (PEP 562, as Scientific Python's SPEC 1 describes): ``import
bnlab`` imports neither torch nor Numba, so that ``bnlab --help`` answers at once; the first
name used (``bnlab.BatchNorm2d``, ``from bnlab import convert``, ``import bnlab.functional``)
imports torch and registers bnlab's dispatcher ops (``torch.ops.bnlab.*``). When torch is
already imported, ``import bnlab`` registers the ops at once, so ``import torch; import bnlab;
torch.jit.load(path)`` finds them; a process that imports bnlab before torch and only loads a
saved TorchScript or exported program imports ``bnlab.functional`` first.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as static tools see them; at run time they load on first use
    from bnlab import functional as functional
    from bnlab.distributed import SyncBatchNorm as SyncBatchNorm
    from bnlab.distributed import convert_sync_batchnorm as convert_sync_batchnorm
    from bnlab.layers import *  # noqa: F403
    from bnlab.transforms import *  # noqa: F403

__version__ = "0.1.0"

#: Where the top-level names live: every name in the module's ``__all__`` (the one list of its
#: public names), or only the names given.
_SOURCES: dict[str, tuple[str, ...] | None] = {
    "bnlab.layers": None,
    "bnlab.transforms": None,
    "bnlab.distributed": ("SyncBatchNorm", "convert_sync_batchnorm"),
}


def _public_names(module: str) -> tuple[str, ...]:
    only = _SOURCES[module]
    return only if only is not None else tuple(importlib.import_module(module).__all__)


def __getattr__(name: str) -> Any:
    """Load ``__all__``, a subpackage or a public name on first use, then keep it."""
    value: Any
    if name == "__all__":
        value = ["__version__", "functional", *(n for m in _SOURCES for n in _public_names(m))]
    elif name.startswith("_"):
        value = None
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        source = next((m for m in _SOURCES if name in _public_names(m)), None)
        value = None if source is None else getattr(importlib.import_module(source), name)
    if value is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})


if "torch" in sys.modules:  # torch's cost is paid already: make torch.ops.bnlab.* loadable now
    importlib.import_module(f"{__name__}.functional")
