"""Data sets held whole in memory as tensors, batched by slicing after a seeded shuffle.

Why not torch.utils.data.DataLoader: for data this small, per-sample indexing and collation
cost more than the model. One gather per epoch (``x[perm]``) and then contiguous slices is the
cheapest way to feed a CPU model.

Data sets (``DATASETS``):

- ``fashion-mnist``: IDX .gz files; by default from Debian's ``dataset-fashion-mnist`` package
  (/usr/share/datasets/fashion-mnist), or any folder given as ``data_dir``.
- ``mnist``: the same IDX reader, from a folder the user names (``data_dir``) or from the
  download cache (``--download``).
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, embedded, no download); a seeded
  80/20 split.
- ``mpg``: Auto MPG, the ``cars`` table of vega_datasets (406 cars; rows missing mpg or
  horsepower dropped -> 392); origin one-hot; seeded 80/20 split; features standardized with
  the training split's mean and std; target mpg left in miles per gallon.

Image normalization (``normalization``): ``none`` (pixels scaled to [0, 1], as ToTensor does),
``normal`` (the training set's own mean/std, tutorial 001's 'normal' trainset) or ``fixed``
(MNIST's (0.1307, 0.3081), tutorial 002).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bnlab.lab.download import default_cache_dir
from bnlab.lab.errors import UsageError

DATASETS = ("fashion-mnist", "mnist", "digits", "mpg")
NORMALIZATIONS = ("none", "normal", "fixed")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_FIXED = (0.1307, 0.3081)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are missing; the message says how to get them."""


@dataclass(frozen=True)
class Dataset:
    """A train/test split in memory. Images are float32 (N, 1, H, W); tables float32 (N, F).

    ``y`` is int64 class indices (classification) or float32 (N, 1) targets (regression).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str  # "classification" | "regression"
    num_outputs: int  # classes, or regression targets
    source: str  # where the data came from, for the record

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def subset(self, train: int | None = None, test: int | None = None) -> Dataset:
        """The first ``train``/``test`` samples (for quick runs and tests)."""
        return replace(
            self,
            x_train=self.x_train[:train] if train else self.x_train,
            y_train=self.y_train[:train] if train else self.y_train,
            x_test=self.x_test[:test] if test else self.x_test,
            y_test=self.y_test[:test] if test else self.y_test,
        )


def read_idx(path: Path | str) -> np.ndarray:
    """Read one IDX file (raw or .gz) into a NumPy array with the file's dtype and shape.

    Raises ValueError naming the file for a bad magic number or a size that does not match the
    header (a truncated or corrupt file), with the expected and actual byte counts.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:  # gzip raises these for truncated/corrupt streams
        raise UsageError(f"cannot read IDX file {path}: {exc} (truncated or corrupt?)") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise UsageError(
            f"{path} is not an IDX file: bad magic number {data[:4].hex() or '(empty)'} "
            "(expected 0000 then a type code and the number of dimensions)"
        )
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UsageError(
            f"IDX file {path} is truncated: expected a {header}-byte header, got {len(data)} bytes"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "corrupt (too long)"
        raise UsageError(
            f"IDX file {path} is {what}: header says shape {shape}, so expected "
            f"{expected} bytes, got {len(data)} bytes"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def find_idx(folder: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``folder``, as ``stem.gz`` or raw ``stem`` (gz preferred)."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _how_to_get(name: str) -> str:
    if name == "fashion-mnist":
        return (
            "install Debian's package (`sudo apt-get install dataset-fashion-mnist`, which puts "
            f"the files in {FASHION_MNIST_DIR}), or point --data-dir at a folder holding the "
            "four IDX files, or fetch them with --download"
        )
    return (
        "point --data-dir at a folder holding the four MNIST IDX files "
        "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte"
        "[.gz], t10k-labels-idx1-ubyte[.gz]), or fetch them with --download"
    )


def idx_folder(name: str, data_dir: Path | str | None) -> Path:
    """The folder holding ``name``'s IDX files: ``data_dir``, else the defaults, else an error."""
    if data_dir is not None:
        candidates = [Path(data_dir)]
    else:
        candidates = [default_cache_dir() / name]
        if name == "fashion-mnist":
            candidates.insert(0, FASHION_MNIST_DIR)
    for folder in candidates:
        if all(find_idx(folder, stem) for stem in IDX_FILES.values()):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    missing = [
        stem for stem in IDX_FILES.values() if all(find_idx(c, stem) is None for c in candidates)
    ]
    raise DatasetNotFoundError(
        f"{name} not found (looked in {looked}; missing {', '.join(missing)}). "
        f"To get it: {_how_to_get(name)}."
    )


def has_idx_dataset(name: str, data_dir: Path | str | None = None) -> bool:
    try:
        idx_folder(name, data_dir)
    except DatasetNotFoundError:
        return False
    return True


def load_idx_dataset(name: str, data_dir: Path | str | None = None) -> Dataset:
    """MNIST-format data (MNIST, Fashion-MNIST) as float32 images in [0, 1], shape (N, 1, H, W)."""
    folder = idx_folder(name, data_dir)
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = find_idx(folder, stem)
        assert path is not None  # idx_folder checked
        arrays[key] = read_idx(path)
    for split in ("train", "test"):
        imgs, labs = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim != 3 or labs.ndim != 1 or imgs.shape[0] != labs.shape[0]:
            raise UsageError(
                f"{name} in {folder}: {split} images have shape {imgs.shape} and labels "
                f"{labs.shape}; expected (N, H, W) images and N labels"
            )

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(
        name=name,
        x_train=images(arrays["train_images"]),
        y_train=labels(arrays["train_labels"]),
        x_test=images(arrays["test_images"]),
        y_test=labels(arrays["test_labels"]),
        task="classification",
        num_outputs=10,
        source=str(folder),
    )


def _split(n: int, seed: int, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    n_test = round(n * test_fraction)
    return perm[n_test:], perm[:n_test]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits.csv.gz (64 pixels then the label per row), read directly:
    importing scikit-learn costs seconds, the file a few milliseconds."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DatasetNotFoundError(
            "the digits data set comes with scikit-learn: pip install scikit-learn"
        )
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_digits(split_seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) images in [0, 1]; seeded 80/20 split."""
    images, target = _digits_arrays()
    x = torch.from_numpy(images / 16.0).unsqueeze(1)
    y = torch.from_numpy(target)
    train, test = _split(len(x), split_seed)
    return Dataset(
        name="digits",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        task="classification",
        num_outputs=10,
        source="scikit-learn's bundled digits (sklearn.datasets.load_digits)",
    )


MPG_FEATURES = (
    "Cylinders",
    "Displacement",
    "Horsepower",
    "Weight_in_lbs",
    "Acceleration",
    "Year",
)
MPG_ORIGINS = ("USA", "Europe", "Japan")


def load_mpg(split_seed: int = 0) -> Dataset:
    """Auto MPG (vega_datasets ``cars``): 392 cars, 9 standardized features, target mpg.

    Features: cylinders, displacement, horsepower, weight, acceleration, model year (as a
    number: years since 1970) and origin one-hot (USA, Europe, Japan). Standardized with the
    training split's mean and std only, so nothing of the test split leaks into training.
    """
    from vega_datasets import data as vega

    frame = vega.cars()
    frame = frame.dropna(subset=["Miles_per_Gallon", "Horsepower"]).reset_index(drop=True)
    years = frame["Year"].dt.year if hasattr(frame["Year"], "dt") else frame["Year"]
    numeric = frame[list(MPG_FEATURES)].copy()
    numeric["Year"] = np.asarray(years, dtype=np.float64) - 1970
    origin = np.stack([(frame["Origin"] == o).to_numpy() for o in MPG_ORIGINS], axis=1)
    x = torch.from_numpy(
        np.concatenate([numeric.to_numpy(np.float64), origin.astype(np.float64)], axis=1)
    ).float()
    y = torch.from_numpy(frame["Miles_per_Gallon"].to_numpy(np.float32)).unsqueeze(1)
    train, test = _split(len(x), split_seed)
    mean = x[train].mean(0)
    std = x[train].std(0).clamp_min(1e-12)
    x = (x - mean) / std
    return Dataset(
        name="mpg",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        task="regression",
        num_outputs=1,
        source="vega_datasets cars",
    )


def normalize(dataset: Dataset, how: str) -> Dataset:
    """Apply an image normalization (see the module docstring) to both splits."""
    if how not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {how!r}")
    if how == "none" or dataset.task == "regression":
        return dataset
    if how == "normal":
        mean, std = dataset.x_train.mean().item(), dataset.x_train.std().item()
    else:
        mean, std = MNIST_FIXED
    return replace(
        dataset,
        x_train=(dataset.x_train - mean) / std,
        x_test=(dataset.x_test - mean) / std,
    )


def load_dataset(
    name: str,
    data_dir: Path | str | None = None,
    normalization: str = "none",
    split_seed: int = 0,
) -> Dataset:
    """Load data set ``name`` (one of ``DATASETS``) and normalize it."""
    if name in ("fashion-mnist", "mnist"):
        dataset = load_idx_dataset(name, data_dir)
    elif name == "digits":
        dataset = load_digits(split_seed)
    elif name == "mpg":
        dataset = load_mpg(split_seed)
    else:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    return normalize(dataset, normalization)


def shuffled_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x_batch, y_batch)`` slices of one seeded permutation of the data.

    The last batch is partial when ``batch_size`` does not divide N; callers weight it by its
    real size.
    """
    perm = torch.randperm(len(x), generator=generator)
    xs, ys = x[perm], y[perm]
    for start in range(0, len(xs), batch_size):
        yield xs[start : start + batch_size], ys[start : start + batch_size]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling RNG of (run seed, epoch): resuming at any epoch reproduces the order."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetNotFoundError",
    "epoch_generator",
    "has_idx_dataset",
    "load_dataset",
    "read_idx",
    "shuffled_batches",
]
