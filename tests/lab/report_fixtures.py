"""Small run folders in the documented layout (bnlab.lab.record), for the plot/report tests."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

import bnlab
from bnlab.lab.probes import ProbeConfig, RunProbes
from bnlab.lab.record import PARAM_KEYS, Record
from bnlab.lab.report import probe_path

ENV = {"python": "3.11", "cpu_count": 2, "torch_threads": 2, "versions": {"torch": "2.13.0"}}


def _params(bn: bool, seed: int, lr: float) -> dict[str, Any]:
    return {
        "network": "tiny",
        "bn": bn,
        "bn_impl": "bnlab",
        "dataset": "synthetic",
        "normalization": "none",
        "optimizer": "adam",
        "lr": lr,
        "momentum": 0.0,
        "batch_size": 32,
        "epochs": 3,
        "seed": seed,
    }


def make_record(
    folder: Path,
    name: str = "tiny-cnn",
    lrs: tuple[float, ...] = (0.01,),
    seeds: tuple[int, ...] = (0, 1, 2),
    epochs: int = 3,
    status: str = "complete",
    diverge: tuple[bool, float] | None = None,
    stop_after: int | None = None,
) -> Record:
    """A record of with/without-BN runs; ``diverge=(bn, lr)`` makes those runs' loss NaN;
    ``stop_after=k`` leaves run k partial (one epoch) and later runs pending."""
    runs, rows = [], []
    k = 0
    for lr in lrs:
        for bn in (False, True):
            for seed in seeds:
                k += 1
                group = ("bn" if bn else "no_bn") + (f",lr={lr}" if len(lrs) > 1 else "")
                run_name = f"{group},seed={seed}"
                n_ep = epochs
                run_status = "complete"
                if stop_after is not None and k >= stop_after:
                    n_ep = 1 if k == stop_after else 0
                    run_status = "partial" if k == stop_after else "pending"
                p = _params(bn, seed, lr)
                runs.append(
                    {"run": k, "name": run_name, "group": group, "params": p,
                     "status": run_status, "epochs_done": n_ep, "parameters": 1234}
                )  # fmt: skip
                for e in range(1, n_ep + 1):
                    gain = 0.05 if bn else 0.0
                    acc = 0.6 + 0.1 * e + gain + 0.01 * seed
                    loss = 1.2 / e - gain
                    if diverge == (bn, lr):
                        loss = math.nan
                    rows.append(
                        {"run": k, "name": run_name, "group": group, "epoch": e,
                         "loss": loss, "accuracy": acc, "test_loss": loss + 0.1,
                         "test_accuracy": acc - 0.02, "epoch_duration": 0.5 + 0.1 * bn,
                         "eval_duration": 0.05, "run_duration": 0.6 * e,
                         "samples_per_s": 1000.0, **p}
                    )  # fmt: skip
    rec = Record(
        name=name,
        metric="accuracy",
        task="classification",
        param_keys=list(PARAM_KEYS),
        config={"preset": name, "epochs": epochs, "lr": list(lrs)},
        grid={"bn": [False, True], "seed": list(seeds), "lr": list(lrs)},
        runs=runs,
        rows=rows,
        notes=[],
        environment=ENV,
        status=status,
    )
    rec.save(folder)
    return rec


def tiny_cnn(bn: bool, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2)]
    if bn:
        layers.append(bnlab.BatchNorm2d(3))
    layers += [nn.Flatten(), nn.Linear(27, 16), nn.ReLU()]
    if bn:
        layers.append(bnlab.BatchNorm1d(16))
    layers += [nn.Linear(16, 10)]
    return nn.Sequential(*layers)


def probe_result(bn: bool) -> dict[str, Any]:
    """Train the tiny CNN for two short epochs with every probe on; return the result
    (computed once per process, a fresh copy each call)."""
    return json.loads(_probe_result_json(bn))


@functools.lru_cache(maxsize=2)
def _probe_result_json(bn: bool) -> str:
    model = tiny_cnn(bn)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(96, 1, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g)
    cfg = ProbeConfig(ics_every=2, landscape_steps=5, progress=False)
    with RunProbes(["activations", "ics", "landscape"], model, loss_fn, opt, cfg) as probes:
        for _ in range(2):
            for i in range(0, 96, 32):
                probes.before_step(x[i : i + 32], y[i : i + 32])
                opt.zero_grad()
                loss_fn(model(x[i : i + 32]), y[i : i + 32]).backward()
                opt.step()
            probes.after_epoch(x[:32], y[:32])
        probes.finish([(x[:48], y[:48])])
    return json.dumps(probes.result())


def add_probes(folder: Path, rec: Record) -> None:
    """Probe files for the first run without and the first run with BN."""
    for bn in (False, True):
        run = next(r for r in rec.runs if r["params"]["bn"] is bn)
        path = probe_path(folder, run["run"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(probe_result(bn)))
