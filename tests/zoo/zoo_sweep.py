"""A wider sweep than the test suite: ``.venv/bin/python tests/zoo/zoo_sweep.py [lib:model ...]``.

For each timm (``timm:name``) or torchvision (``tv:name``) model, random init, float64, batch 2,
64x64: BN-like layers found and converted, and the largest relative difference (as in
test_zoo.py) to torch for one training step (output, gradients, buffers), eval, and eval after
``fold_batchnorm`` and ``freeze``. One line per model; an error is printed, not raised.
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import _import_torchvision
from test_zoo import relative_difference

import bnlab
from bnlab.transforms.layer_classes import role_of

DEFAULT = [
    "tv:resnet50",
    "tv:densenet121",
    "tv:shufflenet_v2_x0_5",
    "tv:mnasnet0_5",
    "tv:regnet_y_400mf",
    "tv:efficientnet_v2_s",
    "tv:vgg11_bn",
    "tv:resnext50_32x4d",
    "tv:wide_resnet50_2",
    "tv:mobilenet_v2",
    "timm:resnet50d",
    "timm:cspresnet50",
    "timm:dla34",
    "timm:dpn68",
    "timm:ese_vovnet19b_dw",
    "timm:hrnet_w18_small",
    "timm:mixnet_s",
    "timm:rexnet_100",
    "timm:tf_efficientnet_b0",
    "timm:lcnet_050",
    "timm:ghostnet_100",
    "timm:resnest14d",
    "timm:selecsls42b",
    "timm:tresnet_m",
    "timm:repvgg_a0",
    "timm:mobileone_s0",
    "timm:fbnetv3_b",
    "timm:hardcorenas_a",
    "timm:densenet121",
    "timm:seresnext26d_32x4d",
    "timm:skresnet18",
    "timm:cspdarknet53",
    "timm:regnety_002",
    "timm:efficientvit_b0",
    "timm:fastvit_t8",
    "timm:mobilevit_xxs",
    "timm:ghostnetv2_100",
    "timm:mobilenetv4_conv_small",
]


def check(spec: str, torchvision: object, timm: object) -> str:
    library, name = spec.split(":")
    torch.manual_seed(0)
    if library == "timm":
        model = timm.create_model(name, pretrained=False, num_classes=10)  # type: ignore[attr-defined]
    else:
        model = getattr(torchvision.models, name)(weights=None, num_classes=10)  # type: ignore[attr-defined]
    model = model.double()
    roles = [role_of(m) for m in model.modules()]
    found = sum(r is not None for r in roles)
    ours = bnlab.convert(copy.deepcopy(model))
    converted = sum(type(m).__module__.startswith("bnlab.") for m in ours.modules())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    results = []
    for m in (model, ours):
        m.train()
        torch.manual_seed(1)
        out = m(x)
        out.square().mean().backward()
        grads = [p.grad for p in m.parameters() if p.grad is not None]
        results.append([out, *grads, *m.buffers()])
    train = max(relative_difference(a, b) for a, b in zip(results[1], results[0], strict=True))
    model.eval()
    ours.eval()
    with torch.no_grad():
        expected = model(x)
        evals = [
            relative_difference(ours(x), expected),
            relative_difference(bnlab.fold_batchnorm(ours)(x), expected),
            relative_difference(bnlab.freeze(copy.deepcopy(ours))(x), expected),
        ]
    return (
        f"bn={found} unknown={roles.count('unknown')} converted={converted} train={train:.1e} "
        f"eval={evals[0]:.1e} fold={evals[1]:.1e} freeze={evals[2]:.1e}"
    )


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    torchvision = _import_torchvision()
    import timm

    for spec in sys.argv[1:] or DEFAULT:
        start = time.perf_counter()
        try:
            line = check(spec, torchvision, timm)
        except Exception as error:  # a sweep reports every model, whatever fails
            line = f"ERROR {type(error).__name__}: {str(error)[:200]}"
        print(f"{spec}: {line} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
