"""Benchmarks and measurement tools: neither the library nor the lab, free to import both.

One module per tool, each run as ``python -m bnlab.bench.<tool> [--help]``:

    kernels           bnlab's batch norm vs torch's, op by op (also ``bnlab bench``, ``make bench``)
    models            whole networks, torch's BN vs bnlab's (also ``bnlab bench --models``)
    layer_cost        where a BN layer's time goes inside a network (stand-ins, at inference)
    sync              SyncBatchNorm vs local BatchNorm on N local processes
    fold              a folded Conv+BN vs the Conv alone, at inference
    lab_epoch         a lab training epoch with bnlab's BN layers vs torch's
    trainer_overhead  the lab trainer's epoch vs a bare hand-written loop
    threads           a lab training epoch on 1 thread vs 2 (the lab's default thread count)

They all time their peers with ``timing`` (interleaved rounds, ratios of medians); ``zoo``
imports torchvision and timm for ``models`` and the model-zoo tests. Nothing in
the library (kernels, functional, layers, transforms, distributed) imports this package, and
importing it imports none of the tools.
"""
