"""Print the README's model-zoo table: ``.venv/bin/python tests/zoo/zoo_table.py``.

The same checks as test_zoo.py, with the numbers printed instead of compared to a threshold.
"""

from __future__ import annotations

import collections
import copy
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import _import_torchvision
from test_zoo import (
    MODELS,
    bn_like,
    build,
    images,
    randomize_statistics,
    relative_difference,
    step_results,
    worst,
)

import bnlab


def row(libraries: tuple[object, object], name: str) -> str:
    model = build(libraries, name)
    layers = bn_like(model)
    kinds = collections.Counter(type(m).__name__ for n, m in model.named_modules() if n in layers)
    converted = bnlab.convert(copy.deepcopy(model))
    replaced = sum(1 for m in converted.modules() if type(m).__module__.startswith("bnlab."))
    exact = step_results(copy.deepcopy(model), torch.float64)
    ours64 = step_results(bnlab.convert(copy.deepcopy(model)), torch.float64)
    theirs32 = step_results(copy.deepcopy(model), torch.float32)
    ours32 = step_results(bnlab.convert(copy.deepcopy(model)), torch.float32)
    d64 = worst({k: (ours64[k], exact[k]) for k in exact})[1]
    e_torch = worst({k: (theirs32[k], exact[k]) for k in exact})[1]
    e_ours = worst({k: (ours32[k], exact[k]) for k in exact})[1]
    randomize_statistics(model)
    model.eval()
    x = images()
    with torch.no_grad():
        expected = model(x)
        ours = bnlab.convert(copy.deepcopy(model))
        d_eval = relative_difference(ours(x), expected)
        d_fold = relative_difference(bnlab.fold_batchnorm(ours)(x), expected)
        d_freeze = relative_difference(bnlab.freeze(copy.deepcopy(ours))(x), expected)
        back = bnlab.convert(copy.deepcopy(ours), to="torch")
        exact_back = torch.equal(back(x), expected)
    kind_text = ", ".join(f"{v} {k}" for k, v in kinds.items())
    return (
        f"| {name} | {kind_text} | {replaced}/{len(layers)} | {d64:.0e} | "
        f"{e_torch:.1e} / {e_ours:.1e} | {d_eval:.0e} | {d_fold:.0e} / {d_freeze:.0e} | "
        f"{'bit-exact' if exact_back else 'differs'} |"
    )


def main() -> None:
    warnings.simplefilter("ignore")
    libraries = (_import_torchvision(), __import__("timm"))
    print(
        "| model | BN-like layers | converted | train step, float64: max rel. diff | "
        "float32 error vs float64 torch: torch / bnlab | eval | fold / freeze | back to torch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in MODELS:
        print(row(libraries, name), flush=True)


if __name__ == "__main__":
    main()
