"""Starting process groups, on one machine or under torchrun, and telling who went missing.

- ``spawn_local(fn, nproc, *args)`` runs ``fn(rank, nproc, init_method, *args)`` in ``nproc``
  fresh processes that meet at a free TCP port on 127.0.0.1 (tests, ``bnlab.bench.sync``).
- ``launch_local(cmd, nproc)`` runs a command ``nproc`` times with the environment torchrun
  gives its workers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): one code path
  for ``--nproc N`` and for torchrun.
- ``init_from_env(timeout_s)`` joins the group described by that environment with an explicit
  timeout (gloo on CPU, NCCL on CUDA) and keeps the rendezvous store, which ``roll_call`` uses
  after a failed collective to name the ranks that stopped answering.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bnlab.kernels import warm_up
from bnlab.lab.errors import UsageError

__all__ = [
    "DistEnv",
    "default_backend",
    "env_world",
    "free_port",
    "init_from_env",
    "init_process_group",
    "launch_local",
    "roll_call",
    "share_cores",
    "spawn_local",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_backend(device: torch.device | str = "cpu") -> str:
    """NCCL for CUDA devices, gloo for everything else."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_process_group(
    rank: int | None = None,
    world_size: int | None = None,
    init_method: str = "env://",
    *,
    device: torch.device | str = "cpu",
    timeout_s: float = 300.0,
) -> None:
    """Join the default process group; ``rank``/``world_size`` None read torchrun's env vars.

    ``timeout_s`` bounds how long a collective waits for a missing peer before raising.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    if init_method.startswith("tcp://127.0.0.1") and sys.platform.startswith("linux"):
        # Gloo otherwise binds to the address the hostname resolves to, which may not be local.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    kwargs: dict[str, Any] = {}
    if rank is not None:
        kwargs["rank"] = rank
    if world_size is not None:
        kwargs["world_size"] = world_size
    dist.init_process_group(
        default_backend(device),
        init_method=init_method,
        timeout=datetime.timedelta(seconds=timeout_s),
        **kwargs,
    )


def share_cores(nproc: int) -> dict[str, str]:
    """Thread counts for ``nproc`` processes on this machine: the cores split between them.

    Without it every process starts one OpenMP/Numba thread per core, and threads that spin
    while waiting steal the other processes' cores (measured here: bnlab's compiled kernels ran
    100x slower in two processes until each had one Numba thread). Variables already set win.
    """
    threads = str(max(1, (os.cpu_count() or 1) // max(nproc, 1)))
    return {k: os.environ.get(k, threads) for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}


def spawn_local(fn: Callable[..., None], nproc: int, *args: Any) -> None:
    """Run ``fn(rank, nproc, init_method, *args)`` in ``nproc`` processes on this machine.

    ``fn`` must be importable (a module-level function). Raises if any worker fails.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    warm_up()  # fill the kernel cache once, before the ranks would all write it at once
    init_method = f"tcp://127.0.0.1:{free_port()}"
    # The children inherit the environment at spawn time; the parent's is put back afterwards
    # (Numba refuses a thread count that changes under it once its threads are running).
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    os.environ.update(share_cores(nproc))
    try:
        mp.spawn(fn, args=(nproc, init_method, *args), nprocs=nproc, join=True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun-style job (from its environment variables)."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def env_world() -> DistEnv | None:
    """The torchrun environment of this process, or None when it was not started as a worker."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        return DistEnv(
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            master_addr=os.environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(os.environ.get("MASTER_PORT", "29500")),
        )
    except ValueError as exc:
        raise UsageError(
            f"torchrun environment variables must be integers (RANK, WORLD_SIZE, LOCAL_RANK, "
            f"MASTER_PORT): {exc}"
        ) from None


def init_from_env(
    env: DistEnv, *, device: torch.device | str = "cpu", timeout_s: float = 300.0
) -> dist.Store:
    """Join the job's default process group; returns the rendezvous store (for ``roll_call``).

    Under torchrun the store is served by the launcher agent (it outlives any worker); when
    started by ``launch_local`` rank 0 serves it. ``timeout_s`` bounds every collective's wait
    for a missing peer.
    """
    if timeout_s <= 0:  # --dist-timeout
        raise UsageError(f"timeout must be positive, got {timeout_s!r} seconds")
    timeout = datetime.timedelta(seconds=timeout_s)
    if env.master_addr in ("127.0.0.1", "localhost") and sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(
        env.master_addr,
        env.master_port,
        env.world_size,
        is_master=env.rank == 0 and not agent_store,
        timeout=timeout,
        wait_for_workers=False,
    )
    dist.init_process_group(
        default_backend(device),
        store=dist.PrefixStore("bnlab/pg", store),
        rank=env.rank,
        world_size=env.world_size,
        timeout=timeout,
    )
    return store


def roll_call(
    store: dist.Store, rank: int, world_size: int, status: str, wait_s: float = 10.0
) -> dict[int, str]:
    """After a failure: post this rank's ``status``, wait up to ``wait_s`` for the others'.

    Returns {rank: status} for every rank that answered; a rank absent from it died or hung.
    Raises ``RuntimeError`` when the store itself is unreachable (its host is gone).
    """
    key = "bnlab/roll-call/{}".format
    store.set(key(rank), status)
    deadline = time.monotonic() + wait_s
    answered: dict[int, str] = {}
    while True:
        for r in range(world_size):
            if r not in answered and store.check([key(r)]):
                answered[r] = store.get(key(r)).decode()
        if len(answered) == world_size or time.monotonic() >= deadline:
            return answered
        time.sleep(0.2)


#: seconds the ranks get after Ctrl-C to save their finished epochs and stop on their own
INTERRUPT_GRACE_S = 30.0


def launch_local(
    cmd: Sequence[str], nproc: int, *, grace_s: float = 60.0, env: dict[str, str] | None = None
) -> int:
    """Run ``cmd`` as ``nproc`` ranks on this machine, like ``torchrun --nproc-per-node``.

    When a rank ends with an error, the others get ``grace_s`` seconds to notice (their
    collectives fail or time out) and stop on their own; then they are terminated. Returns 0
    if every rank succeeded, else the first failing rank's exit code (128 + signal if killed),
    after printing which ranks failed and how. On Ctrl-C (which the ranks, in the same process
    group, receive too) the ranks get ``INTERRUPT_GRACE_S`` seconds to save their epochs and
    stop before they are terminated; then KeyboardInterrupt propagates.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    warm_up()  # fill the kernel cache once, before the ranks would all write it at once
    port = free_port()
    procs = []
    for rank in range(nproc):
        worker_env = {
            # c10d's C++ warnings (a peer's socket closing) would bury the ranks' own errors.
            "TORCH_CPP_LOG_LEVEL": "ERROR",
            **os.environ,
            **(env or {}),
            "RANK": str(rank),
            "WORLD_SIZE": str(nproc),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        procs.append(subprocess.Popen(list(cmd), env=worker_env))
    first_failure: int | None = None
    failed_at = 0.0
    codes: dict[int, int] = {}
    try:
        while len(codes) < nproc:
            for rank, p in enumerate(procs):
                if rank not in codes and p.poll() is not None:
                    codes[rank] = p.returncode
                    if p.returncode != 0 and first_failure is None:
                        first_failure, failed_at = rank, time.monotonic()
            if first_failure is not None and time.monotonic() - failed_at > grace_s:
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.1)
        raise
    finally:
        for rank, p in enumerate(procs):
            if rank not in codes:
                p.terminate()
                try:
                    codes[rank] = p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    codes[rank] = p.wait()
    if first_failure is None:
        return 0
    for rank in sorted(codes):
        if codes[rank] != 0:
            print(f"bnlab: rank {rank} {_describe_exit(codes[rank])}", file=sys.stderr)
    code = codes[first_failure]
    return 128 - code if code < 0 else code


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
