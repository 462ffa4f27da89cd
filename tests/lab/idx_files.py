"""Write small IDX files (MNIST's format) for the data tests: raw or gzipped."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from bnlab.lab.data import IDX_FILES


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 00 00 08 ndim, big-endian dims, data."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_idx_dataset(
    folder: Path, n_train: int = 64, n_test: int = 32, side: int = 28, gz: bool = True, seed=0
) -> dict[str, np.ndarray]:
    """A fake MNIST-like data set: class k images are brighter in row band k (learnable)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, side, side)).astype(np.uint8)
        for i, k in enumerate(labels):
            band = slice(int(k) * side // 10, (int(k) + 1) * side // 10)
            images[i, band, :] = 250
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    for key, stem in IDX_FILES.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key])
    return arrays
