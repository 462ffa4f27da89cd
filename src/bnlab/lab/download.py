"""``--download``: fetch MNIST / Fashion-MNIST IDX files from mirrors, verify, write atomically.

Each file is tried on every mirror in turn; a download counts only if its checksum (md5 or
sha256, ``"md5:<hex>"`` / ``"sha256:<hex>"``) matches. Data go to a temporary file next to the
target and are renamed into place only after the check, so an interrupted or corrupted download
never leaves a file that looks valid. Nothing is downloaded unless asked for.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from bnlab.lab.files import atomic_writer

# The published files and their md5 sums (the ones torchvision checks too).
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
    },
}

MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
}


class DownloadError(RuntimeError):
    """No mirror delivered a file with the expected checksum."""


def default_cache_dir() -> Path:
    """Where downloads go when no --data-dir is given: $BNLAB_DATA, else ~/.cache/bnlab."""
    env = os.environ.get("BNLAB_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bnlab"


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_checksum(spec: str) -> tuple[str, str]:
    algorithm, _, value = spec.partition(":")
    if algorithm not in ("md5", "sha256") or not value:
        raise ValueError(f"checksum must be 'md5:<hex>' or 'sha256:<hex>', got {spec!r}")
    return algorithm, value.lower()


def verify(path: Path, checksum: str) -> bool:
    algorithm, expected = _parse_checksum(checksum)
    return file_digest(path, algorithm) == expected


def fetch(url: str, dest: Path, checksum: str, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` atomically, if its checksum matches; else raise."""
    algorithm, expected = _parse_checksum(checksum)
    digest = hashlib.new(algorithm)
    with (
        atomic_writer(dest, suffix=".part") as out,  # a bad checksum leaves dest untouched
        urllib.request.urlopen(url, timeout=timeout) as resp,
    ):
        for chunk in iter(lambda: resp.read(1 << 20), b""):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != expected:
            raise DownloadError(
                f"{url}: {algorithm} {digest.hexdigest()} does not match the expected {expected}"
            )


def download(
    name: str,
    folder: Path | str | None = None,
    mirrors: list[str] | None = None,
    checksums: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Make ``folder`` (default: the cache) hold data set ``name``'s four IDX .gz files.

    Files already present with the right checksum are kept. Returns the folder.
    """
    if name not in CHECKSUMS:
        raise ValueError(f"--download knows {', '.join(CHECKSUMS)}, not {name!r}")
    target = Path(folder) if folder is not None else default_cache_dir() / name
    files = checksums if checksums is not None else CHECKSUMS[name]
    bases = mirrors if mirrors else MIRRORS[name]
    for filename, checksum in files.items():
        dest = target / filename
        if dest.exists() and verify(dest, checksum):
            continue
        errors = []
        for base in bases:
            url = base.rstrip("/") + "/" + filename
            try:
                fetch(url, dest, checksum, timeout=timeout)
                break
            except (OSError, urllib.error.URLError, DownloadError) as exc:
                errors.append(f"{url}: {exc}")
        else:
            raise DownloadError(f"could not download {filename}:\n  " + "\n  ".join(errors))
    return target
