"""Model-zoo conformance: bnlab on real timm and torchvision architectures nobody here wrote.

For each model (random init, no download): ``convert`` replaces every BN-like layer; a training
step at default settings (in-place activations included) matches torch in float32 and float64
(output, every gradient, every running statistic); eval matches; with randomized running
statistics, ``fold_batchnorm`` and ``freeze`` keep the eval outputs; ``recalibrate`` gives the
population statistics computed independently in float64; converting back to torch is exact;
``torch.export`` works. Inputs are small (batch 4, 64x64) so the suite fits in CI.

Differences are measured relative to the largest value of the reference tensor
(``max|a - b| / max(|b|)``), since gradients of different layers differ by orders of magnitude,
with a floor of ``FLOOR`` for the scale: some running means are zero up to rounding (the mean of
a bias-free conv of normalized inputs), and their rounding is no signal.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import bnlab
from bnlab.transforms.layer_classes import role_of

#: model name -> (library, builder name)
MODELS: dict[str, tuple[str, str]] = {
    "timm/resnet18": ("timm", "resnet18"),
    "timm/mobilenetv3_small_050": ("timm", "mobilenetv3_small_050"),
    "timm/efficientnet_b0": ("timm", "efficientnet_b0"),
    "timm/regnetx_002": ("timm", "regnetx_002"),
    "torchvision/resnet18": ("torchvision", "resnet18"),
    "torchvision/mobilenet_v3_small": ("torchvision", "mobilenet_v3_small"),
}
BATCH, SIZE, CLASSES = 4, 64, 10
#: relative tolerances (see the module docstring), float32 and float64
TOL = {torch.float32: 1e-2, torch.float64: 1e-9}
FLOOR = 1e-3


def build(zoo_libraries: tuple[Any, Any], name: str) -> nn.Module:
    torchvision, timm = zoo_libraries
    library, builder = MODELS[name]
    torch.manual_seed(0)
    if library == "timm":
        return timm.create_model(builder, pretrained=False, num_classes=CLASSES)
    return getattr(torchvision.models, builder)(weights=None, num_classes=CLASSES)


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = max(float(expected.detach().abs().max()), FLOOR)
    diff = float((actual.detach().double() - expected.detach().double()).abs().max())
    return diff / scale


def worst(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[str, float]:
    """The name and relative difference of the worst-matching pair."""
    diffs = {k: relative_difference(a, b) for k, (a, b) in pairs.items()}
    key = max(diffs, key=lambda k: diffs[k])
    return key, diffs[key]


def bn_like(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if role_of(m) is not None]


def randomize_statistics(model: nn.Module) -> None:
    """Running statistics and affine parameters far from their init, so folding has work to do."""
    with torch.no_grad():
        for m in model.modules():
            if role_of(m) is not None:
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.2)
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.2)


def images(dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, 3, SIZE, SIZE, generator=gen).to(dtype)


def train_step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(2)  # the same dropout masks for torch and bnlab
    out = model(x)
    labels = torch.arange(x.shape[0]) % CLASSES
    nn.functional.cross_entropy(out, labels).backward()
    return out


@pytest.fixture(params=list(MODELS))
def model_name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_convert_replaces_every_bn_layer(zoo_libraries, model_name):
    model = build(zoo_libraries, model_name)
    before = bn_like(model)
    assert before, "the model has no BN layer: nothing is tested"
    converted = bnlab.convert(copy.deepcopy(model))
    replaced = [n for n, m in converted.named_modules() if type(m).__module__.startswith("bnlab.")]
    assert replaced == before, f"{len(before) - len(replaced)} BN-like layers were not converted"


def step_results(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Output, every gradient and every buffer after one training step at ``dtype``."""
    model = model.to(dtype).train()
    results = {"output": train_step(model, images(dtype))}
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        results[f"grad {name}"] = p.grad
    results.update({f"buffer {name}": b for name, b in model.named_buffers()})
    return results


def test_training_step_matches_torch(zoo_libraries, model_name):
    """float64: bnlab equals torch within 1e-9. float32: bnlab is as accurate as torch (its
    distance to float64 torch at most twice torch's own, which is rounding amplified through
    the depth of the network), and within 1e-2 of torch directly."""
    model = build(zoo_libraries, model_name)
    exact = step_results(copy.deepcopy(model), torch.float64)
    ours64 = step_results(bnlab.convert(copy.deepcopy(model)), torch.float64)
    key, diff = worst({k: (ours64[k], exact[k]) for k in exact})
    print(f"{model_name} float64: bnlab vs torch {diff:.2e} ({key})")
    assert diff <= TOL[torch.float64], f"float64 {key}: relative difference {diff:.3e}"

    theirs = step_results(copy.deepcopy(model), torch.float32)
    ours = step_results(bnlab.convert(copy.deepcopy(model)), torch.float32)
    key_t, torch_error = worst({k: (theirs[k], exact[k]) for k in exact})
    key_b, bnlab_error = worst({k: (ours[k], exact[k]) for k in exact})
    key, diff = worst({k: (ours[k], theirs[k]) for k in exact})
    print(
        f"{model_name} float32: error vs float64 torch {torch_error:.2e} ({key_t}), "
        f"bnlab {bnlab_error:.2e} ({key_b}); bnlab vs torch {diff:.2e} ({key})"
    )
    assert bnlab_error <= max(2 * torch_error, 1e-5), (
        f"float32 bnlab error {bnlab_error:.3e} ({key_b}) vs torch's {torch_error:.3e} ({key_t})"
    )
    assert diff <= TOL[torch.float32], f"float32 {key}: relative difference {diff:.3e}"


def test_eval_matches_torch(zoo_libraries, model_name):
    reference = build(zoo_libraries, model_name)
    randomize_statistics(reference)
    reference.eval()
    ours = bnlab.convert(copy.deepcopy(reference))
    x = images()
    with torch.no_grad():
        diff = relative_difference(ours(x), reference(x))
    assert diff <= 1e-5, f"eval output: relative difference {diff:.3e}"


@pytest.mark.parametrize("transform", ["fold_batchnorm", "freeze"])
@pytest.mark.parametrize("side", ["torch", "bnlab"])
def test_fold_and_freeze_keep_eval_outputs(zoo_libraries, model_name, transform, side):
    model = build(zoo_libraries, model_name)
    randomize_statistics(model)
    model.eval()
    if side == "bnlab":
        model = bnlab.convert(model)
    x = images()
    with torch.no_grad():
        expected = model(x)
        changed: Callable[[nn.Module], nn.Module] = getattr(bnlab, transform)
        transformed = changed(copy.deepcopy(model)).eval()
        actual = transformed(x)
    diff = relative_difference(actual, expected)
    assert diff <= 1e-5, f"{transform}: relative difference {diff:.3e}"
    remaining = [n for n, m in transformed.named_modules() if role_of(m) in ("bn", "bn_act")]
    if transform == "freeze":
        assert not remaining, f"not frozen: {remaining[:5]}"
    else:
        assert not remaining, f"not folded: {remaining[:5]}"


def test_recalibrate_gives_population_statistics(zoo_libraries, model_name):
    """In float64, so that the check is of the statistics, not of float32 rounding."""
    model = bnlab.convert(build(zoo_libraries, model_name)).double().eval()
    batches = [images(torch.float64, seed=s) for s in range(3)]
    # Independent reference: torch's own BN with every BN layer in training mode (batch
    # statistics, as recalibration normalizes) and its inputs recorded by hooks.
    reference = bnlab.convert(copy.deepcopy(model), to="torch")
    inputs: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, m in reference.named_modules():
        if role_of(m) is not None:
            m.train()
            inputs[name] = []
            hook = lambda mod, args, n=name: inputs[n].append(args[0])  # noqa: E731
            handles.append(m.register_forward_pre_hook(hook))
    with torch.no_grad():
        for x in batches:
            reference(x)
    for h in handles:
        h.remove()
    bnlab.recalibrate(model, batches)
    layers = dict(model.named_modules())
    pairs = {}
    for name, recorded in inputs.items():
        values = torch.cat(recorded).transpose(0, 1).flatten(1)
        pairs[f"{name}.running_mean"] = (layers[name].running_mean, values.mean(1))
        pairs[f"{name}.running_var"] = (layers[name].running_var, values.var(1))
    key, diff = worst(pairs)
    assert diff <= TOL[torch.float64], f"{key}: relative difference {diff:.3e}"


def test_converting_back_to_torch_is_exact(zoo_libraries, model_name):
    original = build(zoo_libraries, model_name)
    randomize_statistics(original)
    back = bnlab.convert(bnlab.convert(copy.deepcopy(original)), to="torch")
    classes = [type(m) for m in original.modules()]
    assert [type(m) for m in back.modules()] == classes
    state, back_state = original.state_dict(), back.state_dict()
    assert list(state) == list(back_state)
    for key, value in state.items():
        assert torch.equal(value, back_state[key]), key
    x = images()
    with torch.no_grad():
        assert torch.equal(original.eval()(x), back.eval()(x))


def test_export_runs_and_matches(zoo_libraries, model_name):
    model = bnlab.convert(build(zoo_libraries, model_name))
    randomize_statistics(model)
    model.eval()
    x = images()
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        diff = relative_difference(program.module()(x), model(x))
    assert diff <= 1e-6, f"exported program: relative difference {diff:.3e}"


def test_compiled_stage_trains_like_eager(zoo_libraries):
    """torch.compile (inductor, the default backend) on the stem and first stage of timm's
    resnet18 (in-place ReLU after every BN), converted: a training step equals eager bnlab."""
    _, timm = zoo_libraries
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False)
    stage = nn.Sequential(net.conv1, net.bn1, net.act1, net.maxpool, net.layer1)
    eager = bnlab.convert(stage)
    compiled_copy = copy.deepcopy(eager)
    compiled = torch.compile(compiled_copy)
    x = images()
    for model in (eager, compiled):
        model(x).square().mean().backward()
    pairs = {"output": (compiled(x), eager(x))}
    for (name, p), p_c in zip(eager.named_parameters(), compiled_copy.parameters(), strict=True):
        pairs[f"grad {name}"] = (p_c.grad, p.grad)
    for (name, b), b_c in zip(eager.named_buffers(), compiled_copy.buffers(), strict=True):
        pairs[f"buffer {name}"] = (b_c, b)
    key, diff = worst(pairs)
    assert diff <= 1e-4, f"{key}: relative difference {diff:.3e}"


def copies_in_training_step(model: nn.Module) -> int:
    """Full-tensor copies (aten::clone and aten::contiguous that copy) in one training step."""
    x = images()
    train_step(model, x)  # warm up
    with torch.profiler.profile() as profile:
        train_step(model, x)
    return sum(1 for e in profile.events() if e.name in ("aten::clone", "aten::contiguous"))


@pytest.mark.parametrize("name", ["torchvision/resnet18", "timm/efficientnet_b0"])
def test_no_copies_beyond_torchs(zoo_libraries, name):
    """What resnet's downsample branch and the depthwise blocks hand to BN is dense (contiguous
    or channels_last), and bnlab reads it in place: a training step copies no more than torch's."""
    model = build(zoo_libraries, name).train()
    theirs = copies_in_training_step(copy.deepcopy(model))
    ours = copies_in_training_step(bnlab.convert(model))
    assert ours <= theirs, f"bnlab's step made {ours} copies, torch's {theirs}"


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_matches_eager(zoo_libraries, model_name, how):
    """torch.jit.script / torch.jit.trace of the converted model, and of it frozen: eval outputs
    equal eager bnlab's; in training, the output and running statistics after one step too."""
    model = bnlab.convert(build(zoo_libraries, model_name))
    randomize_statistics(model)
    x = images()

    def graph(m: nn.Module) -> nn.Module:
        m = copy.deepcopy(m)
        # in training every traced run updates the running statistics: no check_trace reruns
        return torch.jit.script(m) if how == "script" else torch.jit.trace(m, x, check_trace=False)

    with torch.no_grad():
        for variant in (model.eval(), bnlab.freeze(copy.deepcopy(model))):
            diff = relative_difference(graph(variant)(x), variant(x))
            assert diff <= 1e-6, f"{type(variant).__name__} eval: relative difference {diff:.3e}"
    model.train()
    compiled = graph(model)
    model.load_state_dict(compiled.state_dict())  # tracing ran a training step already
    torch.manual_seed(3)
    out = compiled(x)
    torch.manual_seed(3)
    expected = model(x)
    pairs = {"output": (out, expected)}
    for (name, b), b_graph in zip(model.named_buffers(), compiled.buffers(), strict=True):
        pairs[name] = (b_graph, b)
    key, diff = worst(pairs)
    assert diff <= 1e-5, f"train {key}: relative difference {diff:.3e}"
