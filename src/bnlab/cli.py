"""The ``bnlab`` command (also ``python -m bnlab``): the lab's experiments and the kernel benchmark.

    bnlab list                          presets, networks and data sets
    bnlab compare PRESET [options]      a tutorial's experiment, with vs without BN
    bnlab run CONFIG.toml [--resume]    any grid (see bnlab.lab.config)
    bnlab show RUN_DIR                  print a run folder's record again
    bnlab report RUN_DIR... [-o FILE]   one self-contained HTML report (bnlab.lab.report)
    bnlab claims [--only C2,C5] [...]   the claims ledger (bnlab.lab.claims)
    bnlab bench [options]               kernel benchmark (bnlab.bench.kernels)
    bnlab bench --models [NAME ...]     real-model benchmark (bnlab.bench.models)
    bnlab worker compare|run ...        one rank of a distributed run: what --nproc N starts on
                                        this machine, and what torchrun starts (see README)
    bnlab --version

Exit status: 0 done. 2 the user's error, one line on stderr (``error: ...``) saying what is
wrong and how to fix it: argparse's errors, ``bnlab.lab.errors.UsageError`` (what the lab's
checks of presets, configs, grids, records and folders reject) and the lab's other user-facing
errors (``USER_ERRORS``), a missing optional dependency (``pip install "bnlab[lab]"``), a path
that cannot be used (``PATH_ERRNOS``: a read-only file system, no permission, a file where a
folder should be, a full disk). 1 any other exception: a bug, shown with its traceback; or
runs that failed on every try of a worker (``--jobs``, Ray), named in one line. 130
Ctrl-C, after saving every finished epoch, with one line that gives the command to continue.

Building the parser imports neither torch nor the lab's dependencies (``bnlab --help`` answers
at once): each command imports what it needs when it runs, and ``bench``'s options (from
``bnlab.bench.kernels``, which imports torch) are added only when the command is ``bench``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bnlab
import bnlab.bench
from bnlab.lab.errors import UsageError
from bnlab.lab.presets import PRESETS

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
    "tomli_w": "lab",
    "tensorboard": "tensorboard",
}
#: the errno of an OSError on a path the user chose that the user can fix: one line naming the
#: path, not a traceback (any other OSError is a bug)
PATH_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}
    | {errno.EISDIR, errno.ENAMETOOLONG}
)
#: set by ``--nproc`` for the ranks it starts: the command line the user typed (JSON), so that
#: rank 0's Ctrl-C line gives the command that continues
LAUNCH_ARGV_ENV = "BNLAB_LAUNCH_ARGV"


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


def _preset_defaults(key: str) -> str:
    """``(default: the preset's: lizard-cnn 5, ...)``: each preset's value of run parameter
    ``key``, for the help of the flag that overrides it."""
    values = ", ".join(f"{p.name} {p.params[key][0]}" for p in PRESETS.values())
    return f"(default: the preset's: {values})"


#: a config file for `bnlab run`, shown in its help (the README shows the same one)
TOML_EXAMPLE = """\
name = "lr-sweep"          # the folder: runs/lr-sweep (runs/lr-sweep-2, ... if taken)
preset = "lizard-cnn"      # optional: start from a preset's parameters
limit_train = 10000        # settings: threads, data_dir, probes, ... (bnlab.lab.config)

[grid]                     # run parameters: a list each (a scalar is one value)
lr = [0.001, 0.01, 0.1]
bn = [false, true]
seed = [50, 51, 52]
epochs = 5
"""


def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    """Where the runs train (bnlab.lab.executors): here, in N processes, or on Ray."""
    group = parser.add_argument_group(
        "parallel runs (bnlab.lab.executors; the numbers are the same as one after another)"
    )
    group.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train N runs at once in local processes, each with cores/N threads (default 1)",
    )
    group.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local (this machine, default) or ray: each run a task on a running Ray cluster "
        '(pip install "bnlab[ray]"; every node needs bnlab and the data at the same path, '
        "or --download)",
    )
    group.add_argument(
        "--ray-address", metavar="HOST:PORT", help="the Ray head node (ray start --head)"
    )


def _executor(args: argparse.Namespace) -> Any:
    """The executor ``--jobs``, ``--executor`` and ``--ray-address`` ask for."""
    from bnlab.lab.executors import make_executor

    return make_executor(args.executor, args.jobs, args.ray_address or "")


def _add_run_options(parser: argparse.ArgumentParser, worker: bool) -> None:
    parser.add_argument("--data-dir", help="folder holding the IDX files of MNIST/Fashion-MNIST")
    parser.add_argument("--download", action="store_true", help="fetch MNIST/Fashion-MNIST")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads (default 0: one for a small model, else torch's; see bnlab.lab.threads)",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="experiment folder (default: runs/<name>, or <name>-2, ...)"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted folder")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")
    parser.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        help="progress display (default auto: a bar on a terminal only)",
    )
    if not worker:  # a worker is one rank: it trains one run at a time
        _add_executor_options(parser)
    dist = parser.add_argument_group("distributed (see README, Distributed)")
    if not worker:  # a worker is one rank: it starts none
        dist.add_argument(
            "--nproc", type=_positive_int, metavar="N", help="train on N local processes (gloo)"
        )
    dist.add_argument("--sync-bn", action="store_true", help="BN statistics over all ranks")
    dist.add_argument(
        "--dist-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="seconds to wait for a missing rank (default 300)",
    )
    parser.add_argument(
        "--probe", help="probes, comma-separated: activations,ics,landscape (bnlab.lab.probes)"
    )
    parser.add_argument("--probe-layer", help="probed layer: a name or Type#k (default Linear#1)")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")


def _add_experiment_commands(sub: Any, worker: bool = False) -> None:
    """``compare`` and ``run``, as commands or as ``worker`` subcommands."""
    compare = sub.add_parser("compare", help="a preset, with vs without BN")
    compare.add_argument("preset", help=f"a preset: {', '.join(PRESETS)} (see `bnlab list`)")
    compare.add_argument(
        "--epochs", type=int, metavar="N", help=f"epochs per run {_preset_defaults('epochs')}"
    )
    compare.add_argument("--lr", type=float, help=f"learning rate {_preset_defaults('lr')}")
    compare.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"training batch size {_preset_defaults('batch_size')}",
    )
    compare.add_argument(
        "--seeds",
        type=_seeds,
        help="a count (3) or a list (50,51,52) (default: 1, the preset's seed)",
    )
    compare.add_argument(
        "--bn-impl", choices=("bnlab", "torch"), help="BN implementation (default bnlab)"
    )
    compare.add_argument(
        "--bn-momentum",
        type=_bn_momentum,
        help="BN's momentum, PyTorch's convention, or 'cumulative' (default: the network's)",
    )
    compare.add_argument("--bn-eps", type=float, help="BN's eps (default: the network's)")
    compare.add_argument(
        "--sgd-momentum", type=float, help="SGD's momentum (optimizer sgd; default: the preset's)"
    )
    compare.add_argument("--dataset", help="data set instead of the preset's (see `bnlab list`)")
    compare.add_argument(
        "--limit-train",
        type=int,
        metavar="N",
        help="use the first N training samples (default: all)",
    )
    compare.add_argument(
        "--limit-test", type=int, metavar="N", help="use the first N test samples (default: all)"
    )
    compare.add_argument("--name", help="experiment name (default: the preset's)")
    _add_run_options(compare, worker)

    run = sub.add_parser(
        "run",
        help="the grid of a TOML config file",
        description="Train every run of a TOML config's grid (keys: bnlab.lab.config).",
        epilog=f"A config file (flags given here override its settings):\n\n{TOML_EXAMPLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", type=Path, help="a TOML file (see the example below)")
    _add_run_options(run, worker)


def _bench_tools() -> str:
    """The other measurement tools, as ``bnlab.bench``'s docstring lists them (one a line)."""
    lines = (bnlab.bench.__doc__ or "").splitlines()
    tools = [
        line for line in lines if line.startswith("    ") and not line.strip().startswith("kernels")
    ]
    return "\n".join(tools).replace("``", "`")


def _add_bench(sub: Any, options: bool) -> None:
    """``bench``; its options (``bnlab.bench.kernels``, which imports torch) only if ``options``."""
    description = "The kernel benchmark: bnlab's batch norm vs torch's, op by op."
    epilog = f"The other measurements: python -m bnlab.bench.TOOL [--help]\n\n{_bench_tools()}"
    bench = sub.add_parser(
        "bench",
        help="kernel benchmark: bnlab vs torch (bnlab.bench.kernels)",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if options:
        from bnlab.bench import kernels, models

        kernels.add_arguments(bench)
        models.add_arguments(bench, shared=False)  # --models: the real-model benchmark


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``bnlab`` parser; ``command`` (the one on the command line) decides whether
    ``bench``'s options are added (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="bnlab", description="Batch norm lab: the tutorials' BN vs no-BN experiments."
    )
    parser.add_argument("--version", action="version", version=f"bnlab {bnlab.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="presets, networks and data sets")
    _add_experiment_commands(sub)

    show = sub.add_parser("show", help="print a run folder's record again")
    show.add_argument("run_dir", type=Path)
    show.add_argument("--rows", type=int, help="show only the last N rows of the table")

    report = sub.add_parser("report", help="one self-contained HTML report of run folders")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="default: RUN_DIR/report.html for one folder; required for several",
    )
    report.add_argument("--figures", type=Path, help="also keep the figures (PNG, SVG) here")

    claims = sub.add_parser(
        "claims",
        help="the claims ledger: the tutorials' claims put to a measured test",
        description="Run the claims C1-C11 (bnlab.lab.claims) and write ledger.json, "
        "ledger.md and report.html; every run is cached, so a rerun resumes or rebuilds.",
    )
    claims.add_argument("--only", help="claim ids, comma-separated (default: all), e.g. C2,C5")
    claims.add_argument(
        "--budget", choices=("smoke", "standard", "full"), default="standard",
        help="smoke: seconds, for tests; standard: the README's numbers; full: a cluster",
    )  # fmt: skip
    claims.add_argument("--out", type=Path, default=Path("runs/claims"), help="ledger folder")
    claims.add_argument("--data-dir", help="folder holding MNIST's IDX files")
    claims.add_argument("--download", action="store_true", help="fetch MNIST if missing")
    claims.add_argument("--threads", type=int, help="torch threads per run (default: the lab's)")
    claims.add_argument("--plan", action="store_true", help="list the runs; train nothing")
    claims.add_argument("--no-report", action="store_true", help="skip report.html")
    _add_executor_options(claims)

    _add_bench(sub, options=command == "bench")

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
        executor = _executor(args)
        record, folder = run_experiment(
            config, resume=args.resume, console=console, executor=executor
        )
    show(record, folder, console, rows=12)
    if not args.no_report:
        from bnlab.lab.report import build_report

        console.print(f"report: {build_report([folder])}", highlight=False)
    failed = [run["name"] for run in record.runs if run["status"] == "failed"]
    if failed:  # marked in the record, with each one's error
        print(
            f"error: {len(failed)} runs failed on every try ({', '.join(failed)}); their errors "
            f"are in {folder / 'record.json'}; --resume trains them again",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
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

    if len(args.run_dirs) > 1 and args.output is None:  # RUN_DIR/report.html is one folder's
        raise UsageError(
            f"a report of {len(args.run_dirs)} run folders needs -o FILE (the default, "
            f"{args.run_dirs[0] / 'report.html'}, is the report of {args.run_dirs[0]} alone)"
        )
    path = build_report(args.run_dirs, args.output, args.figures)
    console.print(f"report: {path}", highlight=False)
    return 0


def cmd_claims(args: argparse.Namespace, console: Console) -> int:
    from bnlab.lab.claims.ledger import build_ledger, show_plan
    from bnlab.lab.claims.runner import Settings

    if args.threads is not None and args.threads < 0:
        raise UsageError(f"--threads must be >= 0, got {args.threads}")
    settings = Settings(args.data_dir or "", args.download, args.threads or 0)
    if args.plan:
        return show_plan(args.only, args.budget, args.out, settings, console)
    try:
        done = build_ledger(
            args.only, args.budget, args.out, settings, console, not args.no_report,
            _executor(args),
        )  # fmt: skip
    except KeyboardInterrupt:  # one line; the runs' folders are not what the user reruns
        console.print(
            f"interrupted: every finished epoch is cached in {args.out / 'runs'}; the same "
            "command continues",
            markup=False,
            highlight=False,
        )
        return EXIT_INTERRUPTED
    console.print(done.table())
    if done.ledger["failed"]:  # named in the ledger, with each run's error
        ids = ", ".join(f["id"] for f in done.ledger["failed"])
        print(
            f"error: not measured, a run failed on every try: {ids} (the errors are in "
            f"{args.out / 'ledger.json'}); the same command trains them again",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return 0


#: what ``bnlab bench --quick``'s figures are (and are not)
QUICK_NOTE = (
    "Note: --quick times tiny tensors (at most 1,200 values), where a call's fixed cost (Python, "
    "dispatch, waking threads) is all there is to time, and bnlab's (a Python autograd function) "
    "is the larger: these rows test the benchmark, not the kernels; `bnlab bench` measures those."
)


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from bnlab.bench import kernels, models

    status = (kernels if args.models is None else models).run_from_args(args)
    if args.quick and args.models is None:
        console.print(QUICK_NOTE, markup=False, highlight=False)
    return status


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "list": cmd_list,
    "compare": cmd_compare,
    "run": cmd_run,
    "show": cmd_show,
    "report": cmd_report,
    "claims": cmd_claims,
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


def _path_error(exc: OSError) -> str | None:
    """The one line for an OSError on a path the user can fix (``PATH_ERRNOS``); else None."""
    if exc.errno not in PATH_ERRNOS or not exc.filename:
        return None
    path = Path(os.fsdecode(exc.filename))
    if not path.exists() and path.parent.is_dir():  # a file being created: its folder refused
        return f"cannot create files in {path.parent}: {exc.strerror}"
    return f"cannot use {path}: {exc.strerror}"


def _user_message(exc: Exception) -> str | None:
    """The one line to print when ``exc`` is the user's to fix; None when it is a bug."""
    if isinstance(exc, ImportError):
        return _missing_extra(exc)
    if isinstance(exc, OSError) and (message := _path_error(exc)) is not None:
        return message
    for module, name in USER_ERRORS:
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(exc, kind):
            return str(exc)
    return None


def _without(argv: Sequence[str], flag: str, takes_value: bool) -> list[str]:
    """``argv`` without ``flag`` (``--out DIR``, ``--out=DIR``, or a bare ``--resume``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = takes_value
        elif not (takes_value and arg.startswith(f"{flag}=")):
            out.append(arg)
    return out


def resume_command(argv: Sequence[str], folder: Path) -> str:
    """The command that continues the experiment in ``folder``: the one given (``argv``),
    with ``--out folder --resume``. For a rank of a distributed run, the command that started
    the ranks: ``bnlab ... --nproc N`` (``LAUNCH_ARGV_ENV``), or torchrun's."""
    if LAUNCH_ARGV_ENV in os.environ:
        argv, prefix = json.loads(os.environ[LAUNCH_ARGV_ENV]), "bnlab"
    elif argv and argv[0] == "worker":
        prefix = "torchrun ... -m bnlab"
    else:
        prefix = "bnlab"
    argv = _without(_without(argv, "--out", takes_value=True), "--resume", takes_value=False)
    return f"{prefix} {shlex.join([*argv, '--out', str(folder), '--resume'])}"


def _interrupted(exc: KeyboardInterrupt, argv: Sequence[str], args: argparse.Namespace) -> str:
    """The one line Ctrl-C prints: where the finished epochs are and the command that continues
    them; empty in a process whose rank 0 prints it (another rank, the ``--nproc`` parent)."""
    if getattr(args, "nproc", None) is not None or os.environ.get("RANK", "0") != "0":
        return ""
    folder = getattr(exc, "folder", None)  # bnlab.lab.experiment.ExperimentInterrupted
    if folder is None:
        return "interrupted"
    return (
        f"interrupted: every finished epoch is saved in {folder}; continue with: "
        f"{resume_command(argv, folder)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``bnlab`` command; returns the exit status (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = _parser(command).parse_args(argv)
    try:
        if getattr(args, "nproc", None) is not None:  # N ranks, each `bnlab worker <argv>`
            if args.jobs != 1 or args.executor != "local":
                raise UsageError(
                    "--nproc trains each run on N ranks, --jobs and --executor train several "
                    "runs at once: choose one"
                )
            from bnlab.lab.distributed_run import launch_cli

            return launch_cli(argv, args.nproc, env={LAUNCH_ARGV_ENV: json.dumps(argv)})
        from rich.console import Console

        name = args.rank_command if args.command == "worker" else args.command
        return COMMANDS[name](args, Console())
    except KeyboardInterrupt as exc:
        if line := _interrupted(exc, argv, args):
            print(line, file=sys.stderr)
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
