"""The ``bnlab`` command: ``list``, ``compare``, ``run``, ``show``, ``bench``.

    bnlab list                          presets, networks and data sets
    bnlab compare PRESET [options]      a seed's experiment, with vs without BN
    bnlab run CONFIG.toml [--resume]    any grid (see bnlab.lab.config)
    bnlab show RUN_DIR                  print a run folder's record again
    bnlab report RUN_DIR... [-o FILE]   one self-contained HTML report (bnlab.lab.report)
    bnlab bench [args]                  kernel benchmarks (bnlab.bench)

Errors in the input (unknown preset, bad config, missing data set, existing folder) print one
line saying what is wrong and how to fix it, and exit with status 2; Ctrl-C exits with 130
after saving every finished epoch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding the IDX files of MNIST/Fashion-MNIST")
    parser.add_argument("--download", action="store_true", help="fetch MNIST/Fashion-MNIST")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", help="experiment folder (default runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted folder")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")
    parser.add_argument("--progress", choices=("auto", "on", "off"), help="progress bar")
    dist = parser.add_argument_group("distributed (see README, Distributed)")
    dist.add_argument("--nproc", type=int, help="train on N local processes (DDP, gloo)")
    dist.add_argument("--sync-bn", action="store_true", help="BN statistics over all ranks")
    dist.add_argument(
        "--dist-timeout", type=float, default=300.0, help="seconds to wait for a missing rank"
    )
    parser.add_argument(
        "--probe", help="probes, comma-separated: activations,ics,landscape (bnlab.lab.probes)"
    )
    parser.add_argument("--probe-layer", help="probed layer: a name or Type#k (default Linear#1)")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnlab", description="Batch norm lab: the tutorials' BN vs no-BN experiments."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="presets, networks and data sets")

    compare = sub.add_parser("compare", help="a preset, with vs without BN")
    compare.add_argument("preset", help="a preset name (see `bnlab list`)")
    compare.add_argument("--epochs", type=int)
    compare.add_argument("--lr", type=float)
    compare.add_argument("--batch-size", type=int)
    compare.add_argument("--seeds", type=_seeds, help="a count (3) or a list (50,51,52)")
    compare.add_argument("--bn-impl", choices=("bnlab", "torch"), help="BN implementation")
    compare.add_argument("--dataset", help="data set instead of the preset's")
    compare.add_argument("--limit-train", type=int, help="use the first N training samples")
    compare.add_argument("--limit-test", type=int, help="use the first N test samples")
    compare.add_argument("--name", help="experiment name (default: the preset's)")
    _add_run_options(compare)

    run = sub.add_parser("run", help="the grid of a TOML config file")
    run.add_argument("config", type=Path, help="a TOML file (see bnlab.lab.config)")
    _add_run_options(run)

    show = sub.add_parser("show", help="print a run folder's record again")
    show.add_argument("run_dir", type=Path)
    show.add_argument("--rows", type=int, help="show only the last N rows of the table")

    report = sub.add_parser("report", help="one self-contained HTML report of run folders")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument("-o", "--output", type=Path, help="default: RUN_DIR/report.html")
    report.add_argument("--figures", type=Path, help="also keep the figures (PNG, SVG) here")

    sub.add_parser("bench", help="kernel benchmarks (bnlab.bench; try `bnlab bench -h`)")
    return parser


def _runtime_overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in ("data_dir", "threads", "out", "progress"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    for key in ("download", "tensorboard"):
        if getattr(args, key):
            values[key] = True
    if args.probe is not None:
        values["probes"] = [p for p in args.probe.split(",") if p.strip()]
    if args.probe_layer is not None:
        values["probe_layer"] = args.probe_layer
    return values


def _experiment(
    config: Any,
    resume: bool,
    console: Console,
    report: bool = True,
    dist: argparse.Namespace | None = None,
) -> int:
    from bnlab.distributed.launch import env_world
    from bnlab.lab.display import show
    from bnlab.lab.experiment import run_experiment

    sync_bn = bool(dist and dist.sync_bn)
    if env_world() is not None:  # one rank of `torchrun` or of --nproc N: only rank 0 shows
        from bnlab.lab.distributed_run import run_distributed_experiment

        timeout_s = dist.dist_timeout if dist else 300.0
        record, folder, writes = run_distributed_experiment(
            config, resume=resume, sync_bn=sync_bn, timeout_s=timeout_s, console=console
        )
        if not writes:
            return 0
    elif sync_bn:
        raise ValueError("--sync-bn needs several processes: add --nproc N or run under torchrun")
    else:
        record, folder = run_experiment(config, resume=resume, console=console)
    show(record, folder, console, rows=12)
    if report:
        from bnlab.lab.report import build_report

        console.print(f"report: {build_report([folder])}", highlight=False)
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from bnlab.lab.data import DATASETS, has_idx_dataset
    from bnlab.lab.models import NETWORKS
    from bnlab.lab.presets import PRESETS

    table = Table(title="presets (bnlab compare PRESET)")
    for col in ("preset", "seed", "network", "data", "description"):
        table.add_column(col)
    for p in PRESETS.values():
        table.add_row(
            p.name, p.seed_tutorial, p.params["network"][0], p.params["dataset"][0], p.description
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
    from bnlab.lab.presets import get_preset

    preset = get_preset(args.preset)
    grid: dict[str, Any] = {}
    for key in ("epochs", "lr", "batch_size", "bn_impl", "dataset"):
        if getattr(args, key) is not None:
            grid[key] = [getattr(args, key)]
    if args.seeds is not None:
        first = preset.params["seed"][0]
        grid["seed"] = (
            list(range(first, first + args.seeds)) if isinstance(args.seeds, int) else args.seeds
        )
    values = _runtime_overrides(args)
    for key in ("limit_train", "limit_test", "name"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    config = Config(preset=preset.name, grid=grid, **values)
    return _experiment(config, args.resume, console, report=not args.no_report, dist=args)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from dataclasses import replace

    from bnlab.lab.config import load_config

    config = replace(load_config(args.config), **_runtime_overrides(args))
    return _experiment(config, args.resume, console, report=not args.no_report, dist=args)


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    from bnlab.lab.display import show
    from bnlab.lab.record import load_record

    show(load_record(args.run_dir), args.run_dir, console, rows=args.rows)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from bnlab.lab.report import build_report

    path = build_report(args.run_dirs, args.output, args.figures)
    console.print(f"report: {path}", highlight=False)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "list": cmd_list,
    "compare": cmd_compare,
    "run": cmd_run,
    "show": cmd_show,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # its own argument parser; imported only when used
        from bnlab.bench import main as bench_main

        return int(bench_main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    if getattr(args, "nproc", None) is not None and "RANK" not in os.environ:
        from bnlab.lab.distributed_run import launch_cli  # N ranks, each running this command

        return launch_cli(argv, args.nproc)
    console = Console()
    try:
        return COMMANDS[args.command](args, console)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: every finished epoch is saved; --resume continues")
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return EXIT_USAGE
    except RuntimeError as exc:  # DownloadError
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
