"""Tasks for the executor tests' workers, in a module that imports nothing heavy: a spawned
worker imports it in a moment (the test module would make it import torch first)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path


def dies(marker: str) -> str:
    """Kills its worker process on the first call (no marker yet), or on every call ("always");
    a marker "raise" raises instead."""
    if marker.endswith("raise"):
        raise ValueError("no such data")
    path = Path(marker)
    if marker.endswith("always") or not path.exists():
        path.touch()
        os._exit(3)
    return "done"


def raises(_: object) -> None:
    raise ValueError("no such data")


def dies_on_ray(address: str, folder: str) -> None:
    """A driver process: runs `dies` for markers "once", "always" and "raise" in ``folder`` on
    the Ray cluster at ``address``, and prints ``{key: outcome}`` as one line of JSON (the
    tests' cluster lives in a network namespace of its own, so its driver must too)."""
    import ray.cloudpickle

    from bnlab.lab.executors import make_executor, run_tasks

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # not importable on nodes
    tasks = {name: str(Path(folder) / name) for name in ("once", "always", "raise")}
    outcomes = run_tasks(make_executor("ray", 1, address), dies, tasks)
    print(json.dumps({o.key: dataclasses.asdict(o) for o in outcomes}))
