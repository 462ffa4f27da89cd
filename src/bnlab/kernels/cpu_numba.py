"""Numba kernels behind ``bnlab.kernels.cpu`` (compiled lazily on first call, cached on disk).

Two layouts, both C-contiguous NumPy views that share memory with the torch tensors:

``ncs``  (N, C, S): contiguous NC*L / NCHW / NCDHW input, S = product of the spatial sizes;
         work is split in tasks of about ``block`` values of one channel (several samples when
         S is small, a slice of one sample when S is large), so N and C both feed the cores.
``rows`` (R, C):    (N, C) input and channels_last input seen as rows of C channels; work is
         split in blocks of rows, each with its own per-channel accumulators.

Accuracy: sums run in x's dtype over one row of a task (ncs: at most ``block`` values, so each
of the 32 vector lanes LLVM uses adds at most 128; rows layout: at most ``CHUNK`` rows) and in
float64 beyond. Each task computes its mean, then the sum
of squared deviations from that mean (two passes over values still in cache), and the per-task
(count, mean, M2) triples are merged in float64 with Chan et al.'s pairwise formula, so a
channel like 1e4 + N(0, 1) in float32 keeps its variance (never E[x^2] - E[x]^2).

fastmath allows reassociation and contraction only (so the sums vectorize); NaN and Inf
keep their IEEE meaning ("nnan"/"ninf" are not set), which the running-statistics guard needs.

Folded shift: the forward loops compute y = act(x * s + b) with b = shift - mean * s (folded in
float64, rounded once): one fused multiply-add per value instead of a subtraction and a
multiply-add, 20-30% faster on data in cache. Its error is about |mean * s| ulps of 1, from
rounding b; centering first (x - mean) has an error of the same size from rounding the mean,
except that it is exact where x equals a representable mean (a constant channel: y = shift
exactly). So the loops fold only when every |mean * s| <= ``FOLD_LIMIT`` and center otherwise
(measured on float32 against float64, offsets 0.5-100: folded 0.3-1.0e-6, centered
0.4-1.5e-6). The backward loops work on x - mean.

Activation codes (``act``): 0 identity, 1 ReLU, 2 SiLU, 3 Hardswish, applied to the
pre-activation z, with torch's formulas (``_silu``, ``_hardswish`` and their slopes). Each
kernel branches on ``act`` outside its inner loops, so each loop vectorizes: the kernels use
NumPy's error model (a division by zero gives inf, as in C, instead of a check that would keep
LLVM from vectorizing), and float32 SiLU uses ``_exp32``, a polynomial exp that vectorizes
where libm's exp does not (relative error below 1e-7, like libm's float32 exp).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

_FAST = {"reassoc", "contract", "nsz", "arcp"}

#: the forward loops fold the shift when every |mean * scale| is at most this (see the module
#: docstring): the folded shift's rounding error, about |mean * scale| ulps of 1, then stays
#: below the rounding of an output of that size.
FOLD_LIMIT = 8.0

#: at most this many values are summed in x's dtype (in several vector lanes) before joining a
#: float64 total: few enough that float32 rounding stays at a few ulps per lane. ncs rows are
#: at most ``block`` values, rows-layout blocks at most CHUNK rows.
CHUNK = 256


@intrinsic
def _float32_from_bits(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float32 whose IEEE bits are the int32 ``bits``."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True, fastmath={"contract"})
def _exp32(x):  # type: ignore[no-untyped-def]
    """exp(x) in float32 (Cody-Waite range reduction, Cephes' degree-5 polynomial), written in
    operations LLVM vectorizes. Not fastmath beyond contraction: reassociating the two-part
    range reduction would cost its accuracy. Clamped to float32's finite range."""
    x = x if x > np.float32(-87.33) else np.float32(-87.33)
    x = x if x < np.float32(88.72) else np.float32(88.72)
    # round(x / ln 2) with the 1.5 * 2**23 trick (no call to floor)
    n = (x * np.float32(1.44269504088896341) + np.float32(12582912.0)) - np.float32(12582912.0)
    r = x - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = p * (r * r) + r + np.float32(1)
    return y * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))  # type: ignore[call-arg]


def _exp(x):  # type: ignore[no-untyped-def]
    """exp in compiled code: ``_exp32`` for float32, libm's for float64 (see the overload)."""
    return np.exp(x)


@overload(_exp)
def _exp_for(x):  # type: ignore[no-untyped-def]
    if x == types.float32:
        return lambda x: _exp32(x)
    return lambda x: np.exp(x)


@njit(cache=True, error_model="numpy")
def _silu(z, one):  # type: ignore[no-untyped-def]
    """torch's SiLU: z * sigmoid(z)."""
    return z / (one + _exp(-z))


@njit(cache=True, error_model="numpy")
def _silu_slope(z, one):  # type: ignore[no-untyped-def]
    """d SiLU / dz = sigmoid(z) * (1 + z * (1 - sigmoid(z))), as torch's silu_backward."""
    sg = one / (one + _exp(-z))
    return sg * (one + z * (one - sg))


@njit(cache=True, error_model="numpy")
def _hardswish(z, one):  # type: ignore[no-untyped-def]
    """torch's Hardswish: z * min(max(z + 3, 0), 6) / 6."""
    t = z + 3 * one
    t = t if t > 0 else one - one
    t = t if t < 6 * one else 6 * one
    return z * t / (6 * one)


@njit(cache=True, error_model="numpy")
def _hardswish_slope(z, one):  # type: ignore[no-untyped-def]
    """torch's hardswish_backward: 0 below -3, z / 3 + 1/2 up to 3, 1 above (selects, not
    branches, so that the loops calling it vectorize)."""
    slope = z * (one / 3) + one / 2
    slope = slope if z <= 3 * one else one
    return slope if not z < -3 * one else one - one


@njit(cache=True)
def _plan(N: int, S: int, block: int) -> tuple[int, int, int]:
    """Tasks per channel for the ncs layout: (slices per sample, samples per task, tasks)."""
    if block <= S:
        sb = (S + block - 1) // block
        return sb, 1, N * sb
    nn = max(1, block // S)
    return 0, nn, (N + nn - 1) // nn


@njit(cache=True)
def _task(r: int, N: int, S: int, sb: int, nn: int, block: int) -> tuple[int, int, int, int]:
    """Sample range [n0, n1) and spatial range [s0, s1) of task ``r`` of a channel."""
    if sb > 0:
        n = r // sb
        s0 = (r % sb) * block
        return n, n + 1, s0, min(S, s0 + block)
    n0 = r * nn
    return n0, min(N, n0 + nn), 0, S


@njit(cache=True)
def _chan_merge(cnt, mu, m2, lo, hi, stride):  # type: ignore[no-untyped-def]
    """Merge partial (count, mean, M2) at lo, lo+stride, ... < hi; returns (mean, biased var)."""
    na = 0.0
    ma = 0.0
    qa = 0.0
    for t in range(lo, hi, stride):
        nb = cnt[t]
        if nb == 0:
            continue
        n = na + nb
        d = mu[t] - ma
        ma += d * (nb / n)
        qa += m2[t] + d * d * (na * nb / n)
        na = n
    return ma, qa / na


# ----------------------------------------------------------------------------------- ncs layout
# One span is x[n0:n1, c, s0:s1]: rows of s1 - s0 contiguous values of channel c. The span
# helpers hold the loops; the kernels below only cut the work into spans.


@njit(cache=True, nogil=True)
def _row(a, n, c, s0, s1):  # type: ignore[no-untyped-def]
    """a[n, c, s0:s1]: the span of a row the span functions below loop over, as a view of the
    whole row when it is the whole row. A loop over a slice with run-time bounds took 1.3-1.7x
    as long on rows of 16-49 values (LLVM checks the slices for overlap on every row), and the
    tasks of one channel at a time (``train_ncs_by_channel``, ``bwd_ncs_by_channel``) always
    span whole rows: on (8, 240, 7, 7), 1 thread, backward 66 -> 62 us, training forward
    64 -> 59 us."""
    if s0 == 0 and s1 == a.shape[2]:
        return a[n, c]
    return a[n, c, s0:s1]


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _moments_span(x, c, n0, n1, s0, s1):  # type: ignore[no-untyped-def]
    """(count, mean, M2) of a span: per-row sums in x's dtype, float64 across rows."""
    acc = 0.0
    for n in range(n0, n1):
        xr = _row(x, n, c, s0, s1)
        part = x.dtype.type(0)
        for j in range(xr.size):
            part += xr[j]
        acc += part
    k = (n1 - n0) * (s1 - s0)
    m = acc / k
    mx = x.dtype.type(m)
    q = 0.0
    for n in range(n0, n1):
        xr = _row(x, n, c, s0, s1)
        part = x.dtype.type(0)
        for j in range(xr.size):
            d = xr[j] - mx
            part += d * d
        q += part
    dm = m - mx  # deviations were taken from mx, the mean rounded to x's dtype
    return k, m, max(0.0, q - k * dm * dm)


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _normalize_span(x, y, c, n0, n1, s0, s1, mc, sc, bc, centered, act, one):  # type: ignore[no-untyped-def]
    """y = act((x - mc) * sc + bc) on a span if ``centered``, else act(x * sc + bc) (bc then
    holds the folded shift: see the module docstring)."""
    zero = one - one
    for n in range(n0, n1):
        xr = _row(x, n, c, s0, s1)
        yr = _row(y, n, c, s0, s1)
        if act == 0:
            for i in range(xr.size):
                yr[i] = (xr[i] - mc if centered else xr[i]) * sc + bc
        elif act == 1:
            for i in range(xr.size):
                z = (xr[i] - mc if centered else xr[i]) * sc + bc
                yr[i] = z if not z < 0 else zero
        elif act == 2:
            for i in range(xr.size):
                yr[i] = _silu((xr[i] - mc if centered else xr[i]) * sc + bc, one)
        else:
            for i in range(xr.size):
                yr[i] = _hardswish((xr[i] - mc if centered else xr[i]) * sc + bc, one)


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _grad_sums_span(dy, x, c, n0, n1, s0, s1, mc, sc, bc, act):  # type: ignore[no-untyped-def]
    """(sum(dz), sum(dz * (x - mc))) over a span in float64, dz = dy * act'(z).

    Each row is summed in x's dtype, rows in float64. SiLU and Hardswish in their own function:
    their loops here would keep LLVM from inlining this one into the per-channel loops (the
    backward on (16, 576, 4, 4) took 1.6x as long).
    """
    if act >= 2:
        return _smooth_grad_sums_span(dy, x, c, n0, n1, s0, s1, mc, sc, bc, act)
    zero = x.dtype.type(0)
    a1 = 0.0
    a2 = 0.0
    for n in range(n0, n1):
        xr = _row(x, n, c, s0, s1)
        dyr = _row(dy, n, c, s0, s1)
        q1 = zero
        q2 = zero
        if act == 0:
            for i in range(xr.size):
                g = dyr[i]
                q1 += g
                q2 += g * (xr[i] - mc)
        else:
            for i in range(xr.size):
                xc = xr[i] - mc
                g = dyr[i] if xc * sc + bc > 0 else zero
                q1 += g
                q2 += g * xc
        a1 += q1
        a2 += q2
    return a1, a2


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _smooth_grad_sums_span(dy, x, c, n0, n1, s0, s1, mc, sc, bc, act):  # type: ignore[no-untyped-def]
    """``_grad_sums_span`` for SiLU (act 2) and Hardswish (3)."""
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    a1 = 0.0
    a2 = 0.0
    for n in range(n0, n1):
        xr = _row(x, n, c, s0, s1)
        dyr = _row(dy, n, c, s0, s1)
        q1 = zero
        q2 = zero
        if act == 2:
            for i in range(xr.size):
                xc = xr[i] - mc
                g = dyr[i] * _silu_slope(xc * sc + bc, one)
                q1 += g
                q2 += g * xc
        else:
            for i in range(xr.size):
                xc = xr[i] - mc
                g = dyr[i] * _hardswish_slope(xc * sc + bc, one)
                q1 += g
                q2 += g * xc
        a1 += q1
        a2 += q2
    return a1, a2


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _smooth_dz_span(dy, x, dz, c, n0, n1, s0, s1, mc, sc, bc, act):  # type: ignore[no-untyped-def]
    """``_smooth_grad_sums_span``, also storing dz = dy * act'(z) into ``dz`` (dx's memory):
    the dx pass that follows (``_grad_input_in_place_span``) then reads it instead of
    recomputing the activation's slope (an exp and a division per value for SiLU). Two
    functions, not one with a flag: a store under a test kept the SiLU loop from vectorizing
    (backward on (16, 72, 28, 28), 1 thread: 0.83 -> 1.65 ms)."""
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    a1 = 0.0
    a2 = 0.0
    for n in range(n0, n1):
        xr = _row(x, n, c, s0, s1)
        dyr = _row(dy, n, c, s0, s1)
        dzr = _row(dz, n, c, s0, s1)
        q1 = zero
        q2 = zero
        if act == 2:
            for i in range(xr.size):
                xc = xr[i] - mc
                g = dyr[i] * _silu_slope(xc * sc + bc, one)
                dzr[i] = g
                q1 += g
                q2 += g * xc
        else:
            for i in range(xr.size):
                xc = xr[i] - mc
                g = dyr[i] * _hardswish_slope(xc * sc + bc, one)
                dzr[i] = g
                q1 += g
                q2 += g * xc
        a1 += q1
        a2 += q2
    return a1, a2


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _grad_input_in_place_span(x, dz, c, n0, n1, s0, s1, mc, sc, c1, c2):  # type: ignore[no-untyped-def]
    """dx = sc * (dz - c1 - (x - mc) * c2), written over dz (``_smooth_dz_span``'s)."""
    for n in range(n0, n1):
        xr = _row(x, n, c, s0, s1)
        dzr = _row(dz, n, c, s0, s1)
        for i in range(xr.size):
            dzr[i] = sc * (dzr[i] - c1 - (xr[i] - mc) * c2)


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _grad_input_span(dy, x, dx, c, n0, n1, s0, s1, mc, sc, bc, act, one, c1, c2):  # type: ignore[no-untyped-def]
    """dx = sc * (dz - c1 - (x - mc) * c2) on a span."""
    zero = one - one
    for n in range(n0, n1):
        xr = _row(x, n, c, s0, s1)
        dyr = _row(dy, n, c, s0, s1)
        dxr = _row(dx, n, c, s0, s1)
        if act == 0:
            for i in range(xr.size):
                dxr[i] = sc * (dyr[i] - c1 - (xr[i] - mc) * c2)
        elif act == 1:
            for i in range(xr.size):
                xc = xr[i] - mc
                z = xc * sc + bc
                g = dyr[i] if z > 0 else zero
                dxr[i] = sc * (g - c1 - xc * c2)
        elif act == 2:
            for i in range(xr.size):
                xc = xr[i] - mc
                dxr[i] = sc * (dyr[i] * _silu_slope(xc * sc + bc, one) - c1 - xc * c2)
        else:
            for i in range(xr.size):
                xc = xr[i] - mc
                dxr[i] = sc * (dyr[i] * _hardswish_slope(xc * sc + bc, one) - c1 - xc * c2)


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def stats_ncs(x, block):  # type: ignore[no-untyped-def]
    """Per-channel (mean, biased var) in float64: tasks' (count, mean, M2), Chan-merged."""
    N, C, S = x.shape
    sb, nn, P = _plan(N, S, block)
    cnt = np.empty(C * P)
    mu = np.empty(C * P)
    m2 = np.empty(C * P)
    for t in prange(C * P):
        c = t // P
        n0, n1, s0, s1 = _task(t % P, N, S, sb, nn, block)
        cnt[t], mu[t], m2[t] = _moments_span(x, c, n0, n1, s0, s1)
    mean = np.empty(C)
    var = np.empty(C)
    for c in prange(C):
        mean[c], var[c] = _chan_merge(cnt, mu, m2, c * P, (c + 1) * P, 1)
    return mean, var


@njit(cache=True)
def _ncs_piece(t: int, C: int, P: int, S: int, block: int) -> tuple[int, int, int, int]:
    """(n, c, s0, s1) of task ``t`` of ``normalize_ncs``: tasks in memory order, sample after
    sample, channel after channel, each row of S values in P pieces of at most ``block``."""
    n = t // (C * P)
    r = t - n * (C * P)
    c = r // P
    s0 = (r - c * P) * block
    return n, c, s0, min(S, s0 + block)


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def normalize_ncs(x, m, s, b, centered, act, one, y, block):  # type: ignore[no-untyped-def]
    """y = act((x - m) * s + b) if ``centered``, else act(x * s + b); m, s, b per channel in
    x's dtype.

    Tasks in memory order: one per (sample, channel) row, or per piece of at most ``block``
    values of a longer row (``_ncs_piece``). Rows up to ``block`` values run in a parallel loop
    per activation, written out, over whole-row views: on rows of 49 values a loop over a
    slice with run-time bounds (``_normalize_span``'s) took 1.7x as long (LLVM then checks
    the two slices for overlap on every row), and inside real networks these loops halved the
    eval time per layer (mobilenet_v3_small, batch 32, 112 px: 51 -> 36 us above a plain
    copy; ``bnlab.bench.layer_cost``'s method). Longer rows amortize the slices.
    """
    N, C, S = x.shape
    P = (S + block - 1) // block
    if P > 1:
        for t in prange(N * C * P):
            n, c, s0, s1 = _ncs_piece(t, C, P, S, block)
            _normalize_span(x, y, c, n, n + 1, s0, s1, m[c], s[c], b[c], centered, act, one)
        return
    zero = one - one
    if act == 0:
        for t in prange(N * C):
            n = t // C
            c = t - n * C
            xr = x[n, c]
            yr = y[n, c]
            mc = m[c]
            sc = s[c]
            bc = b[c]
            for i in range(S):
                yr[i] = (xr[i] - mc if centered else xr[i]) * sc + bc
    elif act == 1:
        for t in prange(N * C):
            n = t // C
            c = t - n * C
            xr = x[n, c]
            yr = y[n, c]
            mc = m[c]
            sc = s[c]
            bc = b[c]
            for i in range(S):
                z = (xr[i] - mc if centered else xr[i]) * sc + bc
                yr[i] = z if not z < 0 else zero
    elif act == 2:
        for t in prange(N * C):
            n = t // C
            c = t - n * C
            xr = x[n, c]
            yr = y[n, c]
            mc = m[c]
            sc = s[c]
            bc = b[c]
            for i in range(S):
                yr[i] = _silu((xr[i] - mc if centered else xr[i]) * sc + bc, one)
    else:
        for t in prange(N * C):
            n = t // C
            c = t - n * C
            xr = x[n, c]
            yr = y[n, c]
            mc = m[c]
            sc = s[c]
            bc = b[c]
            for i in range(S):
                yr[i] = _hardswish((xr[i] - mc if centered else xr[i]) * sc + bc, one)


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def bwd_sums_ncs(dy, x, m, s, b, act, block):  # type: ignore[no-untyped-def]
    """Per channel, in float64: sum(dz) and sum(dz * (x - m)), dz = dy * act'(z)."""
    N, C, S = x.shape
    sb, nn, P = _plan(N, S, block)
    p1 = np.empty(C * P)
    p2 = np.empty(C * P)
    for t in prange(C * P):
        c = t // P
        n0, n1, s0, s1 = _task(t % P, N, S, sb, nn, block)
        p1[t], p2[t] = _grad_sums_span(dy, x, c, n0, n1, s0, s1, m[c], s[c], b[c], act)
    s1o = np.zeros(C)
    s2o = np.zeros(C)
    for c in prange(C):
        u = 0.0
        v = 0.0
        for t in range(c * P, (c + 1) * P):
            u += p1[t]
            v += p2[t]
        s1o[c] = u
        s2o[c] = v
    return s1o, s2o


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def bwd_dx_ncs(dy, x, m, s, b, act, one, k1, k2, dx, block):  # type: ignore[no-untyped-def]
    """dx = s * (dz - k1 - (x - m) * k2), per channel constants in x's dtype."""
    N, C, S = x.shape
    sb, nn, P = _plan(N, S, block)
    for t in prange(C * P):
        c = t // P
        n0, n1, s0, s1 = _task(t % P, N, S, sb, nn, block)
        _grad_input_span(dy, x, dx, c, n0, n1, s0, s1, m[c], s[c], b[c], act, one, k1[c], k2[c])


# ncs layout, one task per channel: when a channel's data fits in a core's L2 cache, the pass
# that needs the channel's sums (normalize, dx) reads it from cache, not from memory: x (and dy)
# cross the memory bus once. See ``cpu_entries.CHANNEL_BYTES``.


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def train_ncs_by_channel(x, weight, bias, eps, act, one, y):  # type: ignore[no-untyped-def]
    """Statistics then y = act(xhat * weight + bias), channel by channel; (mean, var) float64."""
    N, C, S = x.shape
    mean = np.empty(C)
    var = np.empty(C)
    for c in prange(C):
        k, m, q = _moments_span(x, c, 0, N, 0, S)
        v = q / k
        scale = weight[c] / np.sqrt(v + eps)
        centered = not abs(m * scale) <= FOLD_LIMIT
        shift = bias[c] if centered else bias[c] - m * scale
        _normalize_span(
            x, y, c, 0, N, 0, S, x.dtype.type(m), x.dtype.type(scale), x.dtype.type(shift),
            centered, act, one,
        )  # fmt: skip
        mean[c] = m
        var[c] = v
    return mean, var


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def bwd_ncs_by_channel(dy, x, m, s, b, act, one, invstd, batch_stats, dx):  # type: ignore[no-untyped-def]
    """Both backward passes channel by channel; returns (sum(dz), sum(dz * (x - m))) float64.

    m, s, b per channel in x's dtype (s = invstd * weight); ``invstd`` float64; dx written
    unless it is empty.
    """
    N, C, S = x.shape
    s1o = np.empty(C)
    s2o = np.empty(C)
    count = N * S
    smooth = act >= 2 and dx.size != 0  # dz kept in dx between the passes, see _smooth_dz_span
    for c in prange(C):
        if smooth:
            a1, a2 = _smooth_dz_span(dy, x, dx, c, 0, N, 0, S, m[c], s[c], b[c], act)
        else:
            a1, a2 = _grad_sums_span(dy, x, c, 0, N, 0, S, m[c], s[c], b[c], act)
        s1o[c] = a1
        s2o[c] = a2
        if dx.size == 0:
            continue
        c1 = x.dtype.type(a1 / count) if batch_stats else one - one
        c2 = x.dtype.type(invstd[c] * invstd[c] * a2 / count) if batch_stats else one - one
        if smooth:
            _grad_input_in_place_span(x, dx, c, 0, N, 0, S, m[c], s[c], c1, c2)
        else:
            _grad_input_span(dy, x, dx, c, 0, N, 0, S, m[c], s[c], b[c], act, one, c1, c2)
    return s1o, s2o


# ---------------------------------------------------------------------------------- rows layout
# x is (R, K): rows of K columns. (N, C) and channels_last input: R = N * S rows of the K = C
# channels. The ``cols`` view of contiguous input with short spatial rows (``cpu_entries``):
# R = N rows of K = C * S values, channel c owning columns [c * S, (c + 1) * S), where a loop
# over one channel's S values would be too short to vectorize; ``stats_cols`` and
# ``normalize_rows`` serve it, the latter with per-channel constants expanded to one value per
# column. The loops run over contiguous columns, which LLVM vectorizes.


@njit(cache=True)
def _row_tasks(R: int, rb: int, ntasks: int) -> tuple[int, int, int]:
    """(row blocks, blocks per task, tasks): at most ``ntasks`` tasks of whole row blocks."""
    nsub = (R + rb - 1) // rb
    per = (nsub + max(1, min(ntasks, nsub)) - 1) // max(1, min(ntasks, nsub))
    return nsub, per, (nsub + per - 1) // per


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def stats_rows(x, rb, ntasks):  # type: ignore[no-untyped-def]
    """Each task owns whole blocks of ``rb`` rows and private float64 (C,) accumulators.

    The inner loops run over contiguous channels (``s[c] += x[r, c]``), which LLVM
    vectorizes. Per block (at most ``CHUNK`` rows, summed in x's dtype): mean, then squared
    deviations (block still in cache); blocks and then tasks are merged in float64 with
    Chan's formula, whose factors are scalars here (every channel of a block has the same
    count), so the merges are vector loops too.
    """
    R, C = x.shape
    nsub, per, T = _row_tasks(R, rb, ntasks)
    tn = np.zeros(T)
    tm = np.zeros((T, C))
    tq = np.zeros((T, C))
    for t in prange(T):
        ma = tm[t]
        qa = tq[t]
        s = np.empty(C, x.dtype)
        q = np.empty(C, x.dtype)
        mx = np.empty(C, x.dtype)
        na = 0.0
        for sub in range(t * per, min(nsub, (t + 1) * per)):
            r0 = sub * rb
            r1 = min(R, r0 + rb)
            s[:] = 0
            for r in range(r0, r1):
                xr = x[r]
                for c in range(C):
                    s[c] += xr[c]
            k = r1 - r0
            inv = 1.0 / k
            for c in range(C):
                mx[c] = s[c] * inv
            q[:] = 0
            for r in range(r0, r1):
                xr = x[r]
                for c in range(C):
                    d = xr[c] - mx[c]
                    q[c] += d * d
            n = na + k
            f1 = k / n
            f2 = na * k / n
            for c in range(C):
                mb = np.float64(s[c]) * inv
                dm = mb - mx[c]  # deviations were taken from mx, the mean in x's dtype
                d = mb - ma[c]
                ma[c] += d * f1
                qa[c] += max(0.0, q[c] - k * dm * dm) + d * d * f2
            na = n
        tn[t] = na
    mean = tm[0].copy()
    m2 = tq[0].copy()
    na = tn[0]
    for t in range(1, T):
        nb = tn[t]
        n = na + nb
        f1 = nb / n
        f2 = na * nb / n
        for c in range(C):
            d = tm[t, c] - mean[c]
            mean[c] += d * f1
            m2[c] += tq[t, c] + d * d * f2
        na = n
    return mean, m2 / na


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def _group_sums(v, G):  # type: ignore[no-untyped-def]
    """Per channel sums of per-column values, channel c owning columns [c * G, (c + 1) * G)."""
    if G == 1:
        return v
    C = v.size // G
    out = np.empty(C)
    for c in range(C):
        part = v[c * G : (c + 1) * G]
        a = 0.0
        for k in range(G):
            a += part[k]
        out[c] = a
    return out


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _column_sums(x, center, squares, cw):  # type: ignore[no-untyped-def]
    """Per-column float64 sums over the rows of x (R, K): of x, or with ``squares`` of
    (x - center)^2 (``center`` per column, in x's dtype). Tasks of at most CHUNK rows (summed
    in x's dtype) times ``cw`` columns; their partial sums are added in a fixed order."""
    R, K = x.shape
    nb = (R + CHUNK - 1) // CHUNK
    J = (K + cw - 1) // cw
    part = np.empty((nb, K))
    for u in prange(nb * J):
        r0 = (u // J) * CHUNK
        r1 = min(R, r0 + CHUNK)
        k0 = (u % J) * cw
        k1 = min(K, k0 + cw)
        w = k1 - k0
        acc = np.zeros(w, x.dtype)
        if squares:
            ck = center[k0:k1]
            for r in range(r0, r1):
                xr = x[r, k0:k1]
                for c in range(w):
                    d = xr[c] - ck[c]
                    acc[c] += d * d
        else:
            for r in range(r0, r1):
                xr = x[r, k0:k1]
                for c in range(w):
                    acc[c] += xr[c]
        out = part[u // J, k0:k1]
        for c in range(w):
            out[c] = acc[c]
    total = part[0].copy()
    for b in range(1, nb):
        for c in range(K):
            total[c] += part[b, c]
    return total


@njit(cache=True, fastmath=_FAST, error_model="numpy")
def stats_cols(x, G, cw):  # type: ignore[no-untyped-def]
    """Per channel (mean, biased var) in float64 of the cols view x (N, C * G), channel c owning
    columns [c * G, (c + 1) * G): the channel means first, then the squared deviations from
    them (rounded to x's dtype, corrected as in ``_moments_span``): no per-column merges, whose
    float64 work would rival the data's when N is small."""
    R, K = x.shape
    C = K // G
    count = R * G
    sums = _group_sums(_column_sums(x, x[0], False, cw), G)
    mean = sums / count
    mx = np.empty(K, x.dtype)
    for c in range(C):
        mx[c * G : (c + 1) * G] = mean[c]
    q = _group_sums(_column_sums(x, mx, True, cw), G)
    var = np.empty(C)
    for c in range(C):
        dm = mean[c] - np.float64(mx[c * G])
        var[c] = max(0.0, q[c] / count - dm * dm)
    return mean, var


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def normalize_rows(x, m, s, b, centered, act, one, y, rb, cw):  # type: ignore[no-untyped-def]
    """y = act((x - m) * s + b) if ``centered``, else act(x * s + b); m, s, b per column, in
    tasks of ``rb`` rows times at most ``cw`` columns."""
    zero = one - one
    R, K = x.shape
    nb = (R + rb - 1) // rb
    J = (K + cw - 1) // cw
    for u in prange(nb * J):
        r0 = (u // J) * rb
        r1 = min(R, r0 + rb)
        k0 = (u % J) * cw
        k1 = min(K, k0 + cw)
        w = k1 - k0
        mk = m[k0:k1]
        sk = s[k0:k1]
        bk = b[k0:k1]
        if act == 0:
            for r in range(r0, r1):
                xr = x[r, k0:k1]
                yr = y[r, k0:k1]
                for c in range(w):
                    yr[c] = (xr[c] - mk[c] if centered else xr[c]) * sk[c] + bk[c]
        elif act == 1:
            for r in range(r0, r1):
                xr = x[r, k0:k1]
                yr = y[r, k0:k1]
                for c in range(w):
                    z = (xr[c] - mk[c] if centered else xr[c]) * sk[c] + bk[c]
                    yr[c] = z if not z < 0 else zero
        elif act == 2:
            for r in range(r0, r1):
                xr = x[r, k0:k1]
                yr = y[r, k0:k1]
                for c in range(w):
                    yr[c] = _silu((xr[c] - mk[c] if centered else xr[c]) * sk[c] + bk[c], one)
        else:
            for r in range(r0, r1):
                xr = x[r, k0:k1]
                yr = y[r, k0:k1]
                for c in range(w):
                    z = (xr[c] - mk[c] if centered else xr[c]) * sk[c] + bk[c]
                    yr[c] = _hardswish(z, one)


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def bwd_sums_rows(dy, x, m, s, b, act, rb, ntasks):  # type: ignore[no-untyped-def]
    """Tasks of whole row blocks with private (C,) float64 sums (see ``stats_rows``)."""
    R, C = x.shape
    nsub, per, T = _row_tasks(R, rb, ntasks)
    p1 = np.zeros((T, C))
    p2 = np.zeros((T, C))
    zero = x.dtype.type(0)
    for t in prange(T):
        a1 = p1[t]
        a2 = p2[t]
        q1 = np.empty(C, x.dtype)
        q2 = np.empty(C, x.dtype)
        for sub in range(t * per, min(nsub, (t + 1) * per)):
            r0 = sub * rb
            r1 = min(R, r0 + rb)
            if act == 0:
                q1[:] = 0
                q2[:] = 0
                for r in range(r0, r1):
                    xr = x[r]
                    dyr = dy[r]
                    for c in range(C):
                        g = dyr[c]
                        q1[c] += g
                        q2[c] += g * (xr[c] - m[c])
                for c in range(C):
                    a1[c] += q1[c]
                    a2[c] += q2[c]
            elif act == 1:
                q1[:] = 0
                q2[:] = 0
                for r in range(r0, r1):
                    xr = x[r]
                    dyr = dy[r]
                    for c in range(C):
                        xc = xr[c] - m[c]
                        g = dyr[c] if xc * s[c] + b[c] > 0 else zero
                        q1[c] += g
                        q2[c] += g * xc
                for c in range(C):
                    a1[c] += q1[c]
                    a2[c] += q2[c]
            else:
                one = x.dtype.type(1)
                q1[:] = 0
                q2[:] = 0
                if act == 2:
                    for r in range(r0, r1):
                        xr = x[r]
                        dyr = dy[r]
                        for c in range(C):
                            xc = xr[c] - m[c]
                            g = dyr[c] * _silu_slope(xc * s[c] + b[c], one)
                            q1[c] += g
                            q2[c] += g * xc
                else:
                    for r in range(r0, r1):
                        xr = x[r]
                        dyr = dy[r]
                        for c in range(C):
                            xc = xr[c] - m[c]
                            g = dyr[c] * _hardswish_slope(xc * s[c] + b[c], one)
                            q1[c] += g
                            q2[c] += g * xc
                for c in range(C):
                    a1[c] += q1[c]
                    a2[c] += q2[c]
    s1o = p1[0].copy()
    s2o = p2[0].copy()
    for t in range(1, T):
        for c in range(C):
            s1o[c] += p1[t, c]
            s2o[c] += p2[t, c]
    return s1o, s2o


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def bwd_dx_rows(dy, x, m, s, b, act, one, k1, k2, dx, rb, cw):  # type: ignore[no-untyped-def]
    """dx = s * (dz - k1 - (x - m) * k2), constants per column, in tasks of ``rb`` rows times
    at most ``cw`` columns (as ``normalize_rows``)."""
    zero = one - one
    R, K = x.shape
    nb = (R + rb - 1) // rb
    J = (K + cw - 1) // cw
    for u in prange(nb * J):
        r0 = (u // J) * rb
        r1 = min(R, r0 + rb)
        j0 = (u % J) * cw
        j1 = min(K, j0 + cw)
        w = j1 - j0
        mk = m[j0:j1]
        sk = s[j0:j1]
        bk = b[j0:j1]
        c1 = k1[j0:j1]
        c2 = k2[j0:j1]
        if act == 0:
            for r in range(r0, r1):
                xr = x[r, j0:j1]
                dyr = dy[r, j0:j1]
                dxr = dx[r, j0:j1]
                for c in range(w):
                    dxr[c] = sk[c] * (dyr[c] - c1[c] - (xr[c] - mk[c]) * c2[c])
        elif act == 1:
            for r in range(r0, r1):
                xr = x[r, j0:j1]
                dyr = dy[r, j0:j1]
                dxr = dx[r, j0:j1]
                for c in range(w):
                    xc = xr[c] - mk[c]
                    g = dyr[c] if xc * sk[c] + bk[c] > 0 else zero
                    dxr[c] = sk[c] * (g - c1[c] - xc * c2[c])
        elif act == 2:
            for r in range(r0, r1):
                xr = x[r, j0:j1]
                dyr = dy[r, j0:j1]
                dxr = dx[r, j0:j1]
                for c in range(w):
                    xc = xr[c] - mk[c]
                    g = dyr[c] * _silu_slope(xc * sk[c] + bk[c], one)
                    dxr[c] = sk[c] * (g - c1[c] - xc * c2[c])
        else:
            for r in range(r0, r1):
                xr = x[r, j0:j1]
                dyr = dy[r, j0:j1]
                dxr = dx[r, j0:j1]
                for c in range(w):
                    xc = xr[c] - mk[c]
                    g = dyr[c] * _hardswish_slope(xc * sk[c] + bk[c], one)
                    dxr[c] = sk[c] * (g - c1[c] - xc * c2[c])


@njit(parallel=True, cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def bwd_sums_cols(dy, x, m, s, b, act, G, cw):  # type: ignore[no-untyped-def]
    """Per channel, in float64: sum(dz) and sum(dz * (x - m)) over the cols view (see
    ``stats_cols``); m, s, b per column. Tasks of at most CHUNK rows (summed in x's dtype)
    times ``cw`` columns; their partial sums are added in a fixed order."""
    R, K = x.shape
    nb = (R + CHUNK - 1) // CHUNK
    J = (K + cw - 1) // cw
    p1 = np.empty((nb, K))
    p2 = np.empty((nb, K))
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for u in prange(nb * J):
        r0 = (u // J) * CHUNK
        r1 = min(R, r0 + CHUNK)
        k0 = (u % J) * cw
        k1 = min(K, k0 + cw)
        w = k1 - k0
        mk = m[k0:k1]
        sk = s[k0:k1]
        bk = b[k0:k1]
        q1 = np.zeros(w, x.dtype)
        q2 = np.zeros(w, x.dtype)
        for r in range(r0, r1):
            xr = x[r, k0:k1]
            dyr = dy[r, k0:k1]
            if act == 0:
                for c in range(w):
                    g = dyr[c]
                    q1[c] += g
                    q2[c] += g * (xr[c] - mk[c])
            elif act == 1:
                for c in range(w):
                    xc = xr[c] - mk[c]
                    g = dyr[c] if xc * sk[c] + bk[c] > 0 else zero
                    q1[c] += g
                    q2[c] += g * xc
            elif act == 2:
                for c in range(w):
                    xc = xr[c] - mk[c]
                    g = dyr[c] * _silu_slope(xc * sk[c] + bk[c], one)
                    q1[c] += g
                    q2[c] += g * xc
            else:
                for c in range(w):
                    xc = xr[c] - mk[c]
                    g = dyr[c] * _hardswish_slope(xc * sk[c] + bk[c], one)
                    q1[c] += g
                    q2[c] += g * xc
        o1 = p1[u // J, k0:k1]
        o2 = p2[u // J, k0:k1]
        for c in range(w):
            o1[c] = q1[c]
            o2[c] = q2[c]
    t1 = p1[0].copy()
    t2 = p2[0].copy()
    for blk in range(1, nb):
        for c in range(K):
            t1[c] += p1[blk, c]
            t2[c] += p2[blk, c]
    return _group_sums(t1, G), _group_sums(t2, G)
