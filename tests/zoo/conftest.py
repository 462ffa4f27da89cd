"""Real architectures from timm and torchvision, for the model-zoo conformance suite.

torchvision is imported by ``bnlab.bench.zoo.import_torchvision`` (beside a CPU-only torch, PyPI's
torchvision cannot register its compiled operators; the zoo needs none of them).

Without timm or torchvision installed (``pip install bnlab[zoo]``), the zoo tests are skipped,
saying why.
"""

from __future__ import annotations

from typing import Any

import pytest

from bnlab.bench.zoo import import_torchvision as _import_torchvision  # noqa: F401 (zoo_*.py)
from bnlab.bench.zoo import import_zoo


@pytest.fixture(scope="session")
def zoo_libraries() -> tuple[Any, Any]:
    """(torchvision, timm), or skip with the reason."""
    try:
        return import_zoo()
    except ImportError as error:
        pytest.skip(f"the model zoo needs timm and torchvision (pip install bnlab[zoo]): {error}")
