"""What every benchmark command shares: its ``main`` and how it saves and shows a result.

A benchmark module gives ``add_arguments(parser)`` and ``run_from_args(args)``; ``bnlab bench``
calls the same two, so ``python -m bnlab.bench.X`` and the CLI cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnlab.lab.files import atomic_write_text


def save_and_show(
    result: dict[str, Any], path: Path, show: Callable[[dict[str, Any]], None]
) -> int:
    """Write ``result`` as JSON atomically, print it with ``show``, say where it went; exit 0."""
    atomic_write_text(path, json.dumps(result, indent=2))
    show(result)
    print(f"wrote {path}")
    return 0


def main_of(
    prog: str,
    doc: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run_from_args: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
) -> int:
    """Parse ``argv`` with the module's own arguments and run it (``python -m bnlab.bench.X``)."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
