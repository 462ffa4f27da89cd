"""Data sets: the IDX reader (raw and gz, corrupt and truncated files), normalization, the
splits of digits and mpg, seeded shuffling by slicing, and the missing-data-set message."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from idx_files import idx_bytes, write_idx, write_idx_dataset

from bnlab.lab import data
from bnlab.lab.data import (
    DatasetNotFoundError,
    epoch_generator,
    load_dataset,
    read_idx,
    shuffled_batches,
)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    array = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    path = write_idx(tmp_path / f"x-idx3-ubyte{suffix}", array)
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == (5, 7, 3)
    np.testing.assert_array_equal(back, array)


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([1, -2, 70000], dtype=">i4")
    raw = bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + values.tobytes()
    (tmp_path / "v").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "v"), [1, -2, 70000])


def test_truncated_idx_names_file_and_sizes(tmp_path):
    array = np.zeros((4, 28, 28), dtype=np.uint8)
    raw = idx_bytes(array)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(raw[:-100])
    with pytest.raises(ValueError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "truncated" in message
    assert f"expected {len(raw)} bytes, got {len(raw) - 100} bytes" in message


def test_truncated_gzip_stream_names_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))[:-30])
    with pytest.raises(ValueError, match=str(path)):
        read_idx(path)


def test_bad_magic_number(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(ValueError, match="bad magic number"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_folder(tmp_path, gz):
    arrays = write_idx_dataset(tmp_path / "mnist", n_train=20, n_test=10, gz=gz)
    ds = load_dataset("mnist", tmp_path / "mnist")
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_train.dtype == torch.float32
    assert ds.y_train.dtype == torch.int64 and ds.task == "classification"
    expected = torch.from_numpy(arrays["train_images"].astype(np.float32) / 255).unsqueeze(1)
    torch.testing.assert_close(ds.x_train, expected)
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["test_labels"])


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLAB_DATA", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", tmp_path / "nothing-here")
    assert "--data-dir" in str(info.value) and "--download" in str(info.value)
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "no-debian")
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_normalizations(tmp_path):
    write_idx_dataset(tmp_path / "d", n_train=50, n_test=10)
    raw = load_dataset("mnist", tmp_path / "d", "none")
    normal = load_dataset("mnist", tmp_path / "d", "normal")
    fixed = load_dataset("mnist", tmp_path / "d", "fixed")
    x = raw.x_train.double()
    assert abs(normal.x_train.double().mean().item()) < 1e-5
    assert abs(normal.x_train.double().std().item() - 1) < 1e-4
    # The test split uses the training set's statistics, not its own.
    expected_test = (raw.x_test.double() - x.mean()) / x.std()
    torch.testing.assert_close(normal.x_test.double(), expected_test, atol=1e-5, rtol=0)
    torch.testing.assert_close(fixed.x_train, (raw.x_train - 0.1307) / 0.3081)
    with pytest.raises(ValueError, match="normalization must be one of"):
        load_dataset("mnist", tmp_path / "d", "zscore")


def test_digits_match_sklearn():
    from sklearn.datasets import load_digits as sk_load_digits

    images, target = data._digits_arrays()
    bunch = sk_load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(target, bunch.target)


def test_digits_split_is_seeded_and_disjoint():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert len(a.x_train) + len(a.x_test) == 1797 and len(a.x_test) == 359
    torch.testing.assert_close(a.x_train, b.x_train)
    assert a.x_train.shape[1:] == (1, 8, 8) and float(a.x_train.max()) <= 1.0
    c = load_dataset("digits", split_seed=1)
    assert not torch.equal(a.y_test, c.y_test)


def test_mpg_rows_split_and_standardization():
    ds = load_dataset("mpg")
    assert len(ds.x_train) + len(ds.x_test) == 392
    assert len(ds.x_test) == round(392 * 0.2)
    assert ds.x_train.shape[1] == 9 and ds.task == "regression" and ds.y_train.shape[1] == 1
    # Standardized with the training split's statistics: mean 0, std 1 there only.
    assert ds.x_train.mean(0).abs().max() < 1e-5
    assert (ds.x_train.std(0) - 1).abs().max() < 1e-4
    mpg = float(ds.y_train.mean())
    assert 15 < mpg < 35


def test_shuffled_batches_cover_everything_with_a_partial_batch():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    batches = list(shuffled_batches(x, y, 4, epoch_generator(3, 1)))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert all(torch.equal(bx.squeeze(1).long(), by) for bx, by in batches)
    again = torch.cat([b[1] for b in shuffled_batches(x, y, 4, epoch_generator(3, 1))])
    other = torch.cat([b[1] for b in shuffled_batches(x, y, 4, epoch_generator(3, 2))])
    assert torch.equal(seen, again) and not torch.equal(seen, other)
