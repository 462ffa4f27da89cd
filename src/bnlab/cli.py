"""The ``bnlab`` command (also ``python -m bnlab``): the lab's experiments and the kernel benchmark.

    bnlab list                          presets, networks and data sets
    bnlab compare PRESET [options]      a tutorial's experiment, with vs without BN
    bnlab run CONFIG.toml [--resume]    any grid (see bnlab.lab.config)
    bnlab show RUN_DIR                  print a run folder's record again
    bnlab report RUN_DIR... [-o FILE]   one self-contained HTML report (bnlab.lab.report)
    bnlab bench [options]               kernel benchmark (bnlab.bench.kernels)
    bnlab worker compare|run ...        one rank of a distributed run: what --nproc N starts on
                                        this machine, and what torchrun starts (see README)

Exit status: 0 done. 2 the user's error, one line on stderr (``error: ...``) saying what is
wrong and how to fix it: argparse's errors, ``bnlab.lab.errors.UsageError`` (what the lab's
checks of presets, configs, grids, records and folders reject) and the lab's other user-facing
errors (``USER_ERRORS``), a missing optional dependency (``pip install "bnlab[lab]"``). 1 any
other exception: a bug, shown with its traceback. 130 Ctrl-C, after saving every finished
epoch.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnlab.bench import kernels as kernel_bench
from bnlab.lab.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: the lab's exceptions that report the user's mistake, or a failure the user can act on, by
#: (module, class): an exception can only be an instance of one if its module was imported.
USER_ERRORS = (
    ("bnlab.lab.errors", "UsageError"),
    ("bnlab.lab.report", "ReportError"),  # not a run folder, an empty one, ...
    ("bnlab.lab.experiment", "ExperimentExistsError"),  # a folder is never overwritten
    ("bnlab.lab.data", "DatasetNotFoundError"),  # says: --data-dir or --download
    ("bnlab.lab.download", "DownloadError"),  # every mirror failed
    ("bnlab.lab.distributed_run", "RankLostError"),  # names the lost ranks; --resume continues
)
#: the optional dependencies the commands import, and the extra that installs each.
EXTRAS = {
    "matplotlib": "lab",
    "rich": "lab",
    "sklearn": "lab",
    "vega_datasets": "lab",
    "pandas": "lab",  # vega_datasets' own dependency
    "tensorboard": "tensorboard",
}


#: the command-line flag of a config key or run parameter, where it is not "--" + the key
#: with "-" for "_" (error messages name the flag a value came from)
_FLAG_NAMES = {"probes": "--probe", "seed": "--seeds"}
#: the config settings `compare` and `run` take as flags
_RUN_SETTINGS = (
    "data_dir", "threads", "out", "progress", "download", "tensorboard", "probes", "probe_layer"
)  # fmt: skip
#: the run parameters `bnlab compare` takes as flags (each one value)
_GRID_FLAGS = (
    "epochs", "lr", "batch_size", "bn_impl", "bn_momentum", "bn_eps", "dataset", "sgd_momentum"
)  # fmt: skip


def _flag(key: str) -> str:
    return _FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seeds(text: str) -> list[int] | int:
    """``3`` (three seeds from the preset's first) or ``50,51,52`` (these seeds)."""
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes a count (3) or a comma-separated list (50,51,52), got {text!r}"
        ) from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--seeds count must be >= 1, got {count}")
    return count


def _bn_momentum(text: str) -> float | str:
    """``0.1`` (PyTorch's convention) or ``cumulative``; the range is the grid's check."""
    if text == "cumulative":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1] or 'cumulative', got {text!r}"
        ) from None


def _add_run_options(parser: argparse.ArgumentParser, worker: bool) -> None:
    parser.add_argument("--data-dir", help="folder holding the IDX files of MNIST/Fashion-MNIST")
    parser.add_argument("--download", action="store_true", help="fetch MNIST/Fashion-MNIST")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", help="experiment folder (default runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted folder")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")
    parser.add_argument("--progress", choices=("auto", "on", "off"), help="progress bar")
    dist = parser.add_argument_group("distributed (see README, Distributed)")
    if not worker:  # a worker is one rank: it starts none
        dist.add_argument(
            "--nproc", type=_positive_int, help="train on N local processes (DDP, gloo)"
        )
    dist.add_argument("--sync-bn", action="store_true", help="BN statistics over all ranks")
    dist.add_argument(
        "--dist-timeout", type=float, default=300.0, help="seconds to wait for a missing rank"
    )
    parser.add_argument(
        "--probe", help="probes, comma-separated: activations,ics,landscape (bnlab.lab.probes)"
    )
    parser.add_argument("--probe-layer", help="probed layer: a name or Type#k (default Linear#1)")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")


def _add_experiment_commands(sub: Any, worker: bool = False) -> None:
    """``compare`` and ``run``, as commands or as ``worker`` subcommands."""
    compare = sub.add_parser("compare", help="a preset, with vs without BN")
    compare.add_argument("preset", help="a preset name (see `bnlab list`)")
    compare.add_argument("--epochs", type=int)
    compare.add_argument("--lr", type=float)
    compare.add_argument("--batch-size", type=int)
    compare.add_argument("--seeds", type=_seeds, help="a count (3) or a list (50,51,52)")
    compare.add_argument("--bn-impl", choices=("bnlab", "torch"), help="BN implementation")
    compare.add_argument(
        "--bn-momentum",
        type=_bn_momentum,
        help="BN's momentum, PyTorch's convention, or 'cumulative' (default: the network's)",
    )
    compare.add_argument("--bn-eps", type=float, help="BN's eps (default: the network's)")
    compare.add_argument("--sgd-momentum", type=float, help="SGD's momentum (optimizer sgd)")
    compare.add_argument("--dataset", help="data set instead of the preset's")
    compare.add_argument("--limit-train", type=int, help="use the first N training samples")
    compare.add_argument("--limit-test", type=int, help="use the first N test samples")
    compare.add_argument("--name", help="experiment name (default: the preset's)")
    _add_run_options(compare, worker)

    run = sub.add_parser("run", help="the grid of a TOML config file")
    run.add_argument("config", type=Path, help="a TOML file (see bnlab.lab.config)")
    _add_run_options(run, worker)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnlab", description="Batch norm lab: the tutorials' BN vs no-BN experiments."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="presets, networks and data sets")
    _add_experiment_commands(sub)

    show = sub.add_parser("show", help="print a run folder's record again")
    show.add_argument("run_dir", type=Path)
    show.add_argument("--rows", type=int, help="show only the last N rows of the table")

    report = sub.add_parser("report", help="one self-contained HTML report of run folders")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument("-o", "--output", type=Path, help="default: RUN_DIR/report.html")
    report.add_argument("--figures", type=Path, help="also keep the figures (PNG, SVG) here")

    bench = sub.add_parser(
        "bench",
        help="kernel benchmark: bnlab vs torch (bnlab.bench.kernels)",
        description=(kernel_bench.__doc__ or "").split("\n")[0],
    )
    kernel_bench.add_arguments(bench)

    worker = sub.add_parser(
        "worker",
        help="one rank of a distributed compare/run (what --nproc N and torchrun start)",
        description=(
            "Run compare or run as one rank of a distributed job, from torchrun's environment "
            "(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): `--nproc N` starts N of these; "
            "under torchrun: torchrun --nproc-per-node N -m bnlab worker compare PRESET ..."
        ),
    )
    _add_experiment_commands(
        worker.add_subparsers(dest="rank_command", required=True, metavar="COMMAND"), worker=True
    )
    return parser


def _settings(args: argparse.Namespace, keys: Sequence[str]) -> dict[str, Any]:
    """The config settings given as flags, checked one by one (an error names the flag)."""
    from bnlab.lab.config import check_fields

    values: dict[str, Any] = {}
    for key in keys:
        value: Any
        if key == "probes":
            value = None if args.probe is None else [p for p in args.probe.split(",") if p.strip()]
        elif key in ("download", "tensorboard"):
            value = True if getattr(args, key) else None
        else:
            value = getattr(args, key)
        if value is not None:
            check_fields({key: value}, _flag(key))
            values[key] = value
    return values


def _runtime_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings both `compare` and `run` take as flags."""
    return _settings(args, _RUN_SETTINGS)


def _experiment(config: Any, args: argparse.Namespace, console: Console) -> int:
    """Train ``config`` here, or as one rank (``bnlab worker``); then show and report it."""
    from bnlab.lab.display import show
    from bnlab.lab.launch import env_world

    env = env_world()
    if args.command == "worker":
        if env is None:
            raise UsageError(
                "bnlab worker is one rank of a distributed run and needs torchrun's environment "
                "(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): start it with torchrun, or run "
                f"`bnlab {args.rank_command} ... --nproc N`"
            )
        from bnlab.lab.distributed_run import run_distributed_experiment

        record, folder, writes = run_distributed_experiment(
            config,
            resume=args.resume,
            sync_bn=args.sync_bn,
            timeout_s=args.dist_timeout,
            env=env,
            console=console,
        )
        if not writes:  # only rank 0 shows and reports
            return 0
    else:
        from bnlab.lab.experiment import run_experiment

        if env is not None:
            raise UsageError(
                f"RANK={env.rank} and WORLD_SIZE={env.world_size} are set, as in a torchrun job: "
                f"start each rank as `bnlab worker {args.command} ...` (or unset them)"
            )
        if args.sync_bn:
            raise UsageError(
                "--sync-bn needs several processes: add --nproc N, or start the ranks with "
                f"torchrun as `bnlab worker {args.command} ...`"
            )
        record, folder = run_experiment(config, resume=args.resume, console=console)
    show(record, folder, console, rows=12)
    if not args.no_report:
        from bnlab.lab.report import build_report

        console.print(f"report: {build_report([folder])}", highlight=False)
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from bnlab.lab.data import DATASETS, has_idx_dataset
    from bnlab.lab.models import NETWORKS
    from bnlab.lab.presets import PRESETS

    table = Table(title="presets (bnlab compare PRESET)")
    for col in ("preset", "tutorial", "network", "data", "description"):
        table.add_column(col)
    for p in PRESETS.values():
        table.add_row(
            p.name, p.tutorial, p.params["network"][0], p.params["dataset"][0], p.description
        )
    console.print(table)
    table = Table(title="networks (grid key `network`)")
    table.add_column("network")
    table.add_column("description")
    for n in NETWORKS.values():
        table.add_row(n.name, n.description)
    console.print(table)
    table = Table(title="data sets (grid key `dataset`)")
    table.add_column("dataset")
    table.add_column("available")
    for name in DATASETS:
        if name in ("mnist", "fashion-mnist"):
            ok = "yes" if has_idx_dataset(name) else "no (--data-dir or --download)"
        else:
            ok = "yes (bundled)"
        table.add_row(name, ok)
    console.print(table)
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from bnlab.lab.config import Config
    from bnlab.lab.grid import check_grid
    from bnlab.lab.presets import get_preset

    preset = get_preset(args.preset)
    grid: dict[str, Any] = {}
    for key in _GRID_FLAGS:
        if getattr(args, key) is not None:
            grid.update(check_grid({key: getattr(args, key)}, _flag(key)))
    if args.seeds is not None:
        first = preset.params["seed"][0]
        seeds = args.seeds
        seeds = list(range(first, first + seeds)) if isinstance(seeds, int) else seeds
        grid.update(check_grid({"seed": seeds}, _flag("seed")))
    values = _runtime_overrides(args) | _settings(args, ("limit_train", "limit_test", "name"))
    config = Config(preset=preset.name, grid=grid, **values)
    return _experiment(config, args, console)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from dataclasses import replace

    from bnlab.lab.config import load_config

    config = replace(load_config(args.config), **_runtime_overrides(args))
    return _experiment(config, args, console)


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    from bnlab.lab.display import show
    from bnlab.lab.record import load_record

    record = load_record(args.run_dir)
    show(record, args.run_dir, console, rows=args.rows)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from bnlab.lab.report import build_report

    path = build_report(args.run_dirs, args.output, args.figures)
    console.print(f"report: {path}", highlight=False)
    return 0


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    return kernel_bench.run_from_args(args)


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "list": cmd_list,
    "compare": cmd_compare,
    "run": cmd_run,
    "show": cmd_show,
    "report": cmd_report,
    "bench": cmd_bench,
}


def _missing_extra(exc: ImportError) -> str | None:
    """``pip install "bnlab[...]"`` advice when ``exc`` (or the error it replaced) is an optional
    dependency's absence; None otherwise."""
    for error in (exc, exc.__context__):
        if isinstance(error, ModuleNotFoundError) and error.name:
            root = error.name.partition(".")[0]
            if root in EXTRAS:
                return f'{root} is not installed: pip install "bnlab[{EXTRAS[root]}]"'
    return None


def _user_message(exc: Exception) -> str | None:
    """The one line to print when ``exc`` is the user's to fix; None when it is a bug."""
    if isinstance(exc, ImportError):
        return _missing_extra(exc)
    for module, name in USER_ERRORS:
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(exc, kind):
            return str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``bnlab`` command; returns the exit status (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "nproc", None) is not None:  # N ranks, each `bnlab worker <argv>`
            from bnlab.lab.distributed_run import launch_cli

            return launch_cli(argv, args.nproc)
        from rich.console import Console

        name = args.rank_command if args.command == "worker" else args.command
        return COMMANDS[name](args, Console())
    except KeyboardInterrupt:
        print("interrupted: every finished epoch is saved; --resume continues", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        message = _user_message(exc)
        if message is None:
            traceback.print_exc()
            print(
                "bnlab: internal error (a bug, not a problem with your input): please report it "
                "with the traceback above",
                file=sys.stderr,
            )
            return EXIT_INTERNAL
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
