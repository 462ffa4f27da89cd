"""How the lab writes files: whole files atomically, records by appending; the umask decides modes.

- :func:`atomic_writer` (and :func:`atomic_write_bytes`, :func:`atomic_write_text`): the data
  go to a temporary file in the same folder (same file system), then are renamed over the
  target with ``os.replace`` (atomic on POSIX and Windows). A reader, or a process that was
  killed while writing, sees the old file or the new one, never half of one; on an error the
  target is untouched and the temporary file removed.
- :func:`append_text`: one ``write`` call on a file opened for appending. A process that is
  killed leaves the whole text or none of it (a power cut may leave part of the last line:
  readers of appended files skip an incomplete last line).

``durable=True`` (the default) also fsyncs the data before the call returns, so that they
survive a power cut or an OS crash too. That costs from 0.1 to 10 ms on a busy disk: the
lab's per-epoch record writes pass ``durable=False`` and make the record durable every few
seconds instead (``bnlab.lab.experiment``).

Files are created with mode ``0o666`` filtered by the process's umask, as ``open()`` creates
them (``tempfile.mkstemp`` would give 0600: a run folder shared with colleagues would be
unreadable to them). Every file the lab and its benchmarks write goes through here (PNG and
SVG figures are matplotlib's, which follow the umask too).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["append_text", "atomic_write_bytes", "atomic_write_text", "atomic_writer"]

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _temporary(path: Path, suffix: str) -> tuple[int, Path]:
    """A new file next to ``path``, opened for writing, mode 0o666 & ~umask."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(tmp, _CREATE, 0o666), tmp
        except FileExistsError:  # a name another writer drew: draw again
            continue


@contextmanager
def atomic_writer(
    path: Path | str, suffix: str = ".tmp", durable: bool = True
) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; it replaces ``path`` atomically
    when the ``with`` block ends without an exception (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary(path, suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful replace; removed after an error


def atomic_write_bytes(path: Path | str, data: bytes, durable: bool = True) -> None:
    """Replace ``path``'s content with ``data``, atomically (:func:`atomic_writer`)."""
    with atomic_writer(path, durable=durable) as handle:
        handle.write(data)


def atomic_write_text(path: Path | str, text: str, durable: bool = True) -> None:
    """Replace ``path``'s content with ``text`` (UTF-8), atomically (:func:`atomic_writer`)."""
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def append_text(path: Path | str, text: str, durable: bool = True) -> None:
    """Append ``text`` (UTF-8) to ``path`` in one write (see the module docstring); the file
    is created, mode 0o666 & ~umask, if it does not exist."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    try:
        view = memoryview(data)
        while view:  # a regular file takes it in one call; a short write is finished here
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
