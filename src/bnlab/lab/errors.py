"""The lab's user-facing error: bad input that the user can fix, reported in one line.

``bnlab`` prints a ``UsageError`` as ``error: <message>`` on stderr and exits with status 2;
an exception of any other type is a bug and shows its traceback (status 1). Raise it for what
a user gave (a preset, a config value, a folder, a data set, a combination of options) and say
what was expected and what came. It is a ``ValueError``, so code that caught the
``ValueError`` of a check keeps working when the check raises ``UsageError`` instead.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """Bad input from the user: the message says what was expected, what came, how to fix it."""
