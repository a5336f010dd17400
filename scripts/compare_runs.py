"""Are two run folders' results the same apart from timing? (a refactoring's check)

    .venv/bin/python scripts/compare_runs.py RUN_A RUN_B

Rows are matched on (case_id, adapter); every column but the volatile ones
(`columns.VOLATILE`: run id, time, host and node, seconds) must be equal, NaN equal to NaN. Prints the
differences and exits 1 when there are any, 0 when the tables agree.
"""

from __future__ import annotations

import sys

import pandas as pd

from harness.store.columns import VOLATILE
from harness.store.runfolder import RunFolder

KEY = ["case_id", "adapter"]


def load(path: str) -> pd.DataFrame:
    df = RunFolder.open(path).read_table(RunFolder.RESULTS, "results table", KEY)
    return df.drop(columns=[c for c in VOLATILE if c in df.columns]).sort_values(KEY).reset_index(drop=True)


def differences(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    out = []
    if list(a.columns) != list(b.columns):
        out.append(f"columns differ: {sorted(set(a.columns) ^ set(b.columns))}")
        return out
    ka, kb = set(map(tuple, a[KEY].to_numpy())), set(map(tuple, b[KEY].to_numpy()))
    out += [f"only in A: {k}" for k in sorted(ka - kb)[:20]] + [f"only in B: {k}" for k in sorted(kb - ka)[:20]]
    if ka != kb:
        return out
    for col in a.columns:
        x, y = a[col], b[col]
        same = (x == y).fillna(False) | (x.isna() & y.isna())
        for i in same[~same].index[:10]:
            out.append(f"{a.at[i, 'case_id']} {a.at[i, 'adapter']} {col}: {x[i]!r} != {y[i]!r}")
    return out


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    a, b = load(argv[0]), load(argv[1])
    diff = differences(a, b)
    print(f"{len(a)} rows in A, {len(b)} in B; {len(diff)} difference(s)" + (":" if diff else ": identical apart from timing"))
    for line in diff:
        print("  " + line)
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
