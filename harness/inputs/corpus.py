"""The corpus: real inputs from public bug reports, run against every adapter.

Each entry of `corpus.json` (next to this module) is one report from a public issue
tracker (PyTorch, JAX, optax, TensorFlow, Keras, SciPy): the repository and issue number,
what went wrong there, and the input that triggered it, rebuilt small and exact. A bug found
in one framework is a question for all the others, so every entry becomes a `Case` that
every adapter runs.

The file is JSON, read with `jsonfile.read` and validated field by field; anything malformed
is a `UsageError` with one line naming the entry and the problem. Logits are written either
literally (`rows`) or as a compact recipe the loader expands (`shape` + `fill` or a seeded
`uniform` draw, then `set` overrides), so a report with 2000 classes stays a few lines.
Non-finite values are the strings "inf", "-inf" and "nan" (bare `Infinity`/`NaN` tokens
are refused: they are not JSON). Values are rounded once, to the entry's own dtype, exactly
as the report's framework held them; `reconstruction` says how the input was derived and
where anything was rounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.numerics import dtypes as dt  # `dtypes` is the argument name of `cases`
from harness.store import jsonfile
from harness.numerics.cases import LABEL_KINDS, Case
from harness.errors import UsageError
from harness.numerics.statuses import STATUSES

DEFAULT_PATH = Path(__file__).with_name("corpus.json")

REQUIRED = (
    "id", "repository", "issue", "url", "title", "what_went_wrong", "reconstruction", "dtype", "logits", "labels",
)
#: `realistic` (bool) and `realistic_why` (str): does training or inference produce this
#: input, and why (the report shows realistic and adversarial inputs apart). An entry
#: that does not say counts as adversarial, with "not declared" as its reason.
#: `expectation`: what the entry's public report implies (see `_expectation`).
OPTIONAL = ("observed_2026", "realistic", "realistic_why", "expectation")
LOGIT_KEYS = ("rows", "shape", "fill", "uniform", "set")
LABEL_KEYS = ("kind", "target", "soft", "smoothing", "ignored")
NONFINITE = {"inf": np.inf, "+inf": np.inf, "-inf": -np.inf, "nan": np.nan}
MAX_ELEMENTS = 1 << 20  # a corpus entry is a small reproducer, not a data set
SOFT_QUANTUM = 256  # soft labels are multiples of 1/256: exact in every tested dtype

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, eq=False)
class Entry:
    """One bug report and its input: logits exact in `dtype` (held widened to float64)."""

    id: str
    repository: str
    issue: int
    url: str
    title: str
    what_went_wrong: str
    reconstruction: str
    dtype: str
    logits: np.ndarray  # (N, V) float64, every value exact in `dtype`
    target: np.ndarray  # (N,) int64
    label_kind: str
    soft_labels: np.ndarray | None = None
    smoothing: float = 0.0
    ignored: np.ndarray | None = None
    observed_2026: dict = field(default_factory=dict)  # {"environment", "status": {adapter: status}, "note"}
    realistic: bool = False
    realistic_why: str = "not declared"
    expectation: dict = field(default_factory=dict)  # {"adapters", "status", "fixed_upstream"?}: see `_expectation`

    def case(self, dtype: str | None = None) -> Case:
        """This entry as a Case in `dtype` (default: its own). The report's values, already
        rounded to the entry's dtype, are rounded once more if `dtype` is narrower."""
        dtype = dtype or self.dtype
        with np.errstate(over="ignore"):  # a value past a narrower dtype's range becomes +-inf
            logits = dt.exact(self.logits, dtype)
        return Case(
            case_id=f"corpus/{self.id}/{dtype}",
            regime="corpus",
            dtype=dtype,
            logits=logits,
            target=self.target,
            label_kind=self.label_kind,
            soft_labels=self.soft_labels,
            smoothing=self.smoothing,
            ignored=self.ignored,
            source="corpus",
            note=self.url,
        )


class _Problem(Exception):
    """A malformed field; `load` adds the file and entry to the message."""


def load(path=None) -> list[Entry]:
    """Every entry of the corpus file (default: the one shipped with cestab), validated."""
    path = Path(path) if path is not None else DEFAULT_PATH
    raw = jsonfile.read(path, "corpus", 'write non-finite values as the strings "inf", "-inf", "nan"')
    if not isinstance(raw, list):
        raise UsageError(f"corpus {path}: expected a JSON list of entries, got {type(raw).__name__}")
    entries: list[Entry] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        name = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else f"#{index}"
        try:
            entry = _entry(item)
            if entry.id in seen:
                raise _Problem(f"duplicate id {entry.id!r}")
            entry.case()  # the Case's own validation (target range, shapes, dtype)
        except (_Problem, UsageError) as exc:
            raise UsageError(f"corpus {path}: entry {name}: {exc}") from None
        seen.add(entry.id)
        entries.append(entry)
    return entries


def cases(dtypes=None, path=None) -> list[Case]:
    """One Case per entry in its own dtype, plus one per other dtype asked for.

    `dtypes=None` runs each entry as reported; `dtypes=["float16", ...]` also runs it in
    those dtypes (the entry's own dtype is always kept: it is the report).
    """
    extra = [] if dtypes is None else list(dtypes)
    for name in extra:
        dt.get(name)
    out = []
    for entry in load(path):
        chosen = [entry.dtype] + [d for d in dt.DTYPE_NAMES if d in extra and d != entry.dtype]
        out.extend(entry.case(d) for d in chosen)
    return out


# --- validation ----------------------------------------------------------------------------


def _entry(item) -> Entry:
    if not isinstance(item, dict):
        raise _Problem(f"expected an object, got {type(item).__name__}")
    missing = [k for k in REQUIRED if k not in item]
    if missing:
        raise _Problem(f"missing field {missing[0]!r}")
    unknown = sorted(set(item) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise _Problem(f"unknown field {unknown[0]!r}")
    for key in ("id", "repository", "url", "title", "what_went_wrong", "reconstruction", "dtype"):
        if not isinstance(item[key], str) or not item[key].strip():
            raise _Problem(f"{key} must be a non-empty string")
    if not _ID.match(item["id"]):
        raise _Problem(f"id {item['id']!r} must be lower-case letters, digits, '.', '_' or '-'")
    if not _REPOSITORY.match(item["repository"]):
        raise _Problem(f"repository {item['repository']!r} must be owner/name")
    issue = item["issue"]
    if not _is_int(issue) or issue <= 0:
        raise _Problem(f"issue must be a positive integer, got {issue!r}")
    urls = {f"https://github.com/{item['repository']}/{kind}/{issue}" for kind in ("issues", "pull")}
    if item["url"] not in urls:
        raise _Problem(f"url {item['url']!r} is not the github.com address of {item['repository']}#{issue}")
    if item["dtype"] not in dt.DTYPE_NAMES:
        raise _Problem(f"unknown dtype {item['dtype']!r}; choose from {', '.join(dt.DTYPE_NAMES)}")
    observed = _observed(item.get("observed_2026", {}))
    realistic = item.get("realistic", False)
    why = item.get("realistic_why", "not declared")
    if not isinstance(realistic, bool):
        raise _Problem(f"realistic must be true or false, got {realistic!r}")
    if not isinstance(why, str) or not why.strip():
        raise _Problem("realistic_why must be a non-empty string")
    expectation = _expectation(item.get("expectation", {}))

    logits = dt.widen(dt.exact(_logits(item["logits"]), item["dtype"]))
    labels = _labels(item["labels"], logits.shape)
    for array in [logits, *(v for v in labels.values() if isinstance(v, np.ndarray))]:
        array.flags.writeable = False  # shared by the Cases of every dtype
    return Entry(
        id=item["id"],
        repository=item["repository"],
        issue=issue,
        url=item["url"],
        title=item["title"],
        what_went_wrong=item["what_went_wrong"],
        reconstruction=item["reconstruction"],
        dtype=item["dtype"],
        logits=logits,
        observed_2026=observed,
        realistic=realistic,
        realistic_why=why,
        expectation=expectation,
        **labels,
    )


def _observed(obs) -> dict:
    """`observed_2026`: what the installed frameworks did on this input when it was added:
    {"environment": str, "status": {adapter id: status}, "note": str}."""
    if obs == {}:
        return {}
    if not (isinstance(obs, dict) and set(obs) == {"environment", "status", "note"}):
        raise _Problem("observed_2026 must be {\"environment\": ..., \"status\": {...}, \"note\": ...}")
    if not all(isinstance(obs[k], str) and obs[k].strip() for k in ("environment", "note")):
        raise _Problem("observed_2026.environment and .note must be non-empty strings")
    status = obs["status"]
    if not isinstance(status, dict) or not all(isinstance(k, str) and v in STATUSES for k, v in status.items()):
        raise _Problem(f"observed_2026.status must map adapter ids to one of {', '.join(STATUSES)}")
    return obs


def _expectation(exp) -> dict:
    """`expectation`: what the entry's public report implies, for `harness.expectations`:
    {"adapters": [the adapter ids the report is about], "status": the status (or a list of
    statuses) the report's behaviour gets in cestab, "fixed_upstream": where it was fixed, if
    it was}. Without "fixed_upstream" the expectation should hold on the pinned versions;
    with it, it should not (the fix holds)."""
    if exp == {}:
        return {}
    if not (isinstance(exp, dict) and {"adapters", "status"} <= set(exp) <= {"adapters", "status", "fixed_upstream"}):
        raise _Problem('expectation must be {"adapters": [...], "status": ..., "fixed_upstream"?: ...}')
    adapters = exp["adapters"]
    if not (isinstance(adapters, list) and adapters and all(isinstance(a, str) and a.strip() for a in adapters)):
        raise _Problem("expectation.adapters must be a non-empty list of adapter ids")
    status = [exp["status"]] if isinstance(exp["status"], str) else exp["status"]
    if not (isinstance(status, list) and status and all(s in STATUSES for s in status)):
        raise _Problem(f"expectation.status must be one or a list of {', '.join(STATUSES)}")
    fixed = exp.get("fixed_upstream")
    if fixed is not None and not (isinstance(fixed, str) and fixed.strip()):
        raise _Problem("expectation.fixed_upstream must be a non-empty string")
    return {"adapters": list(adapters), "status": tuple(status), "fixed_upstream": fixed}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # JSON true is not 1


def _value(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise _Problem(f"{where}: expected a number or \"inf\"/\"-inf\"/\"nan\", got {v!r}")
    if isinstance(v, str):
        if v.strip().lower() not in NONFINITE:
            raise _Problem(f"{where}: unknown value {v!r}; numbers or \"inf\"/\"-inf\"/\"nan\"")
        return NONFINITE[v.strip().lower()]
    return float(v)


def _logits(spec) -> np.ndarray:
    """float64 (N, V) from a literal `rows` list or a `shape` recipe."""
    if not isinstance(spec, dict):
        raise _Problem("logits must be an object with 'rows' or 'shape'")
    unknown = sorted(set(spec) - set(LOGIT_KEYS))
    if unknown:
        raise _Problem(f"logits: unknown field {unknown[0]!r}")
    if ("rows" in spec) == ("shape" in spec):
        raise _Problem("logits: give exactly one of 'rows' (literal) or 'shape' (recipe)")
    if "rows" in spec and ("fill" in spec or "uniform" in spec):
        raise _Problem("logits: 'fill'/'uniform' go with 'shape', not with 'rows'")
    if "rows" in spec:
        rows = spec["rows"]
        if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
            raise _Problem("logits.rows must be a non-empty list of non-empty lists")
        if len({len(r) for r in rows}) != 1:
            raise _Problem("logits.rows: every row needs the same number of classes")
        z = np.array([[_value(v, f"logits.rows[{i}][{j}]") for j, v in enumerate(r)] for i, r in enumerate(rows)])
    else:
        shape = spec["shape"]
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(s) and s > 0 for s in shape)):
            raise _Problem(f"logits.shape must be [rows, classes] of positive integers, got {shape!r}")
        if shape[0] * shape[1] > MAX_ELEMENTS:
            raise _Problem(f"logits.shape {shape} has more than {MAX_ELEMENTS} elements")
        if ("fill" in spec) == ("uniform" in spec):
            raise _Problem("logits: a 'shape' recipe needs exactly one of 'fill' or 'uniform'")
        if "fill" in spec:
            z = np.full(shape, _value(spec["fill"], "logits.fill"))
        else:
            z = _uniform(spec["uniform"], shape)
    if not isinstance(spec.get("set", []), list):
        raise _Problem("logits.set must be a list of [row, class, value]")
    for k, item in enumerate(spec.get("set", [])):
        if not (isinstance(item, list) and len(item) == 3 and _is_int(item[0]) and _is_int(item[1])):
            raise _Problem(f"logits.set[{k}] must be [row, class, value]")
        i, j, v = item
        if not (0 <= i < z.shape[0] and 0 <= j < z.shape[1]):
            raise _Problem(f"logits.set[{k}]: position ({i}, {j}) outside shape {list(z.shape)}")
        z[i, j] = _value(v, f"logits.set[{k}]")
    return z


def _uniform(spec, shape) -> np.ndarray:
    if not (isinstance(spec, dict) and set(spec) == {"low", "high", "seed"}):
        raise _Problem("logits.uniform must be {\"low\": ..., \"high\": ..., \"seed\": ...}")
    low, high = _value(spec["low"], "logits.uniform.low"), _value(spec["high"], "logits.uniform.high")
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise _Problem("logits.uniform needs finite low < high")
    if not _is_int(spec["seed"]) or spec["seed"] < 0:
        raise _Problem("logits.uniform.seed must be a non-negative integer")
    # The 53 high bits of PCG64's raw 64-bit stream: fixed by the algorithm, so the corpus
    # does not depend on how a numpy version maps raw bits to Generator.uniform.
    raw = np.random.PCG64(spec["seed"]).random_raw(shape[0] * shape[1])
    unit = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (low + (high - low) * unit).reshape(shape)


def _labels(spec, shape) -> dict:
    n, v = shape
    if not isinstance(spec, dict):
        raise _Problem("labels must be an object")
    unknown = sorted(set(spec) - set(LABEL_KEYS))
    if unknown:
        raise _Problem(f"labels: unknown field {unknown[0]!r}")
    kind = spec.get("kind")
    if kind not in LABEL_KINDS:
        raise _Problem(f"labels.kind must be one of {', '.join(LABEL_KINDS)}, got {kind!r}")
    target = spec.get("target")
    if not (isinstance(target, list) and len(target) == n and all(_is_int(t) for t in target)):
        raise _Problem(f"labels.target must be {n} integers (one per row)")
    if any(not 0 <= t < v for t in target):
        raise _Problem(f"labels.target: class out of range [0, {v}) (invalid labels are not corpus cases)")
    out = {"label_kind": kind, "target": np.asarray(target, dtype=np.int64)}

    if kind == "soft":
        out["soft_labels"] = _soft(spec.get("soft"), out["target"], shape)
    elif "soft" in spec:
        raise _Problem("labels.soft goes with kind 'soft' only")
    if kind == "smoothing":
        eps = spec.get("smoothing")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise _Problem("labels.smoothing must be a number in (0, 1) for kind 'smoothing'")
        out["smoothing"] = float(eps)
    elif "smoothing" in spec:
        raise _Problem("labels.smoothing goes with kind 'smoothing' only")
    if "ignored" in spec:
        ignored = spec["ignored"]
        if not (isinstance(ignored, list) and len(ignored) == n and all(isinstance(b, bool) for b in ignored)):
            raise _Problem(f"labels.ignored must be {n} booleans")
        out["ignored"] = np.asarray(ignored, dtype=bool)
    return out


def _soft(soft, target: np.ndarray, shape) -> np.ndarray:
    n, v = shape
    if not (isinstance(soft, list) and len(soft) == n and all(isinstance(r, list) and len(r) == v for r in soft)):
        raise _Problem(f"labels.soft must be {n} rows of {v} numbers")
    y = np.array([[_value(x, f"labels.soft[{i}]") for x in r] for i, r in enumerate(soft)])
    scaled = y * SOFT_QUANTUM
    if not (np.isfinite(y).all() and (y >= 0).all() and (scaled == np.round(scaled)).all()):
        raise _Problem(f"labels.soft: values must be multiples of 1/{SOFT_QUANTUM} in [0, 1] (exact in every dtype)")
    if (y.sum(axis=1) != 1.0).any():
        raise _Problem(f"labels.soft: row {int(np.flatnonzero(y.sum(axis=1) != 1.0)[0])} does not sum to exactly 1")
    if (y[np.arange(n), target] != y.max(axis=1)).any():
        raise _Problem("labels.target must name a class with the largest soft weight in each row")
    return y
