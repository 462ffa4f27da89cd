"""``python -m bnlab ...`` is the ``bnlab`` command (``bnlab.cli``)."""

import sys

from bnlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
