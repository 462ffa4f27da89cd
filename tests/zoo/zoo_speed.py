"""Whole-model speed, torch's BN against bnlab's after ``convert``:
``.venv/bin/python tests/zoo/zoo_speed.py`` (run it on an otherwise idle machine).

For each model (random init, default settings): a training step (forward, cross-entropy,
backward, SGD step) and an eval forward under no_grad, the two models alternating call by call
(the order reversed every other round), 2 warm-up calls each, medians of ``REPS`` calls. Prints
bnlab/torch ratios of medians (below 1: bnlab faster) and torch's median time.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from conftest import _import_torchvision

import bnlab

REPS = 15


def ratios(make: Callable[[], nn.Module], batch: int, size: int) -> dict[str, tuple[float, float]]:
    torch.manual_seed(0)
    models = {"torch": make()}
    models["bnlab"] = bnlab.convert(copy.deepcopy(models["torch"]))
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.01) for k, m in models.items()}
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))

    def train(k: str) -> None:
        models[k].train()
        optimizers[k].zero_grad()
        nn.functional.cross_entropy(models[k](x), y).backward()
        optimizers[k].step()

    @torch.no_grad()
    def evaluate(k: str) -> None:
        models[k].eval()(x)

    result = {}
    for what, call in (("train", train), ("eval", evaluate)):
        times: dict[str, list[float]] = {k: [] for k in models}
        for k in models:
            call(k)
            call(k)
        for r in range(REPS):
            for k in list(models) if r % 2 == 0 else list(models)[::-1]:
                start = time.perf_counter()
                call(k)
                times[k].append(time.perf_counter() - start)
        ours, theirs = (statistics.median(times[k]) for k in ("bnlab", "torch"))
        result[what] = (ours / theirs, theirs * 1e3)
    return result


def main() -> None:
    torch.set_num_threads(2)
    torchvision = _import_torchvision()
    import timm

    cases = [
        ("torchvision resnet18", lambda: torchvision.models.resnet18(num_classes=10), 16, 112),
        (
            "torchvision mobilenet_v3_small",
            lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
            32,
            112,
        ),
        (
            "timm efficientnet_b0",
            lambda: timm.create_model("efficientnet_b0", num_classes=10),
            16,
            112,
        ),
    ]
    for name, make, batch, size in cases:
        r = ratios(make, batch, size)
        print(
            f"{name}, batch {batch}, {size}x{size}: train bnlab/torch {r['train'][0]:.2f} "
            f"(torch {r['train'][1]:.0f} ms), eval {r['eval'][0]:.2f} (torch {r['eval'][1]:.0f} ms)",
            flush=True,
        )


if __name__ == "__main__":
    main()
