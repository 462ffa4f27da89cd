"""The claims ledger: every claim the tutorials make about BN, put to a measured test.

``bnlab claims [--only C2,C5] [--budget smoke|standard|full] [--out runs/claims]``. One concept
per module: :mod:`~bnlab.lab.claims.definitions` (the claims C1-C11, their protocols and
statistics), :mod:`~bnlab.lab.claims.budget` (how much is trained; what stands in for MNIST),
:mod:`~bnlab.lab.claims.runner` (the runs, each cached in its own folder),
:mod:`~bnlab.lab.claims.statistics` (paired differences over seeds, the verdict rule),
:mod:`~bnlab.lab.claims.ledger` (ledger.json and ledger.md), :mod:`~bnlab.lab.claims.figures`
and :mod:`~bnlab.lab.claims.page` (the report's claims section).
"""
