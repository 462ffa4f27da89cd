"""What a result depends on besides the config: library versions, threads, machine."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch

PACKAGES = ("bnlab", "torch", "numpy", "numba", "scipy", "scikit-learn", "rich", "vega_datasets")


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "versions": versions,
    }
