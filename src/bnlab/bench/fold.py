"""Benchmark: a folded Conv+BN costs what the Conv alone costs at inference.

Three models with the same convolutions, timed in one process, interleaved round by round so
that machine load hits them alike (``bnlab.bench.timing``): Conv+BN+ReLU blocks (eval), the
same after ``fold_batchnorm``, and Conv+ReLU alone. Reported as ratios of medians to the
Conv-alone time.

Run: ``python -m bnlab.bench.fold [--rounds 30] [--threads 1]``
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from torch import nn

from bnlab.bench.timing import interleave, medians, ratio_of_medians, timed
from bnlab.layers import BatchNorm2d
from bnlab.transforms import fold_batchnorm


def _blocks(channels: int, depth: int, with_bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for _ in range(depth):
        layers.append(nn.Conv2d(c_in, channels, 3, padding=1, bias=not with_bn))
        if with_bn:
            layers.append(BatchNorm2d(channels))
        layers.append(nn.ReLU())
        c_in = channels
    return nn.Sequential(*layers)


def bench_fold(
    batch: int = 16,
    size: int = 32,
    channels: int = 32,
    depth: int = 3,
    rounds: int = 30,
    threads: int | None = None,
) -> dict[str, float]:
    """Median seconds per forward for each model and the ratios to Conv alone."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    with_bn = _blocks(channels, depth, True)
    for _ in range(3):  # non-trivial running statistics
        with_bn(torch.randn(batch, 3, size, size))
    with_bn.eval()
    folded = fold_batchnorm(with_bn)
    conv_only = _blocks(channels, depth, False).eval()
    x = torch.randn(batch, 3, size, size)
    models = {"conv+bn": with_bn, "folded": folded, "conv": conv_only}
    with torch.inference_mode():
        runners = {name: timed(partial(model, x)) for name, model in models.items()}
        times = interleave(runners, rounds, warmup=3)
    return {
        **{f"{name}_s": t for name, t in medians(times).items()},
        "folded_over_conv": ratio_of_medians(times["folded"], times["conv"]),
        "unfolded_over_conv": ratio_of_medians(times["conv+bn"], times["conv"]),
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m bnlab.bench.fold``."""
    parser = argparse.ArgumentParser(
        prog="python -m bnlab.bench.fold", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    result = bench_fold(batch=args.batch, rounds=args.rounds, threads=args.threads)
    for key, value in result.items():
        print(f"{key:20s} {value:.4g}")


if __name__ == "__main__":
    main()
