"""``bnlab.keras.BatchNormalization``: a Keras 3 layer computing with bnlab's batch norm.

A subclass of ``keras.layers.BatchNormalization`` with the same arguments, weights (gamma, beta,
moving_mean, moving_variance, and the renorm ones), config and serialization; only ``call`` is
replaced by ``bnlab.keras_conventions.keras_batch_norm``, so it needs Keras's torch backend.
``import bnlab`` never imports this module (nor Keras); importing it first selects the torch
backend when no backend was chosen (``KERAS_BACKEND`` unset and Keras not yet imported).

Example (the seed-000 model)::

    import bnlab.keras
    import keras
    model = keras.Sequential([
        keras.Input((784,)), keras.layers.Dense(64), bnlab.keras.BatchNormalization(),
        keras.layers.Activation("relu"), keras.layers.Dense(10, activation="softmax"),
    ])
"""

from __future__ import annotations

import os
import sys
from typing import Any

if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "torch")

import keras

from bnlab.keras_conventions import KerasRenorm, keras_batch_norm

__all__ = ["BatchNormalization"]


@keras.saving.register_keras_serializable(package="bnlab")
class BatchNormalization(keras.layers.BatchNormalization):  # type: ignore[misc]
    """``keras.layers.BatchNormalization`` computed by bnlab (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        backend = keras.backend.backend()
        if backend != "torch":
            raise RuntimeError(
                "bnlab.keras.BatchNormalization runs on Keras's torch backend, but the backend is "
                f"{backend!r}; set KERAS_BACKEND=torch before importing keras"
            )
        super().__init__(*args, **kwargs)

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(
                "The mask provided should be one dimension less than the inputs. Received: "
                f"mask.shape={tuple(mask.shape)}, inputs.shape={tuple(inputs.shape)}"
            )
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = keras.ops.cast(inputs, compute_dtype)
        renorm = None
        if self.renorm:
            clipping = self.renorm_clipping or {}
            renorm = KerasRenorm(
                self.moving_stddev.value,
                self.renorm_mean.value,
                self.renorm_stddev.value,
                self.renorm_momentum,
                clipping.get("rmin"),
                clipping.get("rmax"),
                clipping.get("dmax"),
            )
        y = keras_batch_norm(
            x,
            self.gamma.value if self.scale else None,
            self.beta.value if self.center else None,
            self.moving_mean.value,
            self.moving_variance.value,
            training=bool(training and self.trainable),
            axis=self.axis,
            momentum=self.momentum,
            epsilon=self.epsilon,
            mask=None if mask is None else keras.ops.cast(mask, "bool"),
            renorm=renorm,
        )
        return keras.ops.cast(y, self.compute_dtype)
