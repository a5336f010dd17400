"""One validated loader for every file and JSON structure a user hands cestab.

Why one module: each reader (probe's arrays, case files, run.json on `--resume`, `check`
and `report`, the row journal, a baseline's options) used to trust what it read once it
parsed, so valid JSON of the wrong shape (`"options": []`, a journal line `42`, a seed
`"abc"`) or a `.npy` header claiming 10^12 elements ended in a traceback or a MemoryError,
sometimes after a whole run was computed. Here every structure is checked before it is
used, and every array header is read and bounded (`memory`) before its data is allocated.
A problem is a `UsageError` of one line naming the file and the field.

Untrusted files are never executed: arrays load with `allow_pickle=False` after their
header says they hold no objects, JSON with `json` (which evaluates nothing).
"""

from __future__ import annotations

import math
import re
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import UsageError
from harness.store import memory

#: The largest seed: seeds are stored as int64 (results table, case files).
MAX_SEED = 2**63 - 1
#: The longest timeout, in seconds, one adapter may be given on one case (a week): larger
#: values (and inf) are surely mistakes, and multiprocessing's poll cannot take them.
MAX_TIMEOUT = 7 * 24 * 3600.0
#: The most framework workers run at the same time (`--jobs`): more is surely a mistake.
MAX_JOBS = 1024
#: Largest .npy header we read (numpy's own default guard).
MAX_HEADER = 10000
#: Largest dimension of a shape on the command line or in a file's options.
MAX_DIM = 2**40


# ---------------------------------------------------------------- files


def user_file(path, what: str) -> Path:
    """`path` if it is a readable regular file; else one line saying what it is instead
    (`what` names the file: "logits file", "case file")."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise UsageError(f"{what} {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {path}: cannot read: permission denied")
    return path


@dataclass(frozen=True)
class Header:
    """What an .npy header (or an .npz member's) says, checked before any data is read."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data_bytes: int  # bytes of data that follow the header in the file

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.elements * self.dtype.itemsize


def _read_header(f, where: str, data_bytes: int) -> Header:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=MAX_HEADER)
        elif version == (2, 0):
            shape, _fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=MAX_HEADER)
        elif version == (3, 0):
            shape, _fortran, dtype = fmt._read_array_header(f, version, max_header_size=MAX_HEADER)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except Exception as exc:  # numpy raises ValueError, and others on odd bytes: all mean "malformed"
        raise UsageError(f"{where} is not a readable .npy array: malformed header ({_line(exc)})") from None
    if dtype.hasobject:
        raise UsageError(f"{where} holds pickled objects; save plain arrays (np.save)")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise UsageError(f"{where}: malformed header (shape {shape!r})")
    return Header(tuple(shape), dtype, data_bytes - f.tell())


def _line(exc) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def npz_members(path: Path, bad: str) -> dict[str, Header]:
    """Each `.npy` member of an .npz archive and its checked header, by array name; `bad`
    begins the error line ("logits file X is not a readable .npz archive")."""
    try:
        with zipfile.ZipFile(path) as z:
            out = {}
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    out[info.filename[:-4]] = _read_header(f, f"{bad}: member {info.filename}", info.file_size)
            return out
    except UsageError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, NotImplementedError (encrypted), OSError, EOFError
        raise UsageError(f"{bad} ({_line(exc)})") from None


def npy_header(path: Path, what: str) -> Header:
    with open(path, "rb") as f:
        return _read_header(f, f"{what} file {path}", os.fstat(f.fileno()).st_size)


def _kind(path: Path, what: str) -> str:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    if magic == b"\x93NUMPY":
        return "npy"
    if magic.startswith(b"PK\x03\x04") or magic.startswith(b"PK\x05\x06"):
        return "npz"
    return ""


def _check_size(header: Header, where: str, extra_per_element: int) -> None:
    if header.data_bytes < header.nbytes:
        raise UsageError(f"{where} is truncated: its header promises {header.nbytes} bytes of data, "
                         f"the file holds {max(header.data_bytes, 0)}")
    shape = "x".join(map(str, header.shape)) or "scalar"
    memory.require(header.nbytes + header.elements * extra_per_element, f"{where} ({shape} {header.dtype})")


def load_array(path, what: str, extra_per_element: int = 0) -> tuple[np.ndarray, Header]:
    """The one array in a .npy file, or the one (or the one named `what`) in an .npz archive.

    The header is read and checked first: no objects (pickle), data not truncated, and its
    size plus `extra_per_element` bytes per element (what the caller will build from it)
    within the memory limit. Only then is the data read, with `allow_pickle=False`.
    """
    path = user_file(path, f"{what} file")
    kind = _kind(path, f"{what} file")
    if not kind:
        raise UsageError(f"{what} file {path} is not a readable .npy/.npz file")
    if kind == "npy":
        header = npy_header(path, what)
        _check_size(header, f"{what} file {path}", extra_per_element)
        name = None
    else:
        members = npz_members(path, f"{what} file {path} is not a readable .npz archive")
        names = sorted(members)
        name = what if what in members else (names[0] if len(names) == 1 else None)
        if name is None:
            raise UsageError(f"{what} file {path} holds {len(names)} arrays ({', '.join(names)}); name one '{what}' or keep one")
        header = members[name]
        _check_size(header, f"{what} array {name!r} in {path}", extra_per_element)
    try:
        with open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            if name is not None:
                with data:
                    data = data[name]
    except Exception as exc:  # the header was fine; the data is not (bad zip CRC, short read)
        raise UsageError(f"{what} file {path} is not a readable .npy/.npz file ({_line(exc)})") from None
    return data, header


def load_npz(path, what: str, required: tuple[str, ...], extra_per_element: int = 0) -> dict[str, np.ndarray]:
    """Every array of an .npz archive (a case file), each header checked and all of them
    bounded together before any is read; the `required` names must be there."""
    path = user_file(path, what)
    bad = f"{path} is not a cestab {what}"
    if _kind(path, what) != "npz":
        raise UsageError(f"{bad}: not an .npz archive")
    members = npz_members(path, bad)
    missing = [n for n in required if n not in members]
    if missing:
        raise UsageError(f"{bad}: no array {', '.join(map(repr, missing))}")
    total = 0
    for name, header in members.items():
        if header.data_bytes < header.nbytes:
            raise UsageError(f"{bad}: array {name!r} is truncated")
        total += header.nbytes + header.elements * extra_per_element
    memory.require(total, f"{what} {path}")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            return {name: data[name] for name in members}
    except Exception as exc:
        raise UsageError(f"{bad} ({_line(exc)})") from None


def writable(path, what: str, make_parents: bool = False) -> None:
    """UsageError unless `path` (through a symlink) can be written atomically: checked
    before the work whose result it will hold (a --quick run, a JUnit report), not after.
    With `make_parents`, missing folders count as writable where the nearest existing one is."""
    import tempfile

    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise UsageError(f"cannot write {what} {path}: it is a directory")
    folder = target.parent
    while make_parents and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {what} {path}: no folder {folder}")
    if target.exists() and not os.access(target, os.W_OK):
        raise UsageError(f"cannot write {what} {path}: permission denied")
    try:  # what the atomic write will do: a temporary file beside it (catches read-only mounts too)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.", suffix=".tmp"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {what} {path}: {(exc.strerror or str(exc)).lower()}") from None


# ---------------------------------------------------------------- JSON structures


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _names(value, field: str, where: str, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise UsageError(f"{where}: {field} must be a list of names" + (" or null" if allow_none else "") + f", got {_show(value)}")
    return list(value)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def seed(value, where: str = "seed") -> int:
    if not _is_int(value) or not 0 <= value <= MAX_SEED:
        raise UsageError(f"{where} must be an integer in [0, 2**63), got {_show(value)}")
    return value


def timeout(value, where: str = "timeout") -> float:
    if not _is_number(value) or not (0 < value <= MAX_TIMEOUT):
        raise UsageError(f"{where} must be positive seconds, at most {MAX_TIMEOUT:g}, got {_show(value)}")
    return float(value)


def jobs(value, where: str = "jobs") -> int | None:
    """`--jobs`: None (the default: the number of cores) or 1 to MAX_JOBS workers at once."""
    if value is None:
        return None
    if not _is_int(value) or not 1 <= value <= MAX_JOBS:
        raise UsageError(f"{where} must be a positive integer, at most {MAX_JOBS}, got {_show(value)}")
    return int(value)


def shapes(value, where: str, field: str = "shapes"):
    if value is None:
        return None
    ok = isinstance(value, list) and value and all(
        isinstance(s, list) and len(s) in (2, 3) and all(_is_int(d) and 1 <= d <= MAX_DIM for d in s) and s[-1] >= 2
        for s in value
    )
    if not ok:
        raise UsageError(f"{where}: {field} must be a list of [rows, classes] or [rows, time, classes] "
                         f"(at least 1 row, 2 classes), got {_show(value)}")
    return [list(s) for s in value]


#: Defaults of the run options that older run folders may lack.
_OPTION_DEFAULTS = {"plugins": [], "dtypes": None, "regimes": None, "shapes": None, "label_kinds": None,
                    "seed": 0, "device": "cpu", "isolate": True, "timeout": 120.0, "budget": None, "corpus": False}


def run_options(options, where: str, required=("adapters",), defaults: dict | None = None) -> dict:
    """A run's options (run.json's "options", a baseline's), each field type- and range-checked;
    missing optional fields take `defaults` (those of `runner.run` by default)."""
    if not isinstance(options, dict):
        raise UsageError(f"{where}: options must be an object, got {_show(options)}")
    missing = [k for k in required if k not in options]
    if missing:
        raise UsageError(f"{where}: options lack {', '.join(missing)}")
    out = dict(_OPTION_DEFAULTS if defaults is None else defaults)
    out.update(options)
    checked = dict(out)
    for field in ("adapters", "dtypes", "regimes", "label_kinds"):
        if field in out:
            checked[field] = _names(out[field], f"options.{field}", where)
    if "plugins" in out:
        checked["plugins"] = _names(out["plugins"], "options.plugins", where, allow_none=False)
    if "shapes" in out:
        checked["shapes"] = shapes(out["shapes"], where, "options.shapes")
    if "seed" in out:
        checked["seed"] = seed(out["seed"], f"{where}: options.seed")
    if "timeout" in out:
        checked["timeout"] = timeout(out["timeout"], f"{where}: options.timeout")
    if "jobs" in out:
        checked["jobs"] = jobs(out["jobs"], f"{where}: options.jobs")
    if "device" in out and out["device"] not in ("cpu", "cuda"):
        raise UsageError(f"{where}: options.device must be \"cpu\" or \"cuda\", got {_show(out['device'])}")
    for field in ("isolate", "corpus"):
        if field in out and not isinstance(out[field], bool):
            raise UsageError(f"{where}: options.{field} must be true or false, got {_show(out[field])}")
    if "budget" in out and out["budget"] is not None:
        if not isinstance(out["budget"], str):  # a list is unhashable; the runner checks the name
            raise UsageError(f"{where}: options.budget must be null or a budget name, got {_show(out['budget'])}")
    return checked


def run_meta(meta, where: str) -> dict:
    """run.json of a run folder: an object whose options, state and command are well-formed."""
    if not isinstance(meta, dict):
        raise UsageError(f"{where}: not a run.json (a JSON object), got {type(meta).__name__}")
    for field, kind in (("state", str), ("command", str), ("run_id", str), ("started", str)):
        if field in meta and meta[field] is not None and not isinstance(meta[field], kind):
            raise UsageError(f"{where}: {field} must be a string, got {_show(meta[field])}")
    for field in ("versions", "adapters", "environment", "unavailable_frameworks"):
        if field in meta and not isinstance(meta[field], dict):
            raise UsageError(f"{where}: {field} must be an object, got {_show(meta[field])}")
    if "timing" in meta and not isinstance(meta["timing"], list):
        raise UsageError(f"{where}: timing must be a list, got {_show(meta['timing'])}")
    if "provenance" in meta:
        provenance(meta["provenance"], where)
    if "options" in meta:
        meta = dict(meta, options=run_options(meta["options"], where))
    return meta


def provenance(value, where: str) -> dict:
    """run.json's "provenance" (runfolder.provenance): the report prints these beside the
    numbers, so a hand-edited or foreign value is refused here rather than shown as a fact."""
    if not isinstance(value, dict):
        raise UsageError(f"{where}: provenance must be an object, got {_show(value)}")
    commit = value.get("git_commit")
    if "git_commit" in value and not (commit == "absent" or (isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit))):
        raise UsageError(f"{where}: provenance.git_commit must be a 40-digit hex commit or \"absent\", got {_show(commit)}")
    if "git_dirty" in value and value["git_dirty"] is not None and not isinstance(value["git_dirty"], bool):
        raise UsageError(f"{where}: provenance.git_dirty must be true, false or null, got {_show(value['git_dirty'])}")
    for field in ("cuda", "triton", "nvidia_driver"):
        v = value.get(field)
        if field in value and not (isinstance(v, str) and 0 < len(v) <= 100 and v.isprintable()):
            raise UsageError(f"{where}: provenance.{field} must be a version string or \"absent\", got {_show(v)}")
    return value


def journal_row(row, where: str, line: int) -> dict:
    """One row of rows.jsonl: an object naming its case and adapter."""
    if not isinstance(row, dict) or not isinstance(row.get("case_id"), str) or not isinstance(row.get("adapter"), str):
        raise UsageError(f"{where} line {line}: not a result row (an object with case_id and adapter), got {_show(row)}")
    for key, value in row.items():
        if not (value is None or isinstance(value, (str, int, float, bool))):
            raise UsageError(f"{where} line {line}: {key} must be a plain value, got {_show(value)}")
    return row


_CASE_INFO = {"case_id": str, "regime": str, "dtype": str, "label_kind": str, "source": str, "note": str}


def case_info(info, where: str) -> dict:
    """The JSON record of a case file: its case's fields and the finding's (adapter, score...)."""
    from harness.numerics.cases import LABEL_KINDS
    from harness.numerics.dtypes import DTYPE_NAMES

    if not isinstance(info, dict):
        raise UsageError(f"{where}: info must be a JSON object, got {_show(info)}")
    for field, kind in _CASE_INFO.items():
        if not isinstance(info.get(field), kind):
            raise UsageError(f"{where}: info.{field} must be a string, got {_show(info.get(field))}")
    if info["dtype"] not in DTYPE_NAMES:
        raise UsageError(f"{where}: info.dtype must be one of {', '.join(DTYPE_NAMES)}, got {_show(info['dtype'])}")
    if info["label_kind"] not in LABEL_KINDS:
        raise UsageError(f"{where}: info.label_kind must be one of {', '.join(LABEL_KINDS)}, got {_show(info['label_kind'])}")
    smoothing = info.get("smoothing")
    if not _is_number(smoothing) or not 0 <= smoothing < 1:
        raise UsageError(f"{where}: info.smoothing must be a number in [0, 1), got {_show(smoothing)}")
    seed(info.get("seed"), f"{where}: info.seed")
    bs = info.get("batch_shape", [])
    if not isinstance(bs, list) or not all(_is_int(d) and 0 <= d <= MAX_DIM for d in bs):
        raise UsageError(f"{where}: info.batch_shape must be a list of sizes, got {_show(bs)}")
    for field in ("adapter", "status", "message"):
        if field in info and not isinstance(info[field], str):
            raise UsageError(f"{where}: info.{field} must be a string, got {_show(info[field])}")
    if "score" in info and not _is_number(info["score"]):
        raise UsageError(f"{where}: info.score must be a number, got {_show(info['score'])}")
    return info
