"""The lab axes the claims need: norm, placement, dropout, init_scale, input_scaling. Each builds
the layers it names in the place it names, the old ``bn`` axis keeps its meaning, and bad values
are refused with an error that names the key."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnlab
from bnlab.cli import main
from bnlab.lab.config import Config, load_config
from bnlab.lab.data import load_dataset, load_mpg
from bnlab.lab.errors import UsageError
from bnlab.lab.grid import RunParams, check_grid, expand
from bnlab.lab.models import build_model
from bnlab.lab.norms import GHOST_BATCH, NORMS, BatchNoise, RaggedGhostBatchNorm1d, group_count
from bnlab.lab.record import load_record


def _types(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model]


def _mlp(bn_impl: str = "bnlab", **kwargs) -> nn.Sequential:
    model = build_model("mlp", True, bn_impl, (1, 8, 8), 10, seed=0, **kwargs)
    assert isinstance(model, nn.Sequential)
    return model


def test_norm_puts_its_layer_where_bn_was():
    bn = _types(_mlp())
    assert bn == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU",
                  "Linear"]  # fmt: skip
    expected = {
        "none": [],
        "bn": ["BatchNorm1d"],
        "renorm": ["BatchRenorm1d"],
        "ghost": ["RaggedGhostBatchNorm1d"],
        "groupnorm": ["GroupNorm"],
        "layernorm": ["LayerNorm"],
        "noisy_bn": ["Sequential"],
    }
    assert set(expected) == set(NORMS)
    for norm, layer in expected.items():
        built = _mlp(norm=norm)
        names = [n for n in bn if n != "BatchNorm1d"]
        if layer:
            names = [layer[0] if n == "BatchNorm1d" else n for n in bn]
        assert _types(built) == names, norm
    groupnorm = _mlp(norm="groupnorm")
    assert [(m.num_groups, m.num_channels) for m in groupnorm.modules()
            if isinstance(m, nn.GroupNorm)] == [(32, 512), (32, 256)]  # fmt: skip
    noisy = _mlp(norm="noisy_bn")[2]
    assert isinstance(noisy[0], bnlab.BatchNorm1d) and isinstance(noisy[1], BatchNoise)
    torch_bn = _mlp(bn_impl="torch")[2]
    assert type(torch_bn) is nn.BatchNorm1d


def test_norm_on_a_conv_layer():
    def layer(norm: str) -> nn.Module:
        return build_model("lizard-cnn", True, "bnlab", (1, 28, 28), 10, 50, norm=norm)[3]

    assert type(layer("bn")) is bnlab.BatchNorm2d
    assert type(layer("renorm")) is bnlab.BatchRenorm2d
    group = layer("groupnorm")  # 6 channels: one group of 6
    assert isinstance(group, nn.GroupNorm) and (group.num_groups, group.num_channels) == (1, 6)
    layer_norm = layer("layernorm")  # over (C, H, W), per-channel affine
    assert isinstance(layer_norm, nn.GroupNorm) and layer_norm.num_groups == 1


@pytest.mark.parametrize(
    ("channels", "groups"), [(512, 32), (256, 32), (120, 15), (64, 8), (50, 5), (25, 1), (6, 1)]
)
def test_group_count_keeps_eight_per_group_and_at_most_32_groups(channels, groups):
    assert group_count(channels) == groups


def test_every_norm_trains_and_evaluates():
    x = torch.randn(70, 1, 8, 8)  # 70 = 2 virtual batches of 32 and 6 more
    y = torch.randint(0, 10, (70,))
    for norm in NORMS:
        model = _mlp(norm=norm)
        F.cross_entropy(model(x), y).backward()
        model.eval()
        assert torch.isfinite(model(x)).all(), norm


def test_ghost_takes_a_ragged_last_batch():
    torch.manual_seed(0)
    x = torch.randn(GHOST_BATCH * 2 + 6, 5, dtype=torch.float64) * 3 + 1
    ragged = RaggedGhostBatchNorm1d(5, GHOST_BATCH).double()
    whole = bnlab.GhostBatchNorm1d(5, GHOST_BATCH).double()
    out = ragged(x)
    # each virtual batch, the short one included, is normalized with its own statistics
    for chunk, got in zip(x.split(GHOST_BATCH), out.split(GHOST_BATCH), strict=True):
        mean, var = chunk.mean(0), chunk.var(0, unbiased=False)
        torch.testing.assert_close(got, (chunk - mean) / torch.sqrt(var + 1e-5))
    # the running statistics come from the full virtual batches only
    whole(x[: GHOST_BATCH * 2])
    torch.testing.assert_close(ragged.running_mean, whole.running_mean)
    torch.testing.assert_close(ragged.running_var, whole.running_var)
    assert int(ragged.num_batches_tracked) == 1
    small = RaggedGhostBatchNorm1d(5, GHOST_BATCH).double()  # fewer than 32: plain batch norm
    torch.testing.assert_close(small(x[:10]), F.batch_norm(x[:10], None, None, training=True))


def test_batch_noise_is_a_new_per_channel_affine_map_every_step():
    noise = BatchNoise(shift=1.0, max_scale=2.0)
    x = torch.randn(64, 4, 3, 3)
    torch.manual_seed(1)
    first, second = noise(x), noise(x)
    assert not torch.equal(first, second)  # time-varying
    for out in (first, second):
        # per channel: out = sigma * x + mu, one (sigma, mu) for the whole batch
        flat_x = x.transpose(0, 1).reshape(4, -1)
        flat_y = out.transpose(0, 1).reshape(4, -1)
        sigma = (flat_y[:, 1] - flat_y[:, 0]) / (flat_x[:, 1] - flat_x[:, 0])
        mu = flat_y[:, 0] - sigma * flat_x[:, 0]
        torch.testing.assert_close(flat_y, sigma[:, None] * flat_x + mu[:, None])
        assert ((sigma >= 1) & (sigma <= 2)).all() and ((mu >= -1) & (mu <= 1)).all()
    noise.eval()
    torch.testing.assert_close(noise(x), 1.5 * x)  # the noise's expectation


def test_placement_puts_the_norm_before_or_after_the_activation():
    assert _types(_mlp(placement="after"))[1:4] == ["Linear", "ReLU", "BatchNorm1d"]
    assert _types(_mlp(placement="before"))[1:4] == ["Linear", "BatchNorm1d", "ReLU"]
    lizard = _types(build_model("lizard-cnn", True, "bnlab", (1, 28, 28), 10, 50))
    assert lizard[:4] == ["Conv2d", "ReLU", "MaxPool2d", "BatchNorm2d"]  # tutorial 001's own
    before = build_model("lizard-cnn", True, "bnlab", (1, 28, 28), 10, 50, placement="before")
    assert _types(before)[:4] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert _types(before)[8:11] == ["Linear", "BatchNorm1d", "ReLU"]
    assert RunParams(network="lizard-cnn").placement == "after"
    assert RunParams(network="mlp").placement == "before"


def test_dropout_ends_every_hidden_block_and_keeps_the_init():
    plain, dropped = _mlp(), _mlp(dropout=0.5)
    assert not any(isinstance(m, nn.Dropout) for m in plain)
    assert _types(dropped) == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear",
                               "BatchNorm1d", "ReLU", "Dropout", "Linear"]  # fmt: skip
    assert all(m.p == 0.5 for m in dropped if isinstance(m, nn.Dropout))
    for a, b in zip(plain.parameters(), dropped.parameters(), strict=True):
        assert torch.equal(a, b)
    lizard = build_model("lizard-cnn", False, "bnlab", (1, 28, 28), 10, 50, dropout=0.25)
    assert _types(lizard)[-7:] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout",
                                   "Linear"]  # fmt: skip


def test_init_scale_multiplies_the_default_weights():
    base = build_model("lizard-cnn", True, "bnlab", (1, 28, 28), 10, 50)
    scaled = build_model("lizard-cnn", True, "bnlab", (1, 28, 28), 10, 50, init_scale=10.0)
    pairs = list(zip(base.named_parameters(), scaled.named_parameters(), strict=True))
    weights = 0
    for (name, a), (_, b) in pairs:
        module = base.get_submodule(name.rpartition(".")[0])
        if isinstance(module, (nn.Linear, nn.Conv2d)) and name.endswith("weight"):
            torch.testing.assert_close(b, 10.0 * a, rtol=0, atol=0)
            weights += 1
        else:  # biases, BN's gamma and beta keep their init
            assert torch.equal(a, b), name
    assert weights == 5


def test_input_scaling_raw_keeps_mpgs_units():
    standardized, raw = load_mpg(0), load_mpg(0, "raw")
    assert raw.x_train[:, 3].mean() > 2000  # weight in pounds
    mean, std = raw.x_train.mean(0), raw.x_train.std(0)
    torch.testing.assert_close((raw.x_train - mean) / std, standardized.x_train)
    torch.testing.assert_close((raw.x_test - mean) / std, standardized.x_test)
    assert torch.equal(raw.y_train, standardized.y_train)
    with pytest.raises(UsageError, match="input_scaling 'raw' applies to a table"):
        load_dataset("digits", input_scaling="raw")


def test_the_bn_axis_is_norm_bn_or_none():
    assert RunParams(bn=False).norm == "none" and RunParams(bn=True).norm == "bn"
    assert RunParams(norm="none").bn is False and RunParams(norm="groupnorm").bn is True
    assert [r.name for r in expand({"bn": [False, True]})] == ["no_bn", "bn"]
    runs = expand({"norm": ["none", "groupnorm"], "network": ["mlp"]})
    assert [(r.name, r.params.bn) for r in runs] == [("norm=none", False), ("norm=groupnorm", True)]
    # a grid with norm is not crossed with bn = [false, true]
    assert "bn" not in Config(grid={"norm": ["bn", "renorm"]}).resolved_grid()
    assert Config(grid={"lr": [0.1]}).resolved_grid()["bn"] == [False, True]
    with pytest.raises(UsageError, match="bn=false means norm 'none', but norm is 'renorm'"):
        expand({"bn": [False, True], "norm": ["renorm"]})


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"norm": ["batchnorm"]}, "parameter 'norm' in grid must be one of none, bn, renorm, "),
        ({"placement": ["middle"]}, "parameter 'placement' in grid must be one of before, after"),
        ({"placement": [1]}, "parameter 'placement' in grid must be str, got int 1"),
        ({"dropout": [1.0]}, "parameter 'dropout' in grid must be in [0, 1), got 1.0"),
        ({"dropout": [-0.1]}, "parameter 'dropout' in grid must be in [0, 1), got -0.1"),
        ({"init_scale": [0]}, "parameter 'init_scale' in grid must be > 0, got 0.0"),
        ({"input_scaling": ["log"]}, "parameter 'input_scaling' in grid must be one of "),
        ({"batch_size": [0]}, "parameter 'batch_size' in grid must be > 0, got 0"),
    ],
)
def test_bad_axis_values_name_the_key(grid, message):
    with pytest.raises(UsageError) as caught:
        check_grid(grid)
    assert str(caught.value).startswith(message)


def test_cross_checks_name_both_keys():
    with pytest.raises(UsageError, match="bn_impl 'torch' applies to norm 'bn' and 'noisy_bn'"):
        RunParams(norm="ghost", bn_impl="torch")
    with pytest.raises(UsageError, match="data set 'fashion-mnist' has images"):
        RunParams(input_scaling="raw")


def test_axes_in_a_toml_config(tmp_path, capsys):
    config = tmp_path / "axes.toml"
    config.write_text(
        f'out = "{tmp_path / "axes"}"\nlimit_train = 128\nlimit_test = 64\nprogress = "off"\n'
        '[grid]\nnetwork = "mlp"\ndataset = "digits"\nnorm = ["groupnorm", "noisy_bn"]\n'
        'placement = "after"\ndropout = 0.2\ninit_scale = 0.5\nbatch_size = 32\nepochs = 1\n'
    )
    assert main(["run", str(config), "--no-report"]) == 0
    record = load_record(tmp_path / "axes")
    assert [r["name"] for r in record.runs] == ["norm=groupnorm", "norm=noisy_bn"]
    assert {"norm", "placement", "dropout", "init_scale", "input_scaling"} <= set(record.param_keys)
    assert {(r["norm"], r["placement"], r["dropout"], r["init_scale"]) for r in record.rows} == {
        ("groupnorm", "after", 0.2, 0.5),
        ("noisy_bn", "after", 0.2, 0.5),
    }
    saved = json.loads((tmp_path / "axes" / "record.json").read_text())
    assert saved["grid"]["norm"] == ["groupnorm", "noisy_bn"] and "bn" not in saved["grid"]
    config.write_text('[grid]\nnorm = ["bn", "ghostnorm"]\n')
    with pytest.raises(UsageError) as caught:
        load_config(config)
    assert str(caught.value).startswith(f"parameter 'norm' in [grid] of {config} must be one of")
