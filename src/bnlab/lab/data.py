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
  the training split's mean and std (``input_scaling="raw"``: left as the table gives them,
  pounds, cubic inches, ...); target mpg left in miles per gallon.

Image normalization (``normalization``): ``none`` (pixels scaled to [0, 1], as ToTensor does),
``normal`` (the training set's own mean/std, tutorial 001's 'normal' trainset) or ``fixed``
(MNIST's (0.1307, 0.3081), tutorial 002).
"""

from __future__ import annotations

import functools
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
#: how a table's features reach the network (the run parameter ``input_scaling``)
INPUT_SCALINGS = ("standardized", "raw")
TABLES = ("mpg",)
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
    return "point --data-dir at a folder holding the four IDX files, or fetch them with --download"


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
    looked = " or ".join(str(c) for c in candidates)
    missing = [
        f"{stem}[.gz]"
        for stem in IDX_FILES.values()
        if all(find_idx(c, stem) is None for c in candidates)
    ]
    raise DatasetNotFoundError(
        f"{name} not found in {looked}: no {', '.join(missing)}. To get it: {_how_to_get(name)}."
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


def _split(
    name: str, x: torch.Tensor, y: torch.Tensor, seed: int, task: str, num_outputs: int, source: str
) -> Dataset:
    """``(x, y)`` as a data set whose test split is 20% of the rows, drawn by ``seed``."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(x) * 0.2)
    train, test = perm[n_test:], perm[:n_test]
    return Dataset(name, x[train], y[train], x[test], y[test], task, num_outputs, source)


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
    source = "scikit-learn's bundled digits (sklearn.datasets.load_digits)"
    return _split("digits", x, y, split_seed, "classification", 10, source)


MPG_FEATURES = (
    "Cylinders",
    "Displacement",
    "Horsepower",
    "Weight_in_lbs",
    "Acceleration",
    "Year",
)
MPG_ORIGINS = ("USA", "Europe", "Japan")


def load_mpg(split_seed: int = 0, input_scaling: str = "standardized") -> Dataset:
    """Auto MPG (vega_datasets ``cars``): 392 cars, 9 features, target mpg.

    Features: cylinders, displacement, horsepower, weight, acceleration, model year (as a
    number: years since 1970) and origin one-hot (USA, Europe, Japan). Standardized with the
    training split's mean and std only, so nothing of the test split leaks into training;
    ``input_scaling="raw"`` keeps the table's units.
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
    dataset = _split("mpg", x, y, split_seed, "regression", 1, "vega_datasets cars")
    if input_scaling != "standardized":
        return dataset
    mean = dataset.x_train.mean(0)
    std = dataset.x_train.std(0).clamp_min(1e-12)
    return replace(
        dataset, x_train=(dataset.x_train - mean) / std, x_test=(dataset.x_test - mean) / std
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


def check_input_scaling(name: str, input_scaling: str) -> None:
    """``input_scaling`` is one of INPUT_SCALINGS, and "raw" only for a table (``UsageError``)."""
    if input_scaling not in INPUT_SCALINGS:
        raise UsageError(
            f"input_scaling must be one of {', '.join(INPUT_SCALINGS)}, got {input_scaling!r}"
        )
    if input_scaling != "standardized" and name not in TABLES:
        raise UsageError(
            f"input_scaling {input_scaling!r} applies to a table's features ({', '.join(TABLES)});"
            f" data set {name!r} has images, scaled by 'normalization'"
        )


def load_dataset(
    name: str,
    data_dir: Path | str | None = None,
    normalization: str = "none",
    split_seed: int = 0,
    input_scaling: str = "standardized",
) -> Dataset:
    """Load data set ``name`` (one of ``DATASETS``) and normalize it.

    The result is kept for the process, per arguments and, for IDX files, per folder and the
    files' sizes and modification times: decoding and normalizing 70,000 images takes over a
    second, and a claims ledger trains many runs on the same data. The tensors are shared:
    never modify them in place (the lab only slices and indexes them).
    """
    check_input_scaling(name, input_scaling)
    files: tuple[str, tuple[tuple[int, int], ...]] | None = None
    if name in ("fashion-mnist", "mnist"):
        folder = idx_folder(name, data_dir)
        stats = [path.stat() for path in _idx_paths(folder)]
        files = (str(folder), tuple((st.st_size, st.st_mtime_ns) for st in stats))
    elif name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    return _load(name, files, normalization, split_seed, input_scaling)


def _idx_paths(folder: Path) -> list[Path]:
    paths = [find_idx(folder, stem) for stem in IDX_FILES.values()]
    return [p for p in paths if p is not None]


@functools.lru_cache(maxsize=4)
def _load(
    name: str,
    files: tuple[str, tuple[tuple[int, int], ...]] | None,
    normalization: str,
    split_seed: int,
    input_scaling: str,
) -> Dataset:
    """:func:`load_dataset`'s work, cached; ``files`` is the IDX folder and its files' stamps."""
    if files is not None:
        dataset = load_idx_dataset(name, files[0])
    elif name == "digits":
        dataset = load_digits(split_seed)
    else:
        dataset = load_mpg(split_seed, input_scaling)
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
