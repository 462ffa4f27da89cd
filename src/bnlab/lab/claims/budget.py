"""How much a ledger trains (``--budget``), and which data sets stand in for MNIST.

Three budgets, the same protocols:

- ``smoke``: seconds to a minute on a laptop: tiny subsets, 1-2 epochs, 3 seeds, the sweeps'
  ends only. Its verdicts mean nothing; it proves the machinery (the tests run it).
- ``standard``: the numbers the README quotes, within about two hours on a 2-core machine:
  the full data sets (a sweep: digits, or MNIST's first 5,000), 5 seeds, 5 epochs (tutorial
  002's; Auto MPG the preset's 200).
- ``full``: for a cluster: the full data sets, 10 seeds, tutorial 001's 20 epochs.

MNIST has no offline copy here. A protocol on MNIST (the tutorials 000 and 002) runs on MNIST
when it can be found (``--data-dir``, the download cache) or fetched (``--download``);
otherwise on Fashion-MNIST, with scikit-learn's digits beside it, and the ledger says so. The
sweeps, hundreds of runs, use a small set: MNIST's first ``small_train`` images, or digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bnlab.lab.data import has_idx_dataset
from bnlab.lab.errors import UsageError


@dataclass(frozen=True)
class Budget:
    """The sizes of one budget; a count of 0 means the whole set."""

    name: str
    seeds: tuple[int, ...]
    image_train: int  # training images of a 28x28 set (of 60,000)
    image_test: int  # test images of a 28x28 set (of 10,000)
    small_train: int  # training samples of a sweep's set (MNIST's first N; digits has 1,438)
    epochs: int  # epochs of a comparison (C1, C3, C6-C9, C11)
    sweep_epochs: int  # epochs of each run of a sweep (C2, C4, C10)
    mpg_epochs: int  # epochs on Auto MPG (C5; 314 cars per epoch)
    lrs: tuple[float, ...]  # C2's learning rates
    init_scales: tuple[float, ...]  # C4's multipliers of the default init
    batch_sizes: tuple[int, ...]  # C10's batch sizes


def _log_grid(low_exp: int, high_exp: int, per_decade: int) -> tuple[float, ...]:
    """``10 ** (k / per_decade)`` from ``10**low_exp`` to ``10**high_exp``, rounded to 3 digits."""
    steps = (high_exp - low_exp) * per_decade
    return tuple(float(f"{10 ** (low_exp + k / per_decade):.3g}") for k in range(steps + 1))


BUDGETS: dict[str, Budget] = {
    b.name: b
    for b in (
        Budget(
            name="smoke",
            seeds=(0, 1, 2),
            image_train=256,
            image_test=256,
            small_train=128,
            epochs=2,
            sweep_epochs=1,
            mpg_epochs=3,
            lrs=(1e-4, 1e-2, 1.0),
            init_scales=(0.1, 1.0, 10.0),
            batch_sizes=(2, 32),
        ),
        Budget(
            name="standard",
            seeds=(0, 1, 2, 3, 4),
            image_train=0,
            image_test=0,
            small_train=5_000,
            epochs=5,
            sweep_epochs=5,
            mpg_epochs=200,
            lrs=_log_grid(-4, 0, 2),
            init_scales=(0.1, 0.3, 1.0, 3.0, 10.0),
            batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256),
        ),
        Budget(
            name="full",
            seeds=tuple(range(10)),
            image_train=0,
            image_test=0,
            small_train=10_000,
            epochs=20,
            sweep_epochs=10,
            mpg_epochs=200,
            lrs=_log_grid(-4, 0, 3),
            init_scales=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
            batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256),
        ),
    )
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise UsageError(f"unknown budget {name!r}; expected one of {', '.join(BUDGETS)}")
    return BUDGETS[name]


@dataclass(frozen=True)
class Source:
    """A concrete data set for a protocol's data role, with its run settings."""

    dataset: str
    normalization: str  # the run parameter (images only)
    limit_train: int
    limit_test: int
    label: str  # for the ledger: "Fashion-MNIST (for MNIST)"


@dataclass(frozen=True)
class DataPlan:
    """The data sets one ledger uses: MNIST where it can be had, else its stand-ins."""

    budget: Budget
    mnist: bool  # MNIST can be found or downloaded

    @classmethod
    def find(cls, budget: Budget, data_dir: str | Path | None, download: bool) -> DataPlan:
        """MNIST where ``data_dir`` (which must then hold it) or the usual places have it, or
        where ``download`` will fetch it."""
        found = has_idx_dataset("mnist", data_dir or None)
        if data_dir and not found and not download:
            raise UsageError(
                f"--data-dir {data_dir} holds no MNIST (its four IDX files, raw or .gz); without "
                "it the MNIST protocols run on Fashion-MNIST and digits"
            )
        return cls(budget, download or found)

    def sources(self, role: str) -> list[Source]:
        """The data sets a role runs on, the primary first. Roles: ``mnist`` (tutorials 000 and
        002), ``mnist-small`` (the sweeps), ``fashion-mnist`` (tutorial 001), ``mpg`` (003)."""
        b = self.budget
        if role == "mnist" and self.mnist:
            # tutorial 002's fixed constants are MNIST's own
            return [Source("mnist", "fixed", b.image_train, b.image_test, "MNIST")]
        if role == "mnist":
            return [
                Source(
                    "fashion-mnist",
                    "normal",
                    b.image_train,
                    b.image_test,
                    "Fashion-MNIST (for MNIST)",
                ),
                Source("digits", "normal", b.small_train, 0, "digits (for MNIST)"),
            ]
        if role == "mnist-small" and self.mnist:
            return [Source("mnist", "fixed", b.small_train, b.image_test, "MNIST subset")]
        if role == "mnist-small":
            return [Source("digits", "normal", b.small_train, 0, "digits (for MNIST)")]
        if role == "fashion-mnist":
            return [Source("fashion-mnist", "normal", b.image_train, b.image_test, "Fashion-MNIST")]
        if role == "mpg":
            return [Source("mpg", "none", 0, 0, "Auto MPG")]
        raise ValueError(f"unknown data role {role!r}")

    def note(self) -> str:
        """What the ledger says about its data."""
        if self.mnist:
            return "MNIST protocols ran on MNIST (the sweeps on its first images)."
        return (
            "MNIST not found (give --data-dir or --download): the MNIST protocols ran on "
            "Fashion-MNIST (the primary statistic) and on scikit-learn's digits (a secondary "
            "line each); the sweeps ran on digits."
        )
