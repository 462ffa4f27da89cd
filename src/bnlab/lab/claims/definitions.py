"""The claims C1-C11: what each tutorial says, how it is put to a test, and the decision rule.

Each :class:`Claim` holds its words (the claim, its tutorials, the protocol, how a vague claim
was made testable) and its test: the :class:`Case` list a budget expands to (the runs) and its
:class:`~bnlab.lab.claims.statistics.Measure` list, the primary statistic first (it alone
decides the verdict; the others are reported beside it, each with its own interval and verdict
by the same rule). The ids are stable: add claims, change none.

Settings shared by several claims are built by one function each (:func:`tutorial_mlp_case`,
:func:`lizard_case`), so that equal runs are one run: the ledger trains it once and every claim
that needs it reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bnlab.lab.claims.budget import Budget
from bnlab.lab.claims.statistics import (
    Measure,
    RunResult,
    SeedRuns,
    best_over_sweep,
    ics,
    input_drift,
    largest_trained_lr,
    percentile_drift,
    smoothness,
    spread_over_sweep,
    worst_over_sweep,
)

#: C1's "fixed test accuracy", per data set: about what the networks without BN reach in the
#: standard budget's first epochs, so that both arms can get there
THRESHOLDS = {"mnist": 0.95, "fashion-mnist": 0.80, "digits": 0.90}
#: every statistic is a paired difference over seeds (bnlab.lab.claims.statistics)
STATISTIC_SUFFIX = ": mean over seeds, paired t 95% CI"
NO_BN = {"norm": "none"}
BN = {"norm": "bn"}


@dataclass(frozen=True)
class Arm:
    """One condition of a case: a label and the run parameters it sets."""

    label: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One setting a claim is measured on: shared run parameters, the arms, maybe a sweep.

    ``role`` names the data (:meth:`bnlab.lab.claims.budget.DataPlan.sources`); every arm, and
    every value of ``sweep``, runs once per seed of the budget.
    """

    name: str
    role: str
    params: dict[str, Any]  # run parameters shared by the arms (the data come from the role)
    arms: tuple[Arm, ...]
    sweep: tuple[str, tuple[Any, ...]] | None = None  # (run parameter, values)
    probes: tuple[str, ...] = ()
    probe_layer: str = ""


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    tutorial: str  # the tutorials that make it (their numbers), or "literature"
    protocol: str
    testable: str  # how a vague claim was made testable
    cases: Callable[[Budget], tuple[Case, ...]]
    measures: tuple[Measure, ...]  # the primary statistic first
    figure: str = "pairs"  # "curves" (per epoch), "sweep" (over the swept value) or "pairs"
    sources: tuple[str, ...] = field(default=())  # what the literature claims cite

    @property
    def statistic(self) -> str:
        return self.measures[0].statistic + STATISTIC_SUFFIX

    @property
    def rule(self) -> str:
        """The decision rule, in words, from the primary statistic's claimed sign."""
        side, other = ("above", "below") if self.measures[0].direction > 0 else ("below", "above")
        return (
            f"supported if the 95% CI of the primary statistic lies entirely {side} zero; "
            f"contradicted if entirely {other}; otherwise (or with no interval) inconclusive"
        )


# -- the settings ------------------------------------------------------------------------------


def tutorial_mlp_case(budget: Budget, *arms: Arm) -> Case:
    """Tutorial 002's experiment: its 784-512-256-10 MLP, SGD lr 0.01 momentum 0.9, batch 64,
    on MNIST (or its stand-ins), probed (ICS and input drift of the second Linear's input,
    smoothness along the gradient, the loss landscape). C1, C3, C6, C7, C9 and C11 share it."""
    return Case(
        name="mlp",
        role="mnist",
        params={
            "network": "mlp",
            "optimizer": "sgd",
            "lr": 0.01,
            "sgd_momentum": 0.9,
            "batch_size": 64,
            "epochs": budget.epochs,
        },
        arms=arms or (Arm("no BN", NO_BN), Arm("BN", BN)),
        probes=("ics", "landscape"),
        probe_layer="Linear#1",
    )


def lizard_case(budget: Budget) -> Case:
    """Tutorial 001's experiment: network1 / network2 on Fashion-MNIST ('normal' set), Adam lr
    0.01, batch 1000."""
    return Case(
        name="lizard-cnn",
        role="fashion-mnist",
        params={
            "network": "lizard-cnn",
            "optimizer": "adam",
            "lr": 0.01,
            "batch_size": 1000,
            "epochs": budget.epochs,
        },
        arms=(Arm("no BN", NO_BN), Arm("BN", BN)),
    )


def _sweep_mlp(budget: Budget, name: str, optimizer: str, lr: float, key: str, values: Any) -> Case:
    """Tutorial 002's MLP on the sweeps' small set, BN vs no BN over ``key``'s ``values``."""
    params = {"network": "mlp", "optimizer": optimizer, "lr": lr, "batch_size": 64}
    if optimizer == "sgd":
        params["sgd_momentum"] = 0.9
    return Case(
        name=name,
        role="mnist-small",
        params={**params, "epochs": budget.sweep_epochs},
        arms=(Arm("no BN", NO_BN), Arm("BN", BN)),
        sweep=(key, tuple(values)),
    )


# -- the measures: what each takes from one seed's runs ---------------------------------------

ACC = "accuracy"
Readout = Callable[[RunResult], float]


def contrast(
    case: str,
    what: str,
    readout: Readout,
    direction: int,
    unit: str = ACC,
    treated: str = "BN",
    control: str = "no BN",
) -> Measure:
    """``readout`` of the ``treated`` arm's run minus the ``control`` arm's, per seed; the
    statistic reads "<what>, <treated> - <control>"."""
    return Measure(
        case,
        f"{what}, {treated} - {control}",
        lambda s: (readout(s.run(treated)), readout(s.run(control))),
        direction,
        unit,
    )


def sweep_contrast(
    case: str, what: str, readout: Callable[[SeedRuns, str], float], direction: int, unit: str
) -> Measure:
    """As :func:`contrast` for a readout of an arm's whole sweep, BN minus no BN."""
    return Measure(
        case,
        f"{what}, BN - no BN",
        lambda s: (readout(s, "BN"), readout(s, "no BN")),
        direction,
        unit,
    )


def _final(run: RunResult) -> float:
    return run.test()


def _epoch_1(run: RunResult) -> float:
    return run.test(1)


def _epochs_to_threshold(run: RunResult) -> float:
    return run.epochs_to(THRESHOLDS[run.params["dataset"]])


def _gap(run: RunResult) -> float:
    """Training accuracy over the last epoch (train mode) minus test accuracy (eval mode)."""
    return run.train() - run.test()


def _dropout_gains(s: SeedRuns) -> tuple[float, float]:
    """(dropout's gain with BN, dropout's gain without BN) in final test accuracy."""
    return (
        s.run("BN + dropout").test() - s.run("BN").test(),
        s.run("dropout").test() - s.run("none").test(),
    )


def _input_sensitivity(s: SeedRuns) -> tuple[float, float]:
    """(test MAE raw minus standardized, with BN; the same without BN)."""
    return (
        s.run("BN, raw").test() - s.run("BN, standardized").test(),
        s.run("no BN, raw").test() - s.run("no BN, standardized").test(),
    )


def _raw_mae(s: SeedRuns) -> tuple[float, float]:
    return s.run("BN, raw").test(), s.run("no BN, raw").test()


def small_batch_loss(norm: str, other: str) -> Measure:
    """(``norm`` minus ``other`` at the smallest batch, the same at batch 32), final test
    accuracy: how much more ``norm`` loses than ``other`` going down to the smallest batch."""

    def pair(s: SeedRuns) -> tuple[float, float]:
        smallest = min(v for v, _ in s.sweep(norm))
        return (
            s.run(norm, smallest).test() - s.run(other, smallest).test(),
            s.run(norm, 32).test() - s.run(other, 32).test(),
        )

    what = f"({norm} - {other}) at the smallest batch - at batch 32"
    return Measure("batch sweep", what, pair, -1, ACC, ("smallest batch", "batch 32"))


def _bn_small_vs_32(s: SeedRuns) -> tuple[float, float]:
    smallest = min(v for v, _ in s.sweep("BN"))
    return s.run("BN", smallest).test(), s.run("BN", 32).test()


def _percentile_drift_later(run: RunResult) -> float:
    return percentile_drift(run, skip_first_epoch=True)


# -- the claims --------------------------------------------------------------------------------

LARGEST_LR = "log10 of the largest learning rate that trains"

CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="C1",
        claim="BN converges faster",
        tutorial="000, 002",
        protocol=(
            "Tutorial 002's MLP (SGD 0.01, momentum 0.9, batch 64) and tutorial 001's CNN (Adam "
            "0.01, batch 1000), each with and without BN, same seeds and batches; test accuracy "
            "after every epoch."
        ),
        testable=(
            "'Faster' read two ways: more test accuracy after the same training (one epoch), and "
            "fewer epochs to a fixed test accuracy (0.95 MNIST, 0.80 Fashion-MNIST, 0.90 digits; "
            "a run that never gets there counts as one epoch after its last)."
        ),
        cases=lambda b: (tutorial_mlp_case(b), lizard_case(b)),
        measures=(
            contrast("mlp", "test accuracy after epoch 1", _epoch_1, +1),
            contrast("lizard-cnn", "test accuracy after epoch 1", _epoch_1, +1),
            contrast(
                "mlp",
                "epochs to the fixed accuracy",
                _epochs_to_threshold,
                +1,
                "epochs",
                "no BN",
                "BN",
            ),
            contrast(
                "lizard-cnn",
                "epochs to the fixed accuracy",
                _epochs_to_threshold,
                +1,
                "epochs",
                "no BN",
                "BN",
            ),
        ),
        figure="curves",
    ),
    Claim(
        id="C2",
        claim="BN allows higher learning rates without divergence",
        tutorial="000",
        protocol=(
            "Tutorial 002's MLP with and without BN over a log grid of learning rates from 1e-4 "
            "to 1, with SGD (momentum 0.9) and with Adam, batch 64, on the sweeps' small set."
        ),
        testable=(
            "A run 'trains without diverging' when no loss is infinite, NaN or above 1e6 and its "
            "final test accuracy reaches 0.5 (five times chance). Statistic: log10 of the "
            "largest such learning rate of the grid; a seed where no rate trains is left out."
        ),
        cases=lambda b: (
            _sweep_mlp(b, "SGD", "sgd", 0.01, "lr", b.lrs),
            _sweep_mlp(b, "Adam", "adam", 0.001, "lr", b.lrs),
        ),
        measures=(
            sweep_contrast("SGD", LARGEST_LR, largest_trained_lr, +1, "log10 lr"),
            sweep_contrast("Adam", LARGEST_LR, largest_trained_lr, +1, "log10 lr"),
            sweep_contrast("SGD", "best test accuracy across the sweep", best_over_sweep, +1, ACC),
            sweep_contrast("Adam", "best test accuracy across the sweep", best_over_sweep, +1, ACC),
        ),
        figure="sweep",
    ),
    Claim(
        id="C3",
        claim="BN regularizes and reduces the need for dropout",
        tutorial="000, 003",
        protocol=(
            "Tutorial 002's MLP as none / dropout (p 0.5 after each hidden block) / BN / "
            "BN + dropout, same seeds and batches; final test accuracy, and the train-test gap."
        ),
        testable=(
            "'Reduces the need for dropout': dropout adds less test accuracy to a network with "
            "BN than to one without (an interaction). 'Regularizes': a smaller gap between "
            "training accuracy (last epoch, train mode) and test accuracy (eval mode)."
        ),
        cases=lambda b: (
            tutorial_mlp_case(
                b,
                Arm("none", NO_BN),
                Arm("dropout", {**NO_BN, "dropout": 0.5}),
                Arm("BN", BN),
                Arm("BN + dropout", {**BN, "dropout": 0.5}),
            ),
        ),
        measures=(
            Measure(
                "mlp",
                "dropout's gain in test accuracy with BN - without BN",
                _dropout_gains,
                -1,
                ACC,
                ("with BN", "without BN"),
            ),
            contrast("mlp", "train-test accuracy gap", _gap, -1, ACC, "BN", "none"),
            contrast("mlp", "test accuracy", _final, +1, ACC, "BN", "dropout"),
        ),
    ),
    Claim(
        id="C4",
        claim="BN reduces the need for careful initialization",
        tutorial="000",
        protocol=(
            "Tutorial 002's MLP with and without BN, every Linear weight's default init "
            "multiplied by 0.1 to 10 (SGD 0.01, momentum 0.9, batch 64, the sweeps' small set)."
        ),
        testable=(
            "'Careful initialization' is the init scale: a network that needs less care has a "
            "smaller spread (best minus worst) of final test accuracy across the scales."
        ),
        cases=lambda b: (_sweep_mlp(b, "init", "sgd", 0.01, "init_scale", b.init_scales),),
        measures=(
            sweep_contrast(
                "init",
                "spread of final test accuracy across init scales",
                spread_over_sweep,
                -1,
                ACC,
            ),
            sweep_contrast(
                "init", "worst final test accuracy across init scales", worst_over_sweep, +1, ACC
            ),
        ),
        figure="sweep",
    ),
    Claim(
        id="C5",
        claim="BN makes the network less sensitive to the scale of its inputs",
        tutorial="003",
        protocol=(
            "Tutorial 003's Auto MPG MLP (Adam 1e-3, batch 32) with and without BN, on "
            "standardized features and on the raw ones (pounds, cubic inches, ...); test MAE."
        ),
        testable=(
            "Sensitivity to the input scale is the test MAE on raw features minus that on "
            "standardized ones; the claim says it is smaller with BN."
        ),
        cases=lambda b: (
            Case(
                name="mpg",
                role="mpg",
                params={
                    "network": "mpg-mlp",
                    "optimizer": "adam",
                    "lr": 0.001,
                    "batch_size": 32,
                    "epochs": b.mpg_epochs,
                },
                arms=tuple(
                    Arm(f"{label}, {scaling}", {**norm, "input_scaling": scaling})
                    for label, norm in (("no BN", NO_BN), ("BN", BN))
                    for scaling in ("standardized", "raw")
                ),
            ),
        ),
        measures=(
            Measure(
                "mpg",
                "test MAE raw - standardized, with BN - without BN",
                _input_sensitivity,
                -1,
                "mpg",
                ("with BN", "without BN"),
            ),
            Measure("mpg", "test MAE on raw features, BN - no BN", _raw_mae, -1, "mpg"),
        ),
    ),
    Claim(
        id="C6",
        claim="BN smooths the loss landscape",
        tutorial="002",
        protocol=(
            "Tutorial 002's MLP with and without BN, probed after every epoch along the negative "
            "gradient of a fixed training batch (Santurkar et al. 2018, Fig. 4), and the 2D loss "
            "contour around the final weights."
        ),
        testable=(
            "'Smoother' as Santurkar et al. measure it: the effective beta-smoothness (the "
            "largest change of the gradient per unit step along -grad), log10, averaged over "
            "epochs; also the gradient change and the loss range along -grad."
        ),
        cases=lambda b: (tutorial_mlp_case(b),),
        measures=(
            contrast(
                "mlp",
                "log10 effective beta-smoothness along -grad",
                lambda r: smoothness(r, "max_beta"),
                -1,
                "log10",
            ),
            contrast(
                "mlp",
                "log10 largest gradient change along -grad",
                lambda r: smoothness(r, "max_grad_change"),
                -1,
                "log10",
            ),
            contrast(
                "mlp",
                "log10 loss range along -grad",
                lambda r: smoothness(r, "loss_range"),
                -1,
                "log10",
            ),
        ),
    ),
    Claim(
        id="C7",
        claim="BN reduces internal covariate shift",
        tutorial="002",
        protocol=(
            "Tutorial 002's MLP with and without BN; the input of its second Linear layer watched "
            "at every training step (batch mean and variance per unit), and Santurkar et al.'s "
            "ICS of that layer every 20 steps."
        ),
        testable=(
            "Covariate shift measured two ways: the tutorials' (how far each unit's batch mean "
            "wanders over training, in units of its spread) and Santurkar et al.'s (the relative "
            "change ||G - G'|| / ||G|| of the layer's gradient when the earlier layers step)."
        ),
        cases=lambda b: (tutorial_mlp_case(b),),
        measures=(
            contrast("mlp", "input drift of the second Linear layer", input_drift, -1, "drift"),
            contrast("mlp", "Santurkar's relative ICS", ics, -1, "ratio"),
            contrast(
                "mlp", "cosine of G and G' (1: no shift)", lambda r: ics(r, "cosine"), +1, "cosine"
            ),
        ),
    ),
    Claim(
        id="C8",
        claim="BN keeps activation distributions stable",
        tutorial="002",
        protocol=(
            "Tutorial 002's MLP with and without BN; the 15th, 50th and 85th percentiles of "
            "three units of the second hidden activation's input at every training step (Ioffe "
            "& Szegedy 2015, Fig. 1)."
        ),
        testable=(
            "'Stable' made a number: each percentile's standard deviation over training in units "
            "of the distribution's own width (85th - 15th percentile), averaged over units and "
            "percentiles; also without the first epoch's steps."
        ),
        cases=lambda b: (
            Case(
                name="mlp activations",
                role="mnist",
                params=tutorial_mlp_case(b).params,
                arms=(Arm("no BN", NO_BN), Arm("BN", BN)),
                probes=("activations",),
                probe_layer="ReLU#1",
            ),
        ),
        measures=(
            contrast(
                "mlp activations",
                "percentile drift of the activation's input",
                percentile_drift,
                -1,
                "drift",
            ),
            contrast(
                "mlp activations",
                "percentile drift after the first epoch",
                _percentile_drift_later,
                -1,
                "drift",
            ),
        ),
    ),
    Claim(
        id="C9",
        claim="BN gives higher accuracy",
        tutorial="001, 002",
        protocol=(
            "Tutorial 001's CNN and tutorial 002's MLP, with and without BN, same seeds and "
            "batches; final test accuracy (eval mode)."
        ),
        testable="'Higher accuracy' is final test accuracy (eval mode), not the running training "
        "accuracy tutorial 001 reports.",
        cases=lambda b: (lizard_case(b), tutorial_mlp_case(b)),
        measures=(
            contrast("lizard-cnn", "final test accuracy", _final, +1),
            contrast("mlp", "final test accuracy", _final, +1),
        ),
        figure="curves",
    ),
    Claim(
        id="C10",
        claim=("BN degrades at small batches, where batch renorm, ghost BN or GroupNorm hold"),
        tutorial="literature",
        protocol=(
            "Tutorial 002's MLP with BN, batch renorm, GroupNorm or LayerNorm, batch sizes 2 to "
            "256 at equal epochs (Adam 1e-3, the sweeps' small set). Ghost BN is not run: at "
            "batches of 32 or fewer it is plain BN."
        ),
        testable=(
            "'Degrades' relative to a batch-independent norm: BN's test accuracy minus "
            "GroupNorm's at the smallest batch, minus the same at batch 32 (Wu & He's "
            "regular batch); the claim says it is negative."
        ),
        cases=lambda b: (
            Case(
                name="batch sweep",
                role="mnist-small",
                params={
                    "network": "mlp",
                    "optimizer": "adam",
                    "lr": 0.001,
                    "epochs": b.sweep_epochs,
                },
                arms=(
                    Arm("BN", BN),
                    Arm("renorm", {"norm": "renorm"}),
                    Arm("GroupNorm", {"norm": "groupnorm"}),
                    Arm("LayerNorm", {"norm": "layernorm"}),
                ),
                sweep=("batch_size", b.batch_sizes),
            ),
        ),
        measures=(
            small_batch_loss("BN", "GroupNorm"),
            small_batch_loss("BN", "renorm"),
            small_batch_loss("BN", "LayerNorm"),
            Measure(
                "batch sweep",
                "BN's test accuracy, smallest batch - batch 32",
                _bn_small_vs_32,
                -1,
                ACC,
            ),
        ),
        figure="sweep",
        sources=("Wu & He 2018 (arXiv 1803.08494)", "Ioffe 2017 (arXiv 1702.03275)"),
    ),
    Claim(
        id="C11",
        claim="BN's benefit does not come from reducing covariate shift",
        tutorial="literature",
        protocol=(
            "Tutorial 002's MLP without BN, with BN, and with 'noisy BN': after each BN layer a "
            "random per-channel scale in [1, 2] and shift in [-1, 1], drawn anew at every step; "
            "final test accuracy, and the input drift of the second Linear layer."
        ),
        testable=(
            "If BN helped by keeping layer inputs steady, noisy BN, whose layer inputs move at "
            "every step by design, would lose BN's benefit. The claim says it keeps it: noisy BN "
            "beats no BN (primary) although its input drift exceeds BN's (secondary)."
        ),
        cases=lambda b: (
            tutorial_mlp_case(
                b, Arm("no BN", NO_BN), Arm("BN", BN), Arm("noisy BN", {"norm": "noisy_bn"})
            ),
        ),
        measures=(
            contrast("mlp", "final test accuracy", _final, +1, ACC, "noisy BN", "no BN"),
            contrast(
                "mlp",
                "input drift of the second Linear layer",
                input_drift,
                +1,
                "drift",
                "noisy BN",
                "BN",
            ),
            contrast("mlp", "Santurkar's relative ICS", ics, +1, "ratio", "noisy BN", "BN"),
        ),
        sources=("Santurkar et al. 2018 (arXiv 1805.11604)",),
    ),
)

CLAIM_IDS = tuple(c.id for c in CLAIMS)
