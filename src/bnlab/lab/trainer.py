"""The training loop of one run: one epoch of training, then the test set in eval mode.

The lab's one epoch loop and one evaluation, for a run in one process and for each rank of a
distributed run (``bnlab.lab.distributed_run``): what differs is given by a :class:`Ranks`,
which part of each batch (and of the test set) this process takes and how the processes' sums
and durations meet. A process alone (:data:`ALONE`) takes everything and meets no one.

It fixes the faults of tutorial 001's training framework (its RunManager class):

- no per-batch host sync: loss and correct counts are summed on tensors and read once per
  epoch (``.item()`` per batch waits for every step to finish); the progress bar reads the
  current loss at most twice a second, and only when it is shown;
- the last, partial batch is weighted by its real size, not the nominal batch size;
- the test set is measured after every epoch with the model in eval mode (BN then uses its
  running statistics), beside the training-epoch figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from bnlab.lab.data import Dataset, epoch_generator, shuffled_batches
from bnlab.lab.grid import RunParams

# Called once per batch with (batches done, the loss tensor); must not sync unless it must.
BatchHook = Callable[[int, torch.Tensor], None]
# Called before each training step with the batch (x, y); used by the probes.
StepHook = Callable[[torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class EpochResult:
    loss: float
    metric: float  # accuracy (classification) or MAE (regression)
    test_loss: float
    test_metric: float
    epoch_duration: float
    eval_duration: float
    samples: int


def make_optimizer(model: nn.Module, params: RunParams) -> torch.optim.Optimizer:
    if params.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=params.lr)
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.sgd_momentum)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {params.optimizer!r}")


def loss_fn(task: str) -> Callable[..., torch.Tensor]:
    """Cross-entropy on logits (classification) or mean squared error (regression)."""
    return F.cross_entropy if task == "classification" else F.mse_loss


def metric_sum(output: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    """Sum over the batch of the headline metric: correct predictions, or absolute errors
    (summed in float64)."""
    if task == "classification":
        return (output.argmax(dim=1) == target).sum()
    return (output - target).abs().sum(dtype=torch.float64)


class Ranks(Protocol):
    """This process among the processes that train one model together (DDP), as the epoch loop
    sees it. Every process draws the same shuffled batches and takes its shard of each."""

    @property
    def world_size(self) -> int: ...

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's rows of ``batch`` (a training batch, or the test set)."""
        ...

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The module to evaluate: ``model`` unwrapped, with the buffers every rank shares."""
        ...

    def combine(self, sums: torch.Tensor, seconds: torch.Tensor) -> None:
        """In place: ``sums`` added up over the processes, ``seconds`` the slowest one's."""
        ...


class _Alone:
    """One process: the whole of every batch, the model as it is, no one to meet."""

    world_size = 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        return batch

    def eval_model(self, model: nn.Module) -> nn.Module:
        return model

    def combine(self, sums: torch.Tensor, seconds: torch.Tensor) -> None:
        return None


#: a run in one process
ALONE: Ranks = _Alone()


def _train_sums(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator,
    ranks: Ranks,
    on_batch: BatchHook | None = None,
    before_step: StepHook | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over the shuffled training set: this process's (loss sum, metric sum).

    Each batch's loss is the mean over this process's shard of it. With several processes it
    is backpropagated weighted by shard size * world size / batch size, so that DDP's average
    of the gradients is the gradient of the whole batch's mean loss, whatever the shard sizes
    (an empty shard contributes zero). The sums weight each batch by its real size (the last
    one may be smaller); they stay on tensors (float64), read by the caller once per epoch.
    They are computed once, after the pass, from each batch's output (detached, as the model
    gave it at that step) and targets, in float64: the sum of the batch losses weighted by the
    batch sizes is the loss summed over the samples. A few tensor operations per batch would
    cost a small network a tenth of its step.
    """
    model.train()
    criterion = loss_fn(dataset.task)
    outputs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    world_size = ranks.world_size
    for step, (x, y) in enumerate(
        shuffled_batches(dataset.x_train, dataset.y_train, batch_size, generator), start=1
    ):
        if before_step is not None:  # probes (bnlab.lab.probes.for_run): the whole batch
            before_step(x, y)
        xs, ys = ranks.shard(x), ranks.shard(y)
        output = model(xs)
        # an empty shard (a batch smaller than the world): zero, still a graph for DDP's hooks
        loss = criterion(output, ys) if len(ys) else output.sum()
        weighted = loss if world_size == 1 else loss * (len(ys) * world_size / len(y))
        optimizer.zero_grad(set_to_none=True)
        weighted.backward()
        optimizer.step()
        outputs.append(output.detach())
        targets.append(ys)
        if on_batch is not None:
            on_batch(step, loss)
    if not outputs:
        return torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    output, target = torch.cat(outputs).double(), torch.cat(targets)
    target = target.double() if target.is_floating_point() else target
    loss_total = criterion(output, target, reduction="sum")
    return loss_total, metric_sum(output, target, dataset.task).double()


@torch.no_grad()
def _test_sums(
    model: nn.Module, dataset: Dataset, batch_size: int, ranks: Ranks
) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's (loss sum, metric sum) over its shard of the test set, in eval mode (BN
    uses its running statistics); the model's mode is restored."""
    module = ranks.eval_model(model)
    was_training = module.training
    module.eval()
    criterion = loss_fn(dataset.task)
    loss_total = torch.zeros((), dtype=torch.float64)
    metric_total = torch.zeros((), dtype=torch.float64)
    x_test, y_test = ranks.shard(dataset.x_test), ranks.shard(dataset.y_test)
    try:
        for start in range(0, len(x_test), batch_size):
            x = x_test[start : start + batch_size]
            y = y_test[start : start + batch_size]
            output = module(x)
            # Mean squared error is summed per element; for one target this is per sample.
            loss_total += criterion(output, y, reduction="sum")
            metric_total += metric_sum(output, y, dataset.task)
    finally:
        module.train(was_training)
    return loss_total, metric_total


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator,
    on_batch: BatchHook | None = None,
    before_step: StepHook | None = None,
) -> tuple[float, float, float]:
    """One pass over the shuffled training set, in one process; returns (mean loss, mean
    metric, seconds)."""
    start = time.perf_counter()
    loss_total, metric_total = _train_sums(
        model, optimizer, dataset, batch_size, generator, ALONE, on_batch, before_step
    )
    n = len(dataset.x_train)
    loss_value, metric_value = loss_total.item() / n, metric_total.item() / n  # the one sync
    return loss_value, metric_value, time.perf_counter() - start


def evaluate(model: nn.Module, dataset: Dataset, batch_size: int) -> tuple[float, float]:
    """(mean loss, mean metric) on the test set, in eval mode, in one process; the model's
    mode is restored."""
    loss_total, metric_total = _test_sums(model, dataset, batch_size, ALONE)
    n = max(len(dataset.x_test), 1)
    return loss_total.item() / n, metric_total.item() / n


def run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    params: RunParams,
    epoch: int,
    eval_batch_size: int,
    on_batch: BatchHook | None = None,
    before_step: StepHook | None = None,
    ranks: Ranks = ALONE,
) -> EpochResult:
    """Train epoch ``epoch`` (1-based, shuffled by (seed, epoch)) and evaluate the test set.

    With several processes (``ranks``) each trains and evaluates its shards; the figures are
    the whole data set's (the sums combined) and the durations the slowest process's.
    """
    generator = epoch_generator(params.seed, epoch)
    start = time.perf_counter()
    train = _train_sums(
        model, optimizer, dataset, params.batch_size, generator, ranks, on_batch, before_step
    )
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test = _test_sums(model, dataset, eval_batch_size, ranks)
    eval_seconds = time.perf_counter() - start
    sums = torch.stack([*train, *test])
    seconds = torch.tensor([train_seconds, eval_seconds], dtype=torch.float64)
    ranks.combine(sums, seconds)
    loss, metric, test_loss, test_metric = sums.tolist()  # the one sync
    train_seconds, eval_seconds = seconds.tolist()
    n_train, n_test = len(dataset.x_train), max(len(dataset.x_test), 1)
    return EpochResult(
        loss=loss / n_train,
        metric=metric / n_train,
        test_loss=test_loss / n_test,
        test_metric=test_metric / n_test,
        epoch_duration=train_seconds,
        eval_duration=eval_seconds,
        samples=n_train,
    )
