"""Batch normalization as the tutorials teach it, in NumPy: the readable version and the oracle.

The input is (N, C) or (N, C, *spatial); every statistic is per channel, over all other axes.
Three steps forward (Ioffe & Szegedy 2015, Algorithm 1):

1. mini-batch mean and (biased) variance:  mu = mean(x),  var = mean((x - mu)^2)
2. normalize:                             xhat = (x - mu) / sqrt(var + eps)
3. scale and shift:                       y = gamma * xhat + beta

Backward, with M values per channel (the chain rule through all three steps, simplified):

    dbeta  = sum(dy)
    dgamma = sum(dy * xhat)
    dx     = gamma / sqrt(var + eps) / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))

Everything is computed in float64. Not fast; that is not its job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _axes(x: np.ndarray) -> tuple[int, ...]:
    """Every axis but the channel axis 1."""
    return (0, *range(2, x.ndim))


def _per_channel(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reshape a (C,) vector to broadcast against x (N, C, *spatial)."""
    return v.reshape(1, -1, *([1] * (x.ndim - 2)))


@dataclass
class Cache:
    """What the backward step needs from the forward step."""

    xhat: np.ndarray
    invstd: np.ndarray
    gamma: np.ndarray


def forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Cache]:
    """Training-mode batch norm. Returns (y, batch mean, biased batch variance, cache)."""
    x = np.asarray(x, dtype=np.float64)
    gamma = np.asarray(gamma, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    axes = _axes(x)
    # Step 1: mini-batch mean and variance.
    mu = x.mean(axis=axes)
    var = ((x - _per_channel(mu, x)) ** 2).mean(axis=axes)
    # Step 2: normalize.
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - _per_channel(mu, x)) * _per_channel(invstd, x)
    # Step 3: scale and shift.
    y = _per_channel(gamma, x) * xhat + _per_channel(beta, x)
    return y, mu, var, Cache(xhat=xhat, invstd=invstd, gamma=gamma)


def backward(dy: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dgamma, dbeta) of training-mode batch norm."""
    dy = np.asarray(dy, dtype=np.float64)
    xhat = cache.xhat
    axes = _axes(xhat)
    m = xhat.size // xhat.shape[1]
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    scale = _per_channel(cache.gamma * cache.invstd / m, xhat)
    dx = scale * (m * dy - _per_channel(dbeta, xhat) - xhat * _per_channel(dgamma, xhat))
    return dx, dgamma, dbeta


def inference(
    x: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float = 1e-5,
) -> np.ndarray:
    """Eval-mode batch norm: the same three steps with the running statistics as mu and var."""
    x = np.asarray(x, dtype=np.float64)
    invstd = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)
    xhat = (x - _per_channel(np.asarray(running_mean, np.float64), x)) * _per_channel(invstd, x)
    return _per_channel(np.asarray(gamma, np.float64), x) * xhat + _per_channel(
        np.asarray(beta, np.float64), x
    )


def update_running(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    mu: np.ndarray,
    var: np.ndarray,
    count: int,
    momentum: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's convention: new = (1 - momentum) * old + momentum * batch, unbiased variance."""
    unbiased = var * count / (count - 1)
    return (
        (1 - momentum) * running_mean + momentum * mu,
        (1 - momentum) * running_var + momentum * unbiased,
    )
