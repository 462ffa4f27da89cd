"""The NumPy textbook version against hand-computed values and float64 PyTorch."""

from __future__ import annotations

import numpy as np
import torch

from bnlab.kernels import reference


def test_forward_matches_hand_computed_values(assert_close):
    # One channel, values 1, 2, 3, 6: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5.
    x = np.array([[1.0], [2.0], [3.0], [6.0]])
    y, mu, var, _ = reference.forward(x, np.array([2.0]), np.array([0.5]), eps=0.0)
    assert_close(mu, [3.0], atol=0, what="mean")
    assert_close(var, [3.5], atol=1e-15, what="variance")
    expected = 2.0 * (x - 3.0) / np.sqrt(3.5) + 0.5
    assert_close(y, expected, atol=1e-15, what="output")


def test_forward_and_backward_match_float64_torch(assert_close):
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=(5, 3, 4, 2))
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    dy = rng.normal(size=x.shape)
    y, _, _, cache = reference.forward(x, gamma, beta, eps=1e-5)
    dx, dgamma, dbeta = reference.backward(dy, cache)

    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    yt = torch.nn.functional.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-5)
    yt.backward(torch.tensor(dy))
    assert_close(y, yt, atol=1e-12, what="output")
    assert_close(dx, xt.grad, atol=1e-12, what="dx")
    assert_close(dgamma, gt.grad, atol=1e-12, what="dgamma")
    assert_close(dbeta, bt.grad, atol=1e-12, what="dbeta")


def test_inference_and_running_update_follow_pytorch(assert_close):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 4))
    bn = torch.nn.BatchNorm1d(4, dtype=torch.float64)
    bn(torch.tensor(x))
    _, mu, var, _ = reference.forward(x, np.ones(4), np.zeros(4))
    rm, rv = reference.update_running(np.zeros(4), np.ones(4), mu, var, count=6, momentum=0.1)
    assert_close(rm, bn.running_mean, atol=1e-14, what="running_mean")
    assert_close(rv, bn.running_var, atol=1e-14, what="running_var")
    bn.eval()
    y = reference.inference(x, rm, rv, np.ones(4), np.zeros(4))
    assert_close(y, bn(torch.tensor(x)).detach(), atol=1e-13, what="eval output")
