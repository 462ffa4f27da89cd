"""Lab runs on several processes: DistributedDataParallel, data sharded per rank, optional SyncBN.

``bnlab compare PRESET --nproc N`` starts N local ranks (``bnlab.lab.launch``), each running
``bnlab worker compare PRESET``; under ``torchrun`` the ranks come from its environment. Either
way every rank runs the same experiment loop and the trainer's one epoch loop
(``bnlab.lab.trainer``) with a ``DistributedExecution``:

- the model is wrapped in DistributedDataParallel, after ``bnlab.convert_sync_batchnorm``
  when ``sync_bn`` is asked for;
- ``batch_size`` stays the *global* batch: every shuffled batch (the same permutation on every
  rank, seeded by (seed, epoch)) is split into N contiguous shards, one per rank. Each rank's
  loss is scaled so that DDP's gradient average is the gradient of the whole batch's mean
  loss: with SyncBN a run computes what one process would (up to summation order); without
  it, each BN layer sees only its rank's shard (batch_size / N samples);
- the test set is split between the ranks too; loss and metric sums are all-reduced, so the
  recorded figures are the whole data set's; durations are the slowest rank's;
- only rank 0 writes (folder, config, record, checkpoints, report); the others train.

Faults: every collective waits at most ``timeout_s`` for a missing peer. When one fails, the
surviving ranks hold a roll call on the rendezvous store and raise ``RankLostError`` naming the
ranks that did not answer (died or hung) and those that failed with an error; the epochs
finished before that are on disk (rank 0 writes after every epoch).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import bnlab
from bnlab.lab.data import Dataset
from bnlab.lab.errors import UsageError
from bnlab.lab.grid import RunParams
from bnlab.lab.launch import (
    DistEnv,
    env_world,
    init_from_env,
    launch_local,
    roll_call,
    share_cores,
)
from bnlab.lab.trainer import EpochResult, run_epoch

__all__ = [
    "DistributedExecution",
    "RankLostError",
    "launch_cli",
    "run_distributed_experiment",
    "shard_sizes",
    "strip_nproc",
]


class RankLostError(RuntimeError):
    """A distributed run lost one of its ranks (died, hung past the timeout, or failed)."""


def shard_sizes(total: int, world_size: int) -> list[int]:
    """Rows per rank when ``total`` rows are split as evenly as possible (first ranks +1)."""
    return [total // world_size + (1 if r < total % world_size else 0) for r in range(world_size)]


@dataclass
class DistributedExecution:
    """This rank's part of a DDP run: sharded batches, reduced metrics, rank 0 writes.

    Implements ``bnlab.lab.experiment.Execution`` and, for the trainer's epoch loop,
    ``bnlab.lab.trainer.Ranks``.
    """

    rank: int
    world_size: int
    sync_bn: bool = False
    timeout_s: float = 300.0
    folder: Path | None = None  # the experiment folder, once agreed (for error messages)

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """SyncBN conversion (in place: the same Parameters and buffers), then the DDP wrapper."""
        if self.sync_bn:
            bnlab.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model)

    def agree(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (e.g. the experiment folder it chose)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], Path):
            self.folder = box[0]
        return box[0]

    def environment(self) -> dict[str, Any]:
        return {
            "distributed": {
                "world_size": self.world_size,
                "backend": dist.get_backend(),
                "sync_bn": self.sync_bn,
                "timeout_s": self.timeout_s,
                "batch_size": "global (split between the ranks)",
            }
        }

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of ``batch`` (``bnlab.lab.trainer.Ranks``)."""
        return torch.tensor_split(batch, self.world_size)[self.rank]

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The module inside DDP, with rank 0's buffers (``bnlab.lab.trainer.Ranks``).

        Without SyncBN each rank's running statistics come from its own shards; the model that
        is evaluated (and saved) is rank 0's.
        """
        module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
        return module

    def combine(self, sums: torch.Tensor, seconds: torch.Tensor) -> None:
        """All-reduce: ``sums`` added up, ``seconds`` the slowest rank's (``Ranks``)."""
        dist.all_reduce(sums)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)

    def _check_shards(self, dataset: Dataset, params: RunParams) -> None:
        """Local BN cannot train on a single sample: refuse batch sizes that give a rank one."""
        if self.sync_bn or not params.bn:
            return
        n, b = len(dataset.x_train), params.batch_size
        batch_sizes = {min(b, n)} | ({n % b} if n % b else set())
        for size in batch_sizes:
            if 1 in shard_sizes(size, self.world_size):
                raise UsageError(
                    f"a batch of {size} split between {self.world_size} ranks leaves a rank one "
                    "sample, which batch norm cannot train on; use --sync-bn, or a batch size "
                    f"(and training-set size {n}) giving every rank at least two samples"
                )

    def run_epoch(
        self,
        model: nn.Module,
        optimizer: Any,
        dataset: Dataset,
        params: RunParams,
        *args: Any,
        **kwargs: Any,
    ) -> EpochResult:
        """The trainer's epoch (``bnlab.lab.trainer.run_epoch``, same arguments) as this rank:
        its shards of every batch and of the test set, the sums all-reduced.

        ``before_step`` (probes) sees the whole batch on every rank, as in a local run.
        """
        self._check_shards(dataset, params)
        return run_epoch(model, optimizer, dataset, params, *args, **{**kwargs, "ranks": self})


_COMM_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "broken pipe", "peer")


def _is_comm_failure(exc: BaseException) -> bool:
    """A failed collective (peer gone or timed out), as opposed to this rank's own error."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in _COMM_WORDS)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def run_distributed_experiment(
    config: Any,
    *,
    resume: bool = False,
    sync_bn: bool = False,
    timeout_s: float = 300.0,
    env: DistEnv | None = None,
    **kwargs: Any,
) -> tuple[Any, Path, bool]:
    """Run ``config`` as this process's rank of a torchrun-style job.

    Returns ``(record, folder, writes)``; ``writes`` is True on rank 0, the one that wrote the
    record (and should print or report it). Raises ``RankLostError`` when another rank died,
    hung past ``timeout_s``, or failed.
    """
    from bnlab.lab.experiment import run_experiment

    env = env or env_world()
    if env is None:
        raise UsageError(
            "a distributed run needs the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR, "
            "MASTER_PORT): start it with `torchrun` or with --nproc N"
        )
    if getattr(config, "probes", None):
        # Probes run extra forward passes and save files per process: one process only.
        raise UsageError("--probe is not supported in distributed runs; run without --nproc")
    if "numba" not in sys.modules:  # torchrun sets OMP_NUM_THREADS only; Numba reads this
        local = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
        os.environ.update(share_cores(local))
    store = init_from_env(env, timeout_s=timeout_s)
    execution = DistributedExecution(env.rank, env.world_size, sync_bn, timeout_s)
    if env.rank != 0:
        config = replace(config, progress="off")
    folder: Path | None = None
    try:
        record, folder = run_experiment(config, resume=resume, execution=execution, **kwargs)
        dist.barrier()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        diagnosis = _diagnose(exc, store, env, execution)
        if diagnosis is None:
            raise
        raise diagnosis from exc
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return record, folder, execution.writes


def _diagnose(
    exc: Exception, store: dist.Store, env: DistEnv, execution: DistributedExecution
) -> RankLostError | None:
    """Roll call after a failure: a ``RankLostError`` naming the ranks that are gone or that
    failed on their own, or None when this rank's own error is the one to report."""
    own_error = not _is_comm_failure(exc)
    status = ("failed: " if own_error else "stopped: ") + _first_line(exc)
    try:
        # Survivors notice a failure within about one timeout of each other.
        wait_s = min(10.0, execution.timeout_s)
        answered = roll_call(store, env.rank, env.world_size, status, wait_s=wait_s)
    except Exception:
        if own_error or env.rank == 0:
            return None
        return RankLostError(
            f"rank {env.rank}: lost contact with rank 0, which serves the rendezvous store "
            f"(it died or hung); the run stopped with {_first_line(exc)}"
        )
    if own_error:
        return None
    missing = [r for r in range(env.world_size) if r not in answered]
    failed = {r: s for r, s in answered.items() if s.startswith("failed: ")}
    if not missing and not failed:
        return None
    parts = []
    if missing:
        ranks = ", ".join(map(str, missing))
        parts.append(f"rank {ranks} stopped answering (died, or hung past the timeout)")
    parts += [f"rank {r} {s}" for r, s in sorted(failed.items())]
    where = execution.folder or "the experiment folder"
    return RankLostError(
        f"rank {env.rank}: the distributed run stopped: {'; '.join(parts)}. "
        f"Every epoch finished before that is saved in {where}."
    )


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` / ``--nproc=N`` (what each launched rank runs)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch_cli(
    argv: list[str], nproc: int, grace_s: float = 60.0, env: dict[str, str] | None = None
) -> int:
    """``bnlab ... --nproc N``: run ``bnlab worker ...`` (the same command) as N local ranks,
    with ``env`` added to their environment."""
    if nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "bnlab", "worker", *strip_nproc(argv)]
    return launch_local(cmd, nproc, grace_s=grace_s, env={**share_cores(nproc), **(env or {})})
