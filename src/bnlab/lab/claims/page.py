"""The claims section of the HTML report: ``<out>/report.html``, one figure per claim.

Built with the report's own page pieces (:mod:`bnlab.lab.report`: its table, its inlined
figure, its style and its Content-Security-Policy: a self-contained file that fetches
nothing), from the ledger and the evaluated claims. Every text goes through
:func:`html.escape`. The figures are kept in ``<out>/figures/`` and drawn again only when
their claim's ledger entry changed (a stamp of it sits beside each figure), so a ledger whose
runs are all cached rebuilds at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnlab.lab.claims.figures import claim_figure
from bnlab.lab.claims.statistics import interval
from bnlab.lab.files import atomic_write_text
from bnlab.lab.report import _STYLE, _img, _table

if TYPE_CHECKING:
    from bnlab.lab.claims.ledger import ClaimResult

REPORT_HTML = "report.html"
FIGURES = "figures"


def _interval(line: dict[str, Any]) -> str:
    return interval(line["estimate"], line["ci_low"], line["ci_high"])


def _figure(result: ClaimResult, entry: dict[str, Any], folder: Path) -> Path:
    """The claim's figure in ``folder``, drawn unless the one there has the entry's stamp."""
    stamp = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
    png, mark = folder / f"{entry['id']}.png", folder / f".{entry['id']}.stamp"
    if png.exists() and mark.exists() and mark.read_text(encoding="utf-8") == stamp:
        return png
    png = claim_figure(result, folder)
    atomic_write_text(mark, stamp)
    return png


def write_page(ledger: dict[str, Any], results: Sequence[ClaimResult], out: Path) -> Path:
    """Write ``out/report.html`` and the figures ``out/figures/<id>.png/.svg``."""
    title = f"bnlab claims ledger ({ledger['budget']['name']} budget)"
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(ledger['data'])} Rebuild: <code>{escape(ledger['command'])}</code>.</p>",
        "<h2>Claims</h2>",
        _table(
            ["id", "claim", "tutorial", "statistic", "estimate [95% CI]", "seeds", "verdict"],
            [
                [
                    e["id"],
                    e["claim"],
                    e["tutorial"],
                    e["statistic"],
                    _interval(e),
                    e["n_seeds"],
                    e["verdict"],
                ]
                for e in ledger["claims"]
            ],
            "claims",
        ),
    ]
    for entry, result in zip(ledger["claims"], results, strict=True):
        lines = [entry, *entry["secondary"]]
        parts += [
            f"<section class='claim'><h2>{escape(entry['id'])}: {escape(entry['claim'])}"
            f" ({escape(entry['tutorial'])}): {escape(entry['verdict'])}</h2>",
            f"<p><b>Protocol.</b> {escape(entry['protocol'])}</p>",
            f"<p><b>Made testable.</b> {escape(entry['testable'])}</p>",
            f"<p><b>Rule.</b> {escape(entry['rule'])}.</p>",
            _table(
                ["", "case", "statistic", "claimed", "estimate [95% CI]", "seeds", "verdict"],
                [
                    [
                        "primary" if i == 0 else "secondary",
                        s["case"],
                        s["statistic"],
                        s["claimed"],
                        _interval(s),
                        s["n_seeds"],
                        s["verdict"],
                    ]
                    for i, s in enumerate(lines)
                ],
                "lines",
            ),
            _img(_figure(result, entry, out / FIGURES), f"{entry['id']}: {entry['claim']}"),
            "</section>",
        ]
    html = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">"
        "<link rel='icon' href='data:,'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
    path = out / REPORT_HTML
    atomic_write_text(path, html)
    return path
