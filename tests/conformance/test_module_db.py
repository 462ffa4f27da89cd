"""PyTorch's own ModuleInfo table (``module_db``) for BatchNorm1d/2d/3d, run against bnlab's layers.

``torch.testing._internal.common_modules.module_db`` is the table torch's ``test_modules.py``
runs every nn.Module through: per module, ``module_inputs_func`` gives constructor arguments and
forward inputs, ``module_error_inputs_func`` inputs that must raise. Here every BatchNorm1d/2d/3d
entry is a pytest case of its own:

- a sample input, per dtype the entry supports on CPU and per mode (train, eval): torch's module
  and bnlab's are built with the same arguments, given the same (non-default) state, and run for
  two forward/backward steps; outputs, input and parameter gradients, buffers, parameter and
  state_dict names and ``repr`` must agree (float64 within 1e-10, float32 within 1e-5).
- an error input, per dtype: bnlab must raise the same exception type with a message matching
  torch's regex, where torch does (construction or forward). As in torch's ``test_errors``, the
  module is left in its default training mode whatever the ``training`` flag, so the error
  inputs are taken once per dtype; torch itself is checked to raise first.

The table's inputs come from the global RNG, so they are made inside each test (after the
seeding fixture) and picked by index. Importing torch's test helpers needs ``expecttest`` (a dev
dependency) and calls ``torch.backends.disable_global_flags()`` for the test process.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

try:
    from torch.testing._internal.common_modules import ModuleErrorEnum, ModuleInfo, module_db
except ModuleNotFoundError as error:  # torch's test helpers import expecttest
    raise ImportError(
        f"tests/conformance needs {error.name!r}, a dev dependency: pip install -e '.[dev]'"
    ) from error

import bnlab

OURS: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm1d: bnlab.BatchNorm1d,
    nn.BatchNorm2d: bnlab.BatchNorm2d,
    nn.BatchNorm3d: bnlab.BatchNorm3d,
}
INFOS: list[ModuleInfo] = [info for info in module_db if info.module_cls in OURS]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
STEPS = 2  # the second step sees running statistics (and num_batches_tracked) the first moved


def _dtypes(info: ModuleInfo) -> list[torch.dtype]:
    return sorted(info.supported_dtypes("cpu"), key=str)


def _sample_cases() -> list[Any]:
    cases = []
    for info in INFOS:
        for dtype in _dtypes(info):
            for training in (True, False):
                samples = info.module_inputs_func(
                    info, device="cpu", dtype=dtype, requires_grad=True, training=training
                )
                for index, sample in enumerate(samples):
                    mode = "train" if training else "eval"
                    case_id = f"{info.name}-{sample.desc or 'default'}-{mode}-{dtype}"
                    cases.append(pytest.param(info, dtype, training, index, id=case_id))
    return cases


def _error_cases() -> list[Any]:
    cases = []
    for info in INFOS:
        for dtype in _dtypes(info):
            errors = info.module_error_inputs_func(
                info, device="cpu", dtype=dtype, requires_grad=False, training=True
            )
            for index, error in enumerate(errors):
                kwargs = error.module_error_input.constructor_input.kwargs
                what = ",".join(f"{k}={v}" for k, v in kwargs.items()) or str(index)
                case_id = f"{info.name}-{what}-{error.error_on.name}-{dtype}"
                cases.append(pytest.param(info, dtype, index, id=case_id))
    return cases


SAMPLE_CASES = _sample_cases()
ERROR_CASES = _error_cases()


def test_the_table_has_every_batchnorm_entry():
    """Guard against an empty parametrization if torch renames or drops the entries."""
    names = sorted(info.name for info in INFOS)
    assert names == ["nn.BatchNorm1d", "nn.BatchNorm2d", "nn.BatchNorm3d"], names
    assert len(SAMPLE_CASES) >= 80, f"only {len(SAMPLE_CASES)} sample cases"
    assert len(ERROR_CASES) >= 6, f"only {len(ERROR_CASES)} error cases"


def _fresh(value: Any) -> Any:
    """A leaf copy of a tensor input (same requires_grad); other values as they are."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    return value


def _give_state(module: nn.Module) -> None:
    """Move every parameter and buffer away from its initial value, reproducibly."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.rand_like(p) + 0.5 if name == "weight" else torch.randn_like(p))
        for name, b in module.named_buffers():
            if name == "running_mean":
                b.copy_(torch.randn_like(b))
            elif name == "running_var":
                b.copy_(torch.rand_like(b) * 2 + 0.5)
            elif name == "num_batches_tracked":
                b.fill_(3)


def _compare(ours: nn.Module, theirs: nn.Module, assert_close: Any, tol: float, step: int) -> None:
    """Gradients of the parameters and every buffer, by name."""
    grads_o = {n: p.grad for n, p in ours.named_parameters()}
    for name, p in theirs.named_parameters():
        assert_close(grads_o[name], p.grad, atol=tol, rtol=tol, what=f"step {step}: {name}.grad")
    buffers_o = dict(ours.named_buffers())
    assert list(buffers_o) == [n for n, _ in theirs.named_buffers()]
    for name, b in theirs.named_buffers():
        assert buffers_o[name].dtype == b.dtype, name
        assert_close(buffers_o[name], b, atol=tol, rtol=tol, what=f"step {step}: {name}")


@pytest.mark.parametrize(("info", "dtype", "training", "index"), SAMPLE_CASES)
def test_sample_input_matches_torch(info, dtype, training, index, assert_close):
    sample = info.module_inputs_func(
        info, device="cpu", dtype=dtype, requires_grad=True, training=training
    )[index]
    c_args, c_kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    theirs = info.module_cls(*c_args, **c_kwargs).to(dtype)
    ours = OURS[info.module_cls](*c_args, **c_kwargs).to(dtype)
    assert repr(ours) == "bnlab." + repr(theirs)  # the name says whose layer it is
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    _give_state(theirs)
    ours.load_state_dict(theirs.state_dict())  # strict: the same keys
    theirs.train(training)
    ours.train(training)

    tol = TOLERANCE[dtype]
    f_args, f_kwargs = sample.forward_input.args, sample.forward_input.kwargs
    for step in range(STEPS):
        args_t = [_fresh(a) for a in f_args]
        kwargs_t = {k: _fresh(v) for k, v in f_kwargs.items()}
        args_o = [_fresh(a) for a in f_args]
        kwargs_o = {k: _fresh(v) for k, v in f_kwargs.items()}
        y_t = theirs(*args_t, **kwargs_t)
        y_o = ours(*args_o, **kwargs_o)
        assert y_o.dtype == y_t.dtype
        assert_close(y_o, y_t, atol=tol, rtol=tol, what=f"step {step}: output")
        dy = torch.randn_like(y_t)
        y_t.backward(dy)
        y_o.backward(dy)
        for i, (a_o, a_t) in enumerate(zip(args_o, args_t, strict=True)):
            if isinstance(a_t, torch.Tensor) and a_t.requires_grad:
                assert_close(a_o.grad, a_t.grad, atol=tol, rtol=tol, what=f"step {step}: dx{i}")
        _compare(ours, theirs, assert_close, tol, step)


@pytest.mark.parametrize(("info", "dtype", "index"), ERROR_CASES)
def test_error_input_raises_like_torch(info, dtype, index):
    error = info.module_error_inputs_func(
        info, device="cpu", dtype=dtype, requires_grad=False, training=True
    )[index]
    sample = error.module_error_input
    c_args, c_kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    ours_cls = OURS[info.module_cls]
    if error.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
        with pytest.raises(error.error_type, match=error.error_regex):
            info.module_cls(*c_args, **c_kwargs)
        with pytest.raises(error.error_type, match=error.error_regex):
            ours_cls(*c_args, **c_kwargs)
        return
    f_args, f_kwargs = sample.forward_input.args, sample.forward_input.kwargs
    theirs = info.module_cls(*c_args, **c_kwargs)
    with pytest.raises(error.error_type, match=error.error_regex):
        theirs(*f_args, **f_kwargs)
    with warnings.catch_warnings():
        # a dangerous eps or momentum warns when the layer is built (tested in test_layers.py)
        warnings.simplefilter("ignore", UserWarning)
        ours = ours_cls(*c_args, **c_kwargs)
    with pytest.raises(error.error_type, match=error.error_regex):
        ours(*f_args, **f_kwargs)
