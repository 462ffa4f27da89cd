"""The lab: the tutorials' BN vs no-BN experiments, a run grid, a trainer and its record.

Modules, one concept each: data (in-memory data sets), models (the tutorials' networks), presets
(the tutorials' experiments), config (typed config, TOML), grid (parameter lists -> named runs),
trainer (the training loop), threads (a run's thread count), stats (mean and 95% CI over
seeds), record (the files of a run).
"""
