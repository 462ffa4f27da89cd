# mypy: disable-error-code="call-arg"
"""Compiled entry points of the CPU family: one Numba call per op, from raw addresses.

Every per-call step that does not touch full-size data (per-channel scale and shift, invstd,
the running-statistics update with its non-finite guard, the num_batches_tracked counter, the
thread count) runs inside one compiled call, around the loops of ``bnlab.kernels.cpu_numba``.
On the small layers of the tutorials' networks ((64, 6, 12, 12), (1000, 120)) those steps done
one by one from Python cost more than the whole normalization.

Tensors come in as addresses (``tensor.data_ptr()``, 0 for "absent") and are viewed here with
``numba.carray``: a NumPy view made from Python costs about a microsecond per tensor, an integer
argument a few tens of nanoseconds. The caller (``bnlab.kernels.cpu``) guarantees what the
addresses point to: x and its gradients dense in the layout given, per-channel vectors of C
contiguous values of x's dtype, ``nbt`` one int64. ``proto`` is the number 1 in x's dtype: it
gives the compiled code its element type (one specialization per dtype).

Layouts: ``rows`` False is (N, C, S); True is (N * S, C) rows of C channels ((N, C) input and
channels_last). The caller sets Numba's thread count (not settable from cached compiled code).
"""

from __future__ import annotations

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

#: rows layout: at most this many tasks of whole row blocks, each with private (C,) sums. Fixed
#: (not the thread count) so that results do not depend on the number of threads.
ROW_TASKS = 16


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
    """Rows per block: about BLOCK values but at least 64 rows (each block ends with O(C)
    merge work), and at most CHUNK rows (summed in x's dtype)."""
    return min(loops.CHUNK, max(64, BLOCK // c))


@njit(cache=True)
def _stats(x, n, c, s, rows, proto):  # type: ignore[no-untyped-def]
    if rows:
        return loops.stats_rows(
            carray(_pointer(x, proto), (n * s, c)), _rows_per_block(c), ROW_TASKS
        )
    return loops.stats_ncs(carray(_pointer(x, proto), (n, c, s)), NCS_BLOCK)


@njit(cache=True)
def _normalize(x, y, n, c, s, rows, mean, scale, shift, act, proto):  # type: ignore[no-untyped-def]
    """y = act((x - mean) * scale + shift), per-channel float64 constants cast to x's type."""
    m = _cast(mean, proto)
    sc = _cast(scale, proto)
    sh = _cast(shift, proto)
    if rows:
        loops.normalize_rows(
            carray(_pointer(x, proto), (n * s, c)),
            m,
            sc,
            sh,
            act,
            proto,
            carray(_pointer(y, proto), (n * s, c)),
            _rows_per_block(c),
        )
    else:
        loops.normalize_ncs(
            carray(_pointer(x, proto), (n, c, s)),
            m,
            sc,
            sh,
            act,
            proto,
            carray(_pointer(y, proto), (n, c, s)),
            NCS_BLOCK,
        )


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


@njit(cache=True, nogil=True)
def train_forward(  # type: ignore[no-untyped-def]
    x, y, n, c, s, rows, weight, bias, eps, act, mean_out, var_out, invstd_out,
    rm, rv, nbt, momentum, proto, by_channel,
):  # fmt: skip
    """Batch statistics, then (if y != 0) y = act(xhat * weight + bias); x read twice.

    Writes the batch mean, biased variance and invstd (if their addresses are not 0) and folds
    the batch into the running statistics (if given). Returns False if the statistics were
    not finite (running statistics and counter then untouched). ``by_channel`` (ncs only):
    one task per channel, whose second read of x then comes from cache.
    """
    if y != 0 and by_channel and not rows:
        mean, var = loops.train_ncs_by_channel(
            carray(_pointer(x, proto), (n, c, s)),
            _read(weight, c, 1.0, proto),
            _read(bias, c, 0.0, proto),
            eps,
            act,
            proto,
            carray(_pointer(y, proto), (n, c, s)),
        )
    else:
        mean, var = _stats(x, n, c, s, rows, proto)
    invstd = 1.0 / np.sqrt(var + eps)
    _write(mean_out, mean, proto)
    _write(var_out, var, proto)
    _write(invstd_out, invstd, proto)
    finite = _fold_running(mean, var, n * s, rm, rv, nbt, momentum, proto)
    if y != 0 and not (by_channel and not rows):
        scale = invstd * _read(weight, c, 1.0, proto)
        _normalize(x, y, n, c, s, rows, mean, scale, _read(bias, c, 0.0, proto), act, proto)
    return finite


@njit(cache=True, nogil=True)
def affine_forward(  # type: ignore[no-untyped-def]
    x, y, n, c, s, rows, weight, bias, mean, spread, spread_is_var, eps, act, proto
):
    """y = act((x - mean) * invstd * weight + bias) in one pass over x.

    ``spread`` is the variance (invstd = 1 / sqrt(var + eps): eval with running statistics)
    when ``spread_is_var``, else invstd itself.
    """
    spread64 = _read(spread, c, 1.0, proto)
    invstd = 1.0 / np.sqrt(spread64 + eps) if spread_is_var else spread64
    scale = invstd * _read(weight, c, 1.0, proto)
    m = _read(mean, c, 0.0, proto)
    _normalize(x, y, n, c, s, rows, m, scale, _read(bias, c, 0.0, proto), act, proto)


@njit(cache=True, nogil=True)
def backward(  # type: ignore[no-untyped-def]
    dy, x, dx, n, c, s, rows, weight, bias, mean, invstd, batch_stats, act,
    dweight_out, dbias_out, proto, by_channel,
):  # fmt: skip
    """Pass 1: sum(dz), sum(dz * (x - mean)) in float64; pass 2 (if dx != 0) writes dx.

    dz = dy * act'(z), z recomputed from x. Writes sum(dz * xhat) to ``dweight_out`` and
    sum(dz) to ``dbias_out``. dx = scale * (dz - k1 - (x - mean) * k2) with k1 = sum(dz) / M,
    k2 = invstd^2 * sum(dz * (x - mean)) / M in training, k1 = k2 = 0 in eval.
    ``by_channel`` (ncs only): one task per channel, both passes in a row (see train_forward).
    """
    i64 = _read(invstd, c, 1.0, proto)
    m64 = _read(mean, c, 0.0, proto)
    m = _cast(m64, proto)
    sc = _cast(i64 * _read(weight, c, 1.0, proto), proto)
    sh = _cast(_read(bias, c, 0.0, proto), proto)
    if by_channel and not rows:
        x3 = carray(_pointer(x, proto), (n, c, s))
        dx3 = carray(_pointer(dx, proto), (n, c, s)) if dx != 0 else np.empty((0, 0, 0), x3.dtype)
        sum_dz, sum_dzxc = loops.bwd_ncs_by_channel(
            carray(_pointer(dy, proto), (n, c, s)), x3, m, sc, sh, act, proto, i64, batch_stats,
            dx3,
        )  # fmt: skip
        _write(dweight_out, sum_dzxc * i64, proto)
        _write(dbias_out, sum_dz, proto)
        return
    if rows:
        x2 = carray(_pointer(x, proto), (n * s, c))
        dy2 = carray(_pointer(dy, proto), (n * s, c))
        sum_dz, sum_dzxc = loops.bwd_sums_rows(
            dy2, x2, m, sc, sh, act, _rows_per_block(c), ROW_TASKS
        )
    else:
        x3 = carray(_pointer(x, proto), (n, c, s))
        dy3 = carray(_pointer(dy, proto), (n, c, s))
        sum_dz, sum_dzxc = loops.bwd_sums_ncs(dy3, x3, m, sc, sh, act, NCS_BLOCK)
    sum_dz_xhat = sum_dzxc * i64
    _write(dweight_out, sum_dz_xhat, proto)
    _write(dbias_out, sum_dz, proto)
    if dx == 0:
        return
    count = n * s
    if batch_stats:
        k1 = _cast(sum_dz / count, proto)
        k2 = _cast(i64 * sum_dz_xhat / count, proto)
    else:
        k1 = _cast(np.zeros(c), proto)
        k2 = k1
    if rows:
        loops.bwd_dx_rows(
            carray(_pointer(dy, proto), (n * s, c)),
            carray(_pointer(x, proto), (n * s, c)),
            m, sc, sh, act, proto, k1, k2,
            carray(_pointer(dx, proto), (n * s, c)),
            _rows_per_block(c),
        )  # fmt: skip
    else:
        loops.bwd_dx_ncs(
            carray(_pointer(dy, proto), (n, c, s)),
            carray(_pointer(x, proto), (n, c, s)),
            m, sc, sh, act, proto, k1, k2,
            carray(_pointer(dx, proto), (n, c, s)),
            NCS_BLOCK,
        )  # fmt: skip
