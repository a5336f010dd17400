"""Known framework failures, as data: `known_failures.json`, each entry with its public source.

A stability test that finds an adapter outside its tolerance fails, unless the failure is
listed here: then it is expected, and reported (pytest's summary), never silently skipped.
An entry says which adapters (an `fnmatch` pattern on the id), which dtypes, under which
input features, with which statuses and in which quantity the failure shows, and where it
is documented in public (an issue or a paper) with one sentence on what goes wrong.

Entries match on statuses and named features, never on error ratios: the same derandomized
input can land on either side of a tolerance on another CPU (AVX2 vs AVX-512 exp).

Features are named facts about a case (`features`): the strategy pieces it was drawn from
(`strategies.pieces`: "normal", "offset", "mask.target", "exp_gap.overflow" ...), its label
kind ("label.soft"), and facts read from the data itself, which hold whatever drew the case
(regimes, corpus, users' batches): "neginf.non_target", "exp_overflow", "V>=256" ... (see
`DATA_FEATURES`). The file is JSON, loaded with `json` (no code runs from it).
"""

from __future__ import annotations

import fnmatch
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.numerics import dtypes, statuses
from harness.numerics.cases import Case
from harness.errors import UsageError

PATH = Path(__file__).with_name("known_failures.json")

#: Class-count thresholds that become features "V>=N".
CLASS_THRESHOLDS = (64, 256, 1024, 8192)

#: The features read from a case's data, and what each means (the one place they are defined).
DATA_FEATURES = {
    "label.index|onehot|soft|smoothing": "the case's label kind",
    "ignored": "some rows are ignored (ignore_index / padding mask)",
    "padding": "an ignored row is all -inf",
    "neginf.ignored": "an ignored row holds a -inf logit (all -inf padding, or -inf at its stored target)",
    "neginf.non_target": "-inf on a class with label weight 0 in a counted row (a legal mask)",
    "neginf.target": "-inf on a class with label weight > 0 in a counted row (loss +inf)",
    "exp_overflow": "a finite logit above exp's overflow threshold of the dtype (exp(z) = inf)",
    "exp_underflow": "a finite logit below exp's underflow threshold of the dtype (exp(z) = 0)",
    "exp_zero": "a class whose exp(z) is 0 in the dtype (a -inf mask, or z below exp's underflow threshold)",
    "p_underflow": "a class with z - max z below exp's underflow threshold, or a -inf mask (its softmax is 0)",
    "logp_overflow": "a finite logit with z - max z below -max of the dtype (its log-softmax rounds to -inf)",
    "large_logits": "a counted row's max |z| is 64 or more (offset-sensitive formulas lose digits)",
    "subnormal": "a subnormal logit of the dtype",
    "V>=N": f"at least N classes, N in {CLASS_THRESHOLDS}",
}


def features(case: Case) -> frozenset[str]:
    """Every named feature of `case`: its strategy pieces and the facts of its data."""
    from harness.inputs.strategies import pieces

    out = set(pieces(case))
    out.add(f"label.{case.label_kind}")
    n, v = case.shape
    out.update(f"V>={t}" for t in CLASS_THRESHOLDS if v >= t)
    if n == 0:
        return frozenset(out)
    fmt = dtypes.get(case.dtype)
    z = dtypes.widen(case.logits)
    counted = np.ones(n, dtype=bool)  # rows whose loss counts
    if case.has_ignored:
        out.add("ignored")
        counted = ~case.ignored
        dropped = np.isneginf(z[case.ignored])
        if dropped.any():
            out.add("neginf.ignored")
        if dropped.all(axis=1).any():
            out.add("padding")
    y = case.target_distribution()
    neginf = np.isneginf(z)
    if (neginf & (y == 0))[counted].any():
        out.add("neginf.non_target")
    if (neginf & (y > 0))[counted].any():
        out.add("neginf.target")
    # Value features look at every row: an implementation that masks ignored rows after
    # computing them (multiplying by 0) still meets their inf and NaN.
    finite = np.isfinite(z)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.where(finite, z, -np.inf).max(axis=1, keepdims=True)
        live = finite & np.isfinite(m)  # finite logits of rows with a finite max
        shifted = np.where(live, z - np.where(np.isfinite(m), m, 0.0), 0.0)
        if (finite & (z > fmt.exp_overflow)).any():
            out.add("exp_overflow")
        if (finite & (z < fmt.exp_underflow)).any():
            out.add("exp_underflow")
        if (neginf | (finite & (z < fmt.exp_underflow))).any():
            out.add("exp_zero")
        if (live & (shifted < fmt.exp_underflow)).any() or (neginf & np.isfinite(m)).any():
            out.add("p_underflow")
        if (live & (shifted < -fmt.max)).any():
            out.add("logp_overflow")
        if (np.abs(m[np.isfinite(m)]) >= 64).any():
            out.add("large_logits")
        if (finite & (z != 0) & (np.abs(z) < 2.0**fmt.min_exponent)).any():
            out.add("subnormal")
    return frozenset(out)


@dataclass(frozen=True)
class KnownFailure:
    """One documented failure: who, in which dtypes, when, how it shows, and the source."""

    adapter: str  # fnmatch pattern on adapter ids, e.g. "torch.*" or "numpy.naive"
    dtypes: tuple[str, ...]
    when: tuple[str, ...]  # features that must all be present (empty: any input)
    statuses: tuple[str, ...]  # e.g. ("nonfinite",), ("inaccurate", "nonfinite")
    quantities: tuple[str, ...]  # "loss", "grad"
    source: str  # URL of the public issue, or the paper
    why: str  # one sentence: what goes wrong

    def matches(self, adapter_id: str, dtype: str, status: str, quantities, case_features) -> bool:
        return (
            fnmatch.fnmatchcase(adapter_id, self.adapter)
            and dtype in self.dtypes
            and status in self.statuses
            and set(quantities) <= set(self.quantities)
            and set(self.when) <= set(case_features)
        )

    def label(self) -> str:
        """One line for a test summary: who, how, when, and the source's address."""
        when = " + ".join(self.when) or "any input"
        url = next((w for w in reversed(self.source.split()) if w.startswith("http")), self.source)
        return f"{self.adapter} {'/'.join(self.statuses)} on {when} ({url})"


_FIELDS = {"adapter": str, "dtypes": list, "when": list, "statuses": list, "quantities": list, "source": str, "why": str}


def parse(entries) -> tuple[KnownFailure, ...]:
    """Validate the decoded JSON list; UsageError naming the first bad entry."""
    from harness.numerics.statuses import STATUSES

    if not isinstance(entries, list):
        raise UsageError("known failures: expected a JSON list of entries")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or set(e) != set(_FIELDS):
            raise UsageError(f"known failures entry {i}: needs exactly the fields {', '.join(_FIELDS)}")
        for key, kind in _FIELDS.items():
            if not isinstance(e[key], kind) or (kind is list and not all(isinstance(x, str) for x in e[key])):
                raise UsageError(f"known failures entry {i}: {key} must be a {'list of strings' if kind is list else 'string'}")
        bad = [d for d in e["dtypes"] if d not in dtypes.DTYPE_NAMES] + [s for s in e["statuses"] if s not in STATUSES]
        bad += [q for q in e["quantities"] if q not in ("loss", "grad")]
        if bad or not e["source"].startswith("http") and "Higham" not in e["source"]:
            raise UsageError(f"known failures entry {i} ({e['adapter']}): unknown {bad or 'source'}")
        out.append(KnownFailure(e["adapter"], *(tuple(e[k]) for k in ("dtypes", "when", "statuses", "quantities")),
                                e["source"], e["why"]))
    return tuple(out)


@functools.cache
def load(path: str | Path = PATH) -> tuple[KnownFailure, ...]:
    try:
        return parse(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read known failures {path}: {exc}") from None


def failing_quantities(row: dict) -> tuple[str, ...]:
    """Which quantities a results row finds outside the tolerance or non-finite."""
    out = []
    if row.get("n_loss_bad") or row.get("n_loss_nonfinite") or row.get("n_loss_lossy"):
        out.append("loss")
    if row.get("n_grad_bad") or row.get("n_grad_nonfinite") or row.get("n_grad_lossy"):
        out.append("grad")
    return tuple(out)


#: Statuses that are failures of the adapter (not of the input, not of the platform).
FAILURES = statuses.names(failure=True)


def match(case: Case, adapter_id: str, row: dict, entries=None) -> KnownFailure | None:
    """The first known failure explaining `row` (a failing results row), or None."""
    entries = load() if entries is None else entries
    feats = features(case)
    quantities = failing_quantities(row)
    for entry in entries:
        if entry.matches(adapter_id, case.dtype, row["status"], quantities, feats):
            return entry
    return None
