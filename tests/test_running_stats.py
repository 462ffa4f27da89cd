"""The running-statistics update has one Python definition (functional.running_stats); the
compiled CPU kernels keep a copy. The two must agree bit for bit (float64 statistics) and within
two float32 roundings (the compiled copy blends the float64 batch statistics, the Python one the
float32 values the kernel returns)."""

from __future__ import annotations

import pytest
import torch

from bnlab import kernels
from bnlab.functional.running_stats import update_running_stats
from bnlab.kernels import cpu


def _buffers(c: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return (
        torch.randn(c, generator=gen, dtype=torch.float64).to(dtype),
        (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(dtype),
        torch.tensor(3, dtype=torch.long),
    )


@pytest.mark.parametrize("shape", [(16, 6), (4, 6, 5, 5), (64, 6, 12, 12)], ids=str)
@pytest.mark.parametrize("momentum", [0.1, None, 1.5, 0.0], ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_compiled_update_equals_the_python_definition(shape, momentum, dtype):
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 2).to(dtype)
    compiled = _buffers(shape[1], dtype)
    python = tuple(t.clone() for t in compiled)
    before = tuple(t.clone() for t in compiled)
    out = cpu.forward_train(
        x, None, None, 1e-5, "identity", kernels.RunningStats(*compiled, momentum)
    )
    assert out.folded is True, "the compiled kernel did not update the buffers itself"
    count = x.numel() // x.shape[1]
    assert update_running_stats(python[0], python[1], out.mean, out.var, count, momentum, python[2])
    assert int(compiled[2]) == int(python[2]) == 4
    factor = 1 / 4 if momentum is None else momentum
    for i, name, stat in ((0, "running_mean", out.mean), (1, "running_var", out.var)):
        a, b = compiled[i], python[i]
        if dtype == torch.float64:
            assert torch.equal(a, b), f"{name}: max difference {float((a - b).abs().max()):.3e}"
        else:  # the float32 rounding of the batch statistic, scaled by the blend
            scale = before[i].abs() + factor * stat.abs() * 2
            allowed = 2 * torch.finfo(dtype).eps * scale
            assert bool(((a - b).abs() <= allowed).all()), f"{name}: beyond float32 rounding"


def test_non_finite_batch_leaves_both_untouched():
    x = torch.randn(8, 3)
    x[0, 1] = float("nan")
    compiled = _buffers(3, torch.float32)
    before = tuple(t.clone() for t in compiled)
    out = cpu.forward_train(x, None, None, 1e-5, "identity", kernels.RunningStats(*compiled, 0.1))
    assert out.folded is False
    python = tuple(t.clone() for t in before)
    with pytest.warns(RuntimeWarning, match="not finite"):
        import bnlab.functional.running_stats as rs

        rs._warned_non_finite = False
        assert not update_running_stats(python[0], python[1], out.mean, out.var, 8, 0.1, python[2])
    for a, b, c in zip(compiled, python, before, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)
