"""The HTML report: self-contained, escaped, partial runs marked, clear errors on bad folders."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from report_fixtures import add_probes, make_record

from bnlab.lab.report import ReportError, build_report


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_report_is_self_contained_with_tables_and_figures(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    rec = make_record(folder)
    add_probes(folder, rec)
    out = build_report([folder])
    assert out == folder / "report.html"
    html = out.read_text()
    imgs = _images(html)
    assert len(imgs) == 5  # curves, epoch time, activations, shift, landscape
    assert all(i.startswith(b"\x89PNG\r\n\x1a\n") for i in imgs)
    assert not re.search(r"(src|href)=\"(?!data:)", html)  # nothing fetched from anywhere
    for run in rec.runs:
        assert f"<td>{run['name']}</td>" in html
    # the fixture's BN runs lead by 0.05 with a spread of 0.01 over 3 seeds: a clear winner
    assert "Winner on test accuracy at epoch 3 (model in eval mode): bn " in html
    assert "torch_threads" in html and "2.13.0" in html
    assert "<span class='badge'>partial</span>" not in html


def test_user_text_is_escaped(tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    rec = make_record(folder, name="<script>alert(1)</script>")
    rec.config["note"] = '"><img src=x onerror=alert(2)>'
    rec.notes.append("<b>bold</b> & co")
    rec.save(folder)
    html = build_report([folder], tmp_path / "r.html").read_text()
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html


def test_partial_run_is_reported_and_marked(tmp_path: Path) -> None:
    folder = tmp_path / "cut"
    make_record(folder, status="interrupted", stop_after=5)
    html = build_report([folder]).read_text()
    assert "<span class='badge'>partial</span>" in html
    assert "status: interrupted" in html
    assert "<td>partial</td>" in html and "<td>pending</td>" in html
    assert len(_images(html)) == 2  # curves and epoch time from the finished epochs


def test_several_folders_in_one_report(tmp_path: Path) -> None:
    make_record(tmp_path / "a", name="first")
    make_record(tmp_path / "b", name="second", lrs=(0.01, 0.1), seeds=(0,))
    html = build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "both.html").read_text()
    assert html.count("<section class='experiment'>") == 2
    assert len(_images(html)) == 2 + 3  # second has an lr sweep


def test_bad_folders_give_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match=r"empty.*bnlab compare"):
        build_report([empty])
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ReportError, match=r"not a bnlab run folder.*cat\.jpg"):
        build_report([foreign])
    with pytest.raises(ReportError, match="does not exist"):
        build_report([tmp_path / "nope"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "record.json").write_text('{"format": "something-else"}')
    with pytest.raises(ReportError, match="not a bnlab run record"):
        build_report([broken])
    with pytest.raises(ReportError, match="no run folder"):
        build_report([])


def test_cli_report_and_compare_with_probes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bnlab.cli import main

    folder = tmp_path / "tiny"
    make_record(folder)
    figs = tmp_path / "figs"
    assert (
        main(["report", str(folder), "-o", str(tmp_path / "r.html"), "--figures", str(figs)]) == 0
    )
    assert sorted(p.name for p in figs.iterdir()) == [
        "tiny-cnn-curves.png", "tiny-cnn-curves.svg", "tiny-cnn-epoch_time.png",
        "tiny-cnn-epoch_time.svg",
    ]  # fmt: skip
    assert f"report: {tmp_path / 'r.html'}" in capsys.readouterr().out.replace("\n", "")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err

    out = tmp_path / "digits"
    argv = ["compare", "keras-mlp", "--dataset", "digits", "--epochs", "1", "--seeds", "1",
            "--limit-train", "200", "--limit-test", "100", "--progress", "off", "--out", str(out)]  # fmt: skip
    assert main([*argv, "--probe", "activations,ics,landscape", "--probe-layer", "Linear#0"]) == 0
    printed = capsys.readouterr().out.replace("\n", "")
    assert f"report: {out / 'report.html'}" in printed
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    for k in (1, 2):
        assert (out / "probes" / f"run-{k}.json").exists()
    bad = [*argv[:-1], str(tmp_path / "bad"), "--probe", "ics", "--probe-layer", "fc9"]
    assert main(bad) == 2
    assert "layers that exist" in capsys.readouterr().err
