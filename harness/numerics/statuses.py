"""The status table: every status a results row can have, described once.

Each consumer reads this table: the judge (`run.judge`) sets statuses, the gate compares
them by `severity`, the report orders, colours and explains them, the stability tests and
the pytest fixture decide from `failure` and `judged`, the search ranks `broke` highest.
Adding a status is one row here (and the rule in `run.judge` that sets it).

Order of the rows is the display order (tables, legends, heatmaps): best first, then the
statuses that are no verdict on the implementation's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Status:
    name: str
    #: How bad, for "did it get worse" (the gate, the pytest fixture, the worst status of a
    #: group or a report cell). `undefined` (no truth, behaviour only recorded) and
    #: `rejected` (the right answer to invalid labels) are as good as `ok`; `unsupported` is
    #: a loss of coverage, milder than a wrong answer; a crash is the worst outcome.
    severity: int
    #: A verdict on the implementation's result. False for `unsupported` (it did not run)
    #: and `undefined` (the input has no finite truth): those are never compared.
    judged: bool
    #: A failure of the implementation (counted as failing in the report, the stability
    #: tests and known failures), as opposed to a pass or a fact about the input or setup.
    failure: bool
    #: Errors against the truth were measured (the accuracy columns hold numbers).
    measured: bool
    #: The outcome of a case with invalid labels (no answer exists).
    invalid_labels: bool
    #: No numbers came back: the implementation raised, or its worker died or hung.
    broke: bool
    #: A one-character mark, so tables read without colour.
    mark: str
    #: Its colour in figures and HTML tables; `dark` means white text reads on it.
    colour: str
    dark: bool
    #: What it means, in one line (the report's legend).
    meaning: str


#: name, severity, judged, failure, measured, invalid_labels, broke, mark, colour, dark, meaning
_ROWS = (
    ("ok", 0, True, False, True, False, False, "✓", "#4caf50", False,
     "within the attainable bound: as accurate as a careful implementation (numerics.bounds)"),
    ("rejected", 0, True, False, False, True, False, "✓", "#a5d6a7", False,
     "invalid labels, and the implementation raised: right"),
    ("lossy", 2, True, True, True, False, False, "△", "#d4e157", False,
     "stable, but loses relative accuracy where a careful implementation does not: outside the "
     "attainable bound (numerics.bounds), within the textbook one (numerics.tolerances)"),
    ("inaccurate", 3, True, True, True, False, False, "▲", "#ffb300", False,
     "outside the textbook bound too: worse than the textbook max-shift algorithm in this dtype"),
    ("silent", 4, True, True, False, True, False, "◆", "#ab47bc", True,
     "invalid labels, and the implementation returned numbers anyway"),
    ("nonfinite", 5, True, True, True, False, False, "✗", "#e53935", True,
     "NaN/inf where the truth is finite"),
    ("error", 6, True, True, False, False, True, "✗", "#8e0000", True,
     "the implementation raised on a valid input"),
    ("crash", 8, True, True, False, False, True, "✗", "#212121", True,
     "the worker process died (signal in the message)"),
    ("timeout", 7, True, True, False, False, True, "✗", "#6d4c41", True,
     "the call did not return within the run's --timeout"),
    ("unsupported", 1, False, False, False, False, False, "–", "#cfd8dc", False,
     "declared unsupported, or refused by the framework with its reason"),
    ("undefined", 0, False, False, False, False, False, "·", "#eceff1", False,
     "the input has no finite truth (+inf, NaN, all -inf row): behaviour recorded, not judged"),
)

TABLE: dict[str, Status] = {row[0]: Status(*row) for row in _ROWS}

#: Every status name, in display order.
STATUSES: tuple[str, ...] = tuple(TABLE)


def get(name: str) -> Status:
    return TABLE[name]


def names(**flags) -> tuple[str, ...]:
    """Status names whose fields equal `flags`, in display order: `names(failure=True)`."""
    return tuple(s.name for s in TABLE.values() if all(getattr(s, k) == v for k, v in flags.items()))


def rank(name: str) -> tuple[int, int]:
    """Sort key, worst last: severity, then display order (so of two equally severe
    statuses the one listed later, e.g. `undefined` after `ok`, is the worse)."""
    return TABLE[name].severity, STATUSES.index(name)


def worst(statuses) -> str:
    """The worst of some statuses ("" for none)."""
    statuses = list(statuses)
    return max(statuses, key=rank) if statuses else ""


def worst_judged(statuses) -> str:
    """The worst judged status, or, when nothing was judged, the worst of the rest: what a
    report cell shows (a case that ran well beside one that did not run reads `ok`)."""
    statuses = list(statuses)
    judged = [s for s in statuses if TABLE[s].judged]
    return worst(judged or statuses)
