"""The CPU family's cache of large output buffers: reuse only when no tensor can reach them."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest
import torch

from bnlab.kernels import cpu, output_cache

BIG = (8, 16, 64, 64)  # 2 MB of float32: above output_cache.MIN_BYTES


@pytest.fixture(autouse=True)
def _fresh_cache():
    previous = output_cache.set_output_cache(0)  # drop whatever earlier tests left idle
    output_cache.set_output_cache(64)
    yield
    output_cache.set_output_cache(previous)


def test_buffer_is_reused_only_after_every_view_is_gone():
    x = torch.empty(BIG)
    y = output_cache.empty_like(x, torch.contiguous_format)
    address = y.data_ptr()
    part = y[1:3]  # a view keeps the storage (and so the buffer) alive
    del y
    gc.collect()
    assert output_cache.cached_bytes() == 0, "buffer returned while a view still uses it"
    other = output_cache.empty_like(x, torch.contiguous_format)
    assert other.data_ptr() != address
    part.fill_(7.0)  # writing through the old view must not touch the new tensor's memory
    other.fill_(1.0)
    assert bool((part == 7.0).all())
    del part
    gc.collect()
    assert output_cache.cached_bytes() == x.numel() * 4
    again = output_cache.empty_like(x, torch.contiguous_format)
    assert again.data_ptr() == address, "the freed buffer was not reused"


@pytest.mark.parametrize(
    ("shape", "fmt"),
    [((8, 16, 64, 64), torch.channels_last), ((4, 8, 8, 32, 32), torch.channels_last_3d)],
)
def test_channels_last_outputs_have_the_right_strides(shape, fmt):
    x = torch.empty(shape).contiguous(memory_format=fmt)
    y = output_cache.empty_like(x, fmt)
    assert y.shape == x.shape and y.stride() == x.stride() and y.dtype == x.dtype


def test_limit_bounds_idle_memory_and_zero_disables():
    x = torch.empty(BIG)
    output_cache.set_output_cache(1)  # 1 MB: the 2 MB buffer does not fit
    y = output_cache.empty_like(x, torch.contiguous_format)
    del y
    gc.collect()
    assert output_cache.cached_bytes() == 0
    output_cache.set_output_cache(0)
    y = output_cache.empty_like(x, torch.contiguous_format)
    assert y.is_contiguous() and y.shape == x.shape
    with pytest.raises(ValueError, match="megabytes must be >= 0"):
        output_cache.set_output_cache(-1)


def test_kernel_outputs_from_the_cache_are_correct_on_reuse(assert_close):
    x = torch.randn(BIG)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    first = cpu.eval_forward(x, mean, var, None, None, 1e-5)
    expected = torch.nn.functional.batch_norm(x, mean, var, training=False)
    assert_close(first, expected, atol=1e-5, rtol=1e-5, what="first output")
    del first
    gc.collect()
    second = cpu.eval_forward(x * 2, mean * 2, var * 4, None, None, 1e-5)
    assert_close(second, expected, atol=1e-4, rtol=1e-4, what="output in a reused buffer")


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("12.5", True), ("abc", False)])
def test_environment_variable_sets_the_limit_or_is_refused_clearly(value, ok):
    code = "from bnlab.kernels import output_cache as c; print(c.set_output_cache(1))"
    env = dict(os.environ, BNLAB_OUTPUT_CACHE_MB=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if ok:
        assert out.returncode == 0, out.stderr
        assert float(out.stdout) == float(value)
    else:
        assert out.returncode != 0
        assert "BNLAB_OUTPUT_CACHE_MB must be a number of megabytes >= 0, got 'abc'" in out.stderr


def test_inference_outputs_come_from_torch_and_training_outputs_from_the_cache():
    """Under no_grad on an input that needs no gradient (inference) the forward's y is torch's
    (no idle buffer held once it is freed); while autograd records, or for an input that
    requires grad (the autograd Function's forward runs with grad mode off), y comes from the
    cache and returns to it when freed."""
    x = torch.randn(BIG)
    mean, var = torch.zeros(BIG[1]), torch.ones(BIG[1])
    with torch.no_grad():
        y = cpu.eval_forward(x, mean, var, None, None, 1e-5)
        del y
        y = cpu.forward_train(x, None, None, 1e-5).y
        del y
    assert output_cache.cached_bytes() == 0
    y = cpu.eval_forward(x, mean, var, None, None, 1e-5)
    del y
    gc.collect()
    assert output_cache.cached_bytes() == x.numel() * x.element_size()
    output_cache.set_output_cache(0)
    output_cache.set_output_cache(64)
    with torch.no_grad():
        y = cpu.forward_train(x.requires_grad_(), None, None, 1e-5).y
        del y
    gc.collect()
    assert output_cache.cached_bytes() == x.numel() * x.element_size()
