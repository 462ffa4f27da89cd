"""Probes: measure what BN does inside a network while it trains, without changing it.

Python API::

    from bnlab.lab.probes import ActivationProbe, InputShiftProbe, ics_measure
    from bnlab.lab.probes import loss_surface, gradient_predictiveness, RunProbes

    with ActivationProbe(model, layer="Linear#1") as probe:   # hook registered here
        train(model)                                           # ... and removed here
    probe.result()

:class:`RunProbes` bundles the probes a run asked for (``--probe activations,ics,landscape``)
behind four calls a training loop makes; with no probes asked, nothing is registered and the
loop runs exactly as without them.
"""

from bnlab.lab.probes._layers import find_layer, layer_names
from bnlab.lab.probes.activations import ActivationProbe, histogram
from bnlab.lab.probes.landscape import (
    filter_normalized_direction,
    gradient_predictiveness,
    loss_surface,
)
from bnlab.lab.probes.runner import PROBE_NAMES, ProbeConfig, RunProbes, parse_probes
from bnlab.lab.probes.shift import InputShiftProbe, ics_measure

__all__ = [
    "PROBE_NAMES",
    "ActivationProbe",
    "InputShiftProbe",
    "ProbeConfig",
    "RunProbes",
    "filter_normalized_direction",
    "find_layer",
    "gradient_predictiveness",
    "histogram",
    "ics_measure",
    "layer_names",
    "loss_surface",
    "parse_probes",
]
