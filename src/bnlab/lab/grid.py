"""The run grid: an ordered mapping of parameter lists, expanded into named runs.

Tutorial 001's RunBuilder idea (``itertools.product`` over ``OrderedDict`` values), with each
parameter typed and checked, and each run named by the parameters that vary (so a name says
what distinguishes the run): ``bn,seed=1``. The *group* is the name without the seed: the runs
that are averaged together (mean and 95% CI over seeds).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields
from typing import Any

from bnlab.lab.data import DATASETS, INPUT_SCALINGS, NORMALIZATIONS, check_input_scaling
from bnlab.lab.errors import UsageError
from bnlab.lab.models import (
    BN_IMPLS,
    CUMULATIVE,
    NETWORKS,
    PLACEMENTS,
    network_bn,
    network_placement,
    resolve_norm,
)
from bnlab.lab.norms import NORMS, check_norm

OPTIMIZERS = ("adam", "sgd")

#: run parameters (grid keys, record columns) that were renamed: old name -> (new name, what
#: it is). A config that uses an old name is refused with the new one; an old record is read
#: with its columns renamed (bnlab.lab.record.load_record).
RENAMED_PARAMS: dict[str, tuple[str, str]] = {
    "momentum": ("sgd_momentum", "SGD momentum; BN's is 'bn_momentum'"),
}


@dataclass(frozen=True)
class RunParams:
    """The parameters of one run (a column each in the record)."""

    network: str = "lizard-cnn"  # a key of bnlab.lab.models.NETWORKS
    # the network with its normalization layers (True) or without (False); kept for old configs
    # and records: bn=false is norm "none". __post_init__ sets it to norm != "none".
    bn: bool = True
    # the normalization layer where the tutorial puts BN (bnlab.lab.norms.NORMS): none, bn,
    # renorm, ghost, groupnorm, layernorm, noisy_bn
    norm: str = "bn"
    # the normalization layer "before" or "after" the activation; None, the default: the
    # network's own ("after" for lizard-cnn, "before" for the others), filled in as bn_momentum
    placement: str | None = None
    bn_impl: str = "bnlab"  # "bnlab" (bnlab's layers) or "torch" (torch.nn.BatchNorm*)
    # BN's running-statistics weight in every BN layer the network builds, PyTorch's convention
    # (running = (1 - m) * running + m * batch; Keras's momentum 0.99 is 0.01 here), in
    # [0, 1], or "cumulative" (the cumulative average: PyTorch's momentum=None). None, the
    # default: the network's own, 0.1 (PyTorch's default) except keras-mlp, which keeps its
    # tutorial's Keras default (0.01 here); __post_init__ fills it in, so a run's params and
    # record show the value used. A value given in the grid applies to every network,
    # keras-mlp included.
    bn_momentum: float | str | None = None
    # BN's eps in every BN layer the network builds, > 0. None, the default: the network's
    # own, 1e-5 (PyTorch's default) except keras-mlp's 1e-3 (Keras's); as bn_momentum.
    bn_eps: float | None = None
    dropout: float = 0.0  # nn.Dropout's p after each hidden fully connected block, in [0, 1)
    init_scale: float = 1.0  # multiplies the default init of every Linear and Conv2d weight
    dataset: str = "fashion-mnist"  # a key of bnlab.lab.data.DATASETS
    normalization: str = "none"  # "none" | "normal" (training set mean/std) | "fixed"
    input_scaling: str = "standardized"  # mpg's features: "standardized" or "raw" (as the table)
    optimizer: str = "adam"  # "adam" | "sgd"
    lr: float = 0.01  # learning rate
    sgd_momentum: float = 0.0  # SGD's momentum, >= 0 (unused by Adam); not BN's (bn_momentum)
    batch_size: int = 1000  # training batch size; the last batch may be smaller
    epochs: int = 5  # epochs to train
    seed: int = 0  # torch.manual_seed before building the model; also the shuffle seed

    def __post_init__(self) -> None:
        # bn_momentum, bn_eps None: the network's own, so that a run (and its record) shows
        # the values it uses
        momentum, eps = network_bn(self.network, self.bn_momentum, self.bn_eps)
        object.__setattr__(self, "bn_momentum", momentum)
        object.__setattr__(self, "bn_eps", eps)
        norm = resolve_norm(self.bn, self.norm)
        check_norm(norm, self.bn_impl)
        object.__setattr__(self, "norm", norm)
        object.__setattr__(self, "bn", norm != "none")
        object.__setattr__(self, "placement", network_placement(self.network, self.placement))
        check_input_scaling(self.dataset, self.input_scaling)


#: each parameter's type; bn_momentum and bn_eps are floats whose default (None) means "the
#: network's own", and bn_momentum also takes CUMULATIVE; so is placement, a str.
PARAM_TYPES: dict[str, type] = {
    f.name: float if f.default is None else type(f.default) for f in fields(RunParams)
} | {"placement": str}
_CHOICES: dict[str, tuple[str, ...]] = {
    "network": tuple(NETWORKS),
    "bn_impl": tuple(BN_IMPLS),
    "norm": NORMS,
    "placement": PLACEMENTS,
    "input_scaling": INPUT_SCALINGS,
    "dataset": DATASETS,
    "normalization": NORMALIZATIONS,
    "optimizer": OPTIMIZERS,
}


def named(noun: str, key: str, where: str) -> str:
    """How an error names a value: by its command-line flag (``where`` = "--lr") or by its key
    and the place that holds it ("parameter 'lr' in [grid] of sweep.toml")."""
    if not where:  # no place known: the key alone, never an empty "in "
        return f"{noun} {key!r}"
    return where if where.startswith("--") else f"{noun} {key!r} in {where}"


def check_value(key: str, value: Any, where: str = "grid") -> Any:
    """Check one parameter value's type and range; ints are accepted for floats.

    ``where`` is where the value came from, for the error message: a command-line flag
    ("--lr") or a place ("[grid] of sweep.toml"). Bad values raise ``UsageError``.
    """
    what = named("parameter", key, where)
    if key in RENAMED_PARAMS:
        new, meaning = RENAMED_PARAMS[key]
        raise UsageError(f"{what} was renamed {new!r} ({meaning})")
    if key not in PARAM_TYPES:
        raise UsageError(
            f"unknown parameter {key!r} in {where}; expected one of {', '.join(PARAM_TYPES)}"
        )
    if key == "bn_momentum" and value == CUMULATIVE:
        return value
    kind = PARAM_TYPES[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        expected = f"float or {CUMULATIVE!r}" if key == "bn_momentum" else kind.__name__
        raise UsageError(f"{what} must be {expected}, got {type(value).__name__} {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise UsageError(f"{what} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if key in ("lr", "batch_size", "epochs", "bn_eps", "init_scale") and not value > 0:
        raise UsageError(f"{what} must be > 0, got {value!r}")
    if key in ("sgd_momentum", "seed") and not value >= 0:
        raise UsageError(f"{what} must be >= 0, got {value!r}")
    if key == "dropout" and not 0.0 <= value < 1.0:
        raise UsageError(f"{what} must be in [0, 1), got {value!r}")
    if key == "bn_momentum" and not 0.0 <= value <= 1.0:
        raise UsageError(f"{what} must be in [0, 1] or {CUMULATIVE!r}, got {value!r}")
    return value


def check_grid(grid: dict[str, Any], where: str = "grid") -> dict[str, list[Any]]:
    """Validate a grid; a scalar is shorthand for a one-element list. Order is kept."""
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise UsageError(f"{named('parameter', key, where)} has an empty list of values")
        out[key] = [check_value(key, v, where) for v in values]
        if len(set(map(repr, out[key]))) != len(out[key]):
            raise UsageError(f"{named('parameter', key, where)} lists a value twice: {values}")
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

    Parameters absent from ``grid`` take ``defaults``' values (RunParams' defaults when None:
    bn_momentum and bn_eps are then each run's network's own).
    """
    grid = check_grid(grid)
    base = asdict(defaults) if defaults is not None else {}
    keys = list(grid)
    varying = [k for k in keys if len(grid[k]) > 1]
    runs = []
    for index, combo in enumerate(itertools.product(*grid.values()), start=1):
        values = dict(zip(keys, combo, strict=True))
        params = RunParams(**{**base, **values})
        name = ",".join(_label(k, values[k]) for k in varying) or "run"
        group = ",".join(_label(k, values[k]) for k in varying if k != "seed") or "all"
        runs.append(Run(index=index, name=name, group=group, params=params))
    return runs
