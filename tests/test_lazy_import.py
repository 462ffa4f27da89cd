"""``import bnlab`` loads its names on first use: no torch until one is used, then the same
objects as their modules' (and bnlab's dispatcher ops registered)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bnlab


def test_import_bnlab_loads_no_torch():
    code = (
        "import sys, bnlab\n"
        "assert bnlab.__version__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numba', 'numpy')))\n"
        "bnlab.BatchNorm2d\n"
        "import torch\n"
        "print(hasattr(torch.ops.bnlab, 'batch_norm_forward'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout


@pytest.mark.parametrize("name", bnlab.__all__)
def test_every_public_name_is_its_modules_object(name):
    import bnlab.distributed
    import bnlab.layers
    import bnlab.transforms

    value = getattr(bnlab, name)
    homes = (bnlab.layers, bnlab.transforms, bnlab.distributed)
    if name == "functional":
        assert value is sys.modules["bnlab.functional"]
    elif name != "__version__":
        assert any(getattr(home, name, None) is value for home in homes), name
    assert name in dir(bnlab)


def test_subpackages_and_unknown_names():
    assert bnlab.kernels is sys.modules["bnlab.kernels"]
    with pytest.raises(AttributeError, match="module 'bnlab' has no attribute 'BatchNorm4d'"):
        _ = bnlab.BatchNorm4d
    from bnlab import BatchNorm1d, convert, functional  # the usual spellings still work

    assert BatchNorm1d is bnlab.layers.BatchNorm1d and convert is bnlab.transforms.convert
    assert functional is bnlab.functional


def test_import_after_torch_registers_the_ops_at_once():
    code = "import torch, bnlab\nprint(hasattr(torch.ops.bnlab, 'batch_norm_forward'))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", done.stdout
