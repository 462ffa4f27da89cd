"""The layers of bnlab import downwards only, and ``import bnlab`` loads the library alone.

Order (DESIGN.md): kernels < functional < layers < transforms < distributed < the package root
(the public API) < lab < bench < cli. A module may import its own layer and the layers below.
Every import counts, also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "bnlab"

#: the layer of each top-level part of bnlab (a subpackage or a module of the root).
LAYERS = {
    "kernels": 0,
    "functional": 1,
    "keras_conventions": 1,  # the Keras <-> PyTorch convention helper, over functional
    "layers": 2,
    "keras": 2,  # the Keras 3 layer
    "transforms": 3,
    "distributed": 4,
    "__init__": 5,  # `import bnlab`: the public API, re-exported
    "lab": 6,
    "bench": 7,
    "cli": 8,
    "__main__": 8,
}
LIBRARY = ("kernels", "functional", "keras_conventions", "layers", "keras", "transforms")
LIBRARY += ("distributed", "__init__")


def _part(module: str) -> str:
    """``bnlab.lab.data`` -> ``lab``; ``bnlab`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every bnlab module ``path`` imports, absolute or relative, at any depth."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from bnlab import kernels` imports bnlab.kernels, not the root's public API
            found |= {base} if base != "bnlab" else set()
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m == "bnlab" or m.startswith("bnlab.")}


def _own_part(path: Path) -> str:
    return path.stem if path.parent == PACKAGE else _part(_module_name(path))


def _imported_parts(path: Path) -> set[str]:
    parts = set()
    for module in _imports(path):
        part = _part(module)
        # `from bnlab import BatchNorm2d` names an attribute of the root, not a module
        parts.add(part if part in LAYERS or (PACKAGE / part).exists() else "__init__")
    return parts


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer() -> None:
    parts = {_own_part(path) for path in MODULES}
    missing = sorted(parts - set(LAYERS))
    assert not missing, f"add {missing} to LAYERS in {Path(__file__).name}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    own = _own_part(path)
    upward = sorted(part for part in _imported_parts(path) if LAYERS[part] > LAYERS[own])
    assert not upward, f"{path.relative_to(SRC)} (layer {own}) imports upward: {upward}"


def test_the_library_imports_neither_the_lab_nor_the_benchmarks() -> None:
    offenders = [
        f"{path.relative_to(SRC)} -> {sorted(found)}"
        for path in MODULES
        if _own_part(path) in LIBRARY and (found := _imported_parts(path) & {"lab", "bench", "cli"})
    ]
    assert not offenders, offenders


def test_import_bnlab_loads_no_lab_dependency() -> None:
    """``pip install bnlab`` (torch, numpy, numba) is enough to import the library."""
    code = (
        "import sys, bnlab, bnlab.transforms, bnlab.distributed\n"
        "heavy = ('matplotlib', 'rich', 'sklearn', 'pandas', 'vega_datasets')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy"
        " or m.startswith(('bnlab.lab', 'bnlab.bench', 'bnlab.cli'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"import bnlab loaded: {done.stdout.strip()}"
