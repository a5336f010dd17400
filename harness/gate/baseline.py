"""The CI baseline file: a run boiled down to one line per adapter x dtype x regime.

A results table holds thousands of rows of raw errors; what a CI gate needs to remember
is, per adapter x dtype x regime, the worst status, the largest loss and gradient errors
in ulps and the non-finite and failed counts (`check.aggregate`), plus what the run was
made with: the results schema, cestab's and every framework's version, the run's options
and the machine. The file is JSON with sorted keys and one group per line, so that a
changed baseline reads well in a diff.

Loaded without eval or pickle; a missing, corrupt or incompatible file is a `UsageError`
(one line, exit 2), never a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from harness.store import columns
from harness.store import jsonfile
from harness.errors import UsageError
from harness.store.runfolder import write_atomic
from harness.numerics.statuses import STATUSES

FORMAT = "cestab-baseline"
#: Bump when the meaning of a group's fields changes; a baseline of another version is refused.
FORMAT_VERSION = 2  # 2: the attainable-bound ratios loss_att, grad_att (statuses ok/lossy)

#: One group's fields, in file order: the key, then the aggregates `check.aggregate` computes.
KEY = ("adapter", "dtype", "regime")
FIELDS = (
    *KEY, "framework", "cases", "worst_status", "statuses",
    "loss_ulps", "grad_ulps", "loss_tol", "grad_tol", "loss_att", "grad_att", "nonfinite", "failed",
)
_TEXT = {"adapter", "dtype", "regime", "framework", "worst_status"}
_COUNTS = {"cases", "nonfinite", "failed"}
_ULPS = {"loss_ulps", "grad_ulps", "loss_tol", "grad_tol", "loss_att", "grad_att"}  # numbers: 4 digits, "inf" or null


def make(groups: list[dict], meta: dict, options: dict) -> dict:
    """The baseline of one run: its groups (dicts with FIELDS) and where they come from.

    `meta` is the run's run.json (versions, adapters, environment); `options` what a
    `--quick` rerun needs to draw the same cases.
    """
    env = meta.get("environment", {})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_version": columns.SCHEMA_VERSION,
        "cestab_version": meta.get("versions", {}).get("cestab", "unknown"),
        "run_id": meta.get("run_id"),
        "made": meta.get("started"),
        "options": options,
        "versions": meta.get("versions", {}),
        "adapters": meta.get("adapters", {}),
        "machine": {k: env.get(k) for k in ("cpu", "cpu_count", "platform", "python")},
        "portable_environment": meta.get("portable_environment"),  # None: an existing run folder, native kernels
        "groups": sorted((encode(g) for g in groups), key=lambda g: tuple(g[k] for k in KEY)),
    }


def encode(group: dict) -> dict:
    """A group as stored: FIELDS only, figures to 4 digits. The gate compares the run's
    groups in this form too, so an identical rerun is identical even with rtol = slack = 0."""
    out = {}
    for name in FIELDS:
        value = group[name]
        if name in _ULPS:
            value = _number(value)
        elif name in _COUNTS:
            value = int(value)
        elif name == "statuses":
            value = {k: int(v) for k, v in sorted(value.items())}
        out[name] = value
    return out


def _number(x):
    """4 significant digits (the gate's allowance dwarfs the rest); inf as "inf"; NaN as null."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(f"{x:.4g}")


def number(value) -> float:
    """A stored ulp figure back as a float (NaN for null)."""
    if value is None:
        return math.nan
    return float(value)


def dumps(baseline: dict) -> str:
    """Sorted keys, one top-level field per line, one group per line."""
    head = {k: v for k, v in baseline.items() if k != "groups"}
    lines = [f"  {json.dumps(k)}: {json.dumps(head[k], sort_keys=True)}," for k in sorted(head)]
    groups = ",\n".join("    " + json.dumps(g, sort_keys=True) for g in baseline["groups"])
    return "{\n" + "\n".join(lines) + '\n  "groups": [\n' + groups + "\n  ]\n}\n"


def write(path: str | Path, baseline: dict) -> None:
    """Write atomically: a reader (or a CI job killed mid-write) never sees half a baseline."""
    path = Path(path)
    text = dumps(baseline)
    try:
        write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot write baseline {path}: {exc.strerror or exc}") from None


def load(path: str | Path) -> dict:
    """Read and validate a baseline; UsageError (one line) if missing, corrupt or incompatible."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"baseline {path} does not exist (make one: cestab check --baseline {path} --quick --update-baseline)")
    data = jsonfile.read(path, "baseline")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"baseline {path}: not a cestab baseline (no \"format\": \"{FORMAT}\")")
    for field, mine in (("format_version", FORMAT_VERSION), ("schema_version", columns.SCHEMA_VERSION)):
        if data.get(field) != mine:
            raise UsageError(
                f"baseline {path}: {field} {data.get(field)!r}, this cestab reads {mine}: "
                "regenerate it with cestab check --update-baseline"
            )
    groups = data.get("groups")
    if not isinstance(groups, list):
        raise UsageError(f"baseline {path}: \"groups\" must be a list")
    seen = set()
    for i, g in enumerate(groups):
        problem = _problem(g)
        if problem:
            raise UsageError(f"baseline {path}: group #{i}: {problem}")
        key = tuple(g[k] for k in KEY)
        if key in seen:
            raise UsageError(f"baseline {path}: group #{i}: duplicate {' '.join(key)}")
        seen.add(key)
    for field in ("options", "versions", "adapters", "machine"):
        if not isinstance(data.get(field, {}), dict):
            raise UsageError(f"baseline {path}: {field!r} must be an object")
    return data


def _finite(v) -> bool:
    """A finite non-negative JSON number (not bool, not 1e400 = inf, not an int beyond float)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v)) and v >= 0
    except OverflowError:
        return False


def _problem(g) -> str | None:
    if not isinstance(g, dict):
        return "not an object"
    missing = [f for f in FIELDS if f not in g]
    if missing:
        return f"missing {', '.join(missing)}"
    for f in _TEXT:
        if not isinstance(g[f], str):
            return f"{f} must be a string"
    for f in _COUNTS:
        if not isinstance(g[f], int) or isinstance(g[f], bool) or not 0 <= g[f] < 2**63:
            return f"{f} must be a non-negative integer"
    for f in _ULPS:
        v = g[f]
        if not (v is None or v in ("inf", "-inf") or _finite(v)):
            # 1e400 parses as inf and 10**400 overflows float(): a number must be a finite one
            return f"{f} must be a finite non-negative number, \"inf\" or null"
    if not isinstance(g["statuses"], dict) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63
                                                      for v in g["statuses"].values()):
        return "statuses must map status names to counts"
    unknown = sorted(({g["worst_status"]} | set(g["statuses"])) - set(STATUSES))
    if unknown:
        return f"unknown status {unknown[0]!r}"
    return None
