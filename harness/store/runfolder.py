"""The run folder: results.parquet, results.csv and run.json, each written atomically.

Every file is written to a temporary name in the same folder and renamed into place, so a
reader (or an interrupted run) never sees a half-written file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import sys
import tempfile
from pathlib import Path

import pandas as pd

from harness.errors import UsageError


def write_atomic(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path to path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_run_dir(parent: Path | str, seed: int) -> Path:
    """Create and return parent/<UTC time>-s<seed>[-k]; UsageError if parent is not writable."""
    parent = Path(parent)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for k in range(1000):
            run_dir = parent / (f"{stamp}-s{seed}" + (f"-{k}" if k else ""))
            try:
                run_dir.mkdir()
            except FileExistsError:
                continue
            probe = run_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
            return run_dir
    except OSError as exc:
        raise UsageError(f"cannot write the run folder under {parent}: {exc.strerror or exc}") from None
    raise UsageError(f"cannot find a free run folder name under {parent}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Host, CPU, Python and platform facts for run.json."""
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


def log_dir(run_dir: Path | None) -> Path | None:
    """run_dir/logs: what the worker processes print (framework chatter, crash output)."""
    if run_dir is None:
        return None
    (run_dir / "logs").mkdir(exist_ok=True)
    return run_dir / "logs"


def write_meta(run_dir: Path, meta: dict) -> None:
    write_atomic(run_dir / "run.json", lambda p: p.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n"))


def write_results(run_dir: Path, df: pd.DataFrame, meta: dict) -> None:
    """The final tables, then run.json marked complete; the row journal is no longer needed."""
    write_atomic(run_dir / "results.parquet", lambda p: df.to_parquet(p, index=False))
    write_atomic(run_dir / "results.csv", lambda p: df.to_csv(p, index=False))
    write_meta(run_dir, meta)
    (run_dir / ROWS_JOURNAL).unlink(missing_ok=True)


#: Rows as they come (one JSON object per line), so an interrupted run keeps them.
ROWS_JOURNAL = "rows.jsonl"


class RowJournal:
    """Appends each result row to rows.jsonl and flushes it: a crash loses at most a line."""

    def __init__(self, run_dir: Path):
        self.file = open(run_dir / ROWS_JOURNAL, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self.file.write(json.dumps(row, default=_plain) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _plain(value):
    """numpy scalars to Python numbers for JSON."""
    return value.item() if hasattr(value, "item") else str(value)


def read_rows(run_dir: Path) -> list[dict]:
    """The rows journalled so far; a torn last line (the process died mid-write) is dropped."""
    path = Path(run_dir) / ROWS_JOURNAL
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows

