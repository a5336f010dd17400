"""Rebuild any case from what a results row records: a saved `.npz` or a case id.

Every row of a results table is replayable: regime cases from their id
(`regime/dtype/NxV/kind/sSEED` or NxTxV, deterministic in those), corpus cases from theirs
(`corpus/<entry>/<dtype>`), and search findings from the `.npz` in `case_file`.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.store import casefile
from harness.inputs import corpus
from harness.inputs import regimes
from harness.numerics.cases import Case
from harness.errors import UsageError

_REGIME_ID = re.compile(r"^(?P<regime>[a-z_]+)/(?P<dtype>\w+)/(?P<shape>\d+(?:x\d+){1,2})/(?P<kind>\w+)/s(?P<seed>\d+)$")
_CORPUS_ID = re.compile(r"^corpus/(?P<entry>[^/]+)/(?P<dtype>\w+)$")


def load(spec: str) -> tuple[Case, dict]:
    """(case, info) for a `.npz` path or a regime/corpus case id; UsageError otherwise."""
    if spec.endswith(".npz") or Path(spec).is_file():
        return casefile.load(spec)
    match = _REGIME_ID.match(spec)
    if match:
        g = match.groupdict()
        case = regimes.make_case(g["regime"], g["dtype"], tuple(int(d) for d in g["shape"].split("x")), g["kind"], int(g["seed"]))
        if case.case_id != spec:  # e.g. empty_batch ids record the rows the case really has
            raise UsageError(f"case id {spec!r} does not rebuild (it gives {case.case_id!r})")
        return case, {}
    match = _CORPUS_ID.match(spec)
    if match:
        for entry in corpus.load():
            if entry.id == match["entry"]:
                return entry.case(match["dtype"]), {}
        raise UsageError(f"no corpus entry {match['entry']!r}")
    raise UsageError(f"{spec!r} is neither a case file (.npz) nor a case id like typical/float32/4x10/index/s0")
