"""``bnlab bench --models``: whole networks with torch's batch norm against bnlab's, side by side.

For each network (random init, default settings) and each batch size and input size of the
grid, one process times, interleaved round by round (``bnlab.bench.timing``):

- ``train``: a training step (forward, loss, backward, SGD step) of each peer: ``torch`` (the
  network as built), ``bnlab`` (after ``bnlab.convert``) and ``fused`` (after
  ``bnlab.convert(fuse=True)``; only where fusing changed a layer, else it is ``bnlab``);
- ``eval``: a forward under ``torch.no_grad`` of the same peers in eval mode, and of the
  networks with no batch norm left: ``fold`` (``bnlab.fold_batchnorm``) and ``fx_fuse``
  (torch's ``torch.fx.experimental.optimization.fuse``; skipped where fx cannot trace).

Reported per row: each peer's median time and its ratio to torch's (below 1: faster than
torch); from one ``torch.profiler`` run of a step per peer after the timing, the time in batch
norm (the forward of the BN layers, a BatchNormAct's activation included, plus their backward
nodes) and its share of the step, and the convolutions' time (their forward and backward ops:
how they fare beside each BN). Profiled times are op-level, so load on a shared machine spoils
them less than the wall-clock ratios; the profiler's own cost inflates small calls.

Peak memory: for each network and mode at the grid's largest batch and input, each peer runs
two steps in a fresh process (``--peak-memory-of``), whose peak resident memory during them
(Linux's VmHWM, reset through /proc/self/clear_refs once the model is built) minus its
resident memory before them is reported in MB. A process of its own per peer, since torch's
and glibc's allocators and bnlab's output cache keep freed memory for reuse (a peer would look
lighter after a heavy one); resident memory, since tracemalloc does not see torch's
allocations and the profiler's allocation records miss Numba's and the output cache's.

Networks: torchvision's and timm's resnet18, mobilenet_v3_small and efficientnet_b0 (skipped,
saying why, without ``bnlab[zoo]``), at batch sizes 1, 8, 32 and 64, 112 and 224 px, 10
classes; the lab's networks (``bnlab.lab.models``) on their data sets' input shapes, at batch
sizes 1, 8, 32 and their preset's. Usage::

    bnlab bench --models                          # everything, tables + bench_models.json
    bnlab bench --models tv-resnet18 mlp --batches 32 --sizes 224 --reps 15
    bnlab bench --models --quick                  # tiny grid, 3 reps, no memory: a smoke run
    python -m bnlab.bench.models --help           # the same, standalone

The JSON is written atomically (``bnlab.lab.files.atomic_write_text``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

import bnlab
from bnlab.bench.command import main_of, save_and_show
from bnlab.bench.timing import interleave, medians, ratio_of_medians, timed
from bnlab.transforms import convert, fold_batchnorm
from bnlab.transforms.layer_classes import role_of

__all__ = ["NETWORKS", "Network", "add_arguments", "main", "peak_memory_mb", "run", "run_from_args"]

TRAIN_PEERS = ("torch", "bnlab", "fused")
EVAL_PEERS = (*TRAIN_PEERS, "fold", "fx_fuse")
BATCHES = (1, 8, 32)
SIZES = (64, 112, 224)
CLASSES = 10


# ---------------------------------------------------------------------------------- networks


@dataclass(frozen=True)
class Network:
    """A network of the benchmark, with torch's BN layers."""

    name: str
    source: str  # where it comes from, e.g. "torchvision.models.resnet18"
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...] | None = None  # one sample's; None: images (3, size, size)
    num_outputs: int = CLASSES  # 1: regression (MSE loss), else classes (cross-entropy)
    own_batch: int | None = None  # its preset's batch size, measured besides BATCHES

    def sample_shape(self, size: int) -> tuple[int, ...]:
        return (3, size, size) if self.input_shape is None else self.input_shape


def _zoo(library: str, name: str) -> Callable[[], nn.Module]:
    """A builder of torchvision's or timm's ``name`` (both imported by the first build)."""

    def build() -> nn.Module:
        from bnlab.bench.zoo import import_zoo

        torchvision, timm = import_zoo()
        if library == "timm":
            model = timm.create_model(name, pretrained=False, num_classes=CLASSES)
        else:
            model = getattr(torchvision.models, name)(weights=None, num_classes=CLASSES)
        return model  # type: ignore[no-any-return]

    return build


def _lab_networks() -> list[Network]:
    from bnlab.lab.models import NETWORKS as LAB_NETWORKS
    from bnlab.lab.models import build_model
    from bnlab.lab.presets import PRESETS

    # (input shape, outputs) of each network's data set, known without loading it: 28x28 grey
    # images of 10 classes, or Auto MPG's 9 features and one target
    data = {"mpg-mlp": ((9,), 1)}
    batch = {p.params["network"][0]: p.params["batch_size"][0] for p in PRESETS.values()}
    networks = []
    for name in LAB_NETWORKS:
        shape, outputs = data.get(name, ((1, 28, 28), CLASSES))

        def build(
            name: str = name, shape: tuple[int, ...] = shape, outputs: int = outputs
        ) -> nn.Module:
            return build_model(name, True, "torch", shape, outputs, seed=0)

        networks.append(
            Network(name, f"bnlab.lab.models ({name})", build, shape, outputs, batch.get(name))
        )
    return networks


#: the zoo's networks: (name here, library, the library's name)
_ZOO = (
    ("tv-resnet18", "torchvision", "resnet18"),
    ("tv-mnv3-small", "torchvision", "mobilenet_v3_small"),
    ("tv-effnet-b0", "torchvision", "efficientnet_b0"),
    ("timm-resnet18", "timm", "resnet18"),
    ("timm-mnv3-small", "timm", "mobilenetv3_small_100"),
    ("timm-effnet-b0", "timm", "efficientnet_b0"),
)
NETWORKS: dict[str, Network] = {
    n.name: n
    for n in (
        *(Network(name, f"{lib} {model}", _zoo(lib, model)) for name, lib, model in _ZOO),
        *_lab_networks(),
    )
}


# ------------------------------------------------------------------------------------ peers


def _fold(model: nn.Module) -> nn.Module:
    return fold_batchnorm(model.eval())


def _fx_fuse(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():  # its import meets torch.jit's deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.fx.experimental.optimization import fuse

    return fuse(model.eval(), inplace=True)


#: peer -> how it is made from a copy of the torch network
PEER_TRANSFORMS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "torch": lambda m: m,
    "bnlab": convert,
    "fused": lambda m: convert(m, fuse=True),
    "fold": _fold,
    "fx_fuse": _fx_fuse,
}


def bn_layers(model: nn.Module) -> int:
    return sum(role_of(m) is not None for m in model.modules())


def fused_layers(model: nn.Module) -> int:
    """BN+activation layers whose activation is not Identity (timm's BatchNormAct2d counts)."""
    return sum(
        role_of(m) == "bn_act" and type(getattr(m, "act", None)) is not nn.Identity
        for m in model.modules()
    )


def make_peers(
    network: Network, peers: Sequence[str]
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Each peer (seeded init, same weights), and the reasons of those that could not be made.

    ``fused`` is left out (reason given) where fusing changed no layer: it would be ``bnlab``.
    """
    torch.manual_seed(0)
    reference = network.build()
    models, unavailable = {}, {}
    for peer in peers:
        try:
            models[peer] = PEER_TRANSFORMS[peer](copy.deepcopy(reference))
        except Exception as error:  # fx cannot trace it, ...: reported, not fatal
            unavailable[peer] = f"{type(error).__name__}: {error}".splitlines()[0][:200]
    if "fused" in models and fused_layers(models["fused"]) == fused_layers(reference):
        del models["fused"]
        unavailable["fused"] = "no BN followed by an activation to fuse"
    return models, unavailable


# ------------------------------------------------------------------------------ one config


def _batch(network: Network, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *network.sample_shape(size), generator=gen)
    if network.num_outputs == 1:
        return x, torch.randn(batch, 1, generator=gen)
    return x, torch.randint(0, network.num_outputs, (batch,), generator=gen)


def step_function(
    model: nn.Module, mode: str, x: torch.Tensor, target: torch.Tensor
) -> Callable[[], None]:
    """One training step (forward, loss, backward, SGD step) or one no-grad eval forward."""
    if mode == "eval":
        model.eval()

        def forward() -> None:
            with torch.no_grad():
                model(x)

        return forward
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.functional.mse_loss if target.is_floating_point() else nn.functional.cross_entropy

    def train_step() -> None:
        optimizer.zero_grad()
        loss_fn(model(x), target).backward()
        optimizer.step()

    return train_step


_BN_FORWARD = "bnlab.bench: batch norm forward"
_STEP = "bnlab.bench: step"
_NODE = "autograd::engine::evaluate_function: "


@contextmanager
def _bn_scopes(model: nn.Module) -> Iterator[None]:
    """Every BN-like layer's forward inside a profiler scope named ``_BN_FORWARD``."""
    open_scopes: list[Any] = []

    def enter(module: nn.Module, args: Any) -> None:
        scope = torch.autograd.profiler.record_function(_BN_FORWARD)
        scope.__enter__()
        open_scopes.append(scope)

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        open_scopes.pop().__exit__(None, None, None)

    handles = []
    for m in model.modules():
        if role_of(m) is not None:
            handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null: torch's profiler (Kineto) prints a ``USDT ...
    profiler_start`` / ``profiler_stop`` line from C++ at each start and stop, with no switch."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_step(model: nn.Module, step: Callable[[], None]) -> dict[str, float]:
    """Times (ms) inside one profiled ``step``: the whole step, batch norm, convolutions."""
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    with _bn_scopes(model):
        with _native_stderr_silenced():
            prof.start()
        try:
            with torch.autograd.profiler.record_function(_STEP):
                step()
        finally:
            with _native_stderr_silenced():
                prof.stop()
    totals = {"step_ms": 0.0, "bn_ms": 0.0, "conv_ms": 0.0}
    for event in prof.events():
        name, ms = event.name, event.cpu_time_total / 1e3
        node = name.removeprefix(_NODE) if name.startswith(_NODE) else ""
        if name == _STEP:
            totals["step_ms"] += ms
        elif name == _BN_FORWARD or "BatchNorm" in node:
            totals["bn_ms"] += ms
        elif name == "aten::convolution" or node.startswith("ConvolutionBackward"):
            totals["conv_ms"] += ms
    totals["bn_share"] = totals["bn_ms"] / totals["step_ms"] if totals["step_ms"] else float("nan")
    return totals


@dataclass
class Row:
    """One network, mode, batch and input: every peer's figures (the JSON's rows)."""

    model: str
    source: str
    mode: str
    batch: int
    input: list[int]  # one sample's shape
    bn_layers: int  # BN-like layers of the torch network
    fused_layers: dict[str, int]  # per training peer: BN+activation layers (``fused_layers``)
    times_ms: dict[str, float] = field(default_factory=dict)  # medians
    ratios: dict[str, float] = field(default_factory=dict)  # median / torch's median
    profile: dict[str, dict[str, float]] = field(default_factory=dict)  # ``profile_step``'s
    unavailable: dict[str, str] = field(default_factory=dict)  # peer -> why it is missing


def measure(
    network: Network,
    mode: str,
    models: dict[str, nn.Module],
    unavailable: dict[str, str],
    batch: int,
    size: int,
    reps: int,
    warmup: int,
    profile: bool = True,
) -> Row:
    """Time the peers' steps interleaved, then profile one step of each."""
    x, target = _batch(network, batch, size)
    steps = {peer: step_function(m, mode, x, target) for peer, m in models.items()}
    times = interleave({peer: timed(fn) for peer, fn in steps.items()}, reps, warmup)
    row = Row(
        network.name,
        network.source,
        mode,
        batch,
        list(x.shape[1:]),
        bn_layers(models["torch"]),
        {peer: fused_layers(m) for peer, m in models.items() if peer in TRAIN_PEERS},
        {peer: t * 1e3 for peer, t in medians(times).items()},
        {peer: ratio_of_medians(times[peer], times["torch"]) for peer in times},
        unavailable=unavailable,
    )
    if profile:
        row.profile = {peer: profile_step(models[peer], steps[peer]) for peer in steps}
    return row


# ----------------------------------------------------------------------------------- memory


def _resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset this process's peak resident memory to the current one (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_bytes() -> int:
    """VmHWM: getrusage's ru_maxrss would not do, since it also keeps the peak of the moment
    any thread exited (a compiler thread after the warm-up), which the reset does not clear."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _peak_memory_child(spec: str) -> None:
    """In the fresh process: build one peer, run two steps, print the peak (see the docstring)."""
    name, mode, peer, batch, size = spec.split(":")
    network = NETWORKS[name]
    from bnlab.kernels import warm_up

    warm_up()  # compiled code is not the step's memory
    models, unavailable = make_peers(network, ["torch", peer])
    if peer not in models:
        print(json.dumps({"unavailable": unavailable[peer]}))
        return
    model = models[peer]
    del models
    x, target = _batch(network, int(batch), int(size))
    step = step_function(model, mode, x, target)
    before = _resident_bytes()
    if not _reset_peak():
        print(json.dumps({"unavailable": "cannot reset the peak (/proc/self/clear_refs)"}))
        return
    step()
    step()
    print(json.dumps({"peak_mb": (_peak_bytes() - before) / 1e6}))


def peak_memory_mb(name: str, mode: str, peer: str, batch: int, size: int) -> float | str:
    """Peak resident memory of two steps of one peer above the built model, in MB, measured in
    a fresh process; or the reason the peer is not available."""
    if not os.path.exists("/proc/self/statm"):
        return "needs /proc (Linux)"
    spec = f"{name}:{mode}:{peer}:{batch}:{size}"
    command = [sys.executable, "-m", "bnlab.bench.models", "--peak-memory-of", spec]
    command += ["--threads", str(torch.get_num_threads())]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"peak memory of {spec} failed: {tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result.get("peak_mb", result.get("unavailable"))


# -------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Grid:
    """What to measure: networks, batch sizes, image sizes, modes."""

    networks: tuple[str, ...] = tuple(NETWORKS)
    batches: tuple[int, ...] = BATCHES
    sizes: tuple[int, ...] = SIZES
    modes: tuple[str, ...] = ("train", "eval")
    own_batches: bool = True  # add each lab network's preset batch size

    def configs(self, network: Network) -> list[tuple[int, int]]:
        """(batch, size) pairs, smallest first: sizes apply to images only (0 otherwise)."""
        sizes = self.sizes if network.input_shape is None else (0,)
        own = [network.own_batch] if self.own_batches and network.own_batch else []
        return [(b, s) for b in sorted({*self.batches, *own}) for s in sorted(sizes)]


#: ``--quick``: small networks (torchvision's resnet18 where installed), one tiny batch and size
QUICK_GRID = Grid(("lizard-cnn", "mpg-mlp", "tv-resnet18"), (2,), (32,), own_batches=False)


def run(
    grid: Grid,
    reps: int,
    warmup: int,
    memory: bool = True,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Measure the grid; returns the JSON-ready result."""
    load_before = os.getloadavg()[0]
    rows, memory_rows, skipped = [], [], {}
    for name in grid.networks:
        network = NETWORKS[name]
        configs = grid.configs(network)
        for mode in grid.modes:
            try:
                models, unavailable = make_peers(
                    network, TRAIN_PEERS if mode == "train" else EVAL_PEERS
                )
            except ImportError as error:
                skipped[name] = f"needs timm and torchvision (pip install bnlab[zoo]): {error}"
                log(f"{name}: skipped, {skipped[name]}")
                break
            for batch, size in configs:
                try:
                    row = measure(network, mode, models, unavailable, batch, size, reps, warmup)
                except ValueError as error:
                    # torch's and bnlab's refusal to train on one value per channel (batch 1
                    # into a BatchNorm1d): that configuration cannot be measured, the rest can
                    if "more than 1 value per channel" not in str(error):
                        raise
                    key = f"{name} {mode} batch {batch}" + (f" size {size}" if size else "")
                    skipped[key] = f"cannot train: {error}"
                    log(f"{key}: skipped, {skipped[key]}")
                    continue
                rows.append(asdict(row))
                log(f"{name} {mode} batch {batch} input {row.input}: {_ratios_text(row.ratios)}")
            if memory:
                batch, size = configs[-1]
                peaks = {peer: peak_memory_mb(name, mode, peer, batch, size) for peer in models}
                x_shape = list(network.sample_shape(size))
                memory_rows.append(
                    {
                        "model": name,
                        "mode": mode,
                        "batch": batch,
                        "input": x_shape,
                        "peak_mb": peaks,
                    }
                )
                log(f"{name} {mode} peak MB: {peaks}")
    import numba

    return {
        "benchmark": "models",
        "bnlab_version": bnlab.__version__,
        "torch_version": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "numba_threads": getattr(numba.config, "NUMBA_NUM_THREADS", 1),  # the pool size
        "numba_threading_layer": _numba_threading_layer(),
        "reps": reps,
        "warmup": warmup,
        "load_average": [load_before, os.getloadavg()[0]],  # 1-minute, before and after
        "skipped": skipped,
        "rows": rows,
        "memory": memory_rows,
    }


def _numba_threading_layer() -> str:
    import numba

    try:
        return str(numba.threading_layer())
    except ValueError:  # no parallel region has run yet
        return f"not started (asked for {getattr(numba.config, 'THREADING_LAYER', '?')})"


def _ratios_text(ratios: dict[str, float]) -> str:
    return ", ".join(f"{peer} {r:.2f}" for peer, r in ratios.items() if peer != "torch")


# ------------------------------------------------------------------------------------ table


def _input_text(shape: list[int]) -> str:
    """ "224" for a 3x224x224 image, "28" for 1x28x28, else the shape ("9")."""
    if len(shape) == 3 and shape[1] == shape[2]:
        return str(shape[1])
    return "x".join(map(str, shape))


def _fmt(value: float | str | None, spec: str = ".2f") -> str:
    return "-" if value is None or isinstance(value, str) else format(value, spec)


_HEADER = {"fx_fuse": "fx"}


def _table(title: str, columns: Sequence[str]) -> Any:
    """A borderless table (80 columns hold the widest, the eval table)."""
    from rich.table import Table

    table = Table(title=title, box=None, pad_edge=False, title_justify="left")
    for col in columns:
        justify: Literal["left", "right"] = "left" if col == "model" else "right"
        table.add_column(_HEADER.get(col, col), justify=justify, no_wrap=True)
    return table


def print_tables(result: dict[str, Any], console: Any = None) -> None:
    """The train and eval tables, and the peak memory, each within 80 columns."""
    from rich.console import Console

    console = console or Console()
    console.print(
        f"bnlab {result['bnlab_version']} vs torch {result['torch_version']}, "
        f"{result['threads']} torch threads, Numba {result['numba_threads']} "
        f"({result['numba_threading_layer']}), medians of {result['reps']} rounds, load "
        f"average {result['load_average'][0]:.1f} -> {result['load_average'][1]:.1f}.\n"
        "Peers: time / torch's (below 1: faster). BN%: torch's BN share of the profiled "
        "step; BN x: bnlab's BN time / torch's.",
        highlight=False,
    )
    for mode, peers in (("train", TRAIN_PEERS), ("eval", EVAL_PEERS)):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        if not rows:
            continue
        title = "training step" if mode == "train" else "eval forward (no_grad)"
        table = _table(title, ("model", "batch", "input", "torch ms", *peers[1:], "BN%", "BN x"))
        for r in rows:
            prof = r["profile"]
            bn = {p: prof[p]["bn_ms"] for p in ("torch", "bnlab") if p in prof}
            table.add_row(
                r["model"],
                str(r["batch"]),
                _input_text(r["input"]),
                _fmt(r["times_ms"]["torch"], ".1f"),
                *(_fmt(r["ratios"].get(p)) for p in peers[1:]),
                _fmt(100 * prof["torch"]["bn_share"], ".0f") if bn else "-",
                _fmt(bn["bnlab"] / bn["torch"]) if len(bn) == 2 and bn["torch"] else "-",
            )
        console.print()
        console.print(table)
    if result["memory"]:
        title = "peak memory of two steps above the built model, MB"
        table = _table(title, ("model", "mode", "batch", "input", *EVAL_PEERS))
        for r in result["memory"]:
            peaks = (_fmt(r["peak_mb"].get(p), ".0f") for p in EVAL_PEERS)
            table.add_row(r["model"], r["mode"], str(r["batch"]), _input_text(r["input"]), *peaks)
        console.print()
        console.print(table)
    for name, reason in result["skipped"].items():
        console.print(f"skipped {name}: {reason}", highlight=False)


# -------------------------------------------------------------------------------------- CLI


def _positive_ints(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


_SHARED_DEFAULTS = (
    ". With --models: --reps 7, --warmup 2 and --json bench_models.json by default, "
    "--quick is a tiny grid, 3 reps, no memory, and --no-memory skips the peak memory"
)


def add_arguments(parser: argparse.ArgumentParser, shared: bool = True) -> None:
    """This benchmark's options. ``shared=False`` on ``bnlab bench``, whose kernel benchmark
    already defines --quick, --reps, --warmup, --json and --no-memory (read here too)."""
    parser.add_argument(
        "--models",
        nargs="*",
        metavar="NAME",
        choices=list(NETWORKS),
        default=None if not shared else [],
        help=f"the real-model benchmark, of these networks (default all): {', '.join(NETWORKS)}"
        + ("" if shared else _SHARED_DEFAULTS),
    )
    parser.add_argument("--batches", nargs="+", type=_positive_ints, help="default 1 8 32")
    parser.add_argument(
        "--sizes", nargs="+", type=_positive_ints, help="image sizes, default 64 112 224"
    )
    parser.add_argument("--modes", nargs="+", choices=("train", "eval"), default=["train", "eval"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    if shared:
        parser.add_argument("--quick", action="store_true", help="tiny grid, 3 reps, no memory")
        parser.add_argument("--reps", type=int, default=None, help="timed rounds (default 7)")
        parser.add_argument(
            "--warmup", type=int, default=None, help="untimed rounds first (default 2)"
        )
        parser.add_argument("--no-memory", action="store_true", help="skip peak memory")
        parser.add_argument("--json", default=None, help="output path (default bench_models.json)")
        parser.add_argument("--peak-memory-of", help=argparse.SUPPRESS)


def run_from_args(args: argparse.Namespace) -> int:
    """Measure as the options say, write the JSON, print the tables."""
    if getattr(args, "threads", None):
        import numba

        # Numba's thread pool, started by bnlab's first kernel call, runs on torch's OpenMP
        # runtime and sets its thread count as it starts: start it first, then set ours
        numba.get_num_threads()
        torch.set_num_threads(args.threads)
    if getattr(args, "peak_memory_of", None):
        _peak_memory_child(args.peak_memory_of)
        return 0
    reps = args.reps if args.reps is not None else (3 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if reps < 1 or warmup < 0:
        raise SystemExit(f"--reps must be >= 1 and --warmup >= 0, got {reps} and {warmup}")
    base = QUICK_GRID if args.quick else Grid()
    grid = replace(
        base,
        networks=tuple(args.models) or base.networks,
        batches=tuple(args.batches or base.batches),
        sizes=tuple(args.sizes or base.sizes),
        modes=tuple(args.modes),
    )
    result = run(
        grid,
        reps,
        warmup,
        memory=not (args.no_memory or args.quick),
        log=lambda s: print(s, flush=True),
    )
    return save_and_show(result, Path(args.json or "bench_models.json"), print_tables)


def main(argv: list[str] | None = None) -> int:
    """``python -m bnlab.bench.models`` (``bnlab bench --models`` runs the same)."""
    return main_of("python -m bnlab.bench.models", __doc__, add_arguments, run_from_args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
