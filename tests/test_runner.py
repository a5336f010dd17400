"""The runner: one tidy table, a complete run folder, deterministic for the numpy adapters."""

import json

import numpy as np
import pandas as pd
import pytest

import harness
from harness.store import columns
from harness.numerics import reference
from harness.run.summary import summarize

SMALL = dict(
    adapters=["numpy.naive", "numpy.stable", "scipy.log_softmax"],
    dtypes=["float16", "bfloat16", "float32", "float64"],
    shapes=[(8, 2), (4, 300)],
    label_kinds=["index", "soft"],
    corpus=False,
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return harness.run(**SMALL, seed=3, out_dir=out, command="test")


def test_table_has_the_declared_columns_in_order(small_run):
    assert tuple(small_run.columns) == columns.NAMES
    assert small_run.dtypes["n_classes"] == "Int64" and small_run.dtypes["loss_ulps"] == "float64"


def test_one_row_per_case_and_adapter(small_run):
    shapes_per_regime = [2 if r.every_shape else 1 for r in harness.inputs.regimes.REGIMES.values()]  # empty_batch: 1
    n_cases = sum(shapes_per_regime) * 4 * 2
    assert len(small_run) == n_cases * 3
    assert not small_run.duplicated(["case_id", "adapter"]).any()
    assert set(small_run["status"]) <= set(harness.numerics.statuses.STATUSES)


def test_run_folder_holds_parquet_csv_and_run_json(small_run):
    from pathlib import Path

    run_dir = Path(small_run.attrs["run_dir"])
    assert sorted(p.name for p in run_dir.iterdir()) == ["logs", "results.csv", "results.parquet", "run.json"]
    parquet = pd.read_parquet(run_dir / "results.parquet")
    pd.testing.assert_frame_equal(parquet, small_run, check_like=False)
    csv = pd.read_csv(run_dir / "results.csv")
    assert list(csv.columns) == list(columns.NAMES) and len(csv) == len(small_run)
    np.testing.assert_allclose(csv["loss_ulps"].to_numpy(float), small_run["loss_ulps"].to_numpy(float))
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["seed"] == 3 and meta["command"] == "test" and meta["n_cases"] == n_cases_of(small_run)
    assert {"numpy", "pandas", "scipy"} <= set(meta["versions"]) and meta["environment"]["cpu"]
    assert meta["schema_version"] == columns.SCHEMA_VERSION


def n_cases_of(df):
    return df["case_id"].nunique()


def test_same_seed_gives_identical_results():
    a = harness.run(**SMALL, seed=11)
    b = harness.run(**SMALL, seed=11)
    stable = [c for c in columns.NAMES if c not in columns.VOLATILE]
    pd.testing.assert_frame_equal(a[stable], b[stable])
    c = harness.run(**SMALL, seed=12)
    assert not a["loss_abs_err"].equals(c["loss_abs_err"])


def test_reference_is_computed_once_per_case(monkeypatch):
    calls = []
    real = reference.loss_and_grad

    def counting(case):
        calls.append(case.case_id)
        return real(case)

    monkeypatch.setattr(reference, "loss_and_grad", counting)
    df = harness.run(adapters=SMALL["adapters"], dtypes=["float32"], shapes=[(4, 10)], label_kinds=["index"], corpus=False)
    assert len(calls) == df["case_id"].nunique() == len(set(calls))


def test_unsupported_and_error_rows_do_not_stop_the_run():
    def broken(case, device):
        raise RuntimeError("kernel exploded\nsecond line")

    limited = harness.Adapter("test.limited", "numpy", broken, dtypes=("float64",))
    harness.register(limited)
    df = harness.run(
        isolate=False,  # an adapter defined inside a test cannot be rebuilt in a worker
        adapters=["test.limited", "numpy.stable"],
        dtypes=["float16", "float64"],
        regimes_=["typical", "large_offset"],
        shapes=[(2, 4)],
        label_kinds=["index"],
        corpus=False,
    )
    mine = df[df["adapter"] == "test.limited"]
    assert set(mine.loc[mine["dtype"] == "float16", "status"]) == {"unsupported"}
    assert set(mine.loc[mine["dtype"] == "float64", "status"]) == {"error"}
    assert (mine.loc[mine["dtype"] == "float64", "message"] == "RuntimeError: kernel exploded").all()
    # numpy.stable still ran every case: ok, or lossy in float16's own arithmetic
    assert df.loc[(df["adapter"] == "numpy.stable") & (df["regime"] == "typical"), "status"].isin(["ok", "lossy"]).all()


def test_summary_counts_statuses_per_adapter_and_dtype(small_run):
    table = summarize(small_run)
    cell = table.loc[("numpy.naive", "float32")]
    sub = small_run[(small_run["adapter"] == "numpy.naive") & (small_run["dtype"] == "float32")]
    assert cell["cases"] == len(sub)
    assert cell["nonfinite"] == (sub["status"] == "nonfinite").sum() > 0
    assert cell["loss_ulps_max"] == sub["loss_ulps"].max()


def test_corpus_cases_run_by_default_in_every_requested_dtype():
    df = harness.run(adapters=["numpy.stable"], dtypes=["float16", "float32"], regimes_=["typical"], shapes=[(2, 3)],
                     isolate=False)
    corpus = df[df["source"] == "corpus"]
    entries = {c.split("/")[1] for c in corpus["case_id"]}
    assert len(entries) >= 15 and set(corpus["dtype"]) >= {"float16", "float32"}
    one = corpus[corpus["case_id"].str.startswith("corpus/pytorch-11752-large-equal-logits/")]
    status = one.set_index("dtype")["status"]
    assert status["float32"] == "ok"  # logits [[1e8, 1e8]], as reported
    assert status["float16"] == "undefined"  # 1e8 rounds to +inf in float16: no finite truth


def test_invalid_labels_are_rejected_or_silent_and_empty_batches_ok():
    df = harness.run(adapters=["numpy.stable", "torch.cross_entropy", "jax.optax.softmax_cross_entropy_with_integer_labels"],
                     dtypes=["float32"], regimes_=["invalid_labels", "empty_batch"], shapes=[(4, 10)],
                     label_kinds=["index"], corpus=False)
    status = df.set_index(["regime", "adapter"])["status"]
    assert status[("invalid_labels", "torch.cross_entropy")] == "rejected"  # IndexError: Target 10 is out of bounds
    assert status[("invalid_labels", "numpy.stable")] == "rejected"
    # optax gathers out of range without complaint: a silent answer to a question with none
    optax = df[(df["regime"] == "invalid_labels") & (df["adapter"].str.startswith("jax"))].iloc[0]
    assert optax["status"] == "silent" and "returned numbers for invalid labels" in optax["message"]
    assert (df.loc[df["regime"] == "empty_batch", "status"] == "ok").all()


def test_judging_beside_the_workers_gives_the_rows_of_judging_each_case_in_turn():
    """The runner judges case k in a thread while the workers compute case k+1: the rows,
    in order, are those of computing and judging each case in turn (`rows_for_case`)."""
    from harness.adapters import registry
    from harness.adapters.workers import InProcess
    from harness.inputs import regimes
    from harness.run import runner
    from harness.run.phases import Phases
    from harness.run.progress import Progress
    from harness.run.rows import rows_for_case

    cases = regimes.build_cases(regimes=["typical", "nonfinite", "invalid_labels", "ignored_rows"],
                                dtype_names=["float32", "float16"], shapes=[(16, 10)])
    adapters = registry.resolve(["numpy.stable", "numpy.naive", "scipy.log_softmax"], ())
    in_turn = [r for c in cases for r in rows_for_case(c, adapters, InProcess(), "cpu", base={})]
    phases, journal = Phases(), []
    beside, _ = runner._pipelined(cases, adapters, set(), InProcess(), "cpu", {}, journal.append, phases,
                                  Progress(len(cases), False), {})
    stable = [c for c in columns.NAMES if c not in columns.VOLATILE]
    assert len(beside) == len(cases) * len(adapters) and beside == journal
    pd.testing.assert_frame_equal(columns.frame(beside)[stable], columns.frame(in_turn)[stable])
    assert phases.beside_seconds["metrics"] > 0 and phases.beside_seconds["reference"] > 0
    assert "metrics" not in Phases().beside_seconds  # the main thread's own seconds are not "beside"


def test_frameworks_running_ahead_in_lanes_give_the_rows_of_one_case_at_a_time():
    """With worker lanes (`ParallelPool.submit`) a framework goes on to later cases while
    another is still busy; the rows are those of handing each case to every worker in turn."""
    from harness.adapters import registry
    from harness.adapters.parallel import ParallelPool
    from harness.adapters.workers import WorkerPool
    from harness.inputs import regimes
    from harness.run import runner
    from harness.run.phases import Phases
    from harness.run.progress import Progress
    from harness.run.rows import rows_for_case

    cases = regimes.build_cases(regimes=["typical", "nonfinite", "invalid_labels", "large_offset"],
                                dtype_names=["float32", "bfloat16"], shapes=[(16, 10), (4, 1000)])
    adapters = registry.resolve(["numpy.stable", "scipy.log_softmax", "torch.cross_entropy"], ())
    serial = WorkerPool(60.0, threads=1)
    try:
        in_turn = [r for c in cases for r in rows_for_case(c, adapters, serial, "cpu", base={})]
    finally:
        serial.close()
    lanes = ParallelPool(60.0, jobs=2, threads=1, phases=Phases())
    try:
        ahead, _ = runner._pipelined(cases, adapters, set(), lanes, "cpu", {}, None, Phases(), Progress(len(cases), False), {})
        assert set(lanes._lanes) == {"implementations.numpy_impl", "implementations.scipy_impl", "implementations.torch_impl#1"}  # float32 and bfloat16: torch's second worker
    finally:
        lanes.close()
    stable = [c for c in columns.NAMES if c not in columns.VOLATILE]
    assert len(ahead) == len(cases) * len(adapters)
    pd.testing.assert_frame_equal(columns.frame(ahead)[stable], columns.frame(in_turn)[stable])


def test_worker_seconds_reported_from_a_beside_thread_do_not_count_as_the_parents():
    """The search's findings threads are `beside`; the attempts they report carry adapter and
    compile seconds, which are the workers', not the parent's: `other` (wall minus the main
    thread's segments) must not grow by them."""
    from harness.run.phases import Phases

    phases = Phases()
    with phases.beside():
        phases.add("adapter", 5.0)
        phases.add("metrics", 1.0)
    timing = phases.summary(10.0, {})
    assert phases.beside_seconds == {"metrics": 1.0}
    assert timing["phases"]["other"] == 10.0  # the main thread timed nothing: the whole wall is other


def test_harness_on_the_wall_leaves_out_the_findings_threads_waits_on_workers():
    """The findings threads run `beside` and wait on workers (`dispatch`): that wait is not
    the harness's, so it must not be taken off the harness's seconds on the wall."""
    from harness.run.summary import format_timing

    timing = dict(adapter_seconds=100.0, compile_seconds=0.0, wall_seconds=200.0, harness_seconds=40.0,
                  phases=dict(generation=0.0, reference=10.0, ipc=0.0, metrics=30.0, writing=0.0, other=0.0,
                              waiting=5.0),
                  beside_seconds=dict(reference=10.0, metrics=20.0, dispatch=50.0))
    line = format_timing(timing)
    assert "30.0 s of it ran beside the workers, so on the wall 15.0 s\n" in line, line


@pytest.mark.parametrize("where, isolate", [("BURN", True), ("BURN_CHILD", True), ("BURN_CHILD", False)])
def test_cpu_record_gives_the_adapters_the_cpu_they_burn_in_their_worker_or_its_children(where, isolate):
    """An adapter that burns 0.2 CPU seconds per call, in its worker or in a child process it
    waits for (as inductor's C++ compiler runs), in a worker or in this process: the run's CPU
    record (`Phases.cpu_record`) counts that as the adapters', the worker's start-up apart,
    and leaves the harness what this process and the round trips spent."""
    import cpu_burn_adapters

    adapter = getattr(cpu_burn_adapters, where)
    df = harness.run(adapters=[adapter.id], plugins=(f"cpu_burn_adapters:{where}",), dtypes=["float32"],
                     regimes_=["typical", "large_offset"], shapes=[(4, 10), (8, 10), (16, 10)], label_kinds=["index"],
                     corpus=False, jobs=1, isolate=isolate)
    cpu = df.attrs["timing"]["cpu_seconds"]
    burnt = len(df) * cpu_burn_adapters.BURN_SECONDS
    assert len(df) == 6 and set(df["status"]) == {"ok"}
    # the burn, numpy.stable's few milliseconds, a child python's start (-S: ~15 ms each)
    assert burnt <= cpu["adapters"] <= burnt + 0.6
    assert cpu["harness"] == pytest.approx(cpu["parent"] + cpu["workers"] - cpu["startup"] - cpu["adapters"], abs=0.01)
    assert cpu["harness"] > 0  # the children's CPU is the adapters', and counted once
    if not isolate:
        assert cpu["workers"] == 0 and cpu["startup"] == 0
        return
    assert cpu["startup"] > 0  # numpy imported in the worker: start-up, not harness
    assert cpu["workers"] >= cpu["adapters"] + cpu["startup"] - 0.05
    assert cpu["parent"] > 0


def test_summary_prints_one_harness_share_from_the_cpu_record():
    """The summary's harness share is the CPU record's (harness / adapters), printed once, with
    what it is made of; the phases' wall seconds stay on the time line."""
    from harness.run.summary import format_timing

    timing = dict(adapter_seconds=100.0, compile_seconds=0.0, wall_seconds=200.0, harness_seconds=40.0,
                  phases=dict(generation=0.0, reference=10.0, ipc=0.0, metrics=30.0, writing=0.0, other=0.0),
                  cpu_seconds=dict(parent=30.0, workers=90.0, startup=10.0, adapters=70.0, harness=40.0))
    text = format_timing(timing)
    assert text.splitlines()[1] == (
        "harness share: 0.571 = harness 40.0 CPU s (this process 30.0 s, the workers' round trips 10.0 s) / adapters"
        " 70.0 CPU s (compute and compilation, their compilers' processes too); worker start-up 10.0 CPU s apart"), text
    assert text.count("harness share") == 1 and "harness 40.0 s (generation 0.0 s, reference 10.0 s" in text, text


def test_summary_without_a_cpu_record_shares_the_phases_seconds_against_adapters_and_compilation():
    """A Ray run (its workers are other machines' processes) or an old run folder has no CPU
    record: the share is the harness's phase seconds over the adapters' and compilation's."""
    from harness.run.summary import format_timing

    timing = dict(adapter_seconds=60.0, compile_seconds=40.0, wall_seconds=200.0, harness_seconds=25.0,
                  phases=dict(generation=5.0, reference=5.0, ipc=5.0, metrics=10.0, writing=0.0, other=0.0))
    assert format_timing(timing).splitlines()[1] == (
        "harness share: 0.250 = harness 25.0 s / adapters and compilation 100.0 s (the phases' seconds: this run"
        " has no CPU record)")
