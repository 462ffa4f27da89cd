"""TorchScript, torch.jit.trace, torch.export, torch.func transforms and double backward.

Every check compares against an independent reference: eager bnlab (same kernels, other front
door), torch's own batch norm under the same transform, and float64 gradcheck/gradgradcheck.
Outputs, input and parameter gradients and the running statistics are all compared.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnlab
from bnlab.functional import batch_norm, batch_norm_act

# torch 2.13 deprecates torch.jit; these tests exercise it on purpose
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

# float32 tolerances: two implementations of the same formulas (another summation order)
TOL = {"atol": 2e-5, "rtol": 2e-5}
TIGHT = {"atol": 1e-6, "rtol": 1e-6}  # the same kernels behind another front door

# name: (bnlab layer, torch equivalent, input shape); the torch equivalent's BN is its first
# module when it is a Sequential (norm then activation)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module], tuple[int, ...]]] = {
    "BatchNorm1d-NC": (lambda: bnlab.BatchNorm1d(4), lambda: nn.BatchNorm1d(4), (6, 4)),
    "BatchNorm1d-NCL": (lambda: bnlab.BatchNorm1d(4), lambda: nn.BatchNorm1d(4), (6, 4, 5)),
    "BatchNorm2d": (lambda: bnlab.BatchNorm2d(4), lambda: nn.BatchNorm2d(4), (6, 4, 3, 5)),
    "BatchNorm3d": (lambda: bnlab.BatchNorm3d(4), lambda: nn.BatchNorm3d(4), (6, 4, 2, 3, 3)),
    "BatchNorm2d-no-affine-cumulative": (
        lambda: bnlab.BatchNorm2d(4, affine=False, momentum=None),
        lambda: nn.BatchNorm2d(4, affine=False, momentum=None),
        (6, 4, 3, 3),
    ),
    "BatchNorm2d-no-bias": (
        lambda: bnlab.BatchNorm2d(4, bias=False),
        lambda: nn.BatchNorm2d(4, bias=False),
        (6, 4, 3, 3),
    ),
    "BatchNorm2d-untracked": (
        lambda: bnlab.BatchNorm2d(4, track_running_stats=False),
        lambda: nn.BatchNorm2d(4, track_running_stats=False),
        (6, 4, 3, 3),
    ),
    "BatchNormAct1d-relu": (
        lambda: bnlab.BatchNormAct1d(4, activation="relu"),
        lambda: nn.Sequential(nn.BatchNorm1d(4), nn.ReLU()),
        (6, 4, 5),
    ),
    "BatchNormAct2d-silu": (
        lambda: bnlab.BatchNormAct2d(4, activation="silu"),
        lambda: nn.Sequential(nn.BatchNorm2d(4), nn.SiLU()),
        (6, 4, 3, 3),
    ),
    "BatchNormAct2d-hardswish-unfused": (
        lambda: bnlab.BatchNormAct2d(4, activation=nn.Hardswish()),
        lambda: nn.Sequential(nn.BatchNorm2d(4), nn.Hardswish()),
        (6, 4, 3, 3),
    ),
}


def _bn_of(theirs: nn.Module) -> nn.Module:
    return theirs[0] if isinstance(theirs, nn.Sequential) else theirs


def _pair(case: str) -> tuple[nn.Module, nn.Module, tuple[int, ...]]:
    """A bnlab layer and its torch twin with the same random parameters and statistics."""
    make_ours, make_theirs, shape = CASES[case]
    ours, theirs = make_ours(), make_theirs()
    bn = _bn_of(theirs)
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.uniform_(0.5, 1.5)
        if bn.bias is not None:
            bn.bias.normal_()
        if bn.track_running_stats:
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.num_batches_tracked.fill_(3)
    ours.load_state_dict(bn.state_dict())
    return ours, theirs, shape


def _copy_state(dst: nn.Module, src: nn.Module) -> None:
    """Overwrite dst's parameters and buffers with src's (tracing a training model moves its
    running statistics: the tracer runs the forward)."""
    with torch.no_grad():
        for (name, d), s in zip(dst.state_dict().items(), src.state_dict().values(), strict=True):
            assert d.shape == s.shape, name
            d.copy_(s)


def _step(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output, input gradient and parameter gradients of one forward/backward, by name."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y = module(x)
    (y * dy).sum().backward()
    assert x.grad is not None
    results = {"output": y.detach(), "input grad": x.grad}
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        results[f"grad of {name}"] = p.grad
    return results


def _graph(kind: str, layer: nn.Module, example: torch.Tensor) -> nn.Module:
    graph = copy.deepcopy(layer)
    if kind == "script":
        return torch.jit.script(graph)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # a clean trace: no warnings
        traced = torch.jit.trace(graph, example)
    _copy_state(traced, layer)
    return traced


# ------------------------------------------------------------ TorchScript and torch.jit.trace


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["script", "trace"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_graph_module_matches_eager_and_torch(case, kind, training, assert_close):
    """Outputs, gradients and running statistics of a scripted/traced layer, two steps.

    The second step changes the batch size: a traced graph must compute the running variance's
    n / (n - 1) from the input it gets, not keep the example's.
    """
    ours, theirs, shape = _pair(case)
    ours.train(training)
    theirs.train(training)
    graph = _graph(kind, ours, torch.randn(shape))
    for step, batch in enumerate((shape[0], shape[0] + 3)):
        x = torch.randn((batch, *shape[1:]))
        dy = torch.randn_like(x)
        got, eager = _step(graph, x, dy), _step(ours, x, dy)
        ref = dict(zip(eager, _step(theirs, x, dy).values(), strict=True))  # "0.weight": ...
        assert list(got) == list(eager)
        for name, g in got.items():
            assert_close(g, eager[name], **TIGHT, what=f"{kind} {name} vs eager, step {step}")
            assert_close(g, ref[name], **TOL, what=f"{kind} {name} vs torch, step {step}")
        for (name, b), e, r in zip(
            graph.named_buffers(), ours.buffers(), _bn_of(theirs).buffers(), strict=True
        ):
            assert_close(b, e, **TIGHT, what=f"{kind} buffer {name} vs eager bnlab, step {step}")
            assert_close(b, r, **TOL, what=f"{kind} buffer {name} vs torch, step {step}")


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        bnlab.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        bnlab.BatchNormAct2d(8, activation="silu"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
        bnlab.BatchNormAct1d(5, activation="relu", momentum=None),
    )


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_graph_model_trains_like_eager(kind, assert_close):
    """A CNN with bnlab layers, scripted or traced: three training steps, then eval."""
    eager = _cnn()
    graph = _graph(kind, eager, torch.randn(4, 3, 6, 6))
    for step in range(3):
        x, dy = torch.randn(4, 3, 6, 6), torch.randn(4, 5)
        got, expected = _step(graph, x, dy), _step(eager, x, dy)
        assert list(got) == list(expected)
        for name, g in got.items():
            tol = 1e-5 if name in ("output", "input grad") else 1e-4  # sums over the batch
            assert_close(g, expected[name], atol=tol, rtol=tol, what=f"{kind} {name}, step {step}")
    for (name, b), be in zip(graph.named_buffers(), eager.buffers(), strict=True):
        assert_close(b, be, atol=1e-6, rtol=1e-6, what=f"{kind} buffer {name}")
    eager.eval()
    x = torch.randn(4, 3, 6, 6)
    # a traced graph keeps the mode it was traced in (as with torch's layers): trace it again
    graph = graph.eval() if kind == "script" else _graph(kind, eager, x)
    assert_close(graph(x), eager(x), atol=1e-6, rtol=1e-6, what=f"{kind} eval output")


def test_scripted_model_saves_and_loads(assert_close):
    """torch.jit.save/load keeps the graph and every buffer (the state_dict keys are eager's)."""
    model = _cnn().eval()
    scripted = torch.jit.script(copy.deepcopy(model))
    assert list(scripted.state_dict()) == list(model.state_dict())
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = torch.randn(2, 3, 6, 6)
    assert_close(loaded(x), model(x), atol=1e-6, rtol=1e-6, what="loaded scripted model")


def test_graph_modules_refuse_wrong_inputs():
    scripted = torch.jit.script(bnlab.BatchNorm2d(4))
    with pytest.raises(torch.jit.Error, match=r"expected 4D input \(got 3D input\)"):
        scripted(torch.randn(2, 4, 3))
    with pytest.raises(RuntimeError, match="weight should have 5 elements"):
        scripted(torch.randn(2, 5, 3, 3))
    traced = _graph("trace", bnlab.BatchNorm2d(4, affine=False).eval(), torch.randn(2, 4, 3, 3))
    with pytest.raises(RuntimeError, match="running_mean should have 5 elements"):
        traced(torch.randn(2, 5, 3, 3))


def test_ops_check_their_arguments():
    """The custom ops are entry points of their own (graphs call them without Python checks)."""
    x, w = torch.randn(4, 3), torch.ones(3)
    with pytest.raises(ValueError, match="weight should have 3 elements"):
        torch.ops.bnlab.batch_norm_forward(x, torch.ones(2), None, None, None, 1e-5, "identity")
    with pytest.raises(ValueError, match="activation must be one of"):
        torch.ops.bnlab.batch_norm_forward(x, w, None, None, None, 1e-5, "gelu")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.ops.bnlab.batch_norm_forward(x[:1], w, None, None, None, 1e-5, "identity")
    with pytest.raises(ValueError, match="momentum must be >= 0"):
        torch.ops.bnlab.update_running_stats(w, w, w, w, 4, -0.5, None)
    with pytest.raises(ValueError, match="running_var should have 3 elements"):
        torch.ops.bnlab.update_running_stats(w, torch.ones(2), w, w, 4, 0.1, None)


def test_frozen_layer_traces_vmaps_and_double_backwards(assert_close):
    """FrozenBatchNorm2d runs on batch_norm in eval: tracing, vmap and double backward come along
    (scripting it would need its own forward changed, see bnlab.layers.frozen)."""
    frozen = bnlab.FrozenBatchNorm2d(4)
    with torch.no_grad():
        for buffer, value in (("weight", 1.5), ("bias", 0.5), ("running_mean", 0.2)):
            getattr(frozen, buffer).fill_(value)
    x = torch.randn(3, 5, 4, 3, 3)
    expected = torch.stack([frozen(xi) for xi in x])
    traced = _graph("trace", frozen, x[0])
    assert_close(torch.stack([traced(xi) for xi in x]), expected, **TIGHT, what="traced")
    assert_close(torch.func.vmap(frozen)(x), expected, **TOL, what="vmap")
    xd = x[0].double().requires_grad_()
    assert torch.autograd.gradgradcheck(frozen.double(), (xd,))


# ------------------------------------------------------------------------------ torch.export


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_exported_program_matches_eager(training, assert_close):
    """torch.export (the custom ops, no graph break): outputs, gradients, running statistics."""
    eager = _cnn().train(training)
    exported = torch.export.export(copy.deepcopy(eager), (torch.randn(4, 3, 6, 6),)).module()
    _copy_state(exported, eager)
    for step in range(2):
        x, dy = torch.randn(4, 3, 6, 6), torch.randn(4, 5)
        got, expected = _step(exported, x, dy), _step(eager, x, dy)
        assert list(got) == list(expected)
        for name, g in got.items():
            assert_close(g, expected[name], **TIGHT, what=f"exported {name}, step {step}")
    eager_state = eager.state_dict()
    for name, b in exported.state_dict().items():
        assert_close(b, eager_state[name], **TIGHT, what=f"exported state {name}")


# ----------------------------------------------------------------------- torch.func transforms


def _pair_for_transforms(track: bool = True) -> tuple[nn.Module, nn.Module]:
    ours, theirs, _ = _pair("BatchNorm2d" if track else "BatchNorm2d-untracked")
    return ours, theirs


@pytest.mark.parametrize("layout", ["in_dims=0", "in_dims=1", "channels_last"])
def test_vmap_in_eval_matches_torch(layout, assert_close):
    ours, theirs = (m.eval() for m in _pair_for_transforms())
    x = torch.randn(3, 5, 4, 3, 3)
    expected = torch.func.vmap(theirs)(x)
    if layout == "in_dims=1":
        got = torch.func.vmap(ours, in_dims=1)(x.transpose(0, 1))
    elif layout == "channels_last":
        x_cl = x.reshape(15, 4, 3, 3).contiguous(memory_format=torch.channels_last)
        got = torch.func.vmap(ours)(x_cl.reshape(3, 5, 4, 3, 3))
    else:
        got = torch.func.vmap(ours)(x)
    assert_close(got, expected, **TOL, what=f"vmap eval output ({layout})")


@pytest.mark.parametrize("case", ["BatchNorm2d-untracked", "BatchNormAct2d-silu"])
def test_vmap_in_training_without_running_stats_matches_torch(case, assert_close):
    """Each vmapped slice is normalized with its own batch statistics."""
    ours, theirs, shape = _pair(case)
    if case == "BatchNormAct2d-silu":  # vmap in training needs track_running_stats=False
        ours = bnlab.BatchNormAct2d(4, activation="silu", track_running_stats=False)
        theirs = nn.Sequential(nn.BatchNorm2d(4, track_running_stats=False), nn.SiLU())
        ours.load_state_dict(_bn_of(theirs).state_dict())
    x = torch.randn(3, *shape)
    assert_close(torch.func.vmap(ours)(x), torch.func.vmap(theirs)(x), **TOL, what="vmap train")


def test_vmap_in_training_with_unbatched_running_stats_raises_like_torch():
    ours, theirs = _pair_for_transforms()
    x = torch.randn(3, 5, 4, 3, 3)
    with pytest.raises(RuntimeError, match="were not batched"):
        torch.func.vmap(theirs)(x)
    before = ours.running_mean.clone()
    with pytest.raises(RuntimeError, match=r"were not batched.*track_running_stats=False"):
        torch.func.vmap(ours)(x)
    assert torch.equal(ours.running_mean, before)


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum=0.1", "momentum=None"])
def test_vmap_over_stacked_models_updates_each_models_buffers(momentum, assert_close):
    """Model ensembling (torch.func.stack_module_state): batched buffers are updated in place,
    each as its own model run eagerly would be, and as torch's are (torch's ensemble raises with
    momentum=None: its layer reads num_batches_tracked with .item(), which vmap refuses)."""
    ours = [bnlab.BatchNorm2d(4, momentum=momentum) for _ in range(3)]
    with torch.no_grad():
        for model in ours:
            model.weight.uniform_(0.5, 1.5)
            model.bias.normal_()
    eager = copy.deepcopy(ours)
    theirs = [nn.BatchNorm2d(4, momentum=momentum) for _ in range(3)]
    for model, twin in zip(ours, theirs, strict=True):
        twin.load_state_dict(model.state_dict())
    params, buffers = torch.func.stack_module_state(ours)
    t_params, t_buffers = torch.func.stack_module_state(theirs)

    def call(model: nn.Module) -> Callable[..., torch.Tensor]:
        return lambda p, b, x: torch.func.functional_call(model, (p, b), (x,))

    for step in range(2):
        x = torch.randn(3, 5, 4, 3, 3)
        got = torch.func.vmap(call(ours[0]))(params, buffers, x)
        expected = torch.stack([model(xi) for model, xi in zip(eager, x, strict=True)])
        assert_close(got, expected, **TIGHT, what=f"ensemble output vs each model, step {step}")
        if momentum is not None:
            t_got = torch.func.vmap(call(theirs[0]))(t_params, t_buffers, x)
            assert_close(got, t_got, **TOL, what=f"ensemble output vs torch, step {step}")
    for name in buffers:
        each = torch.stack([model.state_dict()[name] for model in eager])
        assert_close(buffers[name], each, **TIGHT, what=f"ensemble buffer {name} vs each model")
        if momentum is not None:
            assert_close(buffers[name], t_buffers[name], **TOL, what=f"ensemble buffer {name}")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_functional_call_matches_torch(training, assert_close):
    ours, theirs = (m.train(training) for m in _pair_for_transforms())
    params = {"weight": torch.rand(4) + 0.5, "bias": torch.randn(4)}
    x = torch.randn(6, 4, 3, 3)
    got = torch.func.functional_call(ours, params, (x,))
    expected = torch.func.functional_call(theirs, params, (x,))
    assert_close(got, expected, **TOL, what="functional_call output")
    for (name, b), bt in zip(ours.named_buffers(), theirs.buffers(), strict=True):
        assert_close(b, bt, **TOL, what=f"buffer {name} after functional_call")


@pytest.mark.parametrize("training", [True, False], ids=["train-untracked", "eval"])
def test_grad_of_functional_call_matches_torch(training, assert_close):
    ours, theirs = _pair_for_transforms(track=not training)
    ours, theirs = ours.train(training).double(), theirs.train(training).double()
    params = {name: p.detach() for name, p in ours.named_parameters()}
    x = torch.randn(6, 4, 3, 3, dtype=torch.float64)

    def loss(model: nn.Module) -> Callable[..., torch.Tensor]:
        return lambda p, x: torch.func.functional_call(model, p, (x,)).pow(3).sum()

    got = torch.func.grad(loss(ours), argnums=(0, 1))(params, x)
    expected = torch.func.grad(loss(theirs), argnums=(0, 1))(params, x)
    for name in params:
        assert_close(got[0][name], expected[0][name], atol=1e-10, what=f"grad of {name}")
    assert_close(got[1], expected[1], atol=1e-10, what="grad of the input")


def test_per_sample_gradients_match_torch(assert_close):
    """vmap(grad) in eval mode, the per-sample-gradient recipe."""
    ours, theirs = (m.eval().double() for m in _pair_for_transforms())
    params = {name: p.detach() for name, p in ours.named_parameters()}
    x = torch.randn(5, 4, 3, 3, dtype=torch.float64)

    def per_sample(model: nn.Module) -> dict[str, torch.Tensor]:
        def loss(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(model, p, (xi.unsqueeze(0),)).pow(3).sum()

        return torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)

    got, expected = per_sample(ours), per_sample(theirs)
    for name in params:
        assert_close(got[name], expected[name], atol=1e-10, what=f"per-sample grad of {name}")


def test_grad_in_training_updates_running_stats_like_functional_torch(assert_close):
    """Under torch.func.grad the running statistics (captured buffers) are updated as eager does,
    as torch.nn.functional.batch_norm does. (torch's BatchNorm *modules* raise here: their
    ``num_batches_tracked += 1`` is an in-place change of a captured tensor.)"""
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    w = torch.rand(4, dtype=torch.float64) + 0.5
    ours_rm, ours_rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    theirs_rm, theirs_rv = ours_rm.clone(), ours_rv.clone()
    counter = torch.tensor(0)

    def ours(w: torch.Tensor) -> torch.Tensor:
        y = batch_norm(x, ours_rm, ours_rv, w, None, True, 0.1, num_batches_tracked=counter)
        return y.pow(3).sum()

    def theirs(w: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, theirs_rm, theirs_rv, w, None, True, 0.1).pow(3).sum()

    assert_close(torch.func.grad(ours)(w), torch.func.grad(theirs)(w), atol=1e-10, what="grad")
    assert_close(ours_rm, theirs_rm, atol=1e-12, what="running_mean")
    assert_close(ours_rv, theirs_rv, atol=1e-12, what="running_var")
    assert int(counter) == 1


def test_jvp_and_hessian_match_torch(assert_close):
    """Forward-mode AD and second derivatives under transforms (torch ops compose with both)."""
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    w, b = torch.rand(4, dtype=torch.float64) + 0.5, torch.randn(4, dtype=torch.float64)
    tangent = torch.randn_like(x)
    got = torch.func.jvp(lambda x: batch_norm_act(x, None, None, w, b, True), (x,), (tangent,))
    expected = torch.func.jvp(
        lambda x: F.relu(F.batch_norm(x, None, None, w, b, True)), (x,), (tangent,)
    )
    assert_close(got[1], expected[1], atol=1e-10, what="jvp")

    def hess(fn: Callable[..., torch.Tensor]) -> torch.Tensor:
        return torch.func.hessian(lambda w: fn(x, None, None, w, b, True).pow(3).sum())(w)

    assert_close(hess(batch_norm), hess(F.batch_norm), atol=1e-9, what="hessian in weight")


# ------------------------------------------------------------------------------ double backward


def _gradgrad_fn(activation: str, training: bool) -> Callable[..., torch.Tensor]:
    rm = torch.randn(3, dtype=torch.float64)
    rv = torch.rand(3, dtype=torch.float64) + 0.5

    def fn(x: torch.Tensor, *affine: torch.Tensor) -> torch.Tensor:
        w, b = affine if affine else (None, None)
        stats = (None, None) if training else (rm, rv)
        if activation == "identity":
            return batch_norm(x, *stats, w, b, training)
        return batch_norm_act(x, *stats, w, b, training, activation=activation)

    return fn


@pytest.mark.parametrize("activation", ["identity", "relu", "silu"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
def test_gradgradcheck(activation, training, affine):
    x = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
    affine_args = (
        (
            (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_(),
            torch.randn(3, dtype=torch.float64, requires_grad=True),
        )
        if affine
        else ()
    )
    fn = _gradgrad_fn(activation, training)
    assert torch.autograd.gradcheck(fn, (x, *affine_args))
    assert torch.autograd.gradgradcheck(fn, (x, *affine_args))


@pytest.mark.parametrize("activation", ["identity", "relu", "silu"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradient_penalty_matches_torch(activation, training, assert_close):
    """A gradient penalty (create_graph=True, then backward) against torch in float64; the
    create_graph gradients also equal the first-order ones of the compiled kernels."""
    x0 = torch.randn(6, 3, 4, dtype=torch.float64)
    w0, b0 = torch.rand(3, dtype=torch.float64) + 0.5, torch.randn(3, dtype=torch.float64)
    rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    act = {"identity": lambda y: y, "relu": F.relu, "silu": F.silu}[activation]

    def ours(x, w, b):
        stats = (None, None) if training else (rm, rv)
        return batch_norm_act(x, *stats, w, b, training, activation=activation)

    def theirs(x, w, b):
        stats = (None, None) if training else (rm, rv)
        return act(F.batch_norm(x, *stats, w, b, training))

    results = []
    for fn in (ours, theirs):
        x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
        loss = fn(x, w, b).pow(3).sum()
        grads = torch.autograd.grad(loss, (x, w, b), create_graph=True)
        first_order = torch.autograd.grad(fn(x, w, b).pow(3).sum(), (x, w, b))
        sum(g.square().sum() for g in grads).backward()
        results.append((grads, first_order, (x.grad, w.grad, b.grad)))
    (grads, first_order, second), (t_grads, _, t_second) = results
    for name, g, f, tg in zip("xwb", grads, first_order, t_grads, strict=True):
        assert_close(g, tg, atol=1e-10, what=f"create_graph grad of {name} vs torch")
        assert_close(g, f, atol=1e-10, what=f"create_graph grad of {name} vs first order")
    for name, s, ts in zip("xwb", second, t_second, strict=True):
        assert_close(s, ts, atol=1e-9, rtol=1e-9, what=f"penalty grad of {name} vs torch")


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_graph_module_double_backward(kind):
    """Double backward through the custom ops' autograd formula (the path of graphs)."""
    layer = bnlab.BatchNormAct2d(3, activation="silu").double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.normal_()
    graph = _graph(kind, layer, torch.randn(4, 3, 2, 2, dtype=torch.float64))
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(graph, (x,))
