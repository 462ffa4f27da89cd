"""The BN-family tests run Keras 3 on its torch backend: select it before Keras is imported."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"
