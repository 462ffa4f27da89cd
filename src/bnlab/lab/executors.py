"""Where a lab's runs train: here, one after another (the default), in N local processes
(``--jobs N``), or as tasks on a Ray cluster (``--executor ray --ray-address HOST:PORT``).

``bnlab run``, ``bnlab compare`` and ``bnlab claims`` share this module.

- **The unit of work is one whole run** (all its epochs): a :class:`FolderTask`, a one-run
  experiment config and, to continue a partial run, the files of its folder. A worker trains
  it with the lab's own loop (:func:`bnlab.lab.experiment.run_experiment`) into a scratch
  folder of its own and returns that folder's files (:func:`train_folder`). The driver, the
  one process that writes the experiment's folder, writes them into the record as it does
  for a run trained in place. A run that finished before Ctrl-C is kept; a run in flight is
  trained again by ``--resume`` (from its start: the record keeps whole runs only).
- **The numbers do not depend on the executor.** A run seeds itself from its own parameters
  (the model after ``torch.manual_seed(seed)``, each epoch's shuffle from (seed, epoch)) and
  shares nothing with the runs before it in the same process, so it computes the same numbers
  wherever it trains, as long as it trains with the same number of threads: a small model
  always uses one (:mod:`bnlab.lab.threads`).
- **Threads.** Worker processes of ``--jobs N`` share the machine's cores: each starts with
  ``OMP_NUM_THREADS`` = max(1, cores // N), set before torch is imported, so that a large
  model's default (``bnlab.lab.threads.TORCH_DEFAULT``) is its share. A Ray task takes one CPU,
  and Ray starts its workers with ``OMP_NUM_THREADS=1``.
- **Failures.** A task whose worker is lost (the process killed, the node gone) or whose run
  raises is tried again; after :data:`ATTEMPTS` tries it comes back failed, with its last
  error (:class:`Outcome`), and the caller marks the run failed in its record: it is never
  dropped. Training in this process (the serial executor) keeps the commands' behaviour: an
  exception stops the command, the finished epochs kept.
- **A cluster** needs bnlab (the same version, with torch's) on every node, and the data at
  the same path as on the driver (``--data-dir``), or ``--download`` to let each node fetch
  MNIST and Fashion-MNIST into its own cache.

This module imports neither torch nor the rest of the lab at import time: a worker process
imports it before setting its threads, and torch reads them once, when first imported.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import signal
import tempfile
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bnlab.lab.errors import UsageError
from bnlab.lab.files import atomic_write_bytes

if TYPE_CHECKING:
    from bnlab.lab.config import Config

__all__ = [
    "ATTEMPTS",
    "EXECUTORS",
    "Executor",
    "FolderTask",
    "Outcome",
    "Processes",
    "RayCluster",
    "Serial",
    "make_executor",
    "read_folder",
    "run_tasks",
    "train_folder",
    "write_folder",
]

#: how many times a task is tried before it comes back failed
ATTEMPTS = 2
#: the ``--executor`` choices
EXECUTORS = ("local", "ray")


# -- the work ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderTask:
    """A one-run experiment to train elsewhere: its config (whose ``name`` names the scratch
    folder; ``out`` and ``progress`` are the worker's) and, to continue a partial run, the
    files of its folder by relative path (empty: train from the start)."""

    config: Config
    files: dict[str, bytes] = field(default_factory=dict)


def read_folder(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by its path relative to it (``/``-separated)."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def write_folder(files: dict[str, bytes], folder: Path) -> None:
    """Write ``files`` (:func:`read_folder`'s form) under ``folder``, each atomically."""
    for name, data in files.items():
        atomic_write_bytes(folder / name, data, durable=False)


def train_folder(task: FolderTask) -> dict[str, bytes]:
    """A worker's work: train ``task`` in a scratch folder; return the folder's files."""
    from rich.console import Console

    from bnlab.lab.experiment import run_experiment  # here: torch after the worker's threads

    with tempfile.TemporaryDirectory(prefix="bnlab-task-") as scratch:
        folder = Path(scratch) / task.config.name
        write_folder(task.files, folder)
        config = replace(task.config, out=str(folder), progress="off")
        quiet = Console(file=io.StringIO())
        run_experiment(config, resume=bool(task.files), console=quiet)
        return read_folder(folder)


# -- the executors ----------------------------------------------------------------------------


def _error(exc: BaseException) -> str:
    """A failure in one line: the exception's type and message."""
    return traceback.format_exception_only(exc)[-1].strip()


class Executor(Protocol):
    """Runs ``fn(arg)`` tasks and hands back each one's result or error as it finishes.

    ``remote`` says where a run trains: False, in this process, straight into its folder
    (the callers then train in place, saving every epoch); True, elsewhere, as a task.
    """

    @property
    def remote(self) -> bool: ...

    @property
    def label(self) -> str: ...

    def submit(self, key: str, fn: Callable[[Any], Any], arg: Any) -> None: ...

    def next_done(self) -> tuple[str, Any, str | None]:
        """The next finished task: (key, result, None), or (key, None, error)."""
        ...

    def close(self) -> None:
        """Stop every task still running (the driver's Ctrl-C, an error, or the end)."""
        ...


class Serial:
    """In this process, one task after another."""

    remote = False
    label = "this process"

    def __init__(self) -> None:
        self._queue: deque[tuple[str, Callable[[Any], Any], Any]] = deque()

    def submit(self, key: str, fn: Callable[[Any], Any], arg: Any) -> None:
        self._queue.append((key, fn, arg))

    def next_done(self) -> tuple[str, Any, str | None]:
        key, fn, arg = self._queue.popleft()
        try:
            return key, fn(arg), None
        except Exception as exc:
            return key, None, _error(exc)

    def close(self) -> None:
        self._queue.clear()


def _cores() -> int:
    """The cores this process may run on (a container's or taskset's limit included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _serve(conn: Connection, threads: int) -> None:
    """A worker process: run each ``(fn, arg)`` received, send back ``(result, error)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it stops us
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before torch is imported
        os.environ[name] = str(threads)
    while True:
        try:
            fn, arg = conn.recv()
        except EOFError:  # the driver is gone
            return
        reply: tuple[Any, str | None]
        try:
            reply = (fn(arg), None)
        except Exception as exc:
            reply = (None, _error(exc))
        conn.send(reply)


@dataclass(eq=False)
class _Worker:
    process: Any  # multiprocessing's SpawnProcess
    conn: Connection


class Processes:
    """``jobs`` worker processes on this machine, each with its share of the cores.

    The processes are spawned (a fresh interpreter each: nothing inherited from the driver
    but its environment and ``sys.path``), as they are needed, and kept for the next task. A
    worker that dies is replaced, and its task comes back failed, named exactly. As with any
    spawning pool, a script that uses it guards its entry point (``if __name__ ==
    "__main__":``): each worker imports the script's main module again.
    """

    remote = True

    def __init__(self, jobs: int, threads: int = 0) -> None:
        if jobs < 1:
            raise UsageError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.threads = threads or max(1, _cores() // jobs)
        self._context = multiprocessing.get_context("spawn")
        self._queue: deque[tuple[str, Callable[[Any], Any], Any]] = deque()
        self._idle: list[_Worker] = []
        self._busy: dict[_Worker, str] = {}

    @property
    def label(self) -> str:
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        return f"{self.jobs} local processes, {threads} each"

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(child, self.threads), name="bnlab-worker", daemon=True
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    def _dispatch(self) -> None:
        while self._queue and (self._idle or len(self._busy) < self.jobs):
            worker = self._idle.pop() if self._idle else self._start()
            if not worker.process.is_alive():  # it died while idle: no task lost
                worker.conn.close()
                continue
            key, fn, arg = self._queue.popleft()
            self._busy[worker] = key
            worker.conn.send((fn, arg))

    def submit(self, key: str, fn: Callable[[Any], Any], arg: Any) -> None:
        self._queue.append((key, fn, arg))
        self._dispatch()

    def next_done(self) -> tuple[str, Any, str | None]:
        if not self._busy:
            raise RuntimeError("next_done: no task was submitted")
        while True:
            ready = wait([w.conn for w in self._busy] + [w.process.sentinel for w in self._busy])
            for worker in list(self._busy):
                if worker.conn in ready:
                    try:
                        result, error = worker.conn.recv()
                    except (EOFError, OSError):  # it died before its reply was complete
                        return self._lost(worker)
                    key = self._busy.pop(worker)
                    self._idle.append(worker)
                    self._dispatch()
                    return key, result, error
                if worker.process.sentinel in ready:
                    return self._lost(worker)

    def _lost(self, worker: _Worker) -> tuple[str, Any, str]:
        key = self._busy.pop(worker)
        worker.process.join(1.0)
        worker.conn.close()
        self._dispatch()
        return key, None, f"worker process lost (exit code {worker.process.exitcode})"

    def close(self) -> None:
        self._queue.clear()
        workers = [*self._idle, *self._busy]
        self._idle, self._busy = [], {}
        for worker in workers:
            worker.conn.close()  # an idle worker sees EOF and returns
            worker.process.terminate()
        for worker in workers:
            worker.process.join(5.0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()


def _call(fn: Callable[[Any], Any], arg: Any) -> Any:
    return fn(arg)


class RayCluster:
    """Each task a Ray task (one CPU) on the running cluster at ``address`` (``HOST:PORT``,
    the head node's, as ``ray start --head`` printed it). Ray's own retries are off: a lost
    worker comes back as a failure like any other, and :func:`run_tasks` retries it."""

    remote = True

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError(
                '--executor ray needs Ray: pip install "bnlab[ray]" (on every node)'
            ) from None
        self._ray = ray
        self.address = address
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UsageError(
                f"cannot connect to a Ray cluster at {address}: {_error(exc)} (start one with "
                "`ray start --head`, and give the address it prints)"
            ) from None
        self._task = ray.remote(num_cpus=1, max_retries=0)(_call)
        self._refs: dict[Any, str] = {}

    @property
    def label(self) -> str:
        return f"the Ray cluster at {self.address}"

    def submit(self, key: str, fn: Callable[[Any], Any], arg: Any) -> None:
        self._refs[self._task.remote(fn, arg)] = key

    def next_done(self) -> tuple[str, Any, str | None]:
        if not self._refs:
            raise RuntimeError("next_done: no task was submitted")
        [ref], _ = self._ray.wait(list(self._refs), num_returns=1)
        key = self._refs.pop(ref)
        try:
            return key, self._ray.get(ref), None
        except self._ray.exceptions.RayTaskError as exc:  # the run raised: its own error
            return key, None, _error(exc.cause) if exc.cause is not None else str(exc)
        except self._ray.exceptions.RayError as exc:  # the worker or its node was lost
            return key, None, f"Ray worker lost: {type(exc).__name__}"

    def close(self) -> None:
        for ref in self._refs:
            self._ray.cancel(ref, force=True)
        self._refs = {}
        self._ray.shutdown()  # disconnects this driver; the cluster keeps running


def make_executor(executor: str = "local", jobs: int = 1, ray_address: str = "") -> Executor:
    """The executor the command-line options ask for (``--executor``, ``--jobs``,
    ``--ray-address``); conflicting options are a UsageError."""
    if executor not in EXECUTORS:
        raise UsageError(f"--executor takes one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "ray":
        if not ray_address:
            raise UsageError("--executor ray needs --ray-address HOST:PORT (the head node's)")
        if jobs != 1:
            raise UsageError(
                "--jobs is for local processes; on Ray, the cluster's CPUs decide how many "
                "runs train at once (drop --jobs)"
            )
        return RayCluster(ray_address)
    if ray_address:
        raise UsageError("--ray-address is for --executor ray (add it, or drop --ray-address)")
    return Serial() if jobs == 1 else Processes(jobs)


# -- tasks, tried again -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A task finished: its result, or None and the last error after ``attempts`` tries."""

    key: str
    result: Any
    attempts: int
    error: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error)


def run_tasks(
    executor: Executor,
    fn: Callable[[Any], Any],
    tasks: dict[str, Any],
    attempts: int = ATTEMPTS,
    on_retry: Callable[[str, str], None] | None = None,
) -> Iterator[Outcome]:
    """``fn(arg)`` for every ``key: arg`` of ``tasks`` on ``executor``, yielded as each
    finishes (in any order). A failed task is tried again (``on_retry(key, error)`` is told),
    up to ``attempts`` tries in all; every task is yielded once, succeeded or failed. The
    executor is closed at the end, and when the caller stops early (Ctrl-C included)."""
    tries = dict.fromkeys(tasks, 1)
    try:
        for key, arg in tasks.items():
            executor.submit(key, fn, arg)
        for _ in range(len(tasks)):
            while True:
                key, result, error = executor.next_done()
                if error is None or tries[key] >= attempts:
                    yield Outcome(key, result, tries[key], error or "")
                    break
                if on_retry is not None:
                    on_retry(key, error)
                tries[key] += 1
                executor.submit(key, fn, tasks[key])
    finally:
        executor.close()
