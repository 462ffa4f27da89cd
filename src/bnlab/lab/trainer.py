"""The training loop of one run: one epoch of training, then the test set in eval mode.

It fixes the seed framework's faults (see ../shared/REFERENCES.md, seed 001):

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
        return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {params.optimizer!r}")


def loss_fn(task: str) -> Callable[..., torch.Tensor]:
    """Cross-entropy on logits (classification) or mean squared error (regression)."""
    return F.cross_entropy if task == "classification" else F.mse_loss


def metric_sum(output: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    """Sum over the batch of the headline metric: correct predictions, or absolute errors."""
    if task == "classification":
        return (output.argmax(dim=1) == target).sum()
    return (output - target).abs().sum()


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator,
    on_batch: BatchHook | None = None,
    before_step: StepHook | None = None,
) -> tuple[float, float, float]:
    """One pass over the shuffled training set; returns (mean loss, mean metric, seconds)."""
    model.train()
    criterion = loss_fn(dataset.task)
    loss_total = torch.zeros((), dtype=torch.float64)
    metric_total = torch.zeros((), dtype=torch.float64)
    start = time.perf_counter()
    for step, (x, y) in enumerate(
        shuffled_batches(dataset.x_train, dataset.y_train, batch_size, generator), start=1
    ):
        if before_step is not None:  # probes (bnlab.lab.probes.for_run); None when off
            before_step(x, y)
        output = model(x)
        loss = criterion(output, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            loss_total += loss.detach() * len(y)  # weight by the real batch size
            metric_total += metric_sum(output.detach(), y, dataset.task)
        if on_batch is not None:
            on_batch(step, loss)
    n = len(dataset.x_train)
    loss_value, metric_value = loss_total.item() / n, metric_total.item() / n  # the one sync
    return loss_value, metric_value, time.perf_counter() - start


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int) -> tuple[float, float]:
    """(mean loss, mean metric) on the test set, in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    criterion = loss_fn(dataset.task)
    loss_total = torch.zeros((), dtype=torch.float64)
    metric_total = torch.zeros((), dtype=torch.float64)
    try:
        for start in range(0, len(dataset.x_test), batch_size):
            x = dataset.x_test[start : start + batch_size]
            y = dataset.y_test[start : start + batch_size]
            output = model(x)
            loss_total += criterion(output, y, reduction="sum")
            metric_total += metric_sum(output, y, dataset.task)
    finally:
        model.train(was_training)
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
) -> EpochResult:
    """Train epoch ``epoch`` (1-based, shuffled by (seed, epoch)) and evaluate the test set."""
    generator = epoch_generator(params.seed, epoch)
    loss, metric, duration = train_epoch(
        model, optimizer, dataset, params.batch_size, generator, on_batch, before_step
    )
    start = time.perf_counter()
    test_loss, test_metric = evaluate(model, dataset, eval_batch_size)
    # Mean squared error is summed per element; for one target this is per sample.
    return EpochResult(
        loss=loss,
        metric=metric,
        test_loss=test_loss,
        test_metric=test_metric,
        epoch_duration=duration,
        eval_duration=time.perf_counter() - start,
        samples=len(dataset.x_train),
    )
