"""The compiled CPU kernels (bnlab.kernels.cpu) against float64 PyTorch, and their dispatch.

Every test here forces the ``cpu`` family (``set_backend("cpu")``) so that small inputs, which
``select`` may send to ``portable``, exercise the compiled kernels too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import bnlab
from bnlab import kernels
from bnlab.functional import batch_norm
from bnlab.functional import running_stats as rs_module

TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 1e-5)}  # (atol, rtol)


@pytest.fixture(autouse=True)
def _force_cpu_family():
    previous = kernels.set_backend("cpu")
    try:
        yield
    finally:
        kernels.set_backend(previous)


def _make(shape, dtype, fmt=None, scale=3.0, offset=2.0):
    x = torch.randn(shape, dtype=torch.float64) * scale + offset
    x = x.to(dtype)
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    return x


def _check_against_torch(x, assert_close, *, training=True, affine=True, momentum=0.1):
    """Forward, backward and running statistics of bnlab vs torch in float64."""
    dtype = x.dtype
    atol, rtol = TOL[dtype]
    c = x.shape[1]
    w = torch.randn(c, dtype=dtype) if affine else None
    b = torch.randn(c, dtype=dtype) if affine else None
    rm, rv = torch.randn(c, dtype=dtype), torch.rand(c, dtype=dtype) + 0.5
    rm_ref, rv_ref = rm.double().clone(), rv.double().clone()
    xb = x.detach().clone().requires_grad_()
    wb = w.clone().requires_grad_() if affine else None
    bb = b.clone().requires_grad_() if affine else None
    y = batch_norm(xb, rm, rv, wb, bb, training, momentum, 1e-5)
    xr = x.detach().double().requires_grad_()
    wr = w.double().requires_grad_() if affine else None
    br = b.double().requires_grad_() if affine else None
    yr = F.batch_norm(xr, rm_ref, rv_ref, wr, br, training, momentum, 1e-5)
    assert_close(y, yr, atol=atol, rtol=rtol, what="output")
    assert y.dtype == dtype
    dy = torch.randn(x.shape, dtype=torch.float64)
    y.backward(dy.to(dtype))
    yr.backward(dy)
    m = x.numel() // c
    assert_close(xb.grad, xr.grad, atol=atol, rtol=rtol, what="dx")
    if affine:
        assert_close(wb.grad, wr.grad, atol=atol * m, rtol=rtol, what="dweight")
        assert_close(bb.grad, br.grad, atol=atol * m, rtol=rtol, what="dbias")
    assert_close(rm, rm_ref, atol=atol, rtol=rtol, what="running_mean")
    assert_close(rv, rv_ref, atol=atol, rtol=rtol, what="running_var")
    return y, xb.grad


LAYOUTS = [
    ((7, 5), None),
    ((4, 3, 9), None),
    ((4, 3, 1), None),
    ((3, 6, 5, 7), None),
    ((3, 6, 5, 7), torch.channels_last),
    ((2, 3, 4, 3, 5), None),
    ((2, 3, 4, 3, 5), torch.channels_last_3d),
]


def test_select_picks_cpu_for_cpu_float_and_portable_otherwise():
    from bnlab.kernels import cpu

    kernels.set_backend("auto")
    big = torch.zeros(64, 8, 16, 16)
    assert kernels.select(big) is cpu
    assert kernels.select(big.double()) is cpu
    assert kernels.select(big.half()) is kernels.portable
    assert kernels.select(big.bfloat16()) is kernels.portable
    assert kernels.select(torch.zeros(0, 3)) is (
        cpu if kernels.CPU_MIN_NUMEL == 0 else kernels.portable
    )
    kernels.set_backend("portable")
    assert kernels.select(big) is kernels.portable
    with pytest.raises(ValueError, match="backend must be"):
        kernels.set_backend("gpu")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("shape", "fmt"), LAYOUTS)
@pytest.mark.parametrize("training", [True, False])
def test_matches_float64_torch(shape, fmt, dtype, training, assert_close):
    x = _make(shape, dtype, fmt)
    y, dx = _check_against_torch(x, assert_close, training=training)
    if fmt is not None:
        assert y.is_contiguous(memory_format=fmt), "output lost the channels_last format"
        assert dx.is_contiguous(memory_format=fmt), "dx lost the channels_last format"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_affine_false(dtype, assert_close):
    _check_against_torch(_make((5, 4, 6, 6), dtype), assert_close, affine=False)


@pytest.mark.parametrize(
    ("shape", "fmt", "why"),
    [
        ((3, 1, 200, 201), None, "C=1, one channel split in several tasks (S > BLOCK)"),
        ((2, 17, 9, 11), None, "C not a multiple of any vector width"),
        ((2, 17, 9, 11), torch.channels_last, "C=17 in the rows layout"),
        ((1, 1, 300, 300), torch.channels_last, "N=1, C=1 channels_last"),
        ((20000, 3, 2), None, "huge N, tiny S: many samples per task"),
        ((100003, 3), None, "huge N in the rows layout, a last partial block"),
        ((5, 6, 7, 8), None, "one task per channel (cpu._by_channel)"),
        ((600, 4, 24, 24), None, "channels above CHANNEL_BYTES: several tasks per channel"),
        ((600, 3, 4, 4), None, "cols view, several row blocks (N > CHUNK)"),
        ((4, 300, 3, 3), None, "cols view, several column tasks (C * S > COL_WIDTH)"),
        ((8, 5, 10, 10), None, "cols view in eval only (S = COLS_MAX_SPATIAL_NORMALIZE)"),
    ],
)
def test_stress_shapes(shape, fmt, why, assert_close):
    _check_against_torch(_make(shape, torch.float64, fmt), assert_close)
    _check_against_torch(_make(shape, torch.float32, fmt), assert_close)


def test_one_value_per_channel_in_eval(assert_close):
    _check_against_torch(_make((1, 5), torch.float32), assert_close, training=False)
    _check_against_torch(_make((1, 4, 1, 1), torch.float64), assert_close, training=False)


@pytest.mark.parametrize(
    "make_view",
    [
        pytest.param(lambda b: b.transpose(2, 3), id="transposed"),
        pytest.param(lambda b: b[:, :, ::2, 1:], id="sliced"),
        pytest.param(lambda b: b.permute(0, 1, 3, 2)[:, 1:], id="permuted-sliced"),
        pytest.param(lambda b: b[:, :, :1].expand(-1, -1, 6, -1), id="expanded"),
        pytest.param(lambda b: b[:, :, 0, 0][:, :, None, None].expand(4, 6, 3, 3), id="stride0"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_strided_and_expanded_inputs_are_read_correctly(make_view, dtype, assert_close):
    atol, rtol = TOL[dtype]
    base = _make((4, 6, 6, 7), dtype)
    x = make_view(base)
    assert not x.is_contiguous()
    c = x.shape[1]
    w, b = torch.randn(c, dtype=dtype), torch.randn(c, dtype=dtype)
    rm, rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
    base_g = base.clone().requires_grad_()
    y = batch_norm(make_view(base_g), rm, rv, w, b, True)
    base_r = base.double().requires_grad_()
    yr = F.batch_norm(make_view(base_r), None, None, w.double(), b.double(), True)
    assert_close(y, yr, atol=atol, rtol=rtol, what="output")
    dy = torch.randn(y.shape, dtype=torch.float64)
    y.backward(dy.to(dtype))
    yr.backward(dy)
    assert_close(base_g.grad, base_r.grad, atol=atol * 10, rtol=rtol, what="grad")


def test_expanded_grad_output_is_read_correctly(assert_close):
    x = _make((4, 3, 5, 5), torch.float32).requires_grad_()
    xr = x.detach().double().requires_grad_()
    batch_norm(x, None, None, training=True).sum().backward()  # dy: expanded ones, stride 0
    F.batch_norm(xr, None, None, training=True).sum().backward()
    assert_close(x.grad, xr.grad, atol=1e-5, what="dx for dy = ones (expanded)")


@pytest.mark.parametrize(
    ("shape", "fmt"),
    [((8, 3, 64, 64), None), ((8, 3, 64, 64), torch.channels_last), ((512, 3, 4, 4), None)],
)
def test_large_offset_variance_float32(shape, fmt, assert_close):
    # 1e4 + N(0, 1): E[x^2] - E[x]^2 in float32 would lose every digit of the variance.
    # (512, 3, 4, 4): the cols view, with two row blocks.
    x = (torch.randn(shape, dtype=torch.float64) + 1e4).float()
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    mean, var = kernels.select(x).batch_stats(x)
    ref = x.double().var((0, 2, 3), unbiased=False)
    assert_close(var, ref, atol=0, rtol=1e-3, what="variance with a 1e4 offset")
    assert_close(mean, x.double().mean((0, 2, 3)), atol=0, rtol=1e-6, what="mean")


@pytest.mark.parametrize("fmt", [None, torch.channels_last])
def test_nan_input_same_running_stat_guard_as_portable(fmt, monkeypatch):
    monkeypatch.setattr(rs_module, "_warned_non_finite", False)
    x = _make((4, 3, 5, 5), torch.float32, fmt)
    x[1, 2, 3, 4] = float("nan")
    results = {}
    for backend in ("cpu", "portable"):
        kernels.set_backend(backend)
        rm, rv = torch.zeros(3), torch.ones(3)
        nbt = torch.tensor(0)
        monkeypatch.setattr(rs_module, "_warned_non_finite", False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = batch_norm(x, rm, rv, training=True, num_batches_tracked=nbt)
        assert any("not finite" in str(w.message) for w in caught), f"{backend}: no warning"
        assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))
        assert int(nbt) == 0
        results[backend] = y
    nan_cpu, nan_portable = results["cpu"].isnan(), results["portable"].isnan()
    assert torch.equal(nan_cpu, nan_portable), "NaN pattern differs between families"
    assert bool(nan_cpu[:, 2].all()) and not bool(nan_cpu[:, :2].any())


def _buffers(kind, c):
    """Running buffers the kernel updates in place ("direct") or must leave to Python."""
    if kind == "direct":
        return torch.zeros(c), torch.ones(c), torch.tensor(0)
    if kind == "float64":
        z = torch.zeros(c, dtype=torch.float64)
        return z, torch.ones(c, dtype=torch.float64), torch.tensor(0)
    strided = torch.zeros(2 * c)[::2], torch.ones(2 * c)[::2]  # not contiguous
    return strided[0], strided[1], torch.tensor(0)


@pytest.mark.parametrize("kind", ["direct", "float64", "strided"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_update_in_kernel_and_by_caller_agree_with_torch(kind, momentum, assert_close):
    """The fused update (direct buffers) and the caller's (other buffers) give torch's values."""
    c = 4
    rm, rv, nbt = _buffers(kind, c)
    ref_m, ref_v = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    for step in range(3):
        x = _make((6, c, 3, 3), torch.float32, scale=0.01 * (step + 1), offset=step)
        batch_norm(x, rm, rv, training=True, momentum=momentum, num_batches_tracked=nbt)
        factor = 1.0 / (step + 1) if momentum is None else momentum
        F.batch_norm(x.double(), ref_m, ref_v, training=True, momentum=factor)
    assert int(nbt) == 3
    assert_close(rm.double(), ref_m, atol=1e-7, rtol=1e-6, what=f"running_mean ({kind})")
    assert_close(rv.double(), ref_v, atol=1e-9, rtol=1e-6, what=f"running_var ({kind})")


def test_cumulative_average_without_counter_is_an_error():
    with pytest.raises(ValueError, match="needs num_batches_tracked"):
        batch_norm(torch.randn(4, 3), torch.zeros(3), torch.ones(3), training=True, momentum=None)


def test_saves_only_x_mean_invstd():
    x = _make((4, 3, 5, 5), torch.float32).requires_grad_()
    w = torch.ones(3, requires_grad=True)
    y = batch_norm(x, None, None, w, None, training=True)
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    big = [t for t in saved if t.numel() == x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == x.data_ptr(), "only x may be saved full-size"
    assert all(t.numel() in (x.numel(), 3) for t in saved)


def test_threads_follow_torch():
    import numba

    from bnlab.kernels import cpu

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cpu.batch_stats(torch.randn(64, 8, 32, 32))
        assert numba.get_num_threads() == 1
        torch.set_num_threads(before)
        cpu.batch_stats(torch.randn(64, 8, 32, 32))
        assert numba.get_num_threads() == min(before, cpu._MAX_THREADS)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("shape", "fmt"),
    [
        ((8, 6, 40, 40), None),
        ((600, 3, 24, 24), None),
        ((300, 5, 8, 8), torch.channels_last),
        ((16, 300, 4, 4), None),  # the cols view, in column tasks
    ],
)
def test_results_do_not_depend_on_the_thread_count(shape, fmt):
    """The work split depends on the shape only: 1 and 2 threads give identical bits."""
    x = _make(shape, torch.float32, fmt).requires_grad_()
    w = torch.randn(shape[1], requires_grad=True)
    dy = torch.randn(shape).contiguous(memory_format=fmt or torch.contiguous_format)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            rm, rv = torch.zeros(shape[1]), torch.ones(shape[1])
            y = batch_norm(x, rm, rv, w, None, training=True)
            grads = torch.autograd.grad(y, (x, w), dy)
            results.append((y, rm, rv, *grads))
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two), f"max difference {(one - two).abs().max().item()}"


_FIRST_CALL = r"""
import json, sys, time
t0 = time.perf_counter()
import bnlab
import_s = time.perf_counter() - t0
imported = sorted(m for m in ("numba", "bnlab.kernels.cpu") if m in sys.modules)
import torch
x = torch.randn(32, 8, 16, 16, requires_grad=True)
t0 = time.perf_counter()
bnlab.functional.batch_norm(x, None, None, training=True).sum().backward()
first_s = time.perf_counter() - t0
t0 = time.perf_counter()
bnlab.functional.batch_norm(x, None, None, training=True).sum().backward()
second_s = time.perf_counter() - t0
from bnlab.kernels import cpu_entries
hits = sum(sum(k.stats.cache_hits.values()) for k in (cpu_entries.train_forward_ncs, cpu_entries.backward_ncs))
print(json.dumps({"import_s": import_s, "imported_by_import": imported, "first_s": first_s,
                  "second_s": second_s, "cache_hits": hits}))
"""


def test_first_call_cost_in_fresh_process_and_disk_cache(tmp_path):
    """Import compiles nothing; the first call compiles (or loads) the kernels; reported."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    runs = []
    for _ in range(2):  # 1: empty cache, compiles and writes it; 2: loads from the cache
        out = subprocess.run(
            [sys.executable, "-c", _FIRST_CALL],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    print(
        f"\nfirst call (compile, empty cache): {cold['first_s']:.2f} s; "
        f"first call (disk cache): {warm['first_s']:.2f} s; "
        f"second call: {warm['second_s'] * 1e3:.2f} ms; import bnlab: {warm['import_s']:.2f} s"
    )
    assert cold["imported_by_import"] == [] and warm["imported_by_import"] == []
    assert cold["cache_hits"] == 0, "the cold run was expected to compile"
    assert warm["cache_hits"] >= 2, "the second process did not load the kernels from disk"
    assert any((tmp_path / "numba-cache").rglob("*.nbi")), "no cache index written"


def test_public_layers_run_on_cpu_family(assert_close):
    bn = bnlab.BatchNorm2d(5)
    ref = torch.nn.BatchNorm2d(5)
    x = _make((6, 5, 7, 7), torch.float32, torch.channels_last)
    for _ in range(2):
        assert_close(bn(x), ref(x), atol=2e-5, rtol=1e-5, what="layer output")
    assert_close(bn.running_var, ref.running_var, atol=1e-6, rtol=1e-5, what="running_var")
    bn.eval()
    ref.eval()
    assert_close(bn(x), ref(x), atol=2e-5, rtol=1e-5, what="eval output")


_WARM_UP = r"""
import json, torch, bnlab
from bnlab.kernels import cpu_entries
bnlab.kernels.warm_up((torch.float32,))
names = [n for n in dir(cpu_entries) if n.endswith(("_ncs", "_rows"))]
print(json.dumps({n: len(getattr(cpu_entries, n).signatures) for n in names}))
"""


def test_warm_up_compiles_every_entry():
    """Each layout's and work split's entry is compiled by warm_up (multi-process launches)."""
    out = subprocess.run(
        [sys.executable, "-c", _WARM_UP], capture_output=True, text=True, timeout=600, check=True
    )
    compiled = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(compiled) == 6, compiled
    assert all(count >= 1 for count in compiled.values()), f"not compiled: {compiled}"


@pytest.mark.parametrize(
    ("offset", "form"), [(0.5, "folded shift"), (100.0, "centered (|mean * scale| > 8)")]
)
@pytest.mark.parametrize("fmt", [None, torch.channels_last])
def test_eval_forms_match_float64(offset, form, fmt, assert_close):
    """Both forward forms (cpu_numba's folded shift, and centering first) against float64."""
    x = _make((6, 5, 7, 7), torch.float32, fmt, scale=1.0, offset=offset)
    rm = x.double().mean((0, 2, 3)).float()
    rv = x.double().var((0, 2, 3)).float()
    w, b = torch.rand(5) + 0.5, torch.randn(5)
    y = batch_norm(x, rm, rv, w, b, training=False)
    ref = F.batch_norm(x.double(), rm.double(), rv.double(), w.double(), b.double())
    assert_close(y, ref, atol=2e-5, rtol=1e-5, what=f"eval output, {form}")


@pytest.mark.parametrize(
    ("entry", "args", "extra"),
    [
        ("train_forward_ncs", "TrainForwardArgs", ("by_channel",)),
        ("train_forward_rows", "TrainForwardArgs", ("cols",)),
        ("affine_forward_ncs", "AffineForwardArgs", ()),
        ("affine_forward_rows", "AffineForwardArgs", ("cols",)),
        ("backward_ncs", "BackwardArgs", ("by_channel",)),
        ("backward_rows", "BackwardArgs", ("cols",)),
    ],
)
def test_entry_signatures_follow_their_named_arguments(entry, args, extra):
    """The compiled entries are called with ``*NamedTuple``: the order must be the entry's."""
    import inspect

    from bnlab.kernels import cpu_entries

    params = list(inspect.signature(getattr(cpu_entries, entry).py_func).parameters)
    names = list(getattr(cpu_entries, args)._fields)
    assert params == [*names, *extra]


def test_small_calls_run_the_serial_twins_large_ones_torchs_thread_count():
    """Below SERIAL_NUMEL: the entries compiled without parallel loops (no OpenMP region
    between torch's); at or above it: the parallel entries, on torch's thread count."""
    import numba

    from bnlab.kernels import cpu, cpu_entries, cpu_numba, serial

    assert cpu._entries_for(cpu.SERIAL_NUMEL - 1) is serial.entries
    assert cpu._entries_for(cpu.SERIAL_NUMEL) is cpu_entries
    assert numba.get_num_threads() == min(torch.get_num_threads(), cpu._MAX_THREADS)
    for name in ("train_forward_ncs", "affine_forward_rows", "backward_ncs"):
        twin = getattr(serial.entries, name)
        assert twin is not getattr(cpu_entries, name)
        assert twin.py_func.__qualname__ == f"{name}__serial"
        # the loops the twin calls are the serial ones, none of them parallel
        assert twin.py_func.__globals__["loops"] is serial.loops
    for name in ("normalize_ncs", "stats_rows", "bwd_sums_cols"):
        assert getattr(cpu_numba, name).targetoptions["parallel"] is True
        assert getattr(serial.loops, name).targetoptions["parallel"] is False
    # stats_cols has no parallel loop of its own but calls one: twinned, calling the twin
    assert serial.loops.stats_cols.py_func.__globals__["_column_sums"] is serial.loops._column_sums


@pytest.mark.parametrize(
    ("shape", "fmt"),
    [((64, 6, 12, 12), None), ((8, 40, 7, 7), None), ((300, 5, 8, 8), torch.channels_last),
     ((1000, 120), None), ((3, 7, 5000), None)],
)  # fmt: skip
@pytest.mark.parametrize("activation", ["identity", "relu", "silu", "hardswish"])
def test_serial_twins_agree_with_the_parallel_kernels(shape, fmt, activation, monkeypatch):
    """The same tasks in the same order; LLVM may vectorize the two builds differently, so
    sums agree to rounding, not bit for bit (which build runs depends on the shape only)."""
    from bnlab.kernels import cpu

    x = _make(shape, torch.float64, fmt) * 3 + 2
    c = shape[1]
    weight, bias = torch.rand(c, dtype=torch.float64) + 0.5, torch.randn(c, dtype=torch.float64)
    dy = torch.randn(shape, dtype=torch.float64).contiguous(
        memory_format=fmt or torch.contiguous_format
    )
    results = []
    for serial_numel in (0, 1 << 40):  # everything parallel, then everything serial
        monkeypatch.setattr(cpu, "SERIAL_NUMEL", serial_numel)
        rm, rv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
        running = cpu.RunningStats(rm, rv, None, 0.1)
        out = cpu.forward_train(x, weight, bias, 1e-5, activation, running)
        y_eval = cpu.eval_forward(x, out.mean, out.var, weight, bias, 1e-5, activation)
        grads = cpu.backward(dy, x, out.mean, out.invstd, weight, True, True, bias, activation)
        results.append((out.y.clone(), out.mean, out.var, rm, rv, y_eval.clone(), *grads))
    for par, ser in zip(*results, strict=True):
        assert torch.allclose(par, ser, rtol=1e-12, atol=1e-12), (par - ser).abs().max().item()


def test_serial_twins_are_cached_on_disk():
    """A new process loads the twins' compiled code instead of compiling it again (~10 s)."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from bnlab.kernels import cpu, serial\n"
        "x = torch.randn(2, 8, 4, 4)\n"
        "cpu.eval_forward(x, torch.zeros(8), torch.ones(8), None, None, 1e-5)\n"
        "stats = serial.entries.affine_forward_rows.stats\n"
        "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        for _ in range(2)  # the first may compile and write the cache, the second must load it
    ]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    hits, misses = map(int, runs[1].stdout.split())
    assert (hits, misses) == (1, 0), f"second process: {hits} cache hits, {misses} misses"
