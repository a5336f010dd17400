"""Worst-case search: for each adapter x dtype, hypothesis looks for the input where the
adapter is furthest outside its tolerance, then shrinks it to a small input that is still
that bad, and saves it as a replayable `.npz`.

Score = the larger of the loss and gradient tolerance ratios (`metrics`); a non-finite,
crashing or erroring result scores `BROKEN`, above any finite ratio. Pass 1 generates with
`hypothesis.target(score)` (derandomized, so a seed gives the same search). Pass 2 replays
the same deterministic search as a test that *fails* once the score reaches half the best,
so hypothesis's shrinker minimises that input; a budget of adapter calls (not seconds, so
that the same seed finds the same input on any machine) bounds the shrinking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from . import casefile

BROKEN = 1e12  # the score of a non-finite, crashed, timed-out or erroring result


@dataclass(frozen=True)
class Budget:
    examples: int  # generated examples per adapter x dtype
    shrink_calls: int  # adapter calls the shrinking may spend per adapter x dtype
    max_elements: int  # largest N * V drawn: big shapes cost a compile and a big reference each


BUDGETS = {
    # quick: part of the default run (22 adapters x 4 dtypes in about a minute), small shapes
    "quick": Budget(examples=3, shrink_calls=20, max_elements=1024),
    "standard": Budget(examples=60, shrink_calls=300, max_elements=1 << 17),
    "deep": Budget(examples=400, shrink_calls=3000, max_elements=1 << 21),
}


def score(row: dict) -> float:
    status = row["status"]
    if status in ("nonfinite", "crash", "timeout", "error"):
        return BROKEN
    if status in ("ok", "lossy", "inaccurate"):
        ratio = max(row.get("loss_tol_ratio") or 0.0, row.get("grad_tol_ratio") or 0.0)
        return min(float(ratio), BROKEN / 2) if math.isfinite(ratio) else BROKEN
    return -1.0  # unsupported / undefined: nothing to learn


class _Found(Exception):
    """Raised inside pass 2 so hypothesis shrinks the input that reached the threshold."""


@dataclass
class Finding:
    adapter: str
    dtype: str
    score: float
    row: dict
    case: object
    path: Path | None
    examples: int


def search_one(adapter, dtype: str, evaluate, budget: Budget, seed: int = 0) -> Finding | None:
    """Search one adapter x dtype. `evaluate(case) -> row dict` runs the adapter (isolated)."""
    from hypothesis import HealthCheck, Phase, given, settings, target
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Flaky

    from . import strategies as S

    pool = tuple(shape for shape in S.SHAPE_POOL if math.prod(shape) <= budget.max_elements)
    cases = S.cases(
        dtype=dtype,
        label_kinds=adapter.label_kinds,
        allow_ignored=adapter.supports_ignore,
        shape_pool=pool,
        max_elements=budget.max_elements,
    )
    common = dict(
        database=None,
        deadline=None,
        derandomize=False,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
        max_examples=budget.examples,
    )
    best: dict = {"score": -math.inf}
    calls = {"n": 0}

    @hypothesis_seed(seed)
    @settings(phases=[Phase.generate, Phase.target], **common)
    @given(case=cases)
    def explore(case):
        row = evaluate(case)
        calls["n"] += 1
        s = score(row)
        target(s)
        if s > best["score"]:
            best.update(score=s, row=row, case=case)

    explore()
    if best["score"] <= 0:
        return None
    threshold = best["score"] / 2
    shrink_calls = {"n": 0}
    smallest: dict = {}

    @hypothesis_seed(seed)
    @settings(phases=[Phase.generate, Phase.target, Phase.shrink], **common)
    @given(case=cases)
    def shrink(case):
        if smallest and shrink_calls["n"] >= budget.shrink_calls:
            return  # out of budget: stop accepting smaller inputs
        shrink_calls["n"] += 1
        row = evaluate(case)
        calls["n"] += 1
        s = score(row)
        target(s)
        if s >= threshold:  # each later failing call is one hypothesis judged simpler
            smallest.update(score=s, row=row, case=case)
            raise _Found

    try:
        shrink()
    except (_Found, Flaky):  # Flaky: the budget ran out, so the final replay did not fail
        pass
    final = smallest or best
    return Finding(adapter.id, dtype, final["score"], final["row"], final["case"], None, calls["n"])


def save_finding(finding: Finding, folder: Path) -> Path:
    """Write the finding's case to folder/worst-<adapter>-<dtype>.npz with its metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"worst-{finding.adapter.replace(':', '-')}-{finding.dtype}.npz"
    meta = {
        "adapter": finding.adapter,
        "score": finding.score,
        "status": finding.row["status"],
        "message": finding.row.get("message") or "",
    }
    casefile.save(finding.case, path, meta)
    finding.path = path
    return path

