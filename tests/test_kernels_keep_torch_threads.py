"""bnlab's kernels leave torch's thread count as the user set it (Numba's OpenMP pool shares
torch's libgomp, and starting the pool sets the process-wide count)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("threads", [1, 2])
def test_a_large_call_keeps_torch_thread_count(threads):
    code = (
        "import torch, bnlab\n"
        f"torch.set_num_threads({threads})\n"
        "m = bnlab.BatchNorm2d(64)\n"
        "m(torch.randn(32, 64, 28, 28)).sum().backward()\n"
        "m.eval(); m(torch.randn(4, 64, 28, 28))\n"
        "print(torch.get_num_threads())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(threads), f"torch threads after bnlab: {done.stdout!r}"
