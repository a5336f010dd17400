"""The row-batched search: rows are independent of their batch-mates in every adapter, a bug
only a search reaches is found by the default budget, and frameworks in parallel
(`--jobs 2`) give the rows of a serial run."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import harness
import planted_adapters
from harness.adapters import registry
from harness.adapters.workers import call_adapter
from harness.numerics import dtypes, metrics
from harness.numerics.cases import dyadic_soft_labels, dyadic_soft_labels_rows
from harness.run import rowsearch
from harness.store import casefile, columns


def test_default_search_finds_a_bug_only_a_search_reaches(tmp_path):
    df = harness.run(adapters=[planted_adapters.ID], dtypes=["float32", "float64"], regimes_=[], corpus=False,
                     budget="quick", isolate=False, out_dir=tmp_path)
    for dtype, found in df[df["source"] == "search"].groupby("dtype"):
        cases = [casefile.load(tmp_path / df.attrs["run_dir"] / f)[0] for f in found["case_file"]]
        hits = [c for c in cases if planted_adapters.lone_near_tie(c.logits).any()]
        assert hits, f"{dtype}: " + found[["status", "regime", "n_classes"]].to_string()
        assert set(found.loc[found["case_id"] == hits[0].case_id, "status"]) <= {"inaccurate", "nonfinite"}


def test_no_regime_or_corpus_case_reaches_the_planted_bug():
    from harness.inputs import regimes
    from harness.run.runner import corpus_cases

    cases = regimes.build_cases(seed=0) + corpus_cases(None, None)
    assert len(cases) > 500 and any(c.shape[1] > planted_adapters.MIN_CLASSES for c in cases)
    reached = [c.case_id for c in cases if not c.invalid and planted_adapters.lone_near_tie(c.logits).any()]
    assert reached == []


def test_search_evaluates_thousands_of_rows_per_adapter_and_dtype():
    df = harness.run(adapters=["numpy.stable"], dtypes=["float16"], regimes_=[], corpus=False, budget="quick",
                     label_kinds=["index"], isolate=False)
    counts = df.attrs["timing"]["counts"]
    # the old quick search judged 3 examples and up to 20 shrink candidates per adapter x dtype
    assert counts["search_pairs"] == 1 and counts["search_rows"] >= 100 * 23


def test_search_rows_per_second_per_framework_are_its_rows_over_its_workers_round_trips_on_search_cases():
    """Two frameworks' workers, regimes and search in one run: each framework's search rows
    are the sum of its pairs' rows, its seconds are round trips on the search's cases only
    (fewer than all its round trips, which hold the regime cases too), and the summary ranks
    the rates."""
    from harness.run.summary import format_timing

    df = harness.run(adapters=["numpy.stable", "scipy.log_softmax"], dtypes=["float16"], regimes_=["typical"],
                     shapes=[(4, 10)], corpus=False, budget="quick", label_kinds=["index"], isolate=True, jobs=2)
    timing = df.attrs["timing"]
    rates, per_pair = timing["search_frameworks"], timing["search_rows_per_pair"]
    assert set(rates) == {"numpy", "scipy"}
    for framework, adapter_id in (("numpy", "numpy.stable"), ("scipy", "scipy.log_softmax")):
        r = rates[framework]
        assert r["rows"] == per_pair[f"{adapter_id}|float16"] > 0
        assert 0 < r["seconds"] < timing["framework_seconds"][framework]
        assert r["rows_per_second"] == pytest.approx(r["rows"] / r["seconds"], rel=1e-3)
    fastest, slowest = sorted(rates, key=lambda f: -rates[f]["rows_per_second"])
    line = format_timing(timing).splitlines()[-1]
    assert line.index(f" {fastest} ") < line.index(f" {slowest} "), line


def test_search_rates_leave_out_frameworks_with_no_timed_round_trips():
    from harness.run.runner import search_rates

    stats = {"a.x|float16": {"rows": 100, "calls": 2}, "a.y|float32": {"rows": 50, "calls": 1},
             "b.z|float16": {"rows": 30, "calls": 1}}
    rates = search_rates(stats, {"a.x": "a", "a.y": "a", "b.z": "b"}, {"a": 3.0})
    assert rates == {"a": {"rows": 150, "seconds": 3.0, "rows_per_second": 50.0}}


@pytest.fixture(scope="module")
def pool_rows():
    """Rows the search would draw (hypothesis pool, mutated), per dtype, V = 32."""
    out = {}
    for dtype in ("float32", "float16"):
        fmt = dtypes.get(dtype)
        budget = rowsearch.BUDGETS["quick"]
        pool = rowsearch.hypothesis_pool(fmt, 32, budget, seed=7)
        rng = np.random.default_rng(7)
        out[dtype] = rowsearch.Rows.concat([pool.take(np.arange(min(16, len(pool)))),
                                            rowsearch.mutate(pool, rng, fmt, True, 16)])
    return out


def _batch(search, rows, kind, dtype):
    rng = np.random.default_rng(1)
    return search.with_labels(rows, kind, rng)


def _available():
    return [a.id for a in registry.resolve(None, ()) if "cpu" in a.devices]


@pytest.mark.parametrize("adapter_id", _available())
def test_rows_do_not_depend_on_their_batch_mates(adapter_id, pool_rows):
    """Each row's loss and gradient, bit for bit, whatever rows share its batch and in what
    order (the same batch shape): what lets the search judge thousands of rows per call."""
    adapter = registry.get(adapter_id)
    search = rowsearch.RowSearch([adapter], ["float32"], rowsearch.BUDGETS["quick"], evaluate=None)
    checked = 0
    for dtype in ("float32", "float16"):
        if dtype not in adapter.dtypes:
            continue
        for kind in adapter.label_kinds[:1] if dtype == "float16" else adapter.label_kinds[:2]:
            rows = _batch(search, pool_rows[dtype], kind, dtype)
            if not adapter.supports_ignore:
                rows.ignored[:] = False
            rows = search._valid(rows, adapter.supports_ignore)
            n = len(rows)
            pads = rowsearch.pad_rows(8, 32, rows.soft is not None)
            a = rowsearch.Rows.concat([rows, pads])
            perm = np.random.default_rng(2).permutation(n)
            mates = rowsearch.Rows.concat([rows.take(perm[: n // 2]), pads, rows.take(perm[n // 2:])])
            where = np.concatenate([perm[: n // 2], np.full(8, -1), perm[n // 2:]])
            out_a = call_adapter(adapter, search.make_case(a, dtype, kind, 0.1, "t"), "cpu")
            out_b = call_adapter(adapter, search.make_case(mates, dtype, kind, 0.1, "t"), "cpu")
            assert out_a.status == out_b.status, (out_a.message, out_b.message)
            if out_a.status != "ran":
                continue
            pos_b = {int(r): i for i, r in enumerate(where) if r >= 0}
            idx_b = np.array([pos_b[i] for i in range(n)])
            la, lb = np.asarray(out_a.output.loss)[:n], np.asarray(out_b.output.loss)[idx_b]
            ga, gb = np.asarray(out_a.output.grad)[:n], np.asarray(out_b.output.grad)[idx_b]
            same_l = (la == lb) | (np.isnan(la.astype(np.float64)) & np.isnan(lb.astype(np.float64)))
            same_g = ((ga == gb) | (np.isnan(ga.astype(np.float64)) & np.isnan(gb.astype(np.float64)))).all(axis=1)
            bad = np.flatnonzero(~(same_l & same_g))
            assert bad.size == 0, f"{adapter_id} {dtype} {kind}: rows {bad[:10].tolist()} change with their batch-mates"
            checked += n
    assert checked > 0 or not adapter.dtypes


def test_jobs_2_gives_the_rows_of_jobs_1():
    kwargs = dict(adapters=["numpy.stable", "torch.cross_entropy", "jax.optax.softmax_cross_entropy_with_integer_labels"],
                  dtypes=["float32", "bfloat16"], regimes_=["typical", "near_ties", "neg_inf_mask", "ignored_rows"],
                  shapes=[(8, 100)], label_kinds=["index"], corpus=False)
    serial = harness.run(**kwargs, jobs=1)
    parallel = harness.run(**kwargs, jobs=2)
    stable = [c for c in columns.NAMES if c not in columns.VOLATILE]
    assert len(serial) > 20 and set(serial["framework"]) == {"numpy", "torch", "jax"}
    pd.testing.assert_frame_equal(serial[stable], parallel[stable])


def test_search_in_lanes_with_findings_in_threads_gives_the_rows_of_a_serial_search():
    """The search hands LAG batches to the workers' lanes before judging the oldest, and
    shrinks the pairs of two workers at once; in process (no lanes, no threads) every call
    waits for its answer. Both must find the same rows."""
    kwargs = dict(adapters=["numpy.naive", "numpy.stable", "scipy.log_softmax"], dtypes=["float16", "float32"],
                  regimes_=[], corpus=False, budget="quick", label_kinds=["index", "soft"])
    serial = harness.run(**kwargs, isolate=False)
    parallel = harness.run(**kwargs, isolate=True, jobs=2)
    stable = [c for c in columns.NAMES if c not in columns.VOLATILE]
    assert (serial["source"] == "search").all() and len(set(zip(serial["adapter"], serial["dtype"]))) == 6
    assert len(serial) > 6  # some pair reports several failure kinds
    assert (serial["status"] != "ok").any()  # failures were found, so winners were shrunk
    pd.testing.assert_frame_equal(serial[stable], parallel[stable])
    assert serial.attrs["timing"]["counts"] == parallel.attrs["timing"]["counts"]


def test_search_starting_while_the_lanes_finish_the_cases_gives_the_rows_and_journal_of_a_serial_run(tmp_path,
                                                                                                      monkeypatch):
    """With lanes the search starts as soon as the last case is with them (its batches queue
    behind each framework's last cases) and shrinks once every case is judged; in process
    everything runs in turn. The rows, and the journal's order (cases first), must agree."""
    from harness.store import runfolder

    journal = []
    append = runfolder.RowJournal.append

    def recording(self, row):
        journal.append((row["case_id"], row["adapter"]))
        return append(self, row)

    monkeypatch.setattr(runfolder.RowJournal, "append", recording)
    kwargs = dict(adapters=["numpy.naive", "numpy.stable", "scipy.log_softmax"], dtypes=["float16", "float32"],
                  regimes_=["typical", "near_ties", "large_offset"], shapes=[(64, 10), (16, 1000)], corpus=False,
                  budget="quick", label_kinds=["index", "soft"])
    serial = harness.run(**kwargs, isolate=False, out_dir=tmp_path / "serial")
    journal.clear()
    parallel = harness.run(**kwargs, isolate=True, jobs=2, out_dir=tmp_path / "lanes")
    stable = [c for c in columns.NAMES if c not in columns.VOLATILE]
    sources = list(parallel["source"])
    first = sources.index("search")
    assert first > 0 and set(sources[:first]) == {"regime"} and set(sources[first:]) == {"search"}
    pd.testing.assert_frame_equal(serial[stable], parallel[stable])
    assert journal == list(zip(parallel["case_id"], parallel["adapter"]))


def test_a_dtypes_search_is_the_same_alone_or_taking_turns_with_other_dtypes():
    """The search's dtypes take turns batch by batch (`RowSearch._run`); each dtype's batches
    are made from its own pairs' state, so searching it alone finds the same rows."""
    kwargs = dict(adapters=["numpy.naive", "numpy.stable"], regimes_=[], corpus=False, budget="quick",
                  label_kinds=["index", "smoothing"], isolate=False)
    together = harness.run(**kwargs, dtypes=["float16", "bfloat16", "float32"])
    alone = pd.concat([harness.run(**kwargs, dtypes=[d]) for d in ("float16", "bfloat16", "float32")])
    stable = [c for c in columns.NAMES if c not in columns.VOLATILE]
    order = ["adapter", "dtype"]
    together = together.sort_values(order, kind="stable").reset_index(drop=True)[stable]
    alone = alone.sort_values(order, kind="stable").reset_index(drop=True)[stable]
    assert len(together) >= 6 and set(together["dtype"]) == {"float16", "bfloat16", "float32"}
    pd.testing.assert_frame_equal(together, alone)


@pytest.mark.parametrize("jobs", [1, 2, 64, None])
def test_every_worker_has_one_thread_whatever_jobs_is(jobs):
    """torch.compile's CPU kernels round differently with another thread count (see
    tests/test_ray_executor.py), so a thread budget that followed --jobs or the cores would
    make rows depend on them; a Ray unit's workers get the same budget."""
    from harness.run import ray_executor, runner

    pool = runner._executor({"isolate": True, "timeout": 1.0, "jobs": jobs}, None, None)
    try:
        assert pool.threads == 1 and pool.jobs == (jobs or runner.thread_budget.cores())
    finally:
        pool.close()
    unit_pool, _ = ray_executor._executor_for(("implementations.numpy_impl",), {"timeout": 1.0, "isolate": True})
    try:
        assert unit_pool.threads == 1
    finally:
        ray_executor._drop_kept()


def test_xla_float32_rows_change_with_the_batch_row_count():
    """A finding (this session): rows are independent of their batch-mates at a fixed batch
    shape (above), but XLA's CPU code for a float32 batch depends on its row count. The same
    64 rows of 10 classes give other losses and gradients inside a 1024-row batch (identical
    up to 256 rows) under jax eager and jax.jit alike; torch and numpy do not change. So the
    search judges a row in its batch's shape, and a finding is re-run alone (`findings`)
    before it becomes a results row."""
    import dataclasses

    from harness.inputs import regimes

    case = regimes.make_case("typical", "float32", (64, 10), "onehot", 0)

    def changed_rows(adapter_id, n):
        adapter = registry.get(adapter_id)
        alone = call_adapter(adapter, case, "cpu").output
        pad = np.zeros((n - 64, 10), np.float32)
        padded = dataclasses.replace(case, case_id="padded", logits=np.concatenate([case.logits, pad]),
                                     target=np.concatenate([case.target, np.zeros(n - 64, np.int64)]))
        inside = call_adapter(adapter, padded, "cpu").output
        return int(((inside.loss[:64] != alone.loss) | (inside.grad[:64] != alone.grad).any(axis=1)).sum())

    assert changed_rows("jax.optax.softmax_cross_entropy", 1024) > 5
    assert changed_rows("jax.optax.softmax_cross_entropy.jit", 1024) > 5
    assert changed_rows("jax.optax.softmax_cross_entropy", 256) == 0
    assert changed_rows("torch.cross_entropy", 1024) == 0 and changed_rows("numpy.stable", 1024) == 0


def test_row_verdicts_of_a_repeated_answer_are_the_first_ones_and_a_changed_one_is_judged_afresh():
    from harness.inputs.regimes import make_case
    from harness.numerics import reference

    case = make_case("near_ties", "bfloat16", (64, 10), "index", seed=1)
    shared = reference.loss_and_grad(case)
    loss = np.asarray(shared.loss, np.float64).astype(np.float32)
    grad = np.asarray(shared.grad, np.float64).astype(np.float32)
    worse = grad.copy()
    worse[5] *= 1.5  # row 5's gradient 50 % off: inaccurate

    def fresh(g):
        v = rowsearch.judge_rows(reference.loss_and_grad(case), loss, g, "bfloat16")
        return v.score, v.nonfinite, v.loss_worse

    first = rowsearch.judge_rows(shared, loss, grad, "bfloat16")
    assert all(np.array_equal(a, b) for a, b in zip((first.score, first.nonfinite, first.loss_worse), fresh(grad)))
    first.score[:] = -1.0  # the search drops pad rows this way: the kept verdicts must not change
    again = rowsearch.judge_rows(shared, loss.copy(), grad.copy(), "bfloat16")
    assert np.array_equal(again.score, fresh(grad)[0])
    changed = rowsearch.judge_rows(shared, loss, worse, "bfloat16")
    assert np.array_equal(changed.score, fresh(worse)[0]) and changed.score[5] > 1 >= fresh(grad)[0].max()


@pytest.mark.parametrize("n,v,support", [(1024, 2, 2), (1024, 2, 1), (512, 32, 8), (64, 1000, 5), (16, 3, 8)])
def test_search_soft_labels_are_exact_distributions_with_the_target_heaviest(n, v, support):
    rng = np.random.default_rng(n + v + support)
    target = rng.integers(0, v, n)
    y = dyadic_soft_labels_rows(rng, n, v, target, support)
    assert (y.sum(axis=1) == 1).all()  # exactly: multiples of 1/256
    assert ((y * 256) % 1 == 0).all()
    assert ((y > 0).sum(axis=1) == min(support, v)).all()
    assert (y[np.arange(n), target] == y.max(axis=1)).all()


def test_search_soft_labels_draw_the_per_row_functions_distribution():
    """The vectorised labels (the search's) and the per-row ones (the regimes') are one
    distribution: the target's weight, the second weight, how often each other class is in
    the support and its mean weight agree within 5 standard errors over 20,000 rows."""
    n, v, support = 20000, 6, 3
    target = np.zeros(n, int)
    a = dyadic_soft_labels(np.random.default_rng(1), n, v, target, support)
    b = dyadic_soft_labels_rows(np.random.default_rng(2), n, v, target, support)
    for stat in (lambda y: y[:, 0], lambda y: np.sort(y, axis=1)[:, -2], lambda y: (y[:, 1:] > 0).astype(float),
                 lambda y: y[:, 1:]):
        sa, sb = stat(a), stat(b)
        se = np.sqrt(sa.var(axis=0) / n + sb.var(axis=0) / n)
        assert (np.abs(sa.mean(axis=0) - sb.mean(axis=0)) <= 5 * se).all()


def test_hypothesis_pool_does_not_depend_on_which_local_modules_are_loaded(tmp_path):
    """Hypothesis (6.13x on) draws some values from the constants in the source of every
    loaded module outside site-packages: cestab's own, and a user's adapters. The search's
    rows must not change when a module is imported (a new cestab version, a plug-in): the
    pool is drawn the same with and without a module full of fresh constants. In a fresh
    interpreter: this suite draws without local constants everywhere (conftest.py), where
    the search's own guard could be missing and the test would still pass."""
    values = ", ".join(f"{x!r}" for x in [3.5, -7.25, 1e4, -65504.0, 6.1e-5, 12345, -3, 31, 1000, 2.0**-14, 0.375])
    (tmp_path / "cestab_constants_mod.py").write_text(f"VALUES = [{values}]\nNAMES = ['a', 'b']\n")
    script = (
        "import sys, numpy as np\n"
        "from harness.numerics import dtypes\n"
        "from harness.run import rowsearch\n"
        "fmt, budget = dtypes.get('float16'), rowsearch.BUDGETS['quick']\n"
        "before = rowsearch.hypothesis_pool(fmt, 32, budget, seed=11)\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import cestab_constants_mod\n"
        "after = rowsearch.hypothesis_pool(fmt, 32, budget, seed=11)\n"
        "same = (np.array_equal(before.z, after.z) and np.array_equal(before.target, after.target)\n"
        "        and np.array_equal(before.ignored, after.ignored) and np.array_equal(before.pieces, after.pieces))\n"
        "print('same' if same else 'differs', len(before.z))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=Path(harness.__file__).parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["same", "768"], out.stdout


def test_a_shrinking_batch_judges_its_real_rows_as_a_whole_batch_would_and_refuses_short_answers():
    """`RowSearch.run_batch` (shrinking, bisecting) pads its candidates to the batch shape
    but computes the reference of the real rows alone: their verdicts must be those of the
    whole padded batch's reference, and an answer with fewer rows than the batch (the real
    rows only) is a wrong shape, not an answer to judge."""
    from harness.adapters import Adapter
    from harness.adapters.contract import Output
    from harness.adapters.workers import Attempt
    from harness.numerics import reference

    numpy_stable = registry.get("numpy.stable")
    truncating = Adapter("test.truncating", "numpy", numpy_stable.compute, "test only: the first 3 rows' answers")

    def evaluate(case, adapters):
        """numpy.stable's attempts; the truncating one's cut to 3 rows past the adapter's own
        shape check (as a worker's answer could be)."""
        out = []
        for a in adapters:
            attempt = call_adapter(numpy_stable, case, "cpu")
            if a is truncating:
                attempt = Attempt("ran", Output(attempt.output.loss[:3], attempt.output.grad[:3]))
            out.append((a, attempt))
        return out

    search = rowsearch.RowSearch([numpy_stable, truncating], ["float16"], rowsearch.BUDGETS["quick"], evaluate)
    rng = np.random.default_rng(3)
    z = dtypes.exact(rng.normal(0, 3, (3, 32)) * np.array([[1.0], [300.0], [2e4]]), "float16")
    real = rowsearch.Rows(z, np.array([0, 5, 31]), np.zeros(3, bool), ["a", "b", "c"])
    n = search.budget.rows(32)
    rows = rowsearch.Rows.concat([real, rowsearch.pad_rows(n - 3, 32, False)])
    (a, attempt, verdicts), (_, short_attempt, short_verdicts) = search.run_batch(rows, 3, "float16", "index", 0.0,
                                                                               [numpy_stable, truncating])
    whole = reference.loss_and_grad(search.make_case(rows, "float16", "index", 0.0, "t"))
    expected = rowsearch.judge_rows(whole, attempt.output.loss, attempt.output.grad, "float16")
    assert a is numpy_stable and attempt.status == "ran" and len(verdicts.score) == 3
    assert np.array_equal(verdicts.score, expected.score[:3]) and verdicts.score.max() > 0
    assert np.array_equal(verdicts.loss_worse, expected.loss_worse[:3])
    assert short_attempt.status == "ran" and short_verdicts is None


def test_a_float64_batch_is_judged_in_float64_pieces_where_they_hold_each_row_and_as_the_definition_says():
    """A float64 batch's extended-precision truth is judged in float64 pieces (hi + lo, the
    compiled pass) on the rows they hold exactly, and at the truth's own precision (numpy)
    on the rows they cannot: a loss past float64's range, a gradient whose rest falls below
    its subnormals. Every row's verdict must be the numpy definition's for the whole batch,
    and the one the row gets in a batch of its own."""
    from harness.numerics import reference

    rng = np.random.default_rng(11)
    n, v = 256, 64
    z = rng.normal(0, 30, (n, v))
    z[:4, 0], z[:4, 1] = 1.7e308, -1.7e308  # loss ~3.4e308: past float64's range
    z[4:8, 0], z[4:8, 2] = 800.0, 80.0  # p_2 ~ e^-720: a subnormal float64 hi, its rest lost
    target = rng.integers(0, v, n)
    target[:4] = 1
    rows = rowsearch.Rows(z, target, np.zeros(n, bool), ["r"] * n)
    search = rowsearch.RowSearch([], ["float64"], rowsearch.BUDGETS["quick"], evaluate=None)
    ref = reference.loss_and_grad(search.make_case(rows, "float64", "index", 0.0, "t"))
    assert not metrics.exactly_split(ref.loss)[:4].any() and not metrics.exactly_split(ref.grad)[4:8].all(axis=1).any()
    split = rowsearch.split_rows(ref, "float64")
    assert split.rest.tolist() == list(range(8)) and split.pieces.tolist() == list(range(8, n))
    loss = np.asarray(ref.loss, np.float64) * rng.uniform(0.5, 1.5, n)
    grad = np.asarray(ref.grad, np.float64) * rng.uniform(-3.0, 3.0, (n, v))
    loss[8:40] = np.asarray(ref.loss[8:40], np.float64) * (1 + 1e-12 * rng.standard_normal(32))  # scores under the cap
    grad[8:40] = np.asarray(ref.grad[8:40], np.float64) * (1 + 1e-12 * rng.standard_normal((32, v)))
    batch = rowsearch.judge_rows(ref, loss, grad, "float64")
    lt, gt = (metrics.terms_for(ref, name, "float64", textbook=True) for name in ("loss", "grad"))
    assert lt.hi is None and gt.hi is None  # the batch as a whole has no float64 pieces
    definition = rowsearch._scores_numpy(lt, gt, loss, grad, ref.defined, "float64")
    for got, want in zip((batch.score, batch.nonfinite, batch.loss_worse),
                         (definition.score, definition.nonfinite, definition.loss_worse)):
        assert np.array_equal(got, want)
    assert 1 < batch.score[8:40].max() < rowsearch.BROKEN / 2 and (batch.score[:8] > 0).all()
    for i in range(n):
        alone = reference.loss_and_grad(search.make_case(rows.take([i]), "float64", "index", 0.0, "t"))
        mine = rowsearch.judge_rows(alone, loss[i : i + 1], grad[i : i + 1], "float64")
        assert (batch.score[i], batch.nonfinite[i], batch.loss_worse[i]) == (mine.score[0], mine.nonfinite[0],
                                                                             mine.loss_worse[0]), i


def _feature_of_one_row(z: np.ndarray, target: int, ignored: bool, fmt) -> str:
    """`rowsearch.features` for one row, test by test, as the search once read each row."""
    finite = np.isfinite(z)
    if ignored:
        return "ignored.padding" if not finite.any() else "ignored"
    if z[target] == -np.inf:
        return "mask.target"
    zf = z[finite]
    m, lo = zf.max(), zf.min()
    with np.errstate(over="ignore"):
        spread = m - lo  # inf past float64's max: still past the dtype's
    if spread > fmt.max:
        return "spread_overflow"
    if np.abs(zf).max() >= fmt.max / 2:
        return "near_max"
    if zf.size >= 2:
        top2 = np.partition(zf, -2)[-2:]
        if top2[1] - top2[0] <= 2.0**-10 * max(1.0, abs(float(top2[1]))):
            return "near_tie"
    if abs(m) > fmt.exp_overflow:
        return "large_offset"
    if np.any((zf != 0) & (np.abs(zf) < 2.0**fmt.min_exponent)):
        return "subnormal"
    if not finite.all():
        return "mask"
    if m - lo > -fmt.exp_underflow:
        return "exp_range"
    return "plain"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_the_features_of_a_block_of_rows_are_each_rows_feature(dtype):
    """`rowsearch.features` (every row at once, what the search reads) against the same
    tests written for one row (`_feature_of_one_row`) on the rows a search makes: hypothesis blocks and their
    mutations at every class count, every feature among them."""
    fmt = dtypes.get(dtype)
    budget = rowsearch.BUDGETS["quick"]
    rng = np.random.default_rng(3)
    seen = set()
    for v in (2, 32, 1000):
        pool = rowsearch.hypothesis_pool(fmt, v, budget, seed=v)
        rows = rowsearch.Rows.concat([pool, rowsearch.mutate(pool, rng, fmt, True, 4 * len(pool)),
                                      rowsearch.mutate(pool, rng, fmt, False, 4 * len(pool))])
        want = [_feature_of_one_row(rows.z[i], int(rows.target[i]), bool(rows.ignored[i]), fmt) for i in range(len(rows))]
        assert rowsearch.features(rows.z, rows.target, rows.ignored, fmt) == want
        seen.update(want)
    assert {"ignored", "mask.target", "near_max", "near_tie", "subnormal", "mask", "plain"} <= seen, seen


def test_kinds_read_with_a_batchs_kept_features_are_the_kinds_read_afresh():
    """`kinds_of` with `known` (a batch's features kept for its next adapter) gives the kinds
    it gives without, for overlapping and repeated selections, and reads only those rows."""
    fmt = dtypes.get("float16")
    pool = rowsearch.hypothesis_pool(fmt, 32, rowsearch.BUDGETS["quick"], seed=4)
    rows = rowsearch.Rows.concat([pool, rowsearch.mutate(pool, np.random.default_rng(1), fmt, True, len(pool))])
    n = len(rows)
    rng = np.random.default_rng(2)
    verdicts = rowsearch.RowVerdicts(rng.uniform(0, 3, n), rng.random(n) < 0.2, rng.random(n) < 0.5)
    known = np.full(n, None, dtype=object)
    read = set()
    for _ in range(6):
        idx = rng.choice(n, size=40, replace=False)
        read.update(idx.tolist())
        assert rowsearch.kinds_of(verdicts, idx, rows, fmt, known) == rowsearch.kinds_of(verdicts, idx, rows, fmt)
    assert {i for i in range(n) if known[i] is not None} == read
    assert len(set(known[list(read)])) >= 3  # several features among them


def test_a_mutated_rows_name_is_its_parents_pieces_then_each_mutation_it_got():
    """`mutate` names each child "<parent's pieces>+mut.<first>[.<second>]": every child one
    mutation, about 40 % a second; "ignore" only where ignored rows are allowed (where not,
    a child that drew it keeps its parent's name, or gets its second mutation's alone)."""
    fmt = dtypes.get("bfloat16")
    pool = rowsearch.hypothesis_pool(fmt, 32, rowsearch.BUDGETS["quick"], seed=6)
    for allow_ignore in (True, False):
        kids = rowsearch.mutate(pool, np.random.default_rng(8), fmt, allow_ignore, 2000)
        seconds = 0
        for i, name in enumerate(kids.pieces):
            parent = pool.pieces[i % len(pool)]
            if name == parent and not allow_ignore:
                continue
            assert name.startswith(parent + "+mut."), (name, parent)
            done = name[len(parent) + len("+mut."):].split(".")
            assert 1 <= len(done) <= 2 and set(done) <= set(rowsearch.MUTATIONS), name
            assert allow_ignore or "ignore" not in done, name
            seconds += len(done) == 2
        assert 0.3 < seconds / 2000 < 0.5, seconds
        assert any(name.endswith(".ignore") or ".ignore." in name for name in kids.pieces) == allow_ignore


def _same_rows(a, b) -> bool:
    return (np.array_equal(a.z, b.z) and a.z.dtype == b.z.dtype and np.array_equal(a.target, b.target)
            and np.array_equal(a.ignored, b.ignored) and a.pieces.tolist() == b.pieces.tolist() and a.soft is None and b.soft is None)


def test_a_cached_pool_is_the_drawn_pool_and_the_next_one_is_read_without_drawing(tmp_path, monkeypatch):
    monkeypatch.setenv("CESTAB_CACHE_DIR", str(tmp_path))
    fmt, budget = dtypes.get("bfloat16"), rowsearch.BUDGETS["quick"]
    drawn = rowsearch.hypothesis_pool(fmt, 32, budget, seed=5)
    assert _same_rows(rowsearch.cached_pool(fmt, 32, budget, seed=5), drawn)  # drawn, and written
    [written] = list(tmp_path.glob("search-pools-*/*.npz"))

    def no_drawing(*args):
        raise AssertionError("drawn again")

    monkeypatch.setattr(rowsearch, "hypothesis_pool", no_drawing)
    assert _same_rows(rowsearch.cached_pool(fmt, 32, budget, seed=5), drawn)  # read
    with pytest.raises(AssertionError, match="drawn again"):  # another seed: another file
        rowsearch.cached_pool(fmt, 32, budget, seed=6)
    assert list(tmp_path.glob("search-pools-*/*.npz")) == [written]


@pytest.mark.parametrize("damage", ["torn", "not an npz", "other arrays", "targets out of range"])
def test_a_damaged_pool_file_is_drawn_again_and_rewritten(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("CESTAB_CACHE_DIR", str(tmp_path))
    fmt, budget = dtypes.get("float16"), rowsearch.BUDGETS["quick"]
    drawn = rowsearch.cached_pool(fmt, 2, budget, seed=1)
    [path] = list(tmp_path.glob("search-pools-*/*.npz"))
    if damage == "torn":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "not an npz":
        path.write_text("import os; os.system('echo pwned')")
    else:
        z = drawn.z[:, :1] if damage == "other arrays" else drawn.z
        target = drawn.target + (5 if damage == "targets out of range" else 0)
        np.savez(path, z=z, target=target, ignored=drawn.ignored, pieces=np.array(drawn.pieces, dtype=str))
    assert _same_rows(rowsearch.cached_pool(fmt, 2, budget, seed=1), drawn)
    with np.load(path, allow_pickle=False) as f:  # rewritten whole
        assert np.array_equal(f["z"], drawn.z) and np.array_equal(f["target"], drawn.target)


def test_a_run_whose_pools_are_cached_never_imports_hypothesis(tmp_path):
    """The parent of a warm default run draws nothing: hypothesis (0.9 s to import) stays
    out of it. The first run draws and imports it; the second finds every pool."""
    script = ("import sys, harness; harness.run(adapters=['numpy.stable'], dtypes=['float16'], regimes_=[], corpus=False, "
              "budget='quick', label_kinds=['index'], isolate=False, out_dir=sys.argv[1]); "
              "print('hypothesis' in sys.modules)")
    env = {**os.environ, "CESTAB_CACHE_DIR": str(tmp_path / "cache")}
    seen = [subprocess.run([sys.executable, "-c", script, str(tmp_path / f"run{i}")], env=env, capture_output=True,
                           text=True, check=True).stdout.split()[-1] for i in range(2)]
    assert seen == ["True", "False"]
