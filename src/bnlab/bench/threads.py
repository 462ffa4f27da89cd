"""A lab training epoch on 1 thread vs N threads: the measurement behind ``bnlab.lab.threads``.

    python -m bnlab.bench.threads [--network mpg-mlp --dataset mpg --batch-size 32 --repeats 5]

One model, one optimizer, the same shuffled batches; epochs alternate between the thread
counts (``bnlab.bench.timing``) after ``torch.set_num_threads`` (bnlab's compiled kernels
follow it). Reported: the forward FLOPs of one batch (what ``bnlab.lab.threads`` compares with
its threshold), the median epoch time at each thread count and their ratio.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from bnlab.bench.timing import describe, interleave, ratio_of_medians
from bnlab.lab.data import Dataset, epoch_generator, load_dataset
from bnlab.lab.grid import RunParams
from bnlab.lab.models import build_model
from bnlab.lab.threads import TORCH_DEFAULT, forward_flops
from bnlab.lab.trainer import make_optimizer, train_epoch


def measure(dataset: Dataset, params: RunParams, threads: int, repeats: int) -> dict[str, object]:
    """Epoch times at 1 thread and at ``threads``, their ratio (many / one) and the FLOPs."""
    model = build_model(
        params.network, params.bn, "bnlab", dataset.input_shape, dataset.num_outputs, params.seed
    )
    optimizer = make_optimizer(model, params)
    flops = forward_flops(model, dataset.x_train[: params.batch_size])

    def epoch_on(count: int, epoch: int) -> float:
        torch.set_num_threads(count)
        generator = epoch_generator(params.seed, epoch)
        return train_epoch(model, optimizer, dataset, params.batch_size, generator)[2]

    try:
        times = interleave(
            {"1": lambda epoch: epoch_on(1, epoch), "n": lambda epoch: epoch_on(threads, epoch)},
            repeats,
        )
    finally:
        torch.set_num_threads(TORCH_DEFAULT)
    return {"flops": flops, "one_s": times["1"], "many_s": times["n"],
            "ratio": ratio_of_medians(times["n"], times["1"])}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnlab.bench.threads", description=__doc__)
    parser.add_argument("--network", default="mpg-mlp")
    parser.add_argument("--bn", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--dataset", default="mpg")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=0, help="training subset (0: all)")
    parser.add_argument("--threads", type=int, default=2, help="the peer of 1 thread (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    dataset = load_dataset(args.dataset, normalization="normal").subset(args.samples or None, 1)
    params = RunParams(network=args.network, bn=args.bn, batch_size=args.batch_size, seed=0)
    result = measure(dataset, params, args.threads, args.repeats)
    one, many = result["one_s"], result["many_s"]
    assert isinstance(one, list) and isinstance(many, list)
    print(
        f"{args.network} bn={args.bn} on {args.dataset} ({len(dataset.x_train)} samples), batch "
        f"{args.batch_size}: {result['flops']:.2g} forward FLOPs per batch; "
        f"{args.repeats} epochs each, alternating:"
    )
    print(f"  {describe('1 thread', one)}")
    print(f"  {describe(f'{args.threads} threads', many)}")
    print(f"  {args.threads} threads / 1 thread = {result['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
