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

from .errors import UsageError


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


def write_results(run_dir: Path, df: pd.DataFrame, meta: dict) -> None:
    write_atomic(run_dir / "results.parquet", lambda p: df.to_parquet(p, index=False))
    write_atomic(run_dir / "results.csv", lambda p: df.to_csv(p, index=False))
    write_atomic(run_dir / "run.json", lambda p: p.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n"))


def read_results(run_dir: Path | str) -> pd.DataFrame:
    path = Path(run_dir) / "results.parquet"
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a run folder (no results.parquet)")
    return pd.read_parquet(path)
