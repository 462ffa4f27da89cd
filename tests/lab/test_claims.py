"""The claims ledger: the smoke budget end to end (every field, cached runs reused, verdicts that
follow from their intervals), resume after Ctrl-C, the statistics against SciPy on hand data,
the stand-ins for MNIST, and the errors of ``bnlab claims``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from idx_files import write_idx_dataset
from rich.console import Console

from bnlab.cli import main
from bnlab.lab import experiment
from bnlab.lab.claims.budget import BUDGETS, DataPlan
from bnlab.lab.claims.definitions import CLAIM_IDS, CLAIMS
from bnlab.lab.claims.ledger import LEDGER_JSON, build_ledger, select_claims
from bnlab.lab.claims.runner import RunSpec, Settings, load_result, plan_claim, train
from bnlab.lab.claims.statistics import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    Measure,
    RunResult,
    SeedRuns,
    check_ledger,
    evaluate,
    largest_trained_lr,
    percentile_drift,
    rule_verdict,
    spread_over_sweep,
    verdict_of,
)
from bnlab.lab.errors import UsageError
from bnlab.lab.stats import paired_difference

#: what every claim of ledger.json holds (the issue's list, and the rule and the secondaries)
FIELDS = {
    "id",
    "claim",
    "tutorial",
    "protocol",
    "statistic",
    "estimate",
    "ci_low",
    "ci_high",
    "n_seeds",
    "verdict",
    "runs",
    "rule",
    "testable",
    "claimed",
    "case",
    "secondary",
}
COMMITTED = Path(__file__).resolve().parents[2] / "docs" / LEDGER_JSON


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The whole smoke ledger, once for the module: (folder, seconds it took)."""
    out = tmp_path_factory.mktemp("claims") / "ledger"
    start = time.perf_counter()
    assert main(["claims", "--budget", "smoke", "--out", str(out)]) == 0
    return out, time.perf_counter() - start


def test_smoke_ledger_has_every_claim_and_field(smoke):
    out, seconds = smoke
    ledger = json.loads((out / LEDGER_JSON).read_text())
    assert ledger["format"] == "bnlab-claims-ledger" and ledger["budget"]["name"] == "smoke"
    assert [c["id"] for c in ledger["claims"]] == list(CLAIM_IDS)
    for claim in ledger["claims"]:
        assert set(claim) >= FIELDS, claim["id"]
        assert claim["n_seeds"] <= 3 and claim["verdict"] in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
        assert claim["runs"] and all(
            (out / "runs" / run / "record.json").exists() for run in claim["runs"]
        )
        for line in claim["secondary"]:
            assert {"case", "statistic", "estimate", "ci_low", "ci_high", "verdict"} <= set(line)
    # MNIST is not here: its protocols ran on Fashion-MNIST and digits, and the ledger says so
    assert "MNIST not found" in ledger["data"]
    c1 = ledger["claims"][0]
    assert c1["case"] == "mlp on Fashion-MNIST (for MNIST)"
    assert "mlp on digits (for MNIST)" in {s["case"] for s in c1["secondary"]}
    markdown = (out / "ledger.md").read_text()
    assert all(f"| {cid} | " in markdown for cid in CLAIM_IDS)
    html = (out / "report.html").read_text()
    assert html.count("<section class='claim'>") == len(CLAIMS)
    assert html.count("data:image/png;base64,") == len(CLAIMS)  # one figure per claim
    assert all((out / "figures" / f"{cid}.png").exists() for cid in CLAIM_IDS)
    print(f"smoke ledger: {seconds:.1f} s")


def test_every_verdict_follows_from_its_interval(smoke):
    ledger = json.loads((smoke[0] / LEDGER_JSON).read_text())
    assert check_ledger(ledger) == []
    # and the check would catch one that does not
    claim = ledger["claims"][0]
    claim["ci_low"], claim["ci_high"], claim["claimed"] = 0.1, 0.2, "> 0"
    claim["verdict"] = CONTRADICTED
    problems = check_ledger(ledger)
    assert len(problems) == 1 and "gives 'supported'" in problems[0]


@pytest.mark.skipif(not COMMITTED.exists(), reason="no committed ledger in docs/ yet")
def test_committed_ledger_verdicts_follow_the_rule():
    assert check_ledger(json.loads(COMMITTED.read_text())) == []


def test_a_rerun_trains_nothing_and_only_selects(smoke, monkeypatch):
    out, first = smoke
    calls = []
    monkeypatch.setattr(experiment, "run_epoch", lambda *a, **k: calls.append(a))
    start = time.perf_counter()
    done = build_ledger(["C2", "C5"], "smoke", out, console=Console(quiet=True))
    assert calls == [] and done.counts.trained == done.counts.resumed == 0
    assert done.counts.reused == len({r for c in done.ledger["claims"] for r in c["runs"]})
    assert [c["id"] for c in done.ledger["claims"]] == ["C2", "C5"]
    assert time.perf_counter() - start < first
    assert done.ledger["command"].startswith("bnlab claims --budget smoke --only C2,C5 --out ")


def _spec(epochs: int = 2) -> RunSpec:
    params = {
        "network": "keras-mlp",
        "norm": "bn",
        "dataset": "digits",
        "normalization": "normal",
        "optimizer": "adam",
        "lr": 0.01,
        "batch_size": 64,
        "epochs": epochs,
        "seed": 3,
    }
    return RunSpec(tuple(params.items()), limit_train=256)


def test_an_interrupted_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    spec, console = _spec(), Console(quiet=True)
    assert train(spec, tmp_path / "whole", Settings(), console) == "trained"
    real = experiment.run_epoch

    def stop_at_2(*args, **kwargs):
        if args[4] == 2:  # epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "run_epoch", stop_at_2)
    with pytest.raises(KeyboardInterrupt):
        train(spec, tmp_path / "cut", Settings(), console)
    assert load_result(tmp_path / "cut").rows[-1]["epoch"] == 1
    monkeypatch.setattr(experiment, "run_epoch", real)
    assert train(spec, tmp_path / "cut", Settings(), console) == "resumed"
    assert train(spec, tmp_path / "cut", Settings(), console) == "reused"
    whole, cut = load_result(tmp_path / "whole"), load_result(tmp_path / "cut")
    assert [r["test_accuracy"] for r in cut.rows] == [r["test_accuracy"] for r in whole.rows]
    # a folder killed before its first epoch was saved starts over
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "config.toml").write_text("")
    assert train(spec, tmp_path / "killed", Settings(), console) == "trained"


def test_a_runs_key_is_its_content():
    a, b = _spec(), _spec()
    assert a.key == b.key and a.key.startswith("keras-mlp-digits-bn-s3-")
    assert _spec(epochs=3).key != a.key
    # defaults spelled out or not: the same run, the same folder
    explicit = RunSpec((*a.params, ("dropout", 0.0)), limit_train=256)
    assert explicit.key == a.key
    assert RunSpec(tuple(reversed(a.params)), limit_train=256).key == a.key
    assert RunSpec(a.params, limit_train=128).key != a.key  # the data limits are in it


def _run(test: list[float], train: list[float] | None = None, **probes) -> RunResult:
    rows = tuple(
        {
            "epoch": e,
            "loss": 1.0,
            "test_loss": 1.0,
            "test_accuracy": t,
            "accuracy": (train or test)[e - 1],
        }
        for e, t in enumerate(test, start=1)
    )
    return RunResult(Path("."), {"dataset": "digits"}, "accuracy", rows, probes)


def test_the_paired_statistic_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.9, 0.02, 5), rng.normal(0.85, 0.03, 5)
    seeds = [
        SeedRuns(s, {("BN", None): _run([a[s]]), ("no BN", None): _run([b[s]])}) for s in range(5)
    ]
    measure = Measure(
        "mlp", "final, BN - no BN", lambda s: (s.run("BN").test(), s.run("no BN").test()), +1
    )
    outcome = evaluate(measure, "mlp on digits", seeds)
    reference = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    assert math.isclose(outcome.estimate, float(np.mean(a - b)), rel_tol=1e-12)
    assert math.isclose(outcome.ci_low, reference.low, rel_tol=1e-9)
    assert math.isclose(outcome.ci_high, reference.high, rel_tol=1e-9)
    assert outcome.n_seeds == 5 and outcome.verdict == SUPPORTED
    # the same numbers, claimed the other way: contradicted
    against = Measure("mlp", "final, BN - no BN", measure.pair, -1)
    assert evaluate(against, "mlp", seeds).verdict == CONTRADICTED
    # a seed with a missing side is left out
    seeds[0].runs[("BN", None)] = _run([math.nan])
    assert evaluate(measure, "mlp", seeds).n_seeds == 4


@pytest.mark.parametrize(
    ("low", "high", "direction", "verdict"),
    [
        (0.1, 0.3, +1, SUPPORTED),
        (0.1, 0.3, -1, CONTRADICTED),
        (-0.3, -0.1, -1, SUPPORTED),
        (-0.3, -0.1, +1, CONTRADICTED),
        (-0.1, 0.3, +1, INCONCLUSIVE),
        (0.0, 0.3, +1, INCONCLUSIVE),  # touching zero does not exclude it
        (math.nan, math.nan, +1, INCONCLUSIVE),
        (None, None, -1, INCONCLUSIVE),
    ],
)
def test_the_rule(low, high, direction, verdict):
    assert rule_verdict(low, high, direction) == verdict


def test_verdict_of_a_difference_agrees_with_the_rule():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a, b = rng.normal(0, 1, 4), rng.normal(rng.normal(0, 1), 1, 4)
        diff = paired_difference(a, b)
        for direction in (+1, -1):
            assert verdict_of(diff, direction) == rule_verdict(diff.ci_low, diff.ci_high, direction)


def test_sweep_readouts_on_hand_data():
    runs = {("BN", lr): _run([acc]) for lr, acc in ((1e-3, 0.8), (1e-2, 0.9), (1e-1, 0.6))}
    runs |= {("no BN", lr): _run([acc]) for lr, acc in ((1e-3, 0.7), (1e-2, 0.3), (1e-1, 0.1))}
    seed = SeedRuns(0, runs)
    assert largest_trained_lr(seed, "BN") == pytest.approx(-1.0)  # 0.6 >= 0.5 at lr 0.1
    assert largest_trained_lr(seed, "no BN") == pytest.approx(-3.0)
    assert spread_over_sweep(seed, "BN") == pytest.approx(0.3)
    assert spread_over_sweep(seed, "no BN") == pytest.approx(0.6)
    diverged = dict(runs)
    diverged[("BN", 1e-1)] = RunResult(
        Path("."),
        {},
        "accuracy",
        ({"epoch": 1, "loss": math.inf, "test_loss": 1.0, "test_accuracy": 0.7, "accuracy": 0.7},),
    )
    assert largest_trained_lr(SeedRuns(0, diverged), "BN") == pytest.approx(-2.0)
    assert math.isnan(largest_trained_lr(SeedRuns(0, {("BN", 1.0): _run([0.1])}), "BN"))


def test_percentile_drift_on_hand_data():
    rng = np.random.default_rng(2)
    steps = rng.normal(0, 1, size=(8, 2, 3)).cumsum(0) + np.array([-1.0, 0.0, 1.0])
    run = RunResult(
        Path("."),
        {},
        "accuracy",
        (_run([0.5]).rows[0],) * 2,
        {"activations": {"percentiles": steps.tolist()}},
    )
    width = (steps[:, :, 2] - steps[:, :, 0]).mean(0)  # per unit
    expected = (steps.std(0) / width[:, None]).mean()
    assert percentile_drift(run) == pytest.approx(expected, rel=1e-12)
    later = steps[4:]
    width = (later[:, :, 2] - later[:, :, 0]).mean(0)
    assert percentile_drift(run, skip_first_epoch=True) == pytest.approx(
        (later.std(0) / width[:, None]).mean(), rel=1e-12
    )


def test_every_claim_is_well_formed():
    assert tuple(f"C{k}" for k in range(1, 12)) == CLAIM_IDS
    data = DataPlan(BUDGETS["standard"], mnist=False)
    for claim in CLAIMS:
        assert claim.claim and claim.protocol and claim.testable and claim.tutorial
        planned = plan_claim(claim, BUDGETS["standard"], data)
        names = {p.case.name for p in planned}
        assert all(m.case in names for m in claim.measures), claim.id
        seeds = {seed for p in planned for (_, _, seed) in p.specs}
        assert len(seeds) >= 3, claim.id  # every protocol runs at least three seeds
    assert BUDGETS["standard"].lrs[0] == 1e-4 and BUDGETS["standard"].lrs[-1] == 1.0
    assert min(BUDGETS["standard"].batch_sizes) == 2 and max(BUDGETS["standard"].batch_sizes) == 256


def test_mnist_runs_where_it_can_be_found(tmp_path, capsys):
    mnist = tmp_path / "mnist"
    write_idx_dataset(mnist, n_train=128, n_test=64)
    out = tmp_path / "ledger"
    args = ["claims", "--budget", "smoke", "--only", "C8,C9", "--out", str(out), "--no-report"]
    assert main([*args, "--data-dir", str(mnist)]) == 0
    ledger = json.loads((out / LEDGER_JSON).read_text())
    c8, c9 = ledger["claims"]
    assert c8["case"] == "mlp activations on MNIST" and c8["secondary"][0]["case"] == c8["case"]
    assert ledger["data"].startswith("MNIST protocols ran on MNIST")
    assert not (out / "report.html").exists()
    # --data-dir is MNIST's folder: tutorial 001's CNN still reads Fashion-MNIST
    for run in c9["runs"]:
        config = json.loads((out / "runs" / run / "record.json").read_text())["config"]
        dataset = config["grid"]["dataset"][0]
        assert config["data_dir"] == (str(mnist) if dataset == "mnist" else ""), run
    assert {run.split("-s")[0] for run in c9["runs"]} == {
        "lizard-cnn-fashion-mnist-none",
        "lizard-cnn-fashion-mnist-bn",
        "mlp-mnist-none",
        "mlp-mnist-bn",
    }
    assert main([*args, "--data-dir", str(tmp_path / "ledger")]) == 2
    assert "holds no MNIST" in capsys.readouterr().err


def test_claims_errors_are_one_line(tmp_path, capsys):
    assert main(["claims", "--only", "C2,C99", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --only takes claim ids from C1, C2") and "got C99" in err
    with pytest.raises(UsageError, match="--only takes claim ids"):
        select_claims(",")
    assert [c.id for c in select_claims("c5, C2")] == ["C2", "C5"]
    with pytest.raises(SystemExit) as caught:  # argparse's own error
        main(["claims", "--budget", "huge"])
    assert caught.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_plan_lists_the_runs_without_training(tmp_path, capsys):
    assert main(["claims", "--plan", "--budget", "standard", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "C10" in out
    assert not (tmp_path / "runs").exists()
