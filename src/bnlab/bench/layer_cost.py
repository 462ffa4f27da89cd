"""Where a batch-norm layer's time goes inside a real network, at inference.

    python -m bnlab.bench.layer_cost [--models tv-mnv3-small] [--batches 1 8] [--size 112]

A kernel benchmark times one op on warm caches; inside a network each BN call comes between
convolutions that have evicted its code and data, and the per-call costs grow. This tool
measures them where users meet them. Every BN layer of the network (torch's BatchNorm1d/2d/3d,
eval mode, no_grad) is replaced by one kind of stand-in, the networks are timed interleaved
round by round (``bnlab.bench.timing``), and each stand-in's cost is its network's median
forward time above the ``identity`` network's, per BN layer:

- ``identity``: no batch norm at all (``nn.Identity``), the baseline;
- ``copy``: returns ``x.clone()``, one torch op that reads x and writes a new output: what any
  out-of-place batch norm does at the least (an uninitialized output would not do: the bytes
  the allocator hands back hold denormal floats, which slow the next convolution down);
- ``call``: ``copy``, then a compiled (Numba) function that takes the eval kernel's 13
  arguments and does nothing: ``call`` - ``copy`` is what calling compiled code costs;
- ``kernel``: bnlab's CPU kernel family called directly (``bnlab.kernels.cpu.eval_forward``:
  its argument preparation and the compiled entry), with no layer, checks or autograd around
  it: the best a Python front door to these kernels can reach;
- ``bnlab``: the layer ``bnlab.convert`` makes;
- ``torch_op``: ``torch.batch_norm``, torch's C++ op, called from a minimal module;
- ``torch``: torch's own layer.

So ``bnlab`` - ``kernel`` is what bnlab's front door (layer, checks, dispatch) costs in place,
and ``kernel`` against ``torch`` says how far the kernels alone could take a network. Costs can
move between ops (a faster call leaves the next convolution colder caches or idle threads to
wake), which is why whole networks are timed and not single calls.

Only torchvision networks qualify by default: their BN layers are torch's plain ones (timm's
BatchNormAct2d carries its activation, which a stand-in would drop). The JSON is written
atomically (``bnlab.lab.files.atomic_write_text``).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from numba import njit
from torch import nn

import bnlab
from bnlab.bench.command import main_of, save_and_show
from bnlab.bench.models import NETWORKS, Network
from bnlab.bench.timing import interleave, medians, timed
from bnlab.kernels import cpu

__all__ = ["STAND_INS", "add_arguments", "main", "measure", "run_from_args", "stand_in_network"]

#: the stand-ins, cheapest first (see the module docstring)
STAND_INS = ("identity", "copy", "call", "kernel", "bnlab", "torch_op", "torch")
MODELS = ("tv-resnet18", "tv-mnv3-small", "tv-effnet-b0")
BATCHES = (1, 8, 32)
_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@njit(cache=True)
def _nothing(x, y, n, c, s, weight, bias, mean, var, spread_is_var, eps, act, proto):  # type: ignore[no-untyped-def]
    """The eval entry's arguments (``cpu_entries.AffineForwardArgs``), and no work."""
    return x


class _Copy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class _Call(nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        one = torch.ones((), dtype=dtype).numpy()[()]  # selects the dtype's compiled code
        self.rest = (0, 0, 0, 0, 0, 0, 0, True, 1e-5, 0, one)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        _nothing(x.data_ptr(), y.data_ptr(), *self.rest)
        return y


class _Eval(nn.Module):
    """``fn(x, running_mean, running_var, weight, bias, eps)`` with the layer's tensors."""

    def __init__(self, bn: Any, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn
        self.tensors = [
            None if t is None else t.detach()
            for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias)
        ]
        self.eps = bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var, weight, bias = self.tensors
        return self.fn(x, mean, var, weight, bias, self.eps)


def _torch_op(x: torch.Tensor, mean: Any, var: Any, weight: Any, bias: Any, eps: float) -> Any:
    return torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps, False)


def _replace_bn(model: nn.Module, make: Callable[[Any], nn.Module]) -> nn.Module:
    """``model`` with every BN layer ``bn`` replaced by ``make(bn)``."""
    for name, child in model.named_children():
        if isinstance(child, _PLAIN_BN):
            setattr(model, name, make(child))
        else:
            _replace_bn(child, make)
    return model


_MAKERS: dict[str, Callable[[Any], nn.Module]] = {
    "identity": lambda bn: nn.Identity(),
    "copy": lambda bn: _Copy(),
    "call": lambda bn: _Call(bn.running_mean.dtype),
    "kernel": lambda bn: _Eval(bn, cpu.eval_forward),
    "torch_op": lambda bn: _Eval(bn, _torch_op),
}


def stand_in_network(reference: nn.Module, stand_in: str) -> nn.Module:
    """A copy of ``reference`` (torch's plain BN layers, running statistics kept) in eval mode,
    its BN layers replaced by ``stand_in`` (one of ``STAND_INS``)."""
    if stand_in not in STAND_INS:
        raise ValueError(f"stand_in must be one of {', '.join(STAND_INS)}; got {stand_in!r}")
    for name, m in reference.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and type(m) not in _PLAIN_BN:
            raise ValueError(
                f"layer_cost needs torch's plain BatchNorm1d/2d/3d layers; {name!r} is a "
                f"{type(m).__name__} (a stand-in would drop what it adds)"
            )
        if isinstance(m, _PLAIN_BN) and m.running_mean is None:
            raise ValueError(f"layer_cost needs running statistics; {name!r} keeps none")
    model = copy.deepcopy(reference).eval()
    if stand_in == "bnlab":
        return bnlab.convert(model)
    if stand_in == "torch":
        return model
    return _replace_bn(model, _MAKERS[stand_in])


def measure(
    network: Network, batch: int, size: int, reps: int, warmup: int
) -> dict[str, Any]:  # fmt: skip
    """One network at one batch and input: each stand-in network's median forward time (ms),
    its cost per BN layer above ``identity`` (us), and its time over torch's network's."""
    torch.manual_seed(0)
    reference = network.build()
    layers = sum(isinstance(m, _PLAIN_BN) for m in reference.modules())
    if layers == 0:
        raise ValueError(f"{network.name} has no BatchNorm layer to stand in for")
    models = {s: stand_in_network(reference, s) for s in STAND_INS}
    x = torch.randn(batch, *network.sample_shape(size), generator=torch.Generator().manual_seed(1))

    def forward(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model(x)

        return run

    times = medians(interleave({s: timed(forward(m)) for s, m in models.items()}, reps, warmup))
    return {
        "model": network.name,
        "batch": batch,
        "input": list(x.shape[1:]),
        "bn_layers": layers,
        "times_ms": {s: t * 1e3 for s, t in times.items()},
        "us_per_layer": {s: (t - times["identity"]) * 1e6 / layers for s, t in times.items()},
        "ratios": {s: t / times["torch"] for s, t in times.items()},
    }


#: table headers where a stand-in's name is too wide for 80 columns
_HEADERS = {"torch_op": "t_op"}


def print_table(result: dict[str, Any], console: Any = None) -> None:
    """One row per network and batch: each stand-in's cost per BN layer (us), then bnlab's
    network's time over torch's; within 80 columns."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(
        f"{result['threads']} torch threads, {result['size']} px, medians of {result['reps']} "
        "rounds. Cost of one BN layer in place (us): the stand-in network's forward time above "
        "the identity network's, per BN layer (t_op: torch_op). ratio: bnlab's network's time "
        "/ torch's.",
        highlight=False,
    )
    table = Table(box=None, pad_edge=False)
    for col in ("model", "batch", "layers", *STAND_INS[1:], "ratio"):
        justify: Literal["left", "right"] = "left" if col == "model" else "right"
        table.add_column(_HEADERS.get(col, col), justify=justify, no_wrap=True)
    for r in result["rows"]:
        table.add_row(
            r["model"],
            str(r["batch"]),
            str(r["bn_layers"]),
            *(f"{r['us_per_layer'][s]:.1f}" for s in STAND_INS[1:]),
            f"{r['ratios']['bnlab']:.2f}",
        )
    console.print(table)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", choices=list(NETWORKS), default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--size", type=int, default=112, help="image size (default 112)")
    parser.add_argument("--reps", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds (default 3)")
    parser.add_argument("--json", default="layer_cost.json", help="output path")


def run(
    models: Sequence[str], batches: Sequence[int], size: int, reps: int, warmup: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Every network at every batch size (``measure``), with the machine's context."""
    if reps < 1 or warmup < 0 or size < 1 or min(batches) < 1:
        raise ValueError(
            f"expected reps >= 1, warmup >= 0, size >= 1 and batches >= 1; got reps {reps}, "
            f"warmup {warmup}, size {size}, batches {list(batches)}"
        )
    rows = []
    for name in models:
        for batch in batches:
            log(f"{name}, batch {batch}, {size} px ...")
            rows.append(measure(NETWORKS[name], batch, size, reps, warmup))
    return {
        "bnlab_version": bnlab.__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "reps": reps,
        "warmup": warmup,
        "size": size,
        "machine": platform.machine(),
        "load_average": list(os.getloadavg()),
        "rows": rows,
    }


def run_from_args(args: argparse.Namespace) -> int:
    result = run(args.models, args.batches, args.size, args.reps, args.warmup)
    return save_and_show(result, Path(args.json), print_table)


def main(argv: list[str] | None = None) -> int:
    """``python -m bnlab.bench.layer_cost``."""
    return main_of("python -m bnlab.bench.layer_cost", __doc__, add_arguments, run_from_args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
