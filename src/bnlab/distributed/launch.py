"""Starting process groups: on one machine (spawned workers) or under torchrun (env:// rendezvous).

``spawn_local(fn, nproc, *args)`` runs ``fn(rank, nproc, init_method, *args)`` in ``nproc``
fresh processes that meet at a free TCP port on 127.0.0.1. ``init_process_group`` wraps
``torch.distributed.init_process_group`` with the backend picked by device (gloo on CPU, NCCL
on CUDA) and an explicit timeout, so a dead peer ends the run instead of hanging it.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["default_backend", "free_port", "init_process_group", "spawn_local"]


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


def spawn_local(fn: Callable[..., None], nproc: int, *args: Any) -> None:
    """Run ``fn(rank, nproc, init_method, *args)`` in ``nproc`` processes on this machine.

    ``fn`` must be importable (a module-level function). Raises if any worker fails.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    init_method = f"tcp://127.0.0.1:{free_port()}"
    mp.spawn(fn, args=(nproc, init_method, *args), nprocs=nproc, join=True)
