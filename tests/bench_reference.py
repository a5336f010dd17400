"""Benchmarks (pytest-benchmark) of the harness's own cost; not part of the test run.

    .venv/bin/python -m pytest tests/bench_reference.py --benchmark-columns=median,iqr,rounds

The reference runs once per case for every adapter; these say what that costs against
a plain float32 implementation on the largest default CPU batch (4096 x 32000).
"""

import numpy as np
import pytest

from harness.run import judge
from harness.numerics import reference
from harness.inputs import regimes
from implementations import numpy_impl

SHAPE = (4096, 32000)


@pytest.fixture(scope="module")
def big_case():
    return regimes.make_case("typical", "float32", SHAPE, "index", seed=0)


def test_bench_reference_float32(benchmark, big_case):
    ref = benchmark.pedantic(reference.loss_and_grad, args=(big_case,), rounds=5, iterations=1)
    assert np.isfinite(ref.loss).all()


def test_bench_numpy_stable_float32(benchmark, big_case):
    out = benchmark.pedantic(numpy_impl.stable, args=(big_case, "cpu"), rounds=5, iterations=1)
    assert out.loss.dtype == np.float32


def test_bench_metrics_float32(benchmark, big_case):
    ref = reference.loss_and_grad(big_case)
    out = numpy_impl.stable(big_case, "cpu")
    result = benchmark.pedantic(judge.accuracy, args=(ref, out.loss, out.grad, "float32"), rounds=5, iterations=1)
    assert result["status"] == "ok"
