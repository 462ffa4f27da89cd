"""The ledger: every claim's runs trained (or reused), its statistics, its files.

``bnlab claims`` calls :func:`build_ledger`, which plans the runs of the claims asked for
(:mod:`bnlab.lab.claims.runner`), trains the ones not cached, evaluates every measure
(:mod:`bnlab.lab.claims.statistics`) and writes, atomically, into the output folder::

    <out>/ledger.json     per claim: id, claim, tutorial, protocol, statistic, rule, estimate,
                          ci_low, ci_high, n_seeds, verdict, the runs used, and the secondary
                          statistics (each with its interval and verdict)
    <out>/ledger.md       the same as a Markdown table and a section per claim
    <out>/report.html     the claims section of the HTML report: one figure per claim
    <out>/figures/C<k>.png, .svg
    <out>/runs/<key>/     one cached run each (the lab's record format)

ledger.json (``"format": "bnlab-claims-ledger"``, ``"version": 1``) also holds the budget, the
data note (what stood in for MNIST), the command and the environment, and ``failed``: the
claims not measured because a run failed on every try of a worker (id, claim, and each such
run's key and error; empty when every run trained). Numbers that are not finite are null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bnlab.lab.claims.budget import Budget, DataPlan, get_budget
from bnlab.lab.claims.definitions import CLAIM_IDS, CLAIMS, STATISTIC_SUFFIX, Claim
from bnlab.lab.claims.page import write_page
from bnlab.lab.claims.runner import (
    RUNS_DIR,
    PlannedCase,
    RunCounts,
    RunSpec,
    Settings,
    load_result,
    plan_claim,
    run_all,
)
from bnlab.lab.claims.statistics import Outcome, RunResult, evaluate, interval
from bnlab.lab.environment import environment
from bnlab.lab.errors import UsageError
from bnlab.lab.executors import Executor
from bnlab.lab.files import atomic_write_text

FORMAT = "bnlab-claims-ledger"
VERSION = 1
LEDGER_JSON = "ledger.json"
LEDGER_MD = "ledger.md"
DEFAULT_OUT = Path("runs") / "claims"


def select_claims(only: str | Sequence[str] | None) -> list[Claim]:
    """The claims ``--only`` names (``"C2,C5"``), in ledger order; all when None or empty."""
    if not only:
        return list(CLAIMS)
    names = [n.strip().upper() for n in (only.split(",") if isinstance(only, str) else only)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in CLAIM_IDS]
    if unknown or not names:
        raise UsageError(
            f"--only takes claim ids from {', '.join(CLAIM_IDS)} (comma-separated), got "
            f"{', '.join(unknown) or repr(only)}"
        )
    return [c for c in CLAIMS if c.id in names]


@dataclass(frozen=True)
class ClaimResult:
    """A claim evaluated: its outcomes (the primary first) and the runs it read."""

    claim: Claim
    planned: list[PlannedCase]
    outcomes: list[Outcome]
    results: dict[str, RunResult]  # by run key

    @property
    def primary(self) -> Outcome:
        return self.outcomes[0]

    @property
    def runs(self) -> list[str]:
        """The run folders (named by run key) the claim read."""
        return sorted({s.key for p in self.planned for s in p.specs.values()})


def evaluate_claim(
    claim: Claim, planned: list[PlannedCase], results: dict[str, RunResult]
) -> ClaimResult:
    """Every measure of ``claim`` on every data source of its case, in measure order."""
    outcomes = [
        evaluate(measure, p.label, p.seeds(results))
        for measure in claim.measures
        for p in planned
        if p.case.name == measure.case
    ]
    return ClaimResult(claim, planned, outcomes, results)


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _line(outcome: Outcome) -> dict[str, Any]:
    d = outcome.as_dict()
    for key in ("estimate", "ci_low", "ci_high"):
        d[key] = _num(d[key])
    d["a"] = [_num(v) for v in d["a"]]
    d["b"] = [_num(v) for v in d["b"]]
    return d


def ledger_entry(result: ClaimResult) -> dict[str, Any]:
    """One claim's entry of ledger.json."""
    c, primary = result.claim, _line(result.primary)
    return {
        "id": c.id,
        "claim": c.claim,
        "tutorial": c.tutorial,
        "protocol": c.protocol,
        "testable": c.testable,
        "statistic": c.statistic,
        "rule": c.rule,
        **{k: primary[k] for k in ("case", "claimed", "unit", "estimate", "ci_low", "ci_high")},
        "n_seeds": primary["n_seeds"],
        "verdict": primary["verdict"],
        "a": primary["a"],
        "b": primary["b"],
        "secondary": [_line(o) for o in result.outcomes[1:]],
        "sources": list(c.sources),
        "runs": result.runs,
    }


def command_line(budget: str, only: Sequence[str] | None, out: Path) -> str:
    """The command that rebuilds this ledger."""
    parts = ["bnlab", "claims", "--budget", budget]
    if only:
        parts += ["--only", ",".join(only)]
    if Path(out) != DEFAULT_OUT:
        parts += ["--out", str(out)]
    return " ".join(parts)


def markdown(ledger: dict[str, Any]) -> str:
    """ledger.md: the table of claims, then a section per claim with every statistic."""
    lines = [
        "# The claims ledger",
        "",
        f"Budget `{ledger['budget']['name']}`, {len(ledger['budget']['seeds'])} seeds; "
        f"`{ledger['command']}`. {ledger['data']}",
        "",
        "| id | claim | tutorial | statistic | estimate [95% CI] | seeds | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in ledger["claims"]:
        stat = f"{e['statistic']} ({e['case']}; claimed {e['claimed']})"
        lines.append(
            f"| {e['id']} | {e['claim']} | {e['tutorial']} | {stat} | "
            f"{interval(e['estimate'], e['ci_low'], e['ci_high'])} | {e['n_seeds']} | "
            f"{e['verdict']} |"
        )
    for f in ledger.get("failed", []):
        lines.append(f"| {f['id']} | {f['claim']} | | | | | not measured: runs failed |")
    for e in ledger["claims"]:
        lines += [
            "",
            f"## {e['id']}: {e['claim']} ({e['tutorial']})",
            "",
            f"- Protocol: {e['protocol']}",
            f"- Made testable: {e['testable']}",
            f"- Statistic: {e['statistic']}.",
            f"- Rule: {e['rule']}.",
        ]
        if e["sources"]:
            lines.append(f"- Sources: {'; '.join(e['sources'])}.")
        lines += [
            "",
            "| | case | statistic | claimed | estimate [95% CI] | seeds | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, s in enumerate([e, *e["secondary"]]):
            stat = s["statistic"].removesuffix(STATISTIC_SUFFIX)
            lines.append(
                f"| {'primary' if i == 0 else 'secondary'} | {s['case']} | {stat} | "
                f"{s['claimed']} | {interval(s['estimate'], s['ci_low'], s['ci_high'])} | "
                f"{s['n_seeds']} | {s['verdict']} |"
            )
        lines.append(f"\n{len(e['runs'])} runs, in `runs/`.")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LedgerRun:
    """What :func:`build_ledger` did: the ledger, where it is, and the runs' counts."""

    ledger: dict[str, Any]
    folder: Path
    counts: RunCounts
    results: list[ClaimResult]

    def table(self) -> Table:
        """The ledger for the terminal: a row per claim, and where the files are."""
        c = self.counts
        table = Table(
            title=f"claims ledger ({self.ledger['budget']['name']} budget)",
            caption=f"{c.trained + c.resumed} runs trained, {c.reused} reused, in "
            f"{c.seconds:.0f} s; {self.folder / LEDGER_MD}, {self.folder / LEDGER_JSON}",
        )
        for column in ("id", "claim", "tutorial", "estimate [95% CI]", "seeds", "verdict"):
            table.add_column(column)
        for e in self.ledger["claims"]:
            table.add_row(
                e["id"],
                e["claim"],
                e["tutorial"],
                interval(e["estimate"], e["ci_low"], e["ci_high"]) + f" ({e['unit']})",
                str(e["n_seeds"]),
                e["verdict"],
            )
        return table


def plan(
    claims: Sequence[Claim], budget: Budget, data: DataPlan
) -> tuple[dict[str, list[PlannedCase]], list[RunSpec], dict[str, str]]:
    """Each claim's planned cases, every distinct run in order (one spec per key), and by run
    key the claims that need it."""
    planned = {c.id: plan_claim(c, budget, data) for c in claims}
    runs: dict[str, RunSpec] = {}
    users: dict[str, list[str]] = {}
    for cid, cases in planned.items():
        for p in cases:
            for spec in p.specs.values():
                runs.setdefault(spec.key, spec)
                ids = users.setdefault(spec.key, [])
                if cid not in ids:
                    ids.append(cid)
    return planned, list(runs.values()), {k: ",".join(ids) for k, ids in users.items()}


def show_plan(
    only: Sequence[str] | str | None,
    budget: str,
    out: Path | str,
    settings: Settings,
    console: Console,
) -> int:
    """Print, per claim, the runs and epochs ``budget`` plans and how many are cached."""
    claims = select_claims(only)
    chosen = get_budget(budget)
    root = Path(out) / RUNS_DIR
    planned, specs, _ = plan(
        claims, chosen, DataPlan.find(chosen, settings.data_dir, settings.download)
    )
    table = Table(title=f"runs of the {chosen.name} budget (shared runs count once in total)")
    for column in ("claim", "cases", "runs", "epochs", "cached"):
        table.add_column(column)

    def row(name: str, cases: str, runs: list[RunSpec]) -> None:
        cached = sum((root / s.key / "record.json").exists() for s in runs)
        epochs = sum(s.run_params.epochs for s in runs)
        table.add_row(name, cases, str(len(runs)), str(epochs), str(cached))

    for c in claims:
        own = list({s.key: s for p in planned[c.id] for s in p.specs.values()}.values())
        row(c.id, ", ".join(p.label for p in planned[c.id]), own)
    row("total", "", specs)
    console.print(table)
    return 0


def build_ledger(
    only: Sequence[str] | str | None = None,
    budget: str = "smoke",
    out: Path | str = DEFAULT_OUT,
    settings: Settings | None = None,
    console: Console | None = None,
    report: bool = True,
    executor: Executor | None = None,
) -> LedgerRun:
    """Run the claims (all, or ``only``) at ``budget`` into ``out`` and write the ledger.

    ``executor`` trains the runs elsewhere (:func:`bnlab.lab.claims.runner.run_all`). A claim
    with a run that failed on every try has no verdict: it is listed under ``failed`` (with
    each run's error) instead of ``claims``, and the same command trains the run again."""
    settings = settings or Settings()
    console = console or Console(stderr=True)
    claims = select_claims(only)
    chosen = get_budget(budget)
    out = Path(out)
    data = DataPlan.find(chosen, settings.data_dir, settings.download)
    planned, specs, labels = plan(claims, chosen, data)
    root = out / RUNS_DIR
    cached = sum((root / s.key / "record.json").exists() for s in specs)
    epochs = sum(s.run_params.epochs for s in specs)
    console.print(
        f"claims {', '.join(c.id for c in claims)} ({chosen.name} budget): {len(specs)} runs, "
        f"{epochs} epochs, {cached} already in {root}",
        markup=False,
        highlight=False,
    )
    counts = run_all(specs, root, settings, console, labels, executor)
    results = {s.key: load_result(root / s.key) for s in specs if s.key not in counts.failed}
    lost = {
        c.id: {k: counts.failed[k] for p in planned[c.id] for k in p.keys if k in counts.failed}
        for c in claims
    }
    evaluated = [evaluate_claim(c, planned[c.id], results) for c in claims if not lost[c.id]]
    ids = [c.id for c in claims] if only else None
    ledger = {
        "format": FORMAT,
        "version": VERSION,
        "budget": {"name": chosen.name, "seeds": list(chosen.seeds)},
        "data": data.note(),
        "command": command_line(chosen.name, ids, out),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "claims": [ledger_entry(r) for r in evaluated],
        "failed": [
            {"id": c.id, "claim": c.claim, "runs": lost[c.id]} for c in claims if lost[c.id]
        ],
    }
    atomic_write_text(out / LEDGER_JSON, json.dumps(ledger, indent=1, allow_nan=False) + "\n")
    atomic_write_text(out / LEDGER_MD, markdown(ledger))
    if report:
        write_page(ledger, evaluated, out)
    return LedgerRun(ledger, out, counts, evaluated)
