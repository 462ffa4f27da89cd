"""Keras conventions: bnlab reproduces keras.layers.BatchNormalization (Keras 3, torch backend)
in training and inference, moving statistics included (biased variance, renorm bookkeeping),
and bnlab.keras.BatchNormalization runs the seed-000 Keras model."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is imported (also set in conftest.py)

import keras
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import bnlab.keras
from bnlab.keras_conventions import KerasBatchNorm, from_keras_layer, torch_momentum

# Keras 3 on NumPy 2 warns about its own __array__ signature on every conversion.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_backend_is_torch():
    assert keras.backend.backend() == "torch"


def np_(t):
    return keras.ops.convert_to_numpy(t)


CONFIGS = {
    "defaults": {},
    "momentum-0.9": {"momentum": 0.9, "epsilon": 1e-2},
    "no-center": {"center": False, "momentum": 0.8},
    "no-scale": {"scale": False, "momentum": 0.8},
    "renorm-clipped": {
        "renorm": True,
        "renorm_clipping": {"rmax": 1.5, "rmin": 0.5, "dmax": 0.5},
        "renorm_momentum": 0.9,
        "momentum": 0.9,
    },
    "renorm-unclipped": {"renorm": True, "renorm_momentum": 0.8, "momentum": 0.95},
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("shape", [(32, 6), (8, 5, 5, 6)])
def test_matches_keras_over_training_steps_and_inference(name, shape, assert_close):
    config = CONFIGS[name]
    rng = np.random.default_rng(0)
    keras_bn = keras.layers.BatchNormalization(**config)
    ours = bnlab.keras.BatchNormalization(**config)
    module = KerasBatchNorm(shape[-1], **config).train()
    gamma = rng.uniform(0.5, 1.5, shape[-1]).astype("float32")
    beta = rng.normal(size=shape[-1]).astype("float32")
    for step in range(5):
        # A drifting distribution, so that the moving statistics and r, d matter.
        x = (rng.normal(size=shape) * (1 + step) + 2 * step).astype("float32")
        if step == 0:
            keras_bn.build(x.shape)
            ours.build(x.shape)
            for layer in (keras_bn, ours):
                if config.get("scale", True):
                    layer.gamma.assign(gamma)
                if config.get("center", True):
                    layer.beta.assign(beta)
            with torch.no_grad():
                if module.weight is not None:
                    module.weight.copy_(torch.tensor(gamma))
                if module.bias is not None:
                    module.bias.copy_(torch.tensor(beta))
        expected = np_(keras_bn(x, training=True))
        assert_close(np_(ours(x, training=True)), expected, atol=2e-5, what=f"layer step {step}")
        assert_close(module(torch.tensor(x)), expected, atol=2e-5, what=f"module step {step}")
    for w, w_ours in zip(keras_bn.weights, ours.weights, strict=True):
        assert_close(np_(w_ours.value), np_(w.value), atol=1e-5, rtol=1e-5, what=w.path)
    assert_close(module.running_mean, np_(keras_bn.moving_mean.value), atol=1e-5, what="mean")
    assert_close(
        module.running_var, np_(keras_bn.moving_variance.value), atol=1e-5, rtol=1e-5, what="var"
    )
    x = rng.normal(size=shape).astype("float32") * 3
    expected = np_(keras_bn(x, training=False))
    assert_close(np_(ours(x, training=False)), expected, atol=2e-5, what="layer inference")
    assert_close(module.eval()(torch.tensor(x)), expected, atol=2e-5, what="module inference")


def test_biased_moving_variance(assert_close):
    """Keras folds in the biased batch variance: after one step with momentum 0 it is exact."""
    x = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
    module = KerasBatchNorm(3, momentum=0.0).train()
    module(torch.tensor(x))
    assert_close(module.running_var, x.var(0), atol=1e-6, what="biased")
    assert torch_momentum(0.99) == pytest.approx(0.01)


def test_channels_first_axis_and_mask(assert_close):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3, 7)).astype("float32") * 2 + 1
    keras_bn = keras.layers.BatchNormalization(axis=1, momentum=0.5)
    module = KerasBatchNorm(3, axis=1, momentum=0.5).train()
    assert_close(module(torch.tensor(x)), np_(keras_bn(x, training=True)), atol=2e-5, what="axis=1")
    assert_close(module.running_var, np_(keras_bn.moving_variance.value), atol=1e-5, what="var")
    # Masked (channels last, mask (N, T)), as Keras's Masking layer produces.
    xl = rng.normal(size=(4, 7, 3)).astype("float32")
    mask = rng.uniform(size=(4, 7)) > 0.3
    keras_bn = keras.layers.BatchNormalization(momentum=0.5)
    ours = bnlab.keras.BatchNormalization(momentum=0.5)
    expected = np_(keras_bn(xl, training=True, mask=mask))
    assert_close(np_(ours(xl, training=True, mask=mask)), expected, atol=2e-5, what="masked")
    assert_close(
        np_(ours.moving_variance.value), np_(keras_bn.moving_variance.value), atol=1e-5, what="mv"
    )


def test_from_keras_layer_copies_config_and_weights(assert_close):
    rng = np.random.default_rng(3)
    keras_bn = keras.layers.BatchNormalization(momentum=0.7, epsilon=1e-2, renorm=True)
    for _ in range(3):
        keras_bn(rng.normal(size=(16, 4)).astype("float32") + 3, training=True)
    module = from_keras_layer(keras_bn)
    assert module.momentum == 0.7 and module.epsilon == 1e-2 and module.renorm
    x = rng.normal(size=(16, 4)).astype("float32")
    assert_close(
        module.eval()(torch.tensor(x)), np_(keras_bn(x, training=False)), atol=2e-5, what="eval"
    )
    assert_close(
        module.train()(torch.tensor(x)), np_(keras_bn(x, training=True)), atol=2e-5, what="train"
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="renorm_clipping keys"):
        KerasBatchNorm(3, renorm=True, renorm_clipping={"rmaxx": 2.0})
    with pytest.raises(ValueError, match="Keras momentum must be in"):
        KerasBatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="expected 3 channels on axis -1, got 4"):
        KerasBatchNorm(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="one dimension less"):
        bnlab.keras.BatchNormalization()(
            np.zeros((2, 3, 4), "float32"), mask=np.ones((2, 3, 4), bool)
        )


def seed_000_model(bn_layer, seed):
    """The seed-000 Keras model (Dense(64), BatchNormalization, ReLU, Dense(10), softmax) on the
    64-pixel digits instead of 784-pixel MNIST (bundled with scikit-learn: no download)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64),
            bn_layer(),
            keras.layers.Activation("relu"),
            keras.layers.Dense(10),
            keras.layers.Activation("softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_seed_000_keras_model_trains_and_matches_keras(assert_close):
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    ref = seed_000_model(keras.layers.BatchNormalization, seed=0)
    ours = seed_000_model(bnlab.keras.BatchNormalization, seed=1)
    ours.set_weights(ref.get_weights())  # identical start
    assert isinstance(ours.layers[1], bnlab.keras.BatchNormalization)
    fit = {"epochs": 3, "batch_size": 32, "shuffle": False, "verbose": 0}
    h_ref = ref.fit(x_train, y_train, **fit)
    h_ours = ours.fit(x_train, y_train, **fit)
    losses = h_ours.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert h_ours.history["accuracy"][-1] > 0.8, h_ours.history
    # Held-out accuracy uses the moving statistics, still far from converged after 132 steps
    # with Keras's momentum 0.99 (1 - 0.99**132 = 73% of the way from their initial values).
    _, accuracy = ours.evaluate(x_test, y_test, verbose=0)
    _, accuracy_ref = ref.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.6 and accuracy == pytest.approx(accuracy_ref, abs=0.01), (
        accuracy,
        accuracy_ref,
    )
    assert_close(
        np.array(losses), np.array(h_ref.history["loss"]), atol=1e-4, rtol=1e-4, what="loss"
    )
    for i, (w, w_ref) in enumerate(zip(ours.weights, ref.weights, strict=True)):
        if i == 1:
            # The bias of the Dense before BN has an exactly zero gradient (BN subtracts the
            # mean): both models train it on rounding noise, which Adam scales up to lr-sized
            # steps. It has no effect on the output (checked through the predictions below).
            continue
        assert_close(np_(w.value), np_(w_ref.value), atol=1e-3, rtol=1e-3, what=w.path)
    assert_close(
        ours.predict(x_test, verbose=0), ref.predict(x_test, verbose=0), atol=1e-3, what="predict"
    )


def test_import_bnlab_does_not_import_keras():
    import subprocess
    import sys

    code = "import sys, bnlab; assert 'keras' not in sys.modules, 'keras imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
