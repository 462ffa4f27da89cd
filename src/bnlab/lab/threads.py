"""How many threads a run trains with when its config leaves ``threads`` at 0 (the default).

Splitting an op between threads pays only when each thread gets enough work to outweigh the
hand-off: waking the pool and joining it, and on a busy machine waiting for a thread that lost
its core. The lab's networks are small, and two threads made every one of them slower, as they
made larger batches slower too (``python -m bnlab.bench.threads --network N --dataset D
--batch-size B --samples S``: one training epoch at 1 and at 2 threads, alternating, median of
3-5, BN and no-BN networks; torch 2.13 CPU on a 2-core machine shared with other jobs, load
average 2-7):

=======================  ========================  ===========================
network, batch           forward FLOPs per batch   2 threads / 1 thread (time)
=======================  ========================  ===========================
mpg-mlp, 32              1.1e5                     6-14
keras-mlp, 32            3.3e6                     13-25
mlp, 64                  6.8e7                     2.4-16
lizard-cnn, 1000         4.6e8                     2.4-5.9
mlp, 1000                1.1e9                     9-10
lizard-cnn, 5000         2.3e9                     1.6
mlp, 10000               1.1e10                    1.6-1.9
=======================  ========================  ===========================

The ratio falls as the work grows; where two threads start to pay depends on the machine's
load, which was never low here. So a run uses one thread unless one forward pass of a training
batch costs more than :data:`SERIAL_FLOPS`, beyond everything measured; a larger model keeps
torch's default. The work is counted once per run by torch's ``FlopCounterMode`` (matrix
products and convolutions: the bulk of it) on a forward pass in eval mode without gradients,
which changes nothing in the model (no running statistics, no random numbers drawn).
``threads`` given (the config's, ``--threads N``) is used as it is.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["SERIAL_FLOPS", "TORCH_DEFAULT", "forward_flops", "run_threads"]

#: forward FLOPs of one training batch up to which one thread is used (the table above)
SERIAL_FLOPS = 2e10
#: torch's own thread count, as the process started (OMP_NUM_THREADS, or one per core)
TORCH_DEFAULT = torch.get_num_threads()


def forward_flops(model: nn.Module, batch: torch.Tensor) -> int:
    """FLOPs of ``model``'s forward pass on ``batch``, counted in eval mode without gradients
    (the model's mode is restored; its parameters and buffers are left as they were)."""
    training = model.training
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(batch)
    finally:
        model.train(training)
    return int(counter.get_total_flops())


def run_threads(requested: int, model: nn.Module, batch: torch.Tensor) -> int:
    """The thread count for training ``model`` on batches like ``batch``: ``requested`` if
    given (> 0), else one for a small model and torch's default for a large one."""
    if requested > 0:
        return requested
    return 1 if forward_flops(model, batch) <= SERIAL_FLOPS else TORCH_DEFAULT
