"""The record on disk: an epoch's save costs the same however long the run, a cut write is
recovered, every file follows the umask, version 2 records load and resume, and a resume from a
checkpoint older than the record computes what an uninterrupted run does."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from bnlab.lab import experiment, files, record
from bnlab.lab.config import Config
from bnlab.lab.errors import UsageError
from bnlab.lab.experiment import run_experiment
from bnlab.lab.record import RECORD_JSON, ROWS_JSONL, VERSION, Record, load_record
from bnlab.lab.report import build_report

V2_RECORD = Path(__file__).parent / "records" / "v2-keras-mlp"
MEASURED = ("loss", "accuracy", "test_loss", "test_accuracy")


def _config(**grid) -> Config:
    base = {"network": ["keras-mlp"], "dataset": ["digits"], "bn": [True], "seed": [0],
            "epochs": [2], "batch_size": [64], "lr": [0.01]}  # fmt: skip
    return Config(name="tiny", grid={**base, **grid}, limit_train=200, progress="off")


def _row(epoch: int, run: int = 1) -> dict:
    return {"run": run, "name": "bn", "group": "bn", "epoch": epoch, "loss": 1.0 + epoch,
            "accuracy": 0.5, "test_loss": 1.5, "test_accuracy": 0.4, "epoch_duration": 0.1,
            "eval_duration": 0.01, "run_duration": 0.5 * epoch, "samples_per_s": 1e4,
            "network": "keras-mlp", "bn": True, "lr": 0.01, "epochs": 1000, "seed": 0}  # fmt: skip


def _record(rows: int = 0) -> Record:
    runs = [{"run": 1, "name": "bn", "group": "bn", "params": {"epochs": 1000},
             "status": "pending", "epochs_done": 0}]  # fmt: skip
    keys = ["network", "bn", "lr", "epochs", "seed"]
    rec = Record("long", "accuracy", "classification", keys, {}, {}, runs)
    rec.rows = [_row(e) for e in range(1, rows + 1)]
    return rec


def test_an_epoch_save_writes_the_same_bytes_however_long_the_run(tmp_path, monkeypatch):
    written: list[int] = []

    def counting(write):
        def wrapped(path, text, *args, **kwargs):
            written.append(len(text))
            return write(path, text, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(record, "append_text", counting(files.append_text))
    monkeypatch.setattr(record, "atomic_write_text", counting(files.atomic_write_text))
    rec = _record()
    rec.save(tmp_path)
    per_epoch = []
    header = []
    for epoch in range(1, 401):
        rec.rows.append(_row(epoch))
        written.clear()
        rec.save(tmp_path, header=False, summary=False, durable=False)  # as each epoch does
        per_epoch.append(sum(written))
        if epoch in (10, 400):
            rec.save(tmp_path, summary=False)  # as a checkpoint does
            header.append((tmp_path / RECORD_JSON).stat().st_size)
    # one row in two files; the rows differ only in the digits of epoch, loss and run_duration
    assert max(per_epoch) - min(per_epoch) <= 2 * 3 * 2, (min(per_epoch), max(per_epoch))
    assert header[0] == header[1]  # record.json does not grow with the epochs
    assert [r["epoch"] for r in load_record(tmp_path).rows] == list(range(1, 401))


def test_a_cut_last_line_is_skipped_and_epochs_are_counted_from_the_rows(tmp_path):
    rec = _record(rows=5)
    rec.save(tmp_path)  # the header counts 0 epochs: the rows are the truth
    with open(tmp_path / ROWS_JSONL, "a") as handle:
        handle.write('{"run": 1, "name": "bn", "epo')  # a write cut short by a kill
    loaded = load_record(tmp_path)
    assert [r["epoch"] for r in loaded.rows] == [1, 2, 3, 4, 5]
    assert loaded.runs[0]["epochs_done"] == 5 and loaded.runs[0]["status"] == "partial"
    loaded.rows.append(_row(6))
    loaded.save(tmp_path)  # the first save after loading rewrites the rows files whole
    lines = (tmp_path / ROWS_JSONL).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert len((tmp_path / "record.csv").read_text().splitlines()) == 1 + 6
    (tmp_path / ROWS_JSONL).write_text(lines[0] + "\n{oops\n" + lines[1] + "\n")
    with pytest.raises(UsageError, match=r"rows.jsonl, line 2: not a JSON row"):
        load_record(tmp_path)
    (tmp_path / ROWS_JSONL).unlink()
    with pytest.raises(UsageError, match=r"rows\.jsonl is missing"):
        load_record(tmp_path)  # record.json counted epochs at the last save


def test_a_failed_atomic_write_leaves_the_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    files.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), files.atomic_writer(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_file_the_lab_writes_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        _, folder = run_experiment(_config(), root=tmp_path)
        report = build_report([folder])
        files.append_text(tmp_path / "appended.txt", "x\n")
    finally:
        os.umask(old)
    written = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {
        "record.json", "rows.jsonl", "record.csv", "summary.csv", "config.toml", "run-1.pt",
        "report.html",
    }  # fmt: skip
    assert report in written
    for path in [*written, tmp_path / "appended.txt"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_version_2_record_loads_and_resumes_as_version_3(tmp_path):
    raw = json.loads((V2_RECORD / RECORD_JSON).read_text())
    assert raw["version"] == 2 and len(raw["rows"]) == 8  # the fixture is old
    loaded = load_record(V2_RECORD)
    assert [{k: r[k] for k in MEASURED} for r in loaded.rows] == [
        {k: r[k] for k in MEASURED} for r in raw["rows"]
    ]
    for mine, saved in zip(loaded.summary, raw["summary"], strict=True):  # recomputed
        assert mine["test_accuracy_mean"] == pytest.approx(saved["test_accuracy_mean"], 1e-12)
        assert mine["test_accuracy_ci95"] == pytest.approx(saved["test_accuracy_ci95"], 1e-9)
    folder = tmp_path / "old"
    shutil.copytree(V2_RECORD, folder)
    resumed, _ = run_experiment(Config(out=str(folder), progress="off"), resume=True)
    header = json.loads((folder / RECORD_JSON).read_text())
    assert header["version"] == VERSION == 3 and "rows" not in header
    rows = [json.loads(line) for line in (folder / ROWS_JSONL).read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in raw["rows"]]
    assert resumed.status == "complete"


def test_resume_from_an_older_checkpoint_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    """A kill can leave recorded epochs after the last checkpoint: resuming trains them again
    and gets the uninterrupted run's numbers."""
    full, _ = run_experiment(_config(epochs=[5]), root=tmp_path / "full")
    monkeypatch.setattr(experiment, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint every epoch
    save_checkpoint = experiment._save_checkpoint

    def only_first_two(path, model, optimizer, epoch):  # as if 3 and 4 came too fast
        if epoch <= 2:
            save_checkpoint(path, model, optimizer, epoch)

    monkeypatch.setattr(experiment, "_save_checkpoint", only_first_two)

    def stop_after_four(rec):
        if len(rec.rows) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(epochs=[5]), root=tmp_path / "cut", on_epoch=stop_after_four)
    folder = tmp_path / "cut" / "tiny"
    assert len(load_record(folder).rows) == 4
    monkeypatch.setattr(experiment, "_save_checkpoint", save_checkpoint)
    trained = []
    run_epoch = experiment.run_epoch

    def counted(*args, **kwargs):
        trained.append(args[4])  # the epoch
        return run_epoch(*args, **kwargs)

    monkeypatch.setattr(experiment, "run_epoch", counted)
    resumed, _ = run_experiment(_config(epochs=[5]), root=tmp_path / "cut", resume=True)
    assert trained == [3, 4, 5]  # from the checkpoint of epoch 2, not from the start
    assert [r["epoch"] for r in resumed.rows] == [1, 2, 3, 4, 5]
    for a, b in zip(full.rows, resumed.rows, strict=True):
        assert {k: a[k] for k in MEASURED} == {k: b[k] for k in MEASURED}
    assert [r["epoch"] for r in load_record(folder).rows] == [1, 2, 3, 4, 5]


def test_record_json_is_there_before_the_first_epoch_ends(tmp_path):
    """A run killed in its first seconds can be resumed and shown: the header comes first."""
    seen = []
    run_experiment(_config(), root=tmp_path, on_epoch=lambda rec: seen.append(
        load_record(tmp_path / "tiny").status))  # fmt: skip
    assert seen[0] == "running"
