# mypy: disable-error-code="call-arg"
"""Compiled entry points of the CPU family: one Numba call per op, from raw addresses.

Every per-call step that does not touch full-size data (per-channel scale and shift, invstd,
the running-statistics update with its non-finite guard, the num_batches_tracked counter) runs
inside one compiled call, around the loops of ``bnlab.kernels.cpu_numba``.
On the small layers of the tutorials' networks ((64, 6, 12, 12), (1000, 120)) those steps done
one by one from Python cost more than the whole normalization.

Tensors come in as addresses (``tensor.data_ptr()``, 0 for "absent") and are viewed here with
``numba.carray``: a NumPy view made from Python costs about a microsecond per tensor, an integer
argument a few tens of nanoseconds. The caller (``bnlab.kernels.cpu``) guarantees what the
addresses point to: x and its gradients dense in the layout given, per-channel vectors of C
contiguous values of x's dtype, ``nbt`` one int64. ``proto`` is the number 1 in x's dtype: it
gives the compiled code its element type (one specialization per dtype).

Layouts: entries ending in ``_ncs`` view x as (N, C, S); those ending in ``_rows`` as (N * S, C),
rows of C channels ((N, C) input and channels_last), or with ``cols`` contiguous x as (N, C * S). One entry per op and layout, so that a
first call compiles only its own layout's loops. The caller sets Numba's thread count (cached
compiled code cannot).

Numba's disk cache of an entry is keyed on this file only: after editing ``cpu_numba.py`` in a
source checkout, delete the cached ``*.nbi``/``*.nbc`` files (``make clean``), or the entries
keep the old loops.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from bnlab.kernels import cpu_numba as loops

#: rows layout: values per row block, about 64 KiB of float32, small enough that the second
#: statistics pass over a block reads from cache.
BLOCK = 16384

#: ncs layout, ``by_channel``: largest bytes a channel's inputs (x; x and dy in backward) may
#: take for one task per channel; about what a core's L2 cache holds (1 MiB per core here).
#: Measured on float32: train forward (256, 64, 28, 28) 0.8 MB per channel 2.6 vs 3.2 ms;
#: backward (32, 256, 56, 56) 0.8 MB 7.9 vs 11.3 ms, but (256, 64, 28, 28) 1.6 MB 4.3 vs 3.7 ms.
CHANNEL_BYTES = 1_280_000

#: ncs layout: values of one channel per task, and the longest run summed in x's dtype
#: (``cpu_numba.CHUNK``): 16 KiB of float32, a second pass over it reads from L1/L2.
NCS_BLOCK = 4096

#: ``cols`` view (contiguous input whose S values per (sample, channel) are too few for a loop
#: over them to vectorize, ``cpu.COLS_MAX_SPATIAL_*``): columns per task, 4 KiB of float32 per row.
COL_WIDTH = 1024

#: rows layout: at most this many tasks of whole row blocks, each with private (C,) sums. Fixed
#: (not the thread count) so that results do not depend on the number of threads.
ROW_TASKS = 16


class TrainForwardArgs(NamedTuple):
    """The arguments of ``train_forward_ncs`` / ``train_forward_rows``, in their order.

    Addresses are ``tensor.data_ptr()`` integers, 0 for "absent"; per-channel vectors hold C
    values of x's dtype. ``train_forward_ncs`` takes one more, ``by_channel``, and
    ``train_forward_rows`` one more, ``cols``.
    """

    x: int
    y: int  #: 0: statistics only, no output
    n: int
    c: int
    spatial: int  #: S, the values per (sample, channel): H * W (1 for (N, C) input)
    weight: int
    bias: int
    eps: float
    act: int  #: ``cpu.ACTIVATIONS`` code
    mean_out: int
    var_out: int  #: biased batch variance
    invstd_out: int
    running_mean: int  #: 0: no running update
    running_var: int
    num_batches_tracked: int  #: int64 counter, 0: none
    momentum: float  #: < 0: None (cumulative average)
    proto: Any  #: the number 1 in x's dtype (selects the compiled specialization)


class AffineForwardArgs(NamedTuple):
    """The arguments of ``affine_forward_ncs`` / ``affine_forward_rows``, in their order
    (``affine_forward_rows`` takes one more, ``cols``)."""

    x: int
    y: int
    n: int
    c: int
    spatial: int
    weight: int
    bias: int
    mean: int
    spread: int  #: the variance when ``spread_is_var`` (invstd computed here), else invstd
    spread_is_var: bool
    eps: float
    act: int
    proto: Any


class BackwardArgs(NamedTuple):
    """The arguments of ``backward_ncs`` / ``backward_rows``, in their order
    (``backward_ncs`` takes one more, ``by_channel``)."""

    dy: int
    x: int
    dx: int  #: 0: no input gradient wanted
    n: int
    c: int
    spatial: int
    weight: int
    bias: int
    mean: int
    invstd: int
    batch_stats: bool  #: training (the statistics depend on x) or eval
    act: int
    sum_dz_xhat_out: int  #: the weight's gradient, sum(dz * xhat)
    sum_dz_out: int  #: the bias's gradient, sum(dz)
    proto: Any


@intrinsic
def _pointer(typingctx, address, proto):  # type: ignore[no-untyped-def]
    """``address`` (an integer) as a pointer to values of ``proto``'s type."""
    pointer_type = types.CPointer(proto)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(pointer_type))

    return pointer_type(address, proto), codegen


@njit(cache=True)
def _read(address, c, fill, proto):  # type: ignore[no-untyped-def]
    """The per-channel vector at ``address`` in float64; ``fill`` everywhere if address is 0."""
    out = np.full(c, fill)
    if address != 0:
        v = carray(_pointer(address, proto), (c,))
        for i in range(c):
            out[i] = v[i]
    return out


@njit(cache=True)
def _write(address, values, proto):  # type: ignore[no-untyped-def]
    """Store float64 ``values`` at ``address`` in ``proto``'s type (nothing if address is 0)."""
    if address != 0:
        v = carray(_pointer(address, proto), values.shape)
        for i in range(values.size):
            v[i] = values[i]


@njit(cache=True)
def _cast(values, proto):  # type: ignore[no-untyped-def]
    """float64 ``values`` as an array of ``proto``'s type (the kernels' per-channel constants)."""
    out = np.full(values.size, proto)
    for i in range(values.size):
        out[i] = values[i]
    return out


@njit(cache=True)
def _rows_per_block(c):  # type: ignore[no-untyped-def]
    """Rows per block of ``c`` columns: about BLOCK values but at least 64 rows (each block
    ends with O(c) merge work), and at most CHUNK rows (summed in x's dtype)."""
    return min(loops.CHUNK, max(64, BLOCK // c))


@njit(cache=True)
def _rows_view(n, c, spatial, cols):  # type: ignore[no-untyped-def]
    """(R, K, G, cw) of the rows view: (N * S, C) rows of C channels (G = 1), or with ``cols``
    (N, C * S), channel c owning columns [c * S, (c + 1) * S) (G = S); cw: columns per task."""
    if cols:
        return n, c * spatial, spatial, COL_WIDTH
    return n * spatial, c, 1, c


@njit(cache=True)
def _expand(v, G):  # type: ignore[no-untyped-def]
    """Per-channel constants as one value per column of the rows view (each repeated G times)."""
    if G == 1:
        return v
    out = np.empty(v.size * G, v.dtype)
    k = 0
    for c in range(v.size):
        value = v[c]  # loaded once: the inner loop only stores, which vectorizes unchecked
        for j in range(G):
            out[k + j] = value
        k += G
    return out


@njit(cache=True)
def _fold_running(mean, var, count, rm, rv, nbt, momentum, proto):  # type: ignore[no-untyped-def]
    """The running update of ``bnlab.functional.running_stats``, on raw buffers.

    Returns False (and touches nothing) if the batch statistics are not finite. ``momentum``
    < 0 means None (cumulative average, 1 / num_batches_tracked).
    """
    if rm == 0 and rv == 0:
        if nbt != 0:
            carray(_pointer(nbt, np.int64(0)), (1,))[0] += 1
        return True
    for i in range(mean.size):
        if not (np.isfinite(mean[i]) and np.isfinite(var[i])):
            return False
    tracked = 0
    if nbt != 0:
        counter = carray(_pointer(nbt, np.int64(0)), (1,))
        counter[0] += 1
        tracked = counter[0]
    factor = momentum if momentum >= 0 else 1.0 / tracked
    c = mean.size
    if rm != 0:
        running_mean = carray(_pointer(rm, proto), (c,))
        for i in range(c):
            r = np.float64(running_mean[i])
            running_mean[i] = r + factor * (mean[i] - r)
    if rv != 0:
        running_var = carray(_pointer(rv, proto), (c,))
        correction = count / (count - 1) if count > 1 else 1.0
        for i in range(c):
            r = np.float64(running_var[i])
            running_var[i] = r + factor * (var[i] * correction - r)
    return True


@njit(cache=True)
def _finish_stats(  # type: ignore[no-untyped-def]
    mean, var, eps, count, mean_out, var_out, invstd_out, rm, rv, nbt, momentum, proto
):
    """invstd, the statistics written out, the running update: (invstd, finite)."""
    invstd = 1.0 / np.sqrt(var + eps)
    _write(mean_out, mean, proto)
    _write(var_out, var, proto)
    _write(invstd_out, invstd, proto)
    return invstd, _fold_running(mean, var, count, rm, rv, nbt, momentum, proto)


@njit(cache=True)
def _affine_constants(  # type: ignore[no-untyped-def]
    c, weight, bias, mean, spread, spread_is_var, eps, proto
):
    """(mean, scale, shift) in float64: scale = invstd * weight, invstd from ``spread``."""
    spread64 = _read(spread, c, 1.0, proto)
    invstd = 1.0 / np.sqrt(spread64 + eps) if spread_is_var else spread64
    scale = invstd * _read(weight, c, 1.0, proto)
    return _read(mean, c, 0.0, proto), scale, _read(bias, c, 0.0, proto)


@njit(cache=True)
def _backward_constants(c, weight, bias, mean, invstd, proto):  # type: ignore[no-untyped-def]
    """(mean, invstd * weight, bias) in x's dtype: the backward loops always center."""
    m64, scale, shift = _affine_constants(c, weight, bias, mean, invstd, False, 0.0, proto)
    return _cast(m64, proto), _cast(scale, proto), _cast(shift, proto)


@njit(cache=True)
def _forward_constants(mean, scale, shift, proto):  # type: ignore[no-untyped-def]
    """(m, s, b, centered) in x's dtype for the normalize loops, from float64 constants:
    b = shift - mean * scale (folded) unless some |mean * scale| exceeds
    ``cpu_numba.FOLD_LIMIT`` (then centered, b = shift; see ``cpu_numba``)."""
    centered = False
    for i in range(mean.size):
        if not abs(mean[i] * scale[i]) <= loops.FOLD_LIMIT:
            centered = True
    folded = shift if centered else shift - mean * scale
    return _cast(mean, proto), _cast(scale, proto), _cast(folded, proto), centered


@njit(cache=True)
def _dx_constants(sum_dz, sum_dzxc, invstd, count, batch_stats, proto):  # type: ignore[no-untyped-def]
    """(k1, k2) of dx = scale * (dz - k1 - (x - mean) * k2): batch terms, or 0 in eval."""
    if batch_stats:
        return _cast(sum_dz / count, proto), _cast(invstd * invstd * sum_dzxc / count, proto)
    zeros = _cast(np.zeros(sum_dz.size), proto)
    return zeros, zeros


# --------------------------------------------------------------------------------- entries
# One entry per op and layout, so that a first call compiles only its layout's loops.


@njit(cache=True, nogil=True)
def train_forward_ncs(  # type: ignore[no-untyped-def]
    x, y, n, c, spatial, weight, bias, eps, act, mean_out, var_out, invstd_out,
    running_mean, running_var, num_batches_tracked, momentum, proto, by_channel,
):  # fmt: skip
    """Batch statistics, then (if y != 0) y = act(xhat * weight + bias); (N, C, S) layout.

    Writes the batch mean, biased variance and invstd (if their addresses are not 0) and folds
    the batch into the running statistics (if given). Returns False if the statistics were
    not finite (running statistics and counter then untouched). ``by_channel``: one task per
    channel, whose second read of x then comes from cache.
    """
    x3 = carray(_pointer(x, proto), (n, c, spatial))
    w64 = _read(weight, c, 1.0, proto)
    b64 = _read(bias, c, 0.0, proto)
    fused = y != 0 and by_channel
    if fused:
        y3 = carray(_pointer(y, proto), (n, c, spatial))
        mean, var = loops.train_ncs_by_channel(x3, w64, b64, eps, act, proto, y3)
    else:
        mean, var = loops.stats_ncs(x3, NCS_BLOCK)
    invstd, finite = _finish_stats(
        mean, var, eps, n * spatial, mean_out, var_out, invstd_out, running_mean, running_var,
        num_batches_tracked, momentum, proto,
    )  # fmt: skip
    if y != 0 and not fused:
        m, sc, sh, centered = _forward_constants(mean, invstd * w64, b64, proto)
        y3 = carray(_pointer(y, proto), (n, c, spatial))
        loops.normalize_ncs(x3, m, sc, sh, centered, act, proto, y3, NCS_BLOCK)
    return finite


@njit(cache=True, nogil=True)
def train_forward_rows(  # type: ignore[no-untyped-def]
    x, y, n, c, spatial, weight, bias, eps, act, mean_out, var_out, invstd_out,
    running_mean, running_var, num_batches_tracked, momentum, proto, cols,
):  # fmt: skip
    """``train_forward_ncs`` for the rows view (``_rows_view``): (N * S, C), rows of C
    channels, or with ``cols`` contiguous (N, C * S)."""
    R, K, G, cw = _rows_view(n, c, spatial, cols)
    x2 = carray(_pointer(x, proto), (R, K))
    rb = _rows_per_block(cw)
    if cols:
        mean, var = loops.stats_cols(x2, G, cw)
    else:
        mean, var = loops.stats_rows(x2, rb, ROW_TASKS)
    invstd, finite = _finish_stats(
        mean, var, eps, n * spatial, mean_out, var_out, invstd_out, running_mean, running_var,
        num_batches_tracked, momentum, proto,
    )  # fmt: skip
    if y != 0:
        m, sc, sh, centered = _forward_constants(
            mean, invstd * _read(weight, c, 1.0, proto), _read(bias, c, 0.0, proto), proto
        )
        loops.normalize_rows(
            x2, _expand(m, G) if centered else sc, _expand(sc, G), _expand(sh, G), centered,
            act, proto, carray(_pointer(y, proto), (R, K)), rb, cw,
        )  # fmt: skip
    return finite


@njit(cache=True, nogil=True)
def affine_forward_ncs(  # type: ignore[no-untyped-def]
    x, y, n, c, spatial, weight, bias, mean, spread, spread_is_var, eps, act, proto
):
    """y = act((x - mean) * invstd * weight + bias) in one pass over x; (N, C, S) layout.

    ``spread`` is the variance (invstd = 1 / sqrt(var + eps): eval with running statistics)
    when ``spread_is_var``, else invstd itself.
    """
    m, sc, sh, centered = _forward_constants(
        *_affine_constants(c, weight, bias, mean, spread, spread_is_var, eps, proto), proto
    )
    x3 = carray(_pointer(x, proto), (n, c, spatial))
    y3 = carray(_pointer(y, proto), (n, c, spatial))
    loops.normalize_ncs(x3, m, sc, sh, centered, act, proto, y3, NCS_BLOCK)


@njit(cache=True, nogil=True)
def affine_forward_rows(  # type: ignore[no-untyped-def]
    x, y, n, c, spatial, weight, bias, mean, spread, spread_is_var, eps, act, proto, cols
):
    """``affine_forward_ncs`` for the rows view (see ``train_forward_rows``)."""
    R, K, G, cw = _rows_view(n, c, spatial, cols)
    m, sc, sh, centered = _forward_constants(
        *_affine_constants(c, weight, bias, mean, spread, spread_is_var, eps, proto), proto
    )
    loops.normalize_rows(
        carray(_pointer(x, proto), (R, K)), _expand(m, G) if centered else sc, _expand(sc, G),
        _expand(sh, G), centered, act, proto, carray(_pointer(y, proto), (R, K)),
        _rows_per_block(cw), cw,
    )  # fmt: skip


@njit(cache=True, nogil=True)
def backward_ncs(  # type: ignore[no-untyped-def]
    dy, x, dx, n, c, spatial, weight, bias, mean, invstd, batch_stats, act,
    sum_dz_xhat_out, sum_dz_out, proto, by_channel,
):  # fmt: skip
    """Pass 1: sum(dz), sum(dz * (x - mean)) in float64; pass 2 (if dx != 0) writes dx.

    dz = dy * act'(z), z recomputed from x. Writes sum(dz * xhat) to ``sum_dz_xhat_out`` and
    sum(dz) to ``sum_dz_out`` (``sum_dzxc`` below is sum(dz * (x - mean)), before the invstd
    factor). dx = scale * (dz - k1 - (x - mean) * k2) with k1 = sum(dz) / M,
    k2 = invstd^2 * sum(dz * (x - mean)) / M in training, k1 = k2 = 0 in eval.
    ``by_channel``: one task per channel, both passes in a row (see train_forward_ncs).
    """
    i64 = _read(invstd, c, 1.0, proto)
    m, sc, sh = _backward_constants(c, weight, bias, mean, invstd, proto)
    x3 = carray(_pointer(x, proto), (n, c, spatial))
    dy3 = carray(_pointer(dy, proto), (n, c, spatial))
    if by_channel:
        dx3 = (
            carray(_pointer(dx, proto), (n, c, spatial))
            if dx != 0
            else np.empty((0, 0, 0), x3.dtype)
        )
        sum_dz, sum_dzxc = loops.bwd_ncs_by_channel(
            dy3, x3, m, sc, sh, act, proto, i64, batch_stats, dx3
        )
    else:
        sum_dz, sum_dzxc = loops.bwd_sums_ncs(dy3, x3, m, sc, sh, act, NCS_BLOCK)
        if dx != 0:
            k1, k2 = _dx_constants(sum_dz, sum_dzxc, i64, n * spatial, batch_stats, proto)
            dx3 = carray(_pointer(dx, proto), (n, c, spatial))
            loops.bwd_dx_ncs(dy3, x3, m, sc, sh, act, proto, k1, k2, dx3, NCS_BLOCK)
    _write(sum_dz_xhat_out, sum_dzxc * i64, proto)
    _write(sum_dz_out, sum_dz, proto)


@njit(cache=True, nogil=True)
def backward_rows(  # type: ignore[no-untyped-def]
    dy, x, dx, n, c, spatial, weight, bias, mean, invstd, batch_stats, act,
    sum_dz_xhat_out, sum_dz_out, proto, cols,
):  # fmt: skip
    """``backward_ncs`` for the rows view (see ``train_forward_rows``)."""
    R, K, G, cw = _rows_view(n, c, spatial, cols)
    i64 = _read(invstd, c, 1.0, proto)
    m, sc, sh = _backward_constants(c, weight, bias, mean, invstd, proto)
    x2 = carray(_pointer(x, proto), (R, K))
    dy2 = carray(_pointer(dy, proto), (R, K))
    rb = _rows_per_block(cw)
    if cols:
        m, sc = _expand(m, G), _expand(sc, G)
        sh = _expand(sh, G) if act != 0 else sc  # the shift only matters with an activation
        sum_dz, sum_dzxc = loops.bwd_sums_cols(dy2, x2, m, sc, sh, act, G, cw)
    else:
        sum_dz, sum_dzxc = loops.bwd_sums_rows(dy2, x2, m, sc, sh, act, rb, ROW_TASKS)
    if dx != 0:
        k1, k2 = _dx_constants(sum_dz, sum_dzxc, i64, n * spatial, batch_stats, proto)
        dx2 = carray(_pointer(dx, proto), (R, K))
        loops.bwd_dx_rows(
            dy2, x2, m, sc, sh, act, proto, _expand(k1, G), _expand(k2, G), dx2, rb, cw
        )
    _write(sum_dz_xhat_out, sum_dzxc * i64, proto)
    _write(sum_dz_out, sum_dz, proto)
