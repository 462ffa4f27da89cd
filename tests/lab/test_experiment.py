"""The trainer and the experiment: seeded fresh models, honest metrics (partial batches, eval
mode, no per-batch sync), the record on disk, Ctrl-C + --resume, never overwriting a folder."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from bnlab.lab import data as data_module
from bnlab.lab import experiment
from bnlab.lab.config import Config, load_config
from bnlab.lab.data import Dataset, epoch_generator, load_dataset
from bnlab.lab.errors import UsageError
from bnlab.lab.experiment import (
    ExperimentExistsError,
    ExperimentInterrupted,
    resolve,
    run_experiment,
)
from bnlab.lab.grid import RunParams
from bnlab.lab.models import build_model
from bnlab.lab.record import RECORD_JSON, columns, load_record
from bnlab.lab.trainer import evaluate, run_epoch, train_epoch


def _tiny(**grid) -> Config:
    base = {
        "network": ["keras-mlp"],
        "dataset": ["digits"],
        "bn": [False, True],
        "seed": [0, 1],
        "epochs": [2],
        "batch_size": [64],
        "lr": [0.01],
    }
    return Config(name="tiny", grid={**base, **grid}, limit_train=300, progress="off")


def _tutorial001_networks():
    """Tutorial 001's network1 / network2, typed in from the tutorial."""
    torch.manual_seed(50)
    network1 = nn.Sequential(
        nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(in_channels=6, out_channels=12, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(start_dim=1),
        nn.Linear(in_features=12 * 4 * 4, out_features=120),
        nn.ReLU(),
        nn.Linear(in_features=120, out_features=60),
        nn.ReLU(),
        nn.Linear(in_features=60, out_features=10),
    )
    torch.manual_seed(50)
    network2 = nn.Sequential(
        nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.BatchNorm2d(6),
        nn.Conv2d(in_channels=6, out_channels=12, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(start_dim=1),
        nn.Linear(in_features=12 * 4 * 4, out_features=120),
        nn.ReLU(),
        nn.BatchNorm1d(120),
        nn.Linear(in_features=120, out_features=60),
        nn.ReLU(),
        nn.Linear(in_features=60, out_features=10),
    )
    return network1, network2


@pytest.mark.parametrize("bn_impl", ["torch", "bnlab"])
def test_lizard_cnn_is_the_tutorials_network(bn_impl):
    network1, network2 = _tutorial001_networks()
    ours1 = build_model("lizard-cnn", False, bn_impl, (1, 28, 28), 10, seed=50)
    ours2 = build_model("lizard-cnn", True, bn_impl, (1, 28, 28), 10, seed=50)
    for theirs, ours in ((network1, ours1), (network2, ours2)):
        assert [type(m).__name__ for m in theirs] == [type(m).__name__ for m in ours]
        a, b = theirs.state_dict(), ours.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(ours2(x), network2(x), atol=1e-5, rtol=1e-5)
    if bn_impl == "bnlab":
        assert "bnlab" in type(ours2[3]).__module__


META = ("classification", 3, "test")


def _dataset(n=10, n_test=7) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + n_test, 5, generator=g)
    y = torch.randint(0, 3, (n + n_test,), generator=g)
    return Dataset("toy", x[:n], y[:n], x[n:], y[n:], *META)


def test_partial_batch_weighted_by_real_size():
    ds = _dataset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    ds = Dataset("toy", ds.x_train.double(), ds.y_train, ds.x_test.double(), ds.y_test, *META)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the model does not move
    loss, acc, _ = train_epoch(model, opt, ds, 4, epoch_generator(0, 1))  # batches 4, 4, 2
    with torch.no_grad():
        out = model(ds.x_train)
        expected_loss = F.cross_entropy(out, ds.y_train).item()
        expected_acc = (out.argmax(1) == ds.y_train).double().mean().item()
    assert abs(loss - expected_loss) < 1e-12, f"loss {loss} vs {expected_loss}"
    assert abs(acc - expected_acc) < 1e-12


def test_evaluate_uses_eval_mode_and_restores_mode():
    ds = _dataset(n=32, n_test=9)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    for _ in range(3):
        model(ds.x_train)  # move the running statistics away from (0, 1)
    loss, acc = evaluate(model, ds, batch_size=4)  # batches 4, 4, 1: eval mode allows 1
    assert model.training
    model.eval()
    with torch.no_grad():
        out = model(ds.x_test)
    assert abs(loss - F.cross_entropy(out, ds.y_test).item()) < 1e-6
    assert abs(acc - (out.argmax(1) == ds.y_test).float().mean().item()) < 1e-9


def test_no_per_batch_host_sync(monkeypatch):
    ds = _dataset(n=64)
    model = nn.Sequential(nn.Linear(5, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []
    original = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or original(self))
    train_epoch(model, opt, ds, 4, epoch_generator(0, 1))  # 16 batches
    assert len(calls) == 2, f"{len(calls)} .item() calls in one epoch of 16 batches"


def test_run_epoch_is_train_epoch_then_evaluate():
    """One process: the shared epoch (run_epoch) gives train_epoch's and evaluate's figures."""
    ds = _dataset(n=40, n_test=9)
    params = RunParams(network="mlp", batch_size=6, seed=3)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
        models.append((model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)))
    (a, opt_a), (b, opt_b) = models
    result = run_epoch(a, opt_a, ds, params, epoch=2, eval_batch_size=4)
    loss, acc, _ = train_epoch(b, opt_b, ds, 6, epoch_generator(3, 2))
    test_loss, test_acc = evaluate(b, ds, batch_size=4)
    assert (result.loss, result.metric) == (loss, acc)
    assert (result.test_loss, result.test_metric) == (test_loss, test_acc)
    assert result.samples == 40 and result.epoch_duration > 0
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


class _SecondOfTwo:
    """Rank 1 of 2, without communication: it sees its shards only."""

    world_size = 2

    def shard(self, batch):
        return torch.tensor_split(batch, 2)[1]

    def eval_model(self, model):
        return model

    def combine(self, sums, seconds):
        pass


def test_an_empty_shard_adds_zero_and_keeps_gradients_finite():
    """Batches of one sample leave rank 1 of 2 nothing: its loss is 0, not NaN."""
    ds = _dataset(n=3, n_test=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = run_epoch(model, opt, ds, RunParams(batch_size=1), 1, 1, ranks=_SecondOfTwo())
    assert result.loss == 0.0 and result.metric == 0.0  # only this rank's (empty) sums
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_experiment_writes_the_documented_record(tmp_path):
    record, folder = run_experiment(_tiny(), root=tmp_path)
    assert folder == tmp_path / "tiny" and record.status == "complete"
    assert len(record.rows) == 2 * 2 * 2  # (bn) x (seed) x (epochs)
    saved = json.loads((folder / RECORD_JSON).read_text())
    assert saved["columns"] == columns("accuracy") and saved["status"] == "complete"
    assert saved["environment"]["torch_threads"] >= 1 and saved["environment"]["versions"]["torch"]
    assert saved["config"]["grid"]["network"] == ["keras-mlp"]
    with open(folder / "record.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == columns("accuracy") and len(rows) == 8
    saved_rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    assert float(rows[3]["test_accuracy"]) == saved_rows[3]["test_accuracy"]
    assert {r["group"] for r in saved_rows} == {"no_bn", "bn"}
    last = [s for s in record.summary if s["epoch"] == 2]
    assert [s["n"] for s in last] == [2, 2] and all(s["accuracy_ci95"] >= 0 for s in last)
    runs = {r["name"]: r for r in saved["runs"]}
    assert runs["bn,seed=1"]["status"] == "complete" and runs["bn,seed=1"]["epochs_done"] == 2
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in saved_rows)
    assert load_config(folder / "config.toml").grid == saved["config"]["grid"]
    # the same seed builds the same model: runs 1 (no_bn, seed 0) and 2 (seed 1) differ
    assert record.rows[0]["loss"] != record.rows[2]["loss"]


def test_interrupt_keeps_finished_epochs_and_resume_matches_uninterrupted(tmp_path):
    full, _ = run_experiment(_tiny(epochs=[3], seed=[0]), root=tmp_path / "a")
    epochs_seen = []

    def stop_after_four(record):
        epochs_seen.append(len(record.rows))
        if len(record.rows) == 4:
            raise KeyboardInterrupt

    console = Console(file=io.StringIO())
    with pytest.raises(ExperimentInterrupted) as interrupted:
        run_experiment(
            _tiny(epochs=[3], seed=[0]),
            root=tmp_path / "b",
            on_epoch=stop_after_four,
            console=console,
        )
    # it says where the epochs are, and prints nothing: the caller gives the command to continue
    assert interrupted.value.folder == tmp_path / "b" / "tiny" and not console.file.getvalue()
    partial = load_record(tmp_path / "b" / "tiny")
    assert partial.status == "interrupted" and len(partial.rows) == 4
    assert [r["status"] for r in partial.runs] == ["complete", "partial"]
    resumed, _ = run_experiment(_tiny(epochs=[3], seed=[0]), root=tmp_path / "b", resume=True)
    assert resumed.status == "complete" and len(resumed.rows) == 6
    for a, b in zip(full.rows, resumed.rows, strict=True):
        for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
            assert a[key] == b[key], (key, a, b)
    with pytest.raises(ValueError, match="epochs: saved"):
        run_experiment(_tiny(epochs=[5], seed=[0]), root=tmp_path / "b", resume=True)


def test_existing_folder_is_never_overwritten(tmp_path):
    config = _tiny(epochs=[1], seed=[0])
    _, first = run_experiment(config, root=tmp_path)
    _, second = run_experiment(config, root=tmp_path)
    assert first.name == "tiny" and second.name == "tiny-2"
    explicit = Config(**{**config.to_dict(), "out": str(first)})
    before = (first / RECORD_JSON).read_text()
    with pytest.raises(ExperimentExistsError, match="--resume"):
        run_experiment(explicit, root=tmp_path)
    assert (first / RECORD_JSON).read_text() == before
    with pytest.raises(UsageError, match="no experiment to resume"):
        run_experiment(_tiny(), root=tmp_path / "empty", resume=True)


def test_bn_axes_in_the_record_and_keras_defaults_unchanged(tmp_path):
    """keras-mlp's own BN momentum and eps (Keras's defaults) are in its record; giving the same
    values in the grid trains the same numbers; another momentum trains other numbers."""
    default, _ = run_experiment(_tiny(bn=[True], seed=[0]), root=tmp_path / "a")
    assert {(r["bn_momentum"], r["bn_eps"]) for r in default.rows} == {(0.01, 0.001)}
    same, _ = run_experiment(
        _tiny(bn=[True], seed=[0], bn_momentum=[0.01], bn_eps=[1e-3]), root=tmp_path / "b"
    )
    measured = ("loss", "accuracy", "test_loss", "test_accuracy")
    assert [[r[k] for k in measured] for r in same.rows] == [
        [r[k] for k in measured] for r in default.rows
    ]
    swept, _ = run_experiment(
        _tiny(bn=[True], seed=[0], bn_momentum=[0.1, "cumulative"]), root=tmp_path / "c"
    )
    assert [r["group"] for r in swept.rows] == ["bn_momentum=0.1"] * 2 + [
        "bn_momentum=cumulative"
    ] * 2
    assert swept.rows[-1]["test_loss"] != default.rows[-1]["test_loss"]


def test_regression_records_mae(tmp_path):
    config = Config(
        name="m",
        grid={"network": ["mpg-mlp"], "dataset": ["mpg"], "epochs": [2], "batch_size": [32]},
        progress="off",
    )
    record, _ = run_experiment(config, root=tmp_path)
    assert record.metric == "mae" and not record.higher_is_better
    assert "test_mae" in record.rows[0] and "accuracy" not in record.rows[0]
    assert all(r["test_mae"] > 0 for r in record.rows)


def test_mnist_preset_falls_back_to_fashion_mnist_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLAB_DATA", str(tmp_path))
    resolved, notes = resolve(Config(preset="mlp"))
    assert resolved.grid["dataset"] == ["fashion-mnist"]
    assert any("MNIST not found" in n and "Fashion-MNIST" in n for n in notes)
    from idx_files import write_idx_dataset

    write_idx_dataset(tmp_path / "mnist", n_train=4, n_test=2)
    resolved, notes = resolve(Config(preset="mlp"))
    assert resolved.grid["dataset"] == ["mnist"] and not notes


def test_tensorboard_missing_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    config = Config(**{**_tiny(epochs=[1], seed=[0]).to_dict(), "tensorboard": True})
    with pytest.raises(ImportError, match=r"pip install 'bnlab\[tensorboard\]'"):
        run_experiment(config, root=tmp_path)


def test_tensorboard_scalars_are_written(tmp_path, monkeypatch):
    written = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            written.append((self.log_dir, tag, value, step))

        def flush(self):
            pass

        def close(self):
            pass

    fake = type(sys)("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    config = Config(**{**_tiny(epochs=[1], seed=[0]).to_dict(), "tensorboard": True})
    _, folder = run_experiment(config, root=tmp_path)
    tags = {(w[0].split("/")[-1], w[1]) for w in written}
    assert ("bn", "test_accuracy") in tags and ("no_bn", "loss") in tags
    assert all(str(folder / "tensorboard") in w[0] for w in written)


def test_bn_impl_torch_and_bnlab_train_alike(tmp_path):
    results = {}
    for impl in ("torch", "bnlab"):
        config = _tiny(bn=[True], seed=[0], bn_impl=[impl], epochs=[1])
        record, _ = run_experiment(config, root=tmp_path / impl)
        results[impl] = record.rows[0]
    diff = abs(results["torch"]["loss"] - results["bnlab"]["loss"])
    assert diff < 1e-4, f"training loss differs by {diff}"


def test_data_module_default_dir_is_debian(tmp_path):
    assert str(data_module.FASHION_MNIST_DIR) == "/usr/share/datasets/fashion-mnist"
    assert load_dataset("digits").task == "classification"


def test_the_fallback_note_comes_before_the_first_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLAB_DATA", str(tmp_path / "cache"))  # no MNIST there
    console = Console(file=io.StringIO(), width=200)
    printed_by_first_epoch = []
    config = Config(
        preset="keras-mlp", grid={"epochs": [1], "bn": [True]}, limit_train=64, progress="off"
    )

    def first_epoch(record):
        printed_by_first_epoch.append(console.file.getvalue())

    run_experiment(config, root=tmp_path, console=console, on_epoch=first_epoch)
    assert "MNIST not found" in printed_by_first_epoch[0]
    assert "runs on Fashion-MNIST instead" in printed_by_first_epoch[0]


def test_mnist_absent_from_the_data_dir_given_is_an_error_not_a_fallback(tmp_path):
    resolved, notes = resolve(Config(preset="mlp", data_dir=str(tmp_path)))
    assert resolved.grid["dataset"] == ["mnist"] and not notes
    with pytest.raises(FileNotFoundError, match=f"mnist not found in {tmp_path}"):
        run_experiment(Config(preset="mlp", data_dir=str(tmp_path)), root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_the_short_default_note_only_for_the_default_epochs():
    _, notes = resolve(Config(preset="lizard-cnn"))
    assert any("the tutorial trains 20 epochs" in note for note in notes)
    _, notes = resolve(Config(preset="lizard-cnn", grid={"epochs": [10]}))
    assert not any("tutorial trains" in note for note in notes)


def test_the_saved_config_says_what_ran_not_where(tmp_path):
    config = Config(**{**_tiny(epochs=[1], seed=[0]).to_dict(), "out": str(tmp_path / "here")})
    record, folder = run_experiment(config, root=tmp_path)
    assert folder == tmp_path / "here"
    assert load_config(folder / "config.toml").out == "" and record.config["out"] == ""
    _, again = run_experiment(load_config(folder / "config.toml"), root=tmp_path)
    assert again == tmp_path / "tiny"  # a new folder, by the never-overwrite rule


def test_a_missing_probe_layer_fails_before_the_folder(tmp_path):
    config = Config(
        **{**_tiny(epochs=[1]).to_dict(), "probes": ["activations"], "probe_layer": "Conv2d#0"}
    )
    with pytest.raises(UsageError, match=r"probe layer 'Conv2d#0' \(--probe-layer\), run no_bn"):
        run_experiment(config, root=tmp_path)
    assert not (tmp_path / "tiny").exists()


def test_small_networks_train_on_one_thread_unless_told(tmp_path, monkeypatch):
    real = experiment.run_epoch
    seen = []

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "run_epoch", spy)
    before = torch.get_num_threads()
    record, _ = run_experiment(_tiny(epochs=[1], seed=[0]), root=tmp_path / "a")
    assert seen == [1, 1] and [r["threads"] for r in record.runs] == [1, 1]
    assert torch.get_num_threads() == before  # restored
    seen.clear()
    told = Config(**{**_tiny(epochs=[1], seed=[0]).to_dict(), "threads": 3})
    record, _ = run_experiment(told, root=tmp_path / "b")
    assert seen == [3, 3] and [r["threads"] for r in record.runs] == [3, 3]
    assert torch.get_num_threads() == before
