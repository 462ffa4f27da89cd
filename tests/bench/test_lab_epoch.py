"""The end-to-end bn_impl comparison trains both implementations like for like."""

from __future__ import annotations

from bnlab.bench.lab_epoch import measure
from bnlab.lab.data import load_dataset
from bnlab.lab.grid import RunParams


def test_lab_epoch_trains_both_implementations_like_for_like():
    dataset = load_dataset("digits", normalization="normal").subset(300, 1)
    params = RunParams(network="mlp", bn=True, optimizer="sgd", lr=0.05, batch_size=50, seed=3)
    result = measure(dataset, params, repeats=2)
    assert len(result["bnlab_s"]) == 2 and len(result["torch_s"]) == 2
    assert result["ratio"] > 0
    losses = result["last_loss"]
    # same seed, same batches, same BN maths: the training losses agree closely
    assert abs(losses["bnlab"] - losses["torch"]) < 1e-4 * max(1.0, abs(losses["torch"])), losses
