"""The run folder (`RunFolder`): run.json, row journals, results and bench tables, logs.

Every file is written to a temporary name in the same folder and renamed into place, so a
reader (or an interrupted run) never sees a half-written file.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from harness.errors import UsageError, first_line
from harness.store import jsonfile, memory, validate


def write_atomic(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path to path, as a plain write would leave it.

    The file gets the mode it had (a 0644 baseline stays 0644), or, when new, 0666 less the
    umask, as `open()` would give it: `mkstemp` makes 0600 files, which a CI job's other
    users and a web server publishing the report could not read. A symlink is written
    through (its target replaced, the link kept): a baseline linked from another folder
    must not be turned into a regular file, leaving the link's target stale. The data is
    flushed to disk before the rename, so a crash leaves the old file or the new one.
    """
    path = Path(os.path.realpath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """This process's umask, read without changing it where Linux allows (no race with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


#: The value of a provenance fact this machine does not have (no GPU driver, a CPU-only
#: torch, no Triton, cestab not run from a git checkout), so "absent" is told apart from a
#: run.json written before cestab recorded the fact (the key is missing: "not recorded").
ABSENT = "absent"

#: The folder holding this cestab's `harness` package: the checkout whose commit a run records.
CHECKOUT = Path(__file__).resolve().parents[2]

_HEX40 = re.compile(r"[0-9a-f]{40}")


def provenance() -> dict:
    """What made the numbers, beyond the Python packages of `versions` (run.json "provenance").

    A result is only reproducible with the code that produced it: the git commit of the
    cestab checkout (and whether its tree differed from that commit), and on a GPU the
    CUDA toolkit torch was built with, the Triton that compiled the fused kernels and the
    NVIDIA driver that ran them. Each is read without importing a framework in this process
    (importing torch here would cost seconds and a CUDA context that the workers need);
    a fact the machine lacks is `ABSENT`.
    """
    commit, dirty = git_state(CHECKOUT)
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "cuda": torch_cuda_version(),
        "triton": distribution_version("triton"),
        "nvidia_driver": nvidia_driver(),
    }


def _git(root: Path, *args: str) -> str | None:
    """`git -C root args` stdout, stripped, or None when git is missing or fails."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run([git, "-C", str(root), *args], capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path) -> tuple[str, bool | None]:
    """(commit, dirty) of the git checkout whose top folder is `root`; (ABSENT, None) when
    `root` is no checkout's top (cestab installed in site-packages, which may well lie
    inside some other repository: that repository's commit would be a wrong answer).
    Dirty means a tracked file differs from the commit or an untracked, not ignored file
    exists (a new adapter module changes what runs as much as an edit does)."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != Path(root).resolve():
        return ABSENT, None
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None or not _HEX40.fullmatch(commit):
        return ABSENT, None  # a repository without a commit yet
    status = _git(root, "status", "--porcelain")
    return commit, (None if status is None else bool(status))


def distribution_version(package: str) -> str:
    """The installed version of the distribution providing import package `package`
    (`triton` ships as `triton` or `pytorch-triton`), read from its metadata without
    importing it; ABSENT when none is installed."""
    try:
        names = importlib.metadata.packages_distributions().get(package, []) or [package]
    except Exception:  # a broken dist-info elsewhere must not cost the run its provenance
        names = [package]
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ABSENT


def torch_cuda_version() -> str:
    """`torch.version.cuda` (the CUDA toolkit torch was built with), read from torch's
    generated `version.py` without importing torch; ABSENT for a CPU-only build or when
    torch is not installed."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return ABSENT
    if spec is None or not spec.submodule_search_locations:
        return ABSENT
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "version.py"
        if path.is_file():
            return _module_constant(path, "cuda")
    return ABSENT


def _module_constant(path: Path, name: str) -> str:
    """The literal a module assigns to `name` at top level (`cuda: Optional[str] = '12.8'`),
    as a string; ABSENT when it is None, not a literal, or not there."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return ABSENT
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                found = ast.literal_eval(value)
            except ValueError:
                return ABSENT
            return ABSENT if found is None else str(found)
    return ABSENT


#: The kernel module's version line, e.g. "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue ..."
_DRIVER_LINE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)")


def nvidia_driver(proc_file: Path = Path("/proc/driver/nvidia/version")) -> str:
    """The NVIDIA driver version: from the kernel module's /proc file (no process started),
    else from `nvidia-smi`; ABSENT on a machine with neither (no NVIDIA GPU)."""
    try:
        version = parse_driver_version(proc_file.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        version = None
    if version:
        return version
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            done = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=20, stdin=subprocess.DEVNULL)
            lines = done.stdout.split()
            if done.returncode == 0 and lines and re.fullmatch(r"\d+(?:\.\d+)+", lines[0]):
                return lines[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return ABSENT


def parse_driver_version(text: str) -> str | None:
    """The version in /proc/driver/nvidia/version's text, or None when it names none."""
    match = _DRIVER_LINE.search(text)
    return match.group(1) if match else None


#: Rows as they come (one JSON object per line), so an interrupted run keeps them.
ROWS_JOURNAL = "rows.jsonl"


class RunFolder:
    """One run folder: `run.json` (what was run, by whom, how long), the row journals, the
    final tables and the workers' logs. Every command that makes or reads a run folder
    (run, resume, bench, check, report) goes through this class, so each file is named,
    written (atomically) and read (with one-line errors) in one place.
    """

    META = "run.json"
    RESULTS = "results.parquet"
    BENCH = "bench.parquet"

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- making and finding one

    @classmethod
    def create(cls, parent: Path | str, seed: int) -> "RunFolder":
        """A new, empty parent/<UTC time>-s<seed>[-k]; UsageError if parent is not writable."""
        parent = Path(parent)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for k in range(1000):
                path = parent / (f"{stamp}-s{seed}" + (f"-{k}" if k else ""))
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                probe = path / ".write-test"
                probe.write_text("")
                probe.unlink()
                return cls(path)
        except OSError as exc:
            raise UsageError(f"cannot write the run folder under {parent}: {exc.strerror or exc}") from None
        raise UsageError(f"cannot find a free run folder name under {parent}")

    @classmethod
    def open(cls, path: Path | str) -> "RunFolder":
        """An existing run folder; UsageError (one line) if `path` is no folder."""
        folder = cls(path)
        if not folder.path.is_dir():
            what = "is not a folder" if folder.path.exists() else "does not exist"
            raise UsageError(f"{folder.path}: {what} (expected a run folder)")
        return folder

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    # -- run.json

    def read_meta(self, required: tuple[str, ...] = ()) -> dict:
        """run.json as a dict; UsageError (one line) if it is missing, unreadable, not a
        JSON object, or lacks a `required` key."""
        path = self.path / self.META
        if not path.is_file():
            raise UsageError(f"{self.path}: no {self.META} (not a run folder)")
        meta = validate.run_meta(jsonfile.read(path, self.META), str(path))  # bounded, checked field by field
        missing = [k for k in required if k not in meta]
        if missing:
            raise UsageError(f"{path}: no {', '.join(missing)}")
        return meta

    def write_meta(self, meta: dict) -> None:
        write_atomic(self.path / self.META, lambda p: p.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n"))

    # -- rows as they come

    def journal(self, name: str = ROWS_JOURNAL) -> "RowJournal":
        return RowJournal(self.path / name)

    def read_rows(self, name: str = ROWS_JOURNAL) -> list[dict]:
        """The rows journalled so far. A line that does not parse is a torn write (the
        process died mid-line) and is dropped: its row is computed again. A line that parses
        but is not a row (`42`, `null`, a hand edit) is a UsageError: the folder is not what
        cestab wrote."""
        path = self.path / name
        if not path.exists():
            return []
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                continue
            rows.append(validate.journal_row(row, str(path), i))
        return rows

    def drop_journal(self, name: str = ROWS_JOURNAL) -> None:
        (self.path / name).unlink(missing_ok=True)

    # -- the final tables

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        """`name` (a .parquet file) and its .csv twin, each atomically."""
        path = self.path / name
        write_atomic(path, lambda p: df.to_parquet(p, index=False))
        write_atomic(path.with_suffix(".csv"), lambda p: df.to_csv(p, index=False))

    def read_table(self, name: str, what: str, required_columns=()) -> pd.DataFrame:
        """A table of the folder; UsageError (one line) if it is missing, damaged, or lacks
        one of `required_columns`."""
        path = self.path / name
        if not path.is_file():
            raise UsageError(f"{self.path}: no {name} (not a finished run folder)")
        memory.require(path.stat().st_size * 50, str(path))  # a parquet file expands about so much
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise UsageError(f"{path}: cannot read the {what} ({first_line(exc) or type(exc).__name__})") from None
        missing = [c for c in required_columns if c not in df.columns]
        if missing:
            raise UsageError(f"{path}: not a cestab {what} (no {', '.join(missing)})")
        return df

    def finish(self, df: pd.DataFrame, meta: dict) -> None:
        """The final results tables, then run.json (marked complete by the caller); the row
        journal is no longer needed."""
        self.write_table(self.RESULTS, df)
        self.write_meta(meta)
        self.drop_journal(ROWS_JOURNAL)

    @property
    def logs(self) -> Path:
        """What the worker processes print (framework chatter, crash output)."""
        (self.path / "logs").mkdir(exist_ok=True)
        return self.path / "logs"


def new_meta(run_id: str, started: dt.datetime, command: str | None, options: dict, **facts) -> dict:
    """The part of run.json every run folder starts with (accuracy run and bench alike)."""
    return {
        "run_id": run_id,
        "started": started.isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "options": options,
        **facts,
        "environment": environment(),
        "provenance": provenance(),
    }


def run_id(folder: RunFolder | None, started: dt.datetime, seed: int) -> str:
    """The folder's name, or for a run without a folder the name it would have had."""
    return folder.name if folder is not None else started.strftime("%Y%m%d-%H%M%S") + f"-s{seed}"


class RowJournal:
    """Appends each result row to a JSON-lines file and flushes it: a crash loses at most a line."""

    def __init__(self, path: Path):
        _cut_torn_tail(path)
        self.file = open(path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self.file.write(json.dumps(row, default=_plain) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _cut_torn_tail(path: Path) -> None:
    """Drop a torn last line (the process died mid-write) before appending: otherwise the
    next row would be glued to it and lost too, and a second interruption would lose more."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            chunk, end = 1 << 16, size
            while end > 0:  # find the last newline, reading backwards
                start = max(0, end - chunk)
                f.seek(start)
                i = f.read(end - start).rfind(b"\n")
                if i >= 0:
                    f.truncate(start + i + 1)
                    return
                end = start
            f.truncate(0)
    except FileNotFoundError:
        return


def _plain(value):
    """numpy scalars to Python numbers for JSON."""
    return value.item() if hasattr(value, "item") else str(value)
