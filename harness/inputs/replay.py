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
from harness.store import memory, validate

_REGIME_ID = re.compile(r"^(?P<regime>[a-z_]+)/(?P<dtype>\w+)/(?P<shape>\d+(?:x\d+){1,2})/(?P<kind>\w+)/s(?P<seed>\d+)$")
_CORPUS_ID = re.compile(r"^corpus/(?P<entry>[^/]+)/(?P<dtype>\w+)$")


def load(spec: str) -> tuple[Case, dict]:
    """(case, info) for a `.npz` path or a regime/corpus case id; UsageError otherwise."""
    if spec.endswith(".npz") or Path(spec).exists():
        return casefile.load(spec)
    match = _REGIME_ID.match(spec)
    if match:
        g = match.groupdict()
        shape = tuple(int(d) for d in g["shape"].split("x"))
        # An empty batch's id records the 0 rows it really has; asked with one row, it rebuilds
        # (and the check below proves it). Any other shape `cestab run --shapes` refuses is refused.
        asked = (1, shape[1]) if len(shape) == 2 and shape[0] == 0 else shape
        if min(asked[:-1]) < 1 or asked[-1] < 2:
            raise UsageError(f"case id {spec!r}: bad shape {g['shape']}: need NxV or NxTxV, at least 1 row and 2 classes")
        validate.seed(int(g["seed"]), f"case id {spec!r}: seed")
        regimes.get(g["regime"])
        memory.require_case(asked, g["dtype"], f"case {spec}")
        case = regimes.make_case(g["regime"], g["dtype"], asked, g["kind"], int(g["seed"]))
        if case.case_id != spec:  # e.g. empty_batch ids record the rows the case really has
            if asked != shape:
                raise UsageError(f"case id {spec!r}: bad shape {g['shape']}: need NxV or NxTxV, at least 1 row and 2 classes")
            raise UsageError(f"case id {spec!r} does not rebuild (it gives {case.case_id!r})")
        return case, {}
    match = _CORPUS_ID.match(spec)
    if match:
        for entry in corpus.load():
            if entry.id == match["entry"]:
                return entry.case(match["dtype"]), {}
        raise UsageError(f"no corpus entry {match['entry']!r}")
    raise UsageError(f"{spec!r} is neither a case file (.npz) nor a case id like typical/float32/4x10/index/s0")
