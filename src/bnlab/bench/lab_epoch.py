"""End to end: a training epoch with bnlab's BN layers vs torch's, same model, seed and batches.

    python -m bnlab.bench.lab_epoch [--network lizard-cnn --batch-size 1000 --repeats 5]

Two copies of the same network are built from the same seed, one with ``bn_impl="bnlab"`` and
one with ``bn_impl="torch"`` (the lab's switch), and trained epoch by epoch, alternating
(``bnlab.bench.timing``), on the same shuffled batches with the lab's trainer. Reported: the
median epoch time of each and their ratio (bnlab / torch; below 1 is faster), and the last
epoch's training loss of each: close, not equal (float32 rounding differences between the two
BNs grow over thousands of optimizer steps), a check that the comparison is like for like.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from bnlab.bench.timing import interleave, ratio_of_medians, report
from bnlab.lab.data import Dataset, epoch_generator, load_dataset
from bnlab.lab.grid import RunParams
from bnlab.lab.models import build_model
from bnlab.lab.trainer import make_optimizer, train_epoch


def measure(dataset: Dataset, params: RunParams, repeats: int) -> dict[str, object]:
    """Epoch times of both implementations, their median ratio and last losses."""
    runs = {}
    last_loss: dict[str, float] = {}
    for impl in ("bnlab", "torch"):
        model = build_model(
            params.network, True, impl, dataset.input_shape, dataset.num_outputs, params.seed
        )
        optimizer = make_optimizer(model, params)

        def run(
            epoch: int,
            impl: str = impl,
            model: torch.nn.Module = model,
            optimizer: torch.optim.Optimizer = optimizer,
        ) -> float:
            g = epoch_generator(params.seed, epoch)
            loss, _, seconds = train_epoch(model, optimizer, dataset, params.batch_size, g)
            last_loss[impl] = loss
            return seconds

        runs[impl] = run
    times = interleave(runs, repeats)
    return {
        "bnlab_s": times["bnlab"],
        "torch_s": times["torch"],
        "ratio": ratio_of_medians(times["bnlab"], times["torch"]),
        "last_loss": last_loss,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnlab.bench.lab_epoch", description=__doc__)
    parser.add_argument("--network", default="lizard-cnn")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--samples", type=int, default=0, help="training subset (0: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--seed", type=int, default=50)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dataset, normalization="normal")
    if args.samples:
        dataset = dataset.subset(args.samples, 1)
    params = RunParams(
        network=args.network, bn=True, optimizer=args.optimizer, lr=args.lr,
        batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    result = measure(dataset, params, args.repeats)
    b, t = result["bnlab_s"], result["torch_s"]
    assert isinstance(b, list) and isinstance(t, list)
    report(
        f"{args.network} on {args.dataset} ({len(dataset.x_train)} samples), batch "
        f"{args.batch_size}, {torch.get_num_threads()} thread(s), {args.repeats} epochs each, "
        "alternating:",
        {"bn_impl=bnlab epoch": b, "bn_impl=torch epoch": t},
        f"bnlab / torch = {result['ratio']:.3f}; last training loss {result['last_loss']}",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
