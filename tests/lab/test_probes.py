"""Probes: results against independent NumPy/float64 references, and the model left unchanged."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import bnlab
from bnlab.lab.probes import (
    ActivationProbe,
    InputShiftProbe,
    ProbeConfig,
    RunProbes,
    filter_normalized_direction,
    find_layer,
    gradient_predictiveness,
    ics_measure,
    loss_surface,
    parse_probes,
)


def tiny_cnn(bn: bool, seed: int = 0) -> nn.Sequential:
    """A small twin of tutorial 001's network1/network2 (8x8 input)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2)]
    if bn:
        layers.append(bnlab.BatchNorm2d(3))
    layers += [nn.Flatten(), nn.Linear(27, 16), nn.ReLU()]
    if bn:
        layers.append(bnlab.BatchNorm1d(16))
    layers += [nn.Linear(16, 10)]
    return nn.Sequential(*layers)


def data(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def test_find_layer_by_name_and_type_index_and_error_lists_layers() -> None:
    plain, with_bn = tiny_cnn(False), tiny_cnn(True)
    assert find_layer(plain, "Linear#1")[0] == "6"
    assert find_layer(with_bn, "Linear#1")[0] == "8"
    assert find_layer(with_bn, "3")[1] is with_bn[3]
    with pytest.raises(ValueError, match=r"no layer 'fc9'.*0 \(Conv2d#0\).*Linear#1"):
        find_layer(plain, "fc9")
    with pytest.raises(ValueError, match="layers that exist"):
        ActivationProbe(plain, "Linear#5")
    with pytest.raises(ValueError, match="unknown probe"):
        parse_probes("activations,bogus")


def test_activation_percentiles_match_numpy_and_hook_removed() -> None:
    model = tiny_cnn(True)
    x, _ = data()
    batches = [x[:32], x[32:]]
    inputs: list[np.ndarray] = []
    model[8].register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach().numpy().copy()))
    before = hook_count(model)
    with ActivationProbe(model, "Linear#1", units=(0, 5)) as probe:
        assert hook_count(model) == before + 1
        for b in batches:
            model(b)
        model.eval()
        model(x)  # eval forwards are not recorded
        model.train()
    assert hook_count(model) == before
    r = probe.result()
    assert r["steps"] == [0, 1]
    for step, inp in enumerate(inputs[:2]):
        ref = np.quantile(inp[:, [0, 5]], [0.15, 0.5, 0.85], axis=0).T
        got = np.array(r["percentiles"][step])
        diff = np.abs(got - ref).max()
        assert diff < 1e-5, f"max difference {diff}"
    counts, edges = np.array(r["hist_last"]["counts"]), np.array(r["hist_last"]["edges"])
    assert abs((counts * np.diff(edges)).sum() - 1.0) < 1e-9
    assert edges[0] == pytest.approx(inputs[1].min()) and edges[-1] == pytest.approx(
        inputs[1].max()
    )


def test_hook_removed_when_training_raises() -> None:
    model = tiny_cnn(False)
    with pytest.raises(RuntimeError), ActivationProbe(model, "Linear#0"):
        model(torch.randn(4, 1, 7, 7))  # wrong size: Linear raises
    assert hook_count(model) == 0


def test_input_shift_matches_numpy() -> None:
    model = tiny_cnn(False)
    xs = [data(16, seed=s)[0] * (1 + s) + s for s in range(3)]
    with InputShiftProbe(model, "Conv2d#0") as probe:
        for x in xs:
            model(x)
    r = probe.result()
    means = np.array([x.numpy().mean(axis=(0, 2, 3)) for x in xs])
    vars_ = np.array([x.numpy().var(axis=(0, 2, 3)) for x in xs])
    assert np.abs(np.array(r["mean"]) - means).max() < 1e-5
    assert np.abs(np.array(r["var"]) - vars_).max() < 1e-4
    drift = means.std(axis=0).mean() / np.sqrt(vars_.mean(axis=0)).mean()
    assert r["drift"] == pytest.approx(drift, rel=1e-5)


def _reference_ics(model: nn.Module, x, y, lr: float) -> tuple[float, float]:
    """Float64 copy; earlier layer (Linear 0) stepped by SGD; gradient of layer 2's weight."""
    m = copy.deepcopy(model).double()
    loss_fn = nn.CrossEntropyLoss()
    w0, b0, w2, b2 = m[0].weight, m[0].bias, m[2].weight, m[2].bias
    g = torch.autograd.grad(loss_fn(m(x.double()), y), [w0, b0, w2, b2])
    with torch.no_grad():
        w0 -= lr * g[0]
        b0 -= lr * g[1]
    g2 = torch.autograd.grad(loss_fn(m(x.double()), y), [w2, b2])
    a = torch.cat([g[2].flatten(), g[3].flatten()])
    b = torch.cat([g2[0].flatten(), g2[1].flatten()])
    return float((a - b).norm()), float(a @ b / (a.norm() * b.norm()))


def test_ics_matches_float64_reference_and_leaves_model_unchanged() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 3, (20,))
    model(x).sum().backward()  # leave some gradients behind; they must survive
    state = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    r = ics_measure(model, nn.CrossEntropyLoss(), x, y, layer="Linear#1", lr=0.5)
    l2, cos = _reference_ics(model, x, y, lr=0.5)
    assert abs(r["l2"] - l2) < 1e-10, f"l2 {r['l2']} vs {l2}"
    assert abs(r["cosine"] - cos) < 1e-10
    assert r["l2"] > 1e-4  # the update did change the gradient
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    for p, g in zip(model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)


def test_ics_with_optimizer_restores_its_state() -> None:
    model = tiny_cnn(True)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = data()
    nn.CrossEntropyLoss()(model(x), y).backward()
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    state = copy.deepcopy(model.state_dict())
    r = ics_measure(model, nn.CrossEntropyLoss(), x, y, "Linear#1", optimizer=opt)
    assert r["l2"] > 0 and -1 <= r["cosine"] <= 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    now = opt.state_dict()["state"]
    for i, s in saved["state"].items():
        for k, v in s.items():
            assert torch.equal(now[i][k], v), (i, k)


def test_filter_normalized_direction() -> None:
    model = tiny_cnn(True)
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for p, u in zip(model.parameters(), d, strict=True):
        if p.dim() <= 1:
            assert torch.count_nonzero(u) == 0
        else:
            pn = p.detach().flatten(1).norm(dim=1)
            un = u.flatten(1).norm(dim=1)
            assert torch.allclose(pn, un, rtol=1e-5), (pn - un).abs().max()


def test_loss_surface_against_manual_evaluation() -> None:
    model = tiny_cnn(True)
    x, y = data()
    loss_fn = nn.CrossEntropyLoss()
    state = copy.deepcopy(model.state_dict())
    r = loss_surface(model, loss_fn, [(x[:32], y[:32]), (x[32:], y[32:])], steps=5, seed=7)
    assert len(r["loss"]) == 5 and len(r["loss"][0]) == 5
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    gen = torch.Generator().manual_seed(7)
    d1 = filter_normalized_direction(model, gen)
    d2 = filter_normalized_direction(model, gen)
    a, b = r["alphas"][4], r["betas"][1]
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for p, u, v in zip(probe.parameters(), d1, d2, strict=True):
            p.add_(a * u + b * v)
    ref = (loss_fn(probe(x[:32]), y[:32]) + loss_fn(probe(x[32:]), y[32:])) / 2
    assert abs(r["loss"][1][4] - float(ref.detach())) < 1e-5
    assert r["loss"][2][2] == pytest.approx(r["center"], abs=1e-6)
    with pytest.raises(ValueError, match="steps must be in"):
        loss_surface(model, loss_fn, [(x, y)], steps=22)


def test_gradient_predictiveness_least_squares_closed_form() -> None:
    torch.manual_seed(0)
    X, t = torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 1, dtype=torch.float64)
    model = nn.Linear(4, 1, bias=False).double()
    r = gradient_predictiveness(model, nn.MSELoss(), X, t, step_sizes=(0.1, 0.3))
    Xn, w = X.numpy(), model.weight.detach().numpy().T
    H = 2 / 30 * Xn.T @ Xn
    g = H @ w - 2 / 30 * Xn.T @ t.numpy()
    for eta, change, beta in zip((0.1, 0.3), r["grad_change"], r["beta"], strict=True):
        ref = np.linalg.norm(eta * H @ g)
        assert abs(change - ref) < 1e-10, f"{change} vs {ref}"
        assert abs(beta - ref / (eta * np.linalg.norm(g))) < 1e-10
        loss_ref = np.mean((Xn @ (w - eta * g) - t.numpy()) ** 2)
        assert abs(r["loss"][(0.1, 0.3).index(eta)] - loss_ref) < 1e-10


def _train(model: nn.Module, names: list[str]) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    x, y = data(96)
    cfg = ProbeConfig(layer="Linear#1", ics_every=2, landscape_steps=3, progress=False)
    with RunProbes(names, model, loss_fn, opt, cfg) as probes:
        for _ in range(2):
            for i in range(0, 96, 32):
                xb, yb = x[i : i + 32], y[i : i + 32]
                probes.before_step(xb, yb)
                opt.zero_grad()
                loss_fn(model(xb), yb).backward()
                opt.step()
            probes.after_epoch(x[:32], y[:32])
        probes.finish([(x[:48], y[:48])])
    assert hook_count(model) == 0
    return probes.result()


@pytest.mark.parametrize("bn", [False, True])
def test_probed_training_ends_with_the_same_weights(bn: bool) -> None:
    plain, probed = tiny_cnn(bn), tiny_cnn(bn)
    off = _train(plain, [])
    on = _train(probed, ["activations", "ics", "landscape"])
    assert off["probes"] == []
    for (k, a), b in zip(plain.state_dict().items(), probed.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{k}: max difference {(a.float() - b.float()).abs().max()}"
    assert on["activations"]["steps"] == list(range(6))
    assert len(on["ics"]) == 3 and len(on["smoothness"]) == 2
    assert len(on["shift"]["mean"]) == 6
    assert len(on["landscape"]["loss"]) == 3


def test_run_probes_checks_layer_before_training() -> None:
    model = tiny_cnn(False)
    with pytest.raises(ValueError, match=r"no layer 'fc2'.*Linear#0"):
        RunProbes(["ics"], model, nn.CrossEntropyLoss(), config=ProbeConfig(layer="fc2"))


def test_trainer_probes_off_costs_nothing_and_on_saves(tmp_path) -> None:
    from bnlab.lab.probes.for_run import TrainerProbes, probe_path

    model = tiny_cnn(True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data(64)
    path = probe_path(tmp_path, 1)
    off = TrainerProbes([], model, opt, nn.CrossEntropyLoss(), x, y, 32, path)
    off.attach()
    assert off.before_step is None and hook_count(model) == 0
    off.after_epoch()
    off.finish()
    off.close()
    assert not path.exists()
    on = TrainerProbes(["activations", "ics"], model, opt, nn.CrossEntropyLoss(), x, y, 32, path)
    try:
        on.attach()
        assert hook_count(model) == 2 and on.before_step is not None
        on.before_step(x[:32], y[:32])
        model(x[:32])
        raise KeyboardInterrupt  # an interrupted run still saves what it measured
    except KeyboardInterrupt:
        pass
    finally:
        on.close()
    assert hook_count(model) == 0
    saved = json.loads(path.read_text())
    assert saved["activations"]["steps"] == [0] and len(saved["ics"]) == 1
