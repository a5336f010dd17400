"""The one exception type that means "the user asked for something invalid".

The CLI turns it into a one-line message and exit code 2; anything else is a bug
and keeps its traceback.
"""


class UsageError(ValueError):
    """Bad input from the user: unknown adapter/dtype/regime, bad option value, unwritable path."""


def first_line(text) -> str:
    """The first line of a message (an exception's, usually), at most 500 characters: rows,
    tables and terminals get one line, never a traceback."""
    lines = str(text).strip().splitlines()
    return (lines[0] if lines else "")[:500]
