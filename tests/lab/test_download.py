"""--download against a local HTTP server on 127.0.0.1 serving files the test writes:
mirror fallback, checksum verification (md5 and sha256), atomic writes, and loading after."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from idx_files import write_idx_dataset

from bnlab.lab.data import load_dataset
from bnlab.lab.download import DownloadError, download


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on an ephemeral port; yields the base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sums(folder: Path, algorithm: str) -> dict[str, str]:
    return {
        p.name: f"{algorithm}:{hashlib.new(algorithm, p.read_bytes()).hexdigest()}"
        for p in sorted(folder.glob("*.gz"))
    }


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_download_from_second_mirror_then_load(server, tmp_path, algorithm):
    base, root = server
    write_idx_dataset(root / "mirror-b", n_train=12, n_test=6)
    sums = _sums(root / "mirror-b", algorithm)
    dest = tmp_path / "data"
    mirrors = [f"{base}/missing/", f"{base}/mirror-b/"]  # the first mirror answers 404
    folder = download("mnist", dest, mirrors=mirrors, checksums=sums)
    assert folder == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)  # no temp files left
    ds = load_dataset("mnist", dest)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (6, 1, 28, 28)


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    base, root = server
    write_idx_dataset(root / "m", n_train=4, n_test=2)
    sums = _sums(root / "m", "md5")
    first = next(iter(sums))
    sums[first] = "md5:" + "0" * 32
    dest = tmp_path / "data"
    with pytest.raises(DownloadError) as info:
        download("fashion-mnist", dest, mirrors=[f"{base}/m"], checksums=sums)
    assert first in str(info.value) and "does not match" in str(info.value)
    assert not (dest / first).exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no partial file


def test_existing_verified_file_is_not_fetched_again(server, tmp_path):
    base, root = server
    write_idx_dataset(root / "m", n_train=4, n_test=2)
    sums = _sums(root / "m", "md5")
    dest = tmp_path / "data"
    download("mnist", dest, mirrors=[f"{base}/m"], checksums=sums)
    for p in (root / "m").iterdir():  # the server loses its files
        p.unlink()
    download("mnist", dest, mirrors=[f"{base}/m"], checksums=sums)  # nothing to fetch


def test_bad_checksum_spec_and_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="md5:<hex>"):
        download("mnist", tmp_path, mirrors=["http://127.0.0.1:9/"], checksums={"a": "crc:1"})
    with pytest.raises(ValueError, match="--download knows"):
        download("digits", tmp_path)
