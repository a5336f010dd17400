"""The search's throughput in candidate rows per second (pytest-benchmark; not part of the
test run, as `tests/bench_*.py` is not collected by default):

    .venv/bin/python -m pytest tests/bench_search.py [--benchmark-json out.json]

One quick search of one adapter x dtype, in this process, so the number is the harness's
own cost (hypothesis pool, mutation, reference, scoring) plus numpy.stable's compute, per
row; `extra_info` holds the rows judged and rows per second. For every framework through
its worker, `cestab run --regimes none --no-corpus` prints rows per adapter x dtype and
the phases.
"""

import pytest

from harness.adapters import registry
from harness.adapters.workers import InProcess
from harness.run import rowsearch

pytest.importorskip("pytest_benchmark")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_quick_search_rows_per_second(benchmark, dtype):
    executor = InProcess()
    adapter = registry.get("numpy.stable")

    def search():
        s = rowsearch.RowSearch([adapter], [dtype], rowsearch.BUDGETS["quick"], lambda c, a: executor.run(c, a, "cpu"),
                                label_kinds=["index"])
        s.run()
        return s

    s = benchmark.pedantic(search, rounds=3, iterations=1, warmup_rounds=1)
    rows = sum(st.rows_evaluated for st in s.state.values())
    assert rows > 0
    benchmark.extra_info["rows"] = rows
    benchmark.extra_info["rows_per_second"] = rows / benchmark.stats.stats.median
