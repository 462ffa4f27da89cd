"""The experiment config: a typed dataclass, read from CLI flags or a TOML file, saved resolved.

A TOML config holds experiment settings at the top level and the run grid in ``[grid]``::

    name = "lr-sweep"            # the run folder is runs/lr-sweep unless `out` says otherwise
    preset = "lizard-cnn"        # optional: start from a preset's parameters
    threads = 1

    [grid]                       # each key a list of values (a scalar = one value)
    lr = [0.001, 0.01, 0.1]
    bn = [false, true]
    seed = [0, 1, 2]

Unknown keys, renamed keys (``momentum`` is now ``sgd_momentum``), wrong types and values out of
range are rejected (``UsageError``) with a message naming the key, where it came from (the file
and section, or the command-line flag) and the value. The resolved config
(preset and defaults filled in, every grid list explicit) is saved with each experiment as
``config.toml`` (written by tomli-w, so any name, emoji included, reads back) and inside
``record.json``; ``bnlab run`` on it repeats the experiment in a new folder (the saved config
has no ``out``: a folder is never overwritten, so the old one could not be reused).
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from bnlab.lab.errors import UsageError
from bnlab.lab.grid import PARAM_TYPES, RENAMED_PARAMS, RunParams, check_grid, named
from bnlab.lab.presets import get_preset


@dataclass
class Config:
    """Experiment settings (one field each; the TOML keys are the field names)."""

    name: str = ""  # experiment name; default: the preset's name, else "experiment"
    preset: str = ""  # a key of bnlab.lab.presets.PRESETS, or "" for none
    out: str = ""  # the experiment folder; default runs/<name>
    data_dir: str = ""  # folder with the IDX files; default: the usual places
    download: bool = False  # fetch MNIST / Fashion-MNIST if missing
    mirrors: list[str] = field(default_factory=list)  # download base URLs; default: built in
    threads: int = 0  # torch threads; 0: one for a small model, else torch's (bnlab.lab.threads)
    limit_train: int = 0  # use only the first N training samples (0: all)
    limit_test: int = 0  # use only the first N test samples (0: all)
    eval_batch_size: int = 2000  # batch size for test-set evaluation (memory only)
    split_seed: int = 0  # the train/test split of digits and mpg
    tensorboard: bool = False  # also write TensorBoard scalars (needs bnlab[tensorboard])
    progress: str = "auto"  # progress bar: "auto" (only on a terminal), "on", "off"
    probes: list[str] = field(default_factory=list)  # bnlab.lab.probes: activations, ics, landscape
    probe_layer: str = ""  # the probed layer (name or "Type#k"); default "Linear#1"
    grid: dict[str, list[Any]] = field(default_factory=dict)  # run parameter lists

    def __post_init__(self) -> None:
        check_fields(asdict(self), "config")
        if self.probes:
            from bnlab.lab.probes.runner import parse_probes

            self.probes = parse_probes(self.probes)
        self.grid = check_grid(self.grid, "[grid]")

    @property
    def experiment_name(self) -> str:
        return self.name or self.preset or "experiment"

    def resolved_grid(self) -> dict[str, list[Any]]:
        """The preset's lists overridden by ``grid``, with bn defaulting to [false, true]."""
        merged: dict[str, list[Any]] = {}
        if self.preset:
            merged.update(get_preset(self.preset).params)
        merged.update(self.grid)
        if "bn" not in merged and "norm" not in merged:
            merged = {"bn": [False, True], **merged}
        # Keep the RunParams field order so records have the same column order everywhere.
        order = [f.name for f in fields(RunParams)]
        return {k: merged[k] for k in order if k in merged}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml(self) -> str:
        """TOML text that reads back as this config (top-level keys, then ``[grid]``)."""
        header = (
            "# bnlab experiment config (resolved): `bnlab run FILE` runs it again (new folder)\n"
        )
        return header + tomli_w.dumps(self.to_dict())


_FIELD_TYPES: dict[str, type] = {
    f.name: list if f.default is MISSING else type(f.default)
    for f in fields(Config)
    if f.name != "grid"
}


_PROGRESS = ("auto", "on", "off")
_AT_LEAST = {"threads": 0, "limit_train": 0, "limit_test": 0, "split_seed": 0, "eval_batch_size": 1}


def check_fields(values: dict[str, Any], where: str) -> None:
    """Reject unknown and renamed keys, wrong types and values out of range (``UsageError``).

    ``where`` is where the values came from: a place ("sweep.toml") or, for one value, its
    command-line flag ("--threads"); see :func:`bnlab.lab.grid.named`.
    """
    for key, value in values.items():
        what = named("key", key, where)
        if key == "grid":
            if not isinstance(value, dict):
                raise UsageError(f"{what} must be a table, got {type(value).__name__}")
            continue
        if key in RENAMED_PARAMS:
            new, meaning = RENAMED_PARAMS[key]
            raise UsageError(f"config {what} was renamed {new!r} ({meaning}), a [grid] key")
        if key in PARAM_TYPES:
            raise UsageError(f"{what} is a run parameter: put it in the [grid] table")
        if key not in _FIELD_TYPES:
            known = ", ".join([*_FIELD_TYPES, "grid"])
            raise UsageError(f"unknown key {key!r} in {where}; expected one of {known}")
        kind = _FIELD_TYPES[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UsageError(
                f"{what} must be {kind.__name__}, got {type(value).__name__} {value!r}"
            )
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise UsageError(f"{what} must be a list of strings, got {value!r}")
        _check_setting(key, value, what)


def _check_setting(key: str, value: Any, what: str) -> None:
    """The range or choice of one setting of the right type; ``what`` names it."""
    if key == "progress" and value not in _PROGRESS:
        raise UsageError(f"{what} must be 'auto', 'on' or 'off', got {value!r}")
    if key in _AT_LEAST and value < _AT_LEAST[key]:
        raise UsageError(f"{what} must be >= {_AT_LEAST[key]}, got {value!r}")
    if key == "preset" and value:
        try:
            get_preset(value)
        except UsageError as exc:
            raise UsageError(f"{what}: {exc}") from None
    if key == "probes" and value:
        from bnlab.lab.probes.runner import parse_probes

        try:
            parse_probes(value)
        except UsageError as exc:
            raise UsageError(f"{what}: {exc}") from None


def config_from_dict(values: dict[str, Any], where: str = "config") -> Config:
    """A ``Config`` from a TOML document's values; errors name ``where`` (e.g. the file)."""
    check_fields(values, where)
    check_grid(values.get("grid", {}), f"[grid] of {where}")
    return Config(**values)


def load_config(path: Path | str) -> Config:
    """Read a TOML config; errors (``UsageError``) name the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    return config_from_dict(values, where=str(path))
