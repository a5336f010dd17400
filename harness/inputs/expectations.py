"""Corpus expectations: does each public report's behaviour still show on the installed versions?

Every corpus entry (`corpus.Entry.expectation`) names the adapters its report is about and
the status that report's behaviour gets in cestab (`lossy` for a precision report,
`nonfinite` for a NaN report, ...). A run that includes the corpus compares: an entry
without `fixed_upstream` whose adapter no longer gets that status has changed (fixed
upstream, or the bug moved), and one marked fixed whose adapter gets it again has regressed.
`cestab run` prints both kinds; `tests/test_corpus.py` asserts that none occurs on the pinned
versions. Only the entry's own dtype counts: that is the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.inputs import corpus


@dataclass(frozen=True)
class Outcome:
    entry: str
    adapter: str
    expected: tuple[str, ...]  # the statuses the report implies
    got: str
    fixed_upstream: str | None

    @property
    def holds(self) -> bool:
        return self.got in self.expected

    @property
    def as_expected(self) -> bool:
        """The report's behaviour shows where it should (not fixed), and not where it was fixed."""
        return self.holds != bool(self.fixed_upstream)

    def describe(self) -> str:
        want = "/".join(self.expected)
        if self.fixed_upstream:
            return (f"corpus {self.entry}: {self.adapter} is {self.got} again, the report's {want}, "
                    f"though marked fixed upstream ({self.fixed_upstream}): a regression")
        return (f"corpus {self.entry}: {self.adapter} is {self.got} where the report implies {want}: "
                f"the expectation no longer holds (fixed upstream?)")


def outcomes(df: pd.DataFrame, entries=None) -> list[Outcome]:
    """One Outcome per (entry, named adapter) found in the results table `df` (in the
    entry's own dtype); adapters that did not run are left out."""
    entries = corpus.load() if entries is None else entries
    rows = df[df["source"] == "corpus"].set_index(["case_id", "adapter"])["status"]
    out = []
    for entry in entries:
        if not entry.expectation:
            continue
        case_id = f"corpus/{entry.id}/{entry.dtype}"
        for adapter in entry.expectation["adapters"]:
            got = rows.get((case_id, adapter))
            if got is None or pd.isna(got):
                continue
            out.append(Outcome(entry.id, adapter, entry.expectation["status"], str(got), entry.expectation["fixed_upstream"]))
    return out


def changed(df: pd.DataFrame, entries=None) -> list[str]:
    """What `cestab run` prints: one line per expectation that no longer holds, or regressed."""
    return [o.describe() for o in outcomes(df, entries) if not o.as_expected]
