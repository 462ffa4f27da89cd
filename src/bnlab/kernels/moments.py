"""Chan's parallel merge of per-channel moments: the one Python home of the rule.

Data split into parts with counts n_k, means m_k and sums of squared deviations from their own
mean M2_k (per channel) has ``n = sum n_k``, ``mean = sum n_k m_k / n`` and
``M2 = sum M2_k + sum n_k (m_k - mean)^2`` (Chan, Golub & LeVeque 1979): exact, with no
E[x^2] - E[x]^2 cancellation. SyncBN merges the ranks' statistics with it and ``recalibrate``
the batches'. The compiled CPU kernels merge their tasks' partial sums the same way inside
Numba (``cpu_numba._chan_merge``); tests/test_kernels_cpu.py checks those statistics against the
two-pass reference.
"""

from __future__ import annotations

import torch

__all__ = ["combine_moments"]


def combine_moments(
    counts: torch.Tensor, means: torch.Tensor, m2s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge K parts' moments into those of their union.

    Args:
        counts: (K,) values per channel in each part (may be 0).
        means: (K, C) per-part means (any finite value where the count is 0).
        m2s: (K, C) per-part sums of squared deviations from the part's own mean.

    Returns:
        ``(n, mean, m2)``: the total count (0-dim), the mean (C,) and the sum of squared
        deviations (C,) of the union, in the dtype of ``means``. With ``n == 0`` the mean and M2
        are 0.
    """
    n = counts.sum()
    weights = counts / n.clamp(min=1)  # (K,); all zero when n == 0
    mean = (weights[:, None] * means).sum(0)
    dev = means - mean
    m2 = m2s.sum(0) + (counts[:, None] * dev * dev).sum(0)
    return n, mean, m2
