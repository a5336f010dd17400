"""The one exception type that means "the user asked for something invalid".

The CLI turns it into a one-line message and exit code 2; anything else is a bug
and keeps its traceback.
"""


class UsageError(ValueError):
    """Bad input from the user: unknown adapter/dtype/regime, bad option value, unwritable path."""
