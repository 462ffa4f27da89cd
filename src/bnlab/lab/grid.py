"""The run grid: an ordered mapping of parameter lists, expanded into named runs.

The seed's RunBuilder idea (``itertools.product`` over ``OrderedDict`` values), with each
parameter typed and checked, and each run named by the parameters that vary (so a name says
what distinguishes the run): ``bn,seed=1``. The *group* is the name without the seed: the runs
that are averaged together (mean and 95% CI over seeds).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields
from typing import Any

from bnlab.lab.data import DATASETS, NORMALIZATIONS
from bnlab.lab.models import BN_IMPLS, NETWORKS

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class RunParams:
    """The parameters of one run (a column each in the record)."""

    network: str = "lizard-cnn"  # a key of bnlab.lab.models.NETWORKS
    bn: bool = True  # the network's BN variant (True) or the plain one (False)
    bn_impl: str = "bnlab"  # "bnlab" (bnlab's layers) or "torch" (torch.nn.BatchNorm*)
    dataset: str = "fashion-mnist"  # a key of bnlab.lab.data.DATASETS
    normalization: str = "none"  # "none" | "normal" (training set mean/std) | "fixed"
    optimizer: str = "adam"  # "adam" | "sgd"
    lr: float = 0.01  # learning rate
    momentum: float = 0.0  # SGD momentum (unused by Adam)
    batch_size: int = 1000  # training batch size; the last batch may be smaller
    epochs: int = 5  # epochs to train
    seed: int = 0  # torch.manual_seed before building the model; also the shuffle seed


PARAM_TYPES: dict[str, type] = {f.name: type(f.default) for f in fields(RunParams)}
_CHOICES: dict[str, tuple[str, ...]] = {
    "network": tuple(NETWORKS),
    "bn_impl": tuple(BN_IMPLS),
    "dataset": DATASETS,
    "normalization": NORMALIZATIONS,
    "optimizer": OPTIMIZERS,
}


def check_value(key: str, value: Any, where: str = "grid") -> Any:
    """Check one parameter value's type and range; ints are accepted for floats."""
    if key not in PARAM_TYPES:
        raise ValueError(
            f"unknown parameter {key!r} in {where}; expected one of {', '.join(PARAM_TYPES)}"
        )
    kind = PARAM_TYPES[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise TypeError(
            f"parameter {key!r} in {where} must be {kind.__name__}, got "
            f"{type(value).__name__} {value!r}"
        )
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ValueError(
            f"parameter {key!r} in {where} must be one of {', '.join(_CHOICES[key])}, got {value!r}"
        )
    if key in ("lr", "batch_size", "epochs") and value <= 0:
        raise ValueError(f"parameter {key!r} in {where} must be > 0, got {value!r}")
    if key in ("momentum", "seed") and value < 0:
        raise ValueError(f"parameter {key!r} in {where} must be >= 0, got {value!r}")
    return value


def check_grid(grid: dict[str, Any], where: str = "grid") -> dict[str, list[Any]]:
    """Validate a grid; a scalar is shorthand for a one-element list. Order is kept."""
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise ValueError(f"parameter {key!r} in {where} has an empty list of values")
        out[key] = [check_value(key, v, where) for v in values]
        if len(set(map(repr, out[key]))) != len(out[key]):
            raise ValueError(f"parameter {key!r} in {where} lists a value twice: {values}")
    return out


@dataclass(frozen=True)
class Run:
    index: int  # 1-based, grid order
    name: str
    group: str
    params: RunParams

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.params)


def _label(key: str, value: Any) -> str:
    if key == "bn":
        return "bn" if value else "no_bn"
    return f"{key}={value}"


def expand(grid: dict[str, list[Any]], defaults: RunParams | None = None) -> list[Run]:
    """All combinations of ``grid`` (last key varies fastest), as named runs.

    Parameters absent from ``grid`` take ``defaults``' values.
    """
    grid = check_grid(grid)
    base = asdict(defaults or RunParams())
    keys = list(grid)
    varying = [k for k in keys if len(grid[k]) > 1]
    runs = []
    for index, combo in enumerate(itertools.product(*grid.values()), start=1):
        params = RunParams(**{**base, **dict(zip(keys, combo, strict=True))})
        values = dict(zip(keys, combo, strict=True))
        name = ",".join(_label(k, values[k]) for k in varying) or "run"
        group = ",".join(_label(k, values[k]) for k in varying if k != "seed") or "all"
        runs.append(Run(index=index, name=name, group=group, params=params))
    return runs
