"""A short demonstration of the core: normalize a batch, show the statistics, compare to torch."""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table

import bnlab


def main() -> None:
    console = Console()
    torch.manual_seed(0)
    channels = 4
    x = torch.randn(32, channels, 8, 8) * torch.tensor([1.0, 5.0, 0.1, 20.0]).view(1, -1, 1, 1)
    x = x + torch.tensor([0.0, -3.0, 10.0, 1e3]).view(1, -1, 1, 1)

    ours = bnlab.BatchNorm2d(channels)
    theirs = torch.nn.BatchNorm2d(channels)
    y = ours(x)
    y_ref = theirs(x)

    table = Table(title="bnlab.BatchNorm2d on a (32, 4, 8, 8) batch, training mode")
    for col in ("channel", "mean before", "std before", "mean after", "std after"):
        table.add_column(col, justify="right")
    dims = (0, 2, 3)
    for c in range(channels):
        table.add_row(
            str(c),
            f"{x.mean(dims)[c]:.4f}",
            f"{x.std(dims, unbiased=False)[c]:.4f}",
            f"{y.mean(dims)[c]:+.2e}",
            f"{y.std(dims, unbiased=False)[c]:.4f}",
        )
    console.print(table)
    assert ours.running_mean is not None and theirs.running_mean is not None
    assert ours.running_var is not None and theirs.running_var is not None
    console.print(
        "max |bnlab - torch.nn.BatchNorm2d|: "
        f"output {(y - y_ref).abs().max():.2e}, "
        f"running_mean {(ours.running_mean - theirs.running_mean).abs().max():.2e}, "
        f"running_var {(ours.running_var - theirs.running_var).abs().max():.2e}"
    )


if __name__ == "__main__":
    main()
