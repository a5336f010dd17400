"""Reading a user's JSON file (a baseline, a corpus) safely, with one-line errors.

`json` evaluates nothing, but it accepts the bare constants NaN and Infinity, which are not
JSON and which other tools reject: they are refused here, so a file that cestab accepts is
valid JSON everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import UsageError
from harness.store import memory


def read(path: Path, what: str, constant_hint: str = "") -> object:
    """The JSON value in `path`; UsageError `"{what} {path}: cannot read: ..."` or
    `"... not valid JSON: ..."` otherwise. `constant_hint` says how to write what a bare
    NaN/Infinity meant."""
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory, not a file")
    try:  # parsed JSON takes some 10-20 times its text: bound it before reading
        memory.require(path.stat().st_size * 20, f"{what} {path}")
    except FileNotFoundError:
        pass  # reported by the read below
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path}: not valid JSON: not UTF-8 text") from None

    def refuse(token: str):
        raise ValueError(f"bare {token} is not JSON" + (f"; {constant_hint}" if constant_hint else ""))

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} {path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except ValueError as exc:
        raise UsageError(f"{what} {path}: not valid JSON: {exc}") from None
    except RecursionError:  # nesting deeper than Python's stack: no cestab file is like that
        raise UsageError(f"{what} {path}: not valid JSON: nested too deeply") from None
