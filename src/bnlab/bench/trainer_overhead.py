"""Trainer overhead: the trainer's epoch vs a bare hand-written loop, same model and data.

    python -m bnlab.bench.trainer_overhead [--network mlp --batch-size 64 --samples 10000
                                            --repeats 7]

Both loops run in one process, alternating (``bnlab.bench.timing``), on two copies of the same
freshly seeded model; the result is the ratio of the median epoch times (trainer / bare). The
bare loop does only what any loop must: shuffle, slice, forward, loss, zero_grad, backward,
step. The trainer adds the on-tensor accumulation of loss and metric and its single read per
epoch.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from bnlab.bench.timing import interleave, medians, report
from bnlab.lab.data import Dataset, epoch_generator, load_dataset
from bnlab.lab.grid import RunParams
from bnlab.lab.models import build_model
from bnlab.lab.trainer import make_optimizer, train_epoch


def bare_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    criterion: Callable[..., torch.Tensor] = F.cross_entropy,
) -> float:
    start = time.perf_counter()
    model.train()
    perm = torch.randperm(len(x), generator=generator)
    xs, ys = x[perm], y[perm]
    for i in range(0, len(xs), batch_size):
        loss = criterion(model(xs[i : i + batch_size]), ys[i : i + batch_size])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def measure(
    dataset: Dataset, params: RunParams, repeats: int
) -> tuple[float, float, list[float], list[float]]:
    """(median trainer s, median bare s, all trainer times, all bare times)."""
    model_a = build_model(
        params.network, params.bn, params.bn_impl, dataset.input_shape, 10, params.seed
    )
    model_b = copy.deepcopy(model_a)
    opt_a, opt_b = make_optimizer(model_a, params), make_optimizer(model_b, params)

    def trainer_epoch(epoch: int) -> float:
        g = epoch_generator(params.seed, epoch)
        return train_epoch(model_a, opt_a, dataset, params.batch_size, g)[2]

    def bare(epoch: int) -> float:
        g = epoch_generator(params.seed, epoch)
        return bare_epoch(model_b, opt_b, dataset.x_train, dataset.y_train, params.batch_size, g)

    times = interleave({"trainer": trainer_epoch, "bare": bare}, repeats)
    med = medians(times)
    return med["trainer"], med["bare"], times["trainer"], times["bare"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bnlab.bench.trainer_overhead", description=__doc__
    )
    parser.add_argument("--network", default="mlp")
    parser.add_argument("--bn", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dataset", default="fashion-mnist")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dataset, normalization="normal").subset(args.samples, 1)
    params = RunParams(
        network=args.network, bn=args.bn, optimizer="sgd", lr=0.01, sgd_momentum=0.9,
        batch_size=args.batch_size, seed=0,
    )  # fmt: skip
    t, b, ts, bs = measure(dataset, params, args.repeats)
    report(
        f"{args.network} bn={args.bn} batch {args.batch_size}, {len(dataset.x_train)} samples, "
        f"{args.threads} thread(s), {args.repeats} epochs each, alternating:",
        {"trainer epoch": ts, "bare loop epoch": bs},
        f"overhead: trainer / bare = {t / b:.4f} ({(t / b - 1) * 100:+.2f}%)",
        digits=4,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
