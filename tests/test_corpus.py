"""The corpus of public bug reports: every entry loads, cites its issue, is an exact Case,
reproduces the numbers its report states, and the installed frameworks still do on it what
its `observed_2026` record says (checked by hand first, then written down)."""

import dataclasses
import json
import math
import os
import re

import numpy as np
import pytest

from harness.run import judge
from harness import adapters
from harness.inputs import corpus, expectations
from harness.numerics import dtypes
from harness.numerics import reference
from harness.adapters import Unsupported
from harness.errors import UsageError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The trackers the issue names, and the repositories that count for each.
PROJECTS = {
    "PyTorch": {"pytorch/pytorch", "pytorch/xla"},
    "JAX": {"jax-ml/jax"},
    "optax": {"google-deepmind/optax"},
    "TensorFlow": {"tensorflow/tensorflow"},
    "Keras": {"keras-team/keras"},
    "SciPy": {"scipy/scipy"},
}


@pytest.fixture(scope="module")
def entries():
    return {e.id: e for e in corpus.load()}


def test_the_shipped_corpus_loads_with_at_least_15_entries(entries):
    assert len(entries) >= 15


def test_every_named_project_has_at_least_two_entries(entries):
    for project, repositories in PROJECTS.items():
        found = [e.id for e in entries.values() if e.repository in repositories]
        assert len(found) >= 2, f"{project}: {found}"
    assert {e.repository for e in entries.values()} <= set().union(*PROJECTS.values())


def test_ids_are_unique_in_the_file():
    ids = [item["id"] for item in json.loads(corpus.DEFAULT_PATH.read_text())]
    assert len(ids) == len(set(ids))


def test_each_url_is_the_github_address_of_its_repository_and_issue(entries):
    for e in entries.values():
        m = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)/(issues|pull)/(\d+)", e.url)
        assert m and m.group(1) == e.repository and int(m.group(3)) == e.issue, e.id
        assert str(e.issue) in e.id, e.id


def test_every_case_is_valid_and_exact_in_its_dtype(entries):
    all_dtypes = list(dtypes.DTYPE_NAMES)
    cases = corpus.cases(dtypes=all_dtypes)
    assert len(cases) == len(entries) * len(all_dtypes)
    for case in cases:
        entry = entries[case.case_id.split("/")[1]]
        assert case.case_id == f"corpus/{entry.id}/{case.dtype}" and case.regime == case.source == "corpus"
        assert case.note == entry.url
        assert case.logits.dtype == dtypes.get(case.dtype).numpy_dtype
        wide = dtypes.widen(case.logits)
        np.testing.assert_array_equal(dtypes.widen(dtypes.exact(wide, case.dtype)), wide)  # exact, NaN-aware
        if case.dtype == entry.dtype:  # the report's own values, unchanged
            np.testing.assert_array_equal(wide, entry.logits)
        if case.soft_labels is not None:
            y = case.soft_labels
            np.testing.assert_array_equal(dtypes.widen(dtypes.exact(y, case.dtype)), y)
            assert (y.sum(axis=1) == 1.0).all()
        reference.loss_and_grad(case)  # the reference accepts every corpus case


def test_by_default_each_entry_runs_once_in_its_own_dtype(entries):
    cases = corpus.cases()
    assert [c.case_id for c in cases] == [f"corpus/{e.id}/{e.dtype}" for e in entries.values()]
    half = corpus.cases(dtypes=["float16"])
    assert {c.case_id for c in half} == {f"corpus/{e.id}/{d}" for e in entries.values() for d in {e.dtype, "float16"}}
    with pytest.raises(UsageError, match="unknown dtype 'float8'"):
        corpus.cases(dtypes=["float8"])


#: What the reports themselves state about their inputs: the reconstruction must give the
#: same true values (rows' losses; the gradient where the report is about the gradient).
REPORTED_LOSS = {
    "pytorch-11752-large-equal-logits": [math.log(2)],
    "tensorflow-40606-xla-neg-inf": [math.log(2)],
    "optax-896-neg-inf-logit-zero-label": [0.0],
    "scipy-18295-logsumexp-precision": [4.248354255291589e-18],
    "tensorflow-39411-keras-probs-clip": [26.12726483737188],
    "keras-7563-probs-vs-logits": [2 * math.exp(-200), 300.0],
    "keras-17634-probs-clip-float64": [35.7, 0.01349],
}
REPORTED_GRAD = {
    "jax-40384-float64-gradient-lost": [-5.551115123125776e-17, 5.551115123125776e-17],
    "tensorflow-126634-float64-gradient-lost": [-5.551115123125776e-17, 5.551115123125776e-17],
}


@pytest.mark.parametrize("entry_id", sorted(REPORTED_LOSS) + sorted(REPORTED_GRAD))
def test_reconstructed_inputs_give_the_truth_the_report_states(entries, entry_id):
    ref = reference.loss_and_grad(entries[entry_id].case())
    if entry_id in REPORTED_LOSS:
        np.testing.assert_allclose(np.asarray(ref.loss, np.float64), REPORTED_LOSS[entry_id], rtol=5e-4)
    else:
        np.testing.assert_allclose(np.asarray(ref.grad[0], np.float64), REPORTED_GRAD[entry_id], rtol=1e-12)


# --- what the installed frameworks do today ------------------------------------------------

#: (entry, adapter) pairs whose status is asserted against the entry's `observed_2026`.
OBSERVED = [
    ("pytorch-11752-large-equal-logits", "torch.cross_entropy"),  # fixed in PyTorch ...
    ("pytorch-11752-large-equal-logits", "jax.optax.softmax_cross_entropy_with_integer_labels"),  # ... not in optax
    ("pytorch-72056-smoothing-ignore-index", "torch.cross_entropy"),
    ("jax-6811-all-neg-inf-row-gradient", "torch.cross_entropy"),
    ("jax-6811-all-neg-inf-row-gradient", "jax.log_softmax_gather.jit"),
    ("jax-6811-all-neg-inf-row-gradient", "jax.optax.softmax_cross_entropy_with_integer_labels"),
    ("optax-896-neg-inf-logit-zero-label", "jax.optax.softmax_cross_entropy"),
    ("optax-896-neg-inf-logit-zero-label", "jax.optax.safe_softmax_cross_entropy"),
    ("optax-896-neg-inf-logit-zero-label", "tf.nn.softmax_cross_entropy_with_logits.xla"),
    ("tensorflow-40606-xla-neg-inf", "tf.nn.sparse_softmax_cross_entropy_with_logits.xla"),
    ("tensorflow-126634-float64-gradient-lost", "tf.nn.softmax_cross_entropy_with_logits"),
    ("tensorflow-21271-soft-labels-large-logits", "tf.nn.softmax_cross_entropy_with_logits"),
    ("tensorflow-21271-soft-labels-large-logits", "torch.softmax_log"),
    ("keras-15012-sparse-labels-cast-fp16", "keras.sparse_categorical_crossentropy"),
    ("keras-15012-sparse-labels-cast-fp16", "tf.nn.sparse_softmax_cross_entropy_with_logits"),
    ("keras-17634-probs-clip-float64", "keras.categorical_crossentropy.probs"),
    ("keras-17634-probs-clip-float64", "keras.categorical_crossentropy"),
    ("scipy-19521-log-softmax-dominant", "scipy.log_softmax"),
]
PACKAGES = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "jax": ("jax", "optax"),
    "tf": ("tensorflow",),
    "keras": ("tensorflow", "keras"),
    "scipy": ("scipy",),
}


def run_adapter(adapter_id: str, case):
    """(status, output or the exception) of one adapter on one case, judged like the runner."""
    for package in PACKAGES[adapter_id.split(".")[0]]:
        pytest.importorskip(package)
    try:
        out = adapters.get(adapter_id).compute(case, "cpu")
    except Unsupported as exc:
        return "unsupported", exc
    except Exception as exc:  # the framework's own error is the observation
        return "error", exc
    return judge.accuracy(reference.loss_and_grad(case), out.loss, out.grad, case.dtype)["status"], out


def test_observations_cover_at_least_five_entries_and_name_real_adapters(entries):
    observed = [e for e in entries.values() if e.observed_2026]
    assert len({entry_id for entry_id, _ in OBSERVED}) >= 5 and len(observed) >= 5
    known = set(adapters.all_adapters())
    for e in observed:
        named = set(e.observed_2026["status"])
        frameworks_here = {a.split(".")[0] for a in known}
        assert {a for a in named if a.split(".")[0] in frameworks_here} <= known, e.id


@pytest.mark.parametrize("entry_id, adapter_id", OBSERVED, ids=[f"{e}:{a}" for e, a in OBSERVED])
def test_installed_frameworks_still_do_what_was_observed(entries, entry_id, adapter_id):
    entry = entries[entry_id]
    status, _ = run_adapter(adapter_id, entry.case())
    assert status == entry.observed_2026["status"][adapter_id]


def test_the_big_logits_bug_lives_on_in_optax_integer_labels(entries):
    case = entries["pytorch-11752-large-equal-logits"].case()
    _, out = run_adapter("jax.optax.softmax_cross_entropy_with_integer_labels", case)
    assert float(out.loss[0]) == 0.0  # true loss log 2: 1e8 + log 2 rounds to 1e8 in float32


def test_float16_keras_labels_still_leave_the_class_range(entries):
    _, exc = run_adapter("keras.sparse_categorical_crossentropy", entries["keras-15012-sparse-labels-cast-fp16"].case())
    assert "label value of 2052" in str(exc)  # target 2051, cast to float16


def test_tiny_truths_still_come_back_as_zero_and_are_lossy(entries):
    case = entries["tensorflow-126634-float64-gradient-lost"].case()
    _, out = run_adapter("tf.nn.softmax_cross_entropy_with_logits", case)
    assert out.grad[0, 0] == 0.0 and out.grad[0, 1] == 5.551115123125776e-17  # true p - 1 = -5.55e-17
    _, out = run_adapter("scipy.log_softmax", entries["scipy-19521-log-softmax-dominant"].case())
    assert out.loss[1] == 0.0  # true 4.385e-8, a normal float32


def test_keras_probability_path_is_capped_at_minus_log_epsilon(entries):
    _, out = run_adapter("keras.categorical_crossentropy.probs", entries["keras-17634-probs-clip-float64"].case())
    assert out.loss[0] == pytest.approx(-math.log(1e-7), rel=1e-9)  # true loss 35.7


# --- what each report implies (corpus expectations) ---------------------------------------

#: The precision reports: each must flag (lossy or inaccurate) the adapter its report names.
PRECISION = {
    "jax-40384-float64-gradient-lost": "jax.log_softmax_gather",
    "scipy-19521-log-softmax-dominant": "scipy.log_softmax",
    "optax-1020-bf16-quantized-loss": "jax.optax.softmax_cross_entropy_with_integer_labels",
    "scipy-18295-logsumexp-precision": "scipy.log_softmax",
    "tensorflow-126636-sparse-float64-gradient-lost": "tf.nn.sparse_softmax_cross_entropy_with_logits",
}
EXPECTED = [(e.id, a) for e in corpus.load() for a in e.expectation.get("adapters", [])]


def test_every_entry_carries_an_expectation_naming_registered_adapters(entries):
    names = set(adapters.all_adapters()) | {a for e in entries.values() for a in e.observed_2026.get("status", {})}
    for e in entries.values():
        assert e.expectation, e.id
        assert set(e.expectation["adapters"]) <= names, e.id


@pytest.mark.parametrize("entry_id, adapter_id", EXPECTED, ids=[f"{e}:{a}" for e, a in EXPECTED])
def test_every_expectation_holds_on_the_pinned_versions(entries, entry_id, adapter_id):
    """Not fixed upstream: the report's status shows; fixed upstream: it does not."""
    entry = entries[entry_id]
    status, _ = run_adapter(adapter_id, entry.case())
    outcome = expectations.Outcome(entry_id, adapter_id, entry.expectation["status"], status,
                                   entry.expectation["fixed_upstream"])
    assert outcome.as_expected, outcome.describe()


@pytest.mark.parametrize("entry_id", sorted(PRECISION))
def test_precision_reports_flag_the_adapter_they_name(entries, entry_id):
    entry, adapter_id = entries[entry_id], PRECISION[entry_id]
    assert adapter_id in entry.expectation["adapters"] and set(entry.expectation["status"]) <= {"lossy", "inaccurate"}
    status, _ = run_adapter(adapter_id, entry.case())
    assert status in ("lossy", "inaccurate"), status
    numpy_careful, _ = run_adapter("numpy.careful", entry.case())
    assert numpy_careful == "ok"  # the attainable line: a careful implementation gets it right


def test_run_reports_an_expectation_that_no_longer_holds_and_a_fixed_one_that_regressed(tmp_path):
    """On a real run's table: as run, nothing is reported; a report's adapter now ok (fixed
    upstream) and a fixed one broken again are each reported in one line."""
    pytest.importorskip("scipy")
    from harness.run.runner import run

    df = run(adapters=["scipy.log_softmax", "numpy.careful"], regimes_=["typical"], dtypes=["float32", "float64"], shapes=[(2, 3)],
             out_dir=str(tmp_path), progress=False, budget=None, corpus=True)
    assert expectations.changed(df) == []
    scipy_rows = [o for o in expectations.outcomes(df) if o.adapter == "scipy.log_softmax"]
    assert {o.entry for o in scipy_rows} == {"scipy-19521-log-softmax-dominant", "scipy-18295-logsumexp-precision",
                                             "scipy-23225-softmax-inf"}
    fixed = df.copy()
    at = (fixed["case_id"] == "corpus/scipy-18295-logsumexp-precision/float64") & (fixed["adapter"] == "scipy.log_softmax")
    fixed.loc[at, "status"] = "ok"
    lines = expectations.changed(fixed)
    assert lines == ["corpus scipy-18295-logsumexp-precision: scipy.log_softmax is ok where the report implies lossy: "
                     "the expectation no longer holds (fixed upstream?)"]
    entry = next(e for e in corpus.load() if e.id == "scipy-19521-log-softmax-dominant")
    marked = dataclasses.replace(entry, expectation={**entry.expectation, "fixed_upstream": "SciPy 1.99"})
    lines = expectations.changed(df, [marked])
    assert lines == ["corpus scipy-19521-log-softmax-dominant: scipy.log_softmax is lossy again, the report's lossy, "
                     "though marked fixed upstream (SciPy 1.99): a regression"]


# --- malformed files -------------------------------------------------------------------------


def good_entry() -> dict:
    return {
        "id": "example-1-row",
        "repository": "example/project",
        "issue": 1,
        "url": "https://github.com/example/project/issues/1",
        "title": "t",
        "what_went_wrong": "w",
        "reconstruction": "r",
        "dtype": "float32",
        "logits": {"rows": [[0.0, "-inf", 1.5]]},
        "labels": {"kind": "index", "target": [2]},
    }


def write(tmp_path, entries_or_text) -> str:
    path = tmp_path / "corpus.json"
    text = entries_or_text if isinstance(entries_or_text, str) else json.dumps(entries_or_text)
    path.write_text(text)
    return path


def usage_error(path) -> str:
    with pytest.raises(UsageError) as info:
        corpus.load(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"corpus {path}")
    return message


def test_a_well_formed_file_loads(tmp_path):
    (e,) = corpus.load(write(tmp_path, [good_entry()]))
    assert e.logits.tolist() == [[0.0, -np.inf, 1.5]] and e.target.tolist() == [2]
    (case,) = corpus.cases(path=write(tmp_path, [good_entry()]))
    assert case.case_id == "corpus/example-1-row/float32"


def with_change(**changes) -> dict:
    e = good_entry()
    for key, value in changes.items():
        if value is None:
            del e[key]
        else:
            e[key] = value
    return e


@pytest.mark.parametrize(
    "entry, expected",
    [
        (with_change(title=None), "missing field 'title'"),
        (with_change(dtype="float8"), "unknown dtype 'float8'"),
        (with_change(url="https://github.com/example/project/issues/2"), "is not the github.com address"),
        (with_change(issue="1"), "issue must be a positive integer"),
        (with_change(extra=1), "unknown field 'extra'"),
        (with_change(labels={"kind": "index", "target": [3]}), "class out of range"),
        (with_change(labels={"kind": "soft", "target": [0], "soft": [[0.5, 0.25, 0.125]]}), "not sum to exactly 1"),
        (with_change(labels={"kind": "soft", "target": [0], "soft": [[0.1, 0.2, 0.7]]}), "multiples of 1/256"),
        (with_change(labels={"kind": "smoothing", "target": [0]}), "labels.smoothing must be a number"),
        (with_change(logits={"rows": [[0.0, "minus infinity"]]}), "unknown value 'minus infinity'"),
        (with_change(logits={"rows": [[0.0, 1.0], [2.0]]}), "same number of classes"),
        (with_change(logits={"shape": [1, 3], "fill": 0.0, "set": [[0, 3, 1.0]]}), "outside shape"),
        (with_change(logits={"shape": [1, 3]}), "exactly one of 'fill' or 'uniform'"),
        (with_change(logits={"shape": [4096, 4096], "fill": 0.0}), "more than"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_malformed_entries_are_one_line_usage_errors_naming_the_entry(tmp_path, entry, expected):
    message = usage_error(write(tmp_path, [entry]))
    assert "entry example-1-row:" in message and expected in message


def test_duplicate_ids_are_refused(tmp_path):
    assert "duplicate id 'example-1-row'" in usage_error(write(tmp_path, [good_entry(), good_entry()]))


def test_a_non_json_file_is_a_one_line_usage_error(tmp_path):
    assert "not valid JSON" in usage_error(write(tmp_path, "id: pytorch-1\nlogits: [1, 2]\n"))
    assert "not valid JSON" in usage_error(write(tmp_path, json.dumps([good_entry()])[:-5]))
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00[")
    assert "not valid JSON" in usage_error(tmp_path / "binary.json")


def test_bare_infinity_tokens_and_non_lists_are_refused(tmp_path):
    text = json.dumps([good_entry()]).replace('"-inf"', "-Infinity")
    assert 'write non-finite values as the strings' in usage_error(write(tmp_path, text))
    assert "expected a JSON list" in usage_error(write(tmp_path, {"entries": []}))
    assert "cannot read" in usage_error(tmp_path / "missing.json")
