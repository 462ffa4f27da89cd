"""recalibrate: the running statistics become those of the concatenated data, whatever the
batch sizes; state is restored even when the data raises or runs out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlab


def make_model():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(5, 6),
        nn.BatchNorm1d(6, momentum=0.3),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(6, 4),
        bnlab.BatchNorm1d(4, momentum=None),
    )


def reference_stats(model, batches):
    """Independent reference: capture each BN's inputs with the BN layers in training mode
    (what recalibration runs), concatenate, and take mean / unbiased variance in float64."""
    inputs = {id(m): [] for m in model.modules() if hasattr(m, "running_var")}
    handles = [
        m.register_forward_pre_hook(lambda mod, args: inputs[id(mod)].append(args[0].detach()))
        for m in model.modules()
        if hasattr(m, "running_var")
    ]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {m: m.training for m in model.modules()}
    for m in model.modules():
        if hasattr(m, "running_var"):
            m.train()
    with torch.no_grad():
        for b in batches:
            model(b)
    for h in handles:
        h.remove()
    for m, mode in modes.items():
        m.train(mode)
    model.load_state_dict(saved)
    out = []
    for m in model.modules():
        if hasattr(m, "running_var"):
            x = torch.cat(inputs[id(m)]).double()
            out.append((x.mean(0), x.var(0, unbiased=True)))
    return out


@pytest.mark.parametrize("sizes", [[64], [16, 16, 16, 16], [5, 30, 2, 27]])
def test_equals_statistics_of_concatenated_data(sizes, assert_close):
    torch.manual_seed(0)
    data = torch.randn(64, 5) * 3 + 2
    batches = list(data.split(sizes))
    model = make_model().eval()  # dropout off; recalibrate flips only BN to training
    expected = reference_stats(model, batches)
    bnlab.recalibrate(model, batches)
    layers = [m for m in model.modules() if hasattr(m, "running_var")]
    for i, (layer, (mean, var)) in enumerate(zip(layers, expected, strict=True)):
        assert_close(layer.running_mean, mean, atol=1e-5, what=f"running_mean of BN {i}")
        assert_close(layer.running_var, var, atol=1e-5, rtol=1e-5, what=f"running_var of BN {i}")


def test_first_layer_statistics_do_not_depend_on_batch_sizes(assert_close):
    """The first BN sees the same data however it is cut: its statistics are identical."""
    torch.manual_seed(0)
    data = torch.randn(60, 5)
    results = []
    for sizes in ([60], [7, 13, 40], [30, 30]):
        model = make_model().eval()
        bnlab.recalibrate(model, data.split(sizes))
        results.append((model[1].running_mean.clone(), model[1].running_var.clone()))
    for mean, var in results[1:]:
        assert_close(mean, results[0][0], atol=1e-6, what="mean")
        assert_close(var, results[0][1], atol=1e-6, what="var")


def test_state_restored_and_num_batches(assert_close):
    model = make_model()
    model.eval()
    model[5].train()  # a mixed state that must come back as it was
    nbt = model[1].num_batches_tracked.clone()
    data = [torch.randn(8, 5) for _ in range(6)]
    bnlab.recalibrate(model, iter(data), num_batches=3)
    assert model[1].momentum == 0.3 and model[5].momentum is None
    assert not model[1].training and model[5].training and not model[3].training
    assert torch.equal(model[1].num_batches_tracked, nbt)
    assert not model[1]._forward_pre_hooks and not model[5]._forward_pre_hooks
    first3 = torch.cat(data[:3]) @ model[0].weight.T + model[0].bias
    assert_close(model[1].running_mean, first3.mean(0), atol=1e-5, what="only 3 batches used")


def test_data_that_raises_leaves_model_unchanged():
    model = make_model().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def broken():
        yield torch.randn(8, 5)
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        bnlab.recalibrate(model, broken())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model[1].momentum == 0.3 and not model[1].training
    assert not model[1]._forward_pre_hooks


def test_data_running_out_is_an_error_and_changes_nothing():
    model = make_model().eval()
    before = model[1].running_mean.clone()
    with pytest.raises(ValueError, match="gave 2 batches, expected 5"):
        bnlab.recalibrate(model, [torch.randn(4, 5), torch.randn(4, 5)], num_batches=5)
    assert torch.equal(model[1].running_mean, before) and model[1].momentum == 0.3
    with pytest.raises(ValueError, match="gave 0 batches"):
        bnlab.recalibrate(model, [])
    with pytest.raises(ValueError, match="num_batches must be a positive int"):
        bnlab.recalibrate(model, [torch.randn(4, 5)], num_batches=0)


def test_tuples_and_masked_layers(assert_close):
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = bnlab.MaskedBatchNorm1d(3)

        def forward(self, batch):
            x, mask = batch
            return self.bn(x, mask)

    model = Seq().eval()
    xs = [torch.randn(4, 3, 6) * 2 + 1 for _ in range(3)]
    masks = [torch.rand(4, 6) > 0.4 for _ in range(3)]
    bnlab.recalibrate(model, list(zip(xs, masks, strict=True)), forward=lambda m, b: m(b))
    selected = torch.cat([x.movedim(1, -1)[m] for x, m in zip(xs, masks, strict=True)]).double()
    assert_close(model.bn.running_mean, selected.mean(0), atol=1e-5, what="masked mean")
    assert_close(model.bn.running_var, selected.var(0), atol=1e-5, what="masked var")
    with pytest.raises(TypeError, match="each batch must be a tensor"):
        bnlab.recalibrate(nn.Sequential(nn.BatchNorm1d(3)), [{"x": torch.randn(4, 3)}])
