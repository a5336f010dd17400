"""Each bound against the algorithm it models: the model stays within it, and comes near it.

`harness.numerics.bounds` derives the attainable bound from a careful algorithm; `numpy.careful` is
that algorithm written out and `torch.careful` the same forms as a torch.autograd.Function.
`tolerances.TABLE` is the textbook bound of the max-shift algorithm, which `numpy.stable`
writes out. For each (model, bound) the tests run the model on every regime (and on
hypothesis-drawn cases) and check

- within: every element's error / allowance <= 1 (the derivation holds), and
- tight: the worst ratio over the run, for the loss and for the gradient separately,
  is above TIGHT (a bound that nothing comes near catches nothing).

numpy.stable is left out in bfloat16 (numpy reduces bfloat16 with a bfloat16 accumulator,
ml_dtypes#63: not the textbook model's sum) and on inputs whose z - max z overflows
(`logp_overflow`: the textbook model's d_k does not exist there); both are known failures.
Every model is left out on smoothing so small that eps / V is 0 in the tested dtype (drawn by
the strategies, e.g. eps = 7.7e-145 in float32): labels held in the dtype are then not the
case's labels (a masked class with label eps / V has a true loss of +inf).

The CI variants are deterministic: every regime x label kind on four shapes, and a
derandomized hypothesis run. The deep variant (`pytest -m deep tests/test_bounds.py`) draws
regime seeds, shapes up to 64k elements and strategy cases at random, many more of them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import adapters as registry
from harness.numerics import dtypes
from harness.testing import known_failures
from harness.inputs import regimes
from harness.inputs import strategies as S
from harness.testing.outcomes import outcomes

TIGHT = 0.1
#: (adapter, which bound it models): attainable -> *_att_ratio, textbook -> *_tol_ratio.
MODELS = {"numpy.careful": "attainable", "torch.careful": "attainable", "numpy.stable": "textbook"}
RATIOS = {"attainable": ("loss_att_ratio", "grad_att_ratio"), "textbook": ("loss_tol_ratio", "grad_tol_ratio")}
#: Judged statuses: an undefined or empty case has nothing to compare.
JUDGED = ("ok", "lossy", "inaccurate", "nonfinite")

CI_SHAPES = ((16, 2), (8, 100), (2, 1000), (1, 32000))
CI_DRAWN = 25
DEEP_SEEDS = 60
DEEP_DRAWN = 400
DEEP_MAX_ELEMENTS = 1 << 16

FINITE_REGIMES = [name for name, r in regimes.REGIMES.items() if r.finite and not r.invalid]


def _pairs():
    available = registry.all_adapters()
    out = []
    for adapter_id in MODELS:
        adapter = available.get(adapter_id)
        for dtype in ("float16", "bfloat16", "float32", "float64"):
            marks = () if adapter else pytest.mark.skip(reason=f"{adapter_id}: framework not installed")
            if adapter_id == "numpy.stable" and dtype == "bfloat16":
                continue  # ml_dtypes#63: a bfloat16 accumulator, not the textbook model's sum
            out.append(pytest.param(adapter_id, dtype, id=f"{adapter_id}-{dtype}", marks=marks))
    return out


PAIRS = _pairs()


class Worst:
    """The running worst ratios of one model x dtype, and each case outside its bound."""

    def __init__(self, adapter_id: str):
        self.adapter = registry.get(adapter_id)
        self.keys = RATIOS[MODELS[adapter_id]]
        self.worst = {k: (0.0, "") for k in self.keys}
        self.judged = 0

    def in_model(self, case) -> bool:
        if case.invalid or self.adapter.unsupported_reason(case, "cpu"):
            return False
        if case.label_kind == "smoothing" and dtypes.exact(np.array([case.smoothing / case.shape[1]]), case.dtype)[0] == 0:
            return False  # eps / V is 0 in the dtype: the labels the models hold are not the case's
        return not (self.adapter.id == "numpy.stable" and "logp_overflow" in known_failures.features(case))

    def check(self, case) -> None:
        """Run the model on `case`; fail at once if any element is outside its bound."""
        if not self.in_model(case):
            return
        row = outcomes(case, [self.adapter])[self.adapter.id].row
        if row["status"] not in JUDGED or row.get(self.keys[0]) is None:
            return
        self.judged += 1
        assert row["status"] != "nonfinite", f"{self.adapter.id} on {case.case_id}: {row['message']}"
        for key in self.keys:
            ratio = float(row[key])
            assert ratio <= 1.0, f"{self.adapter.id} on {case.case_id}: {key} {ratio:.4g} > 1 ({row['message']})"
            if ratio > self.worst[key][0]:
                self.worst[key] = (ratio, case.case_id)

    def assert_tight(self) -> None:
        assert self.judged > 0, "no case was judged"
        for key, (ratio, where) in self.worst.items():
            assert ratio > TIGHT, f"{self.adapter.id}: worst {key} {ratio:.3g} <= {TIGHT} (at {where}): the bound is loose"


def regime_cases(dtype: str, shapes, seed: int = 0):
    return regimes.build_cases(FINITE_REGIMES, [dtype], shapes, None, seed=seed)


@st.composite
def regime_draws(draw, dtype: str, kinds, max_elements: int):
    """A regime case: regime, label kind, shape and seed drawn."""
    name = draw(st.sampled_from(FINITE_REGIMES))
    kind = draw(st.sampled_from(kinds))
    shape = draw(S.shapes(max_elements=max_elements))
    seed = draw(st.integers(0, 2**16))
    return regimes.make_case(name, dtype, shape, kind, seed)


def drawn_run(worst: Worst, dtype: str, profile: str, examples: int, max_elements: int) -> None:
    adapter = worst.adapter
    strategy = st.one_of(
        regime_draws(dtype, adapter.label_kinds, max_elements),
        S.cases(dtype=dtype, label_kinds=adapter.label_kinds, allow_ignored=adapter.supports_ignore,
                max_elements=max_elements),
    )

    @settings(parent=settings.get_profile(profile), max_examples=examples, database=None)
    @given(case=strategy)
    def drawn(case):
        worst.check(case)

    drawn()


@pytest.mark.parametrize("adapter_id,dtype", PAIRS)
def test_model_within_its_bound_and_bound_tight_on_every_regime(adapter_id, dtype):
    worst = Worst(adapter_id)
    for case in regime_cases(dtype, CI_SHAPES):
        worst.check(case)
    drawn_run(worst, dtype, "ci", CI_DRAWN, 1 << 12)
    worst.assert_tight()


@pytest.mark.deep
@pytest.mark.parametrize("adapter_id,dtype", PAIRS)
def test_model_within_its_bound_and_bound_tight_deep(adapter_id, dtype, request):
    if "deep" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("deep run: select it with pytest -m deep tests/test_bounds.py")
    worst = Worst(adapter_id)
    for seed in range(DEEP_SEEDS // 10):
        for case in regime_cases(dtype, regimes.DEFAULT_SHAPES, seed=seed):
            worst.check(case)
    drawn_run(worst, dtype, "deep", DEEP_DRAWN, DEEP_MAX_ELEMENTS)
    worst.assert_tight()


def test_careful_models_are_ok_where_textbook_is_lossy():
    """The grades separate: a float32 target at p_t = 1 - 1e-6 (V = 2) and a true loss of
    about 1e-30 are ok for numpy.careful and torch.careful and lossy for numpy.stable
    (whose 1 - p_t and log(sum) keep only absolute accuracy)."""
    import numpy as np

    from harness.numerics import dtypes
    from harness.numerics.cases import Case

    z = dtypes.exact(np.array([[0.0, -13.815511], [0.0, -69.0776]]), "float32")
    case = Case("manual/p_t-near-1", "manual", "float32", z, np.array([0, 0]))
    ids = [i for i in ("numpy.careful", "torch.careful", "numpy.stable") if i in registry.all_adapters()]
    got = outcomes(case, [registry.get(i) for i in ids])
    assert got["numpy.stable"].status == "lossy", got["numpy.stable"].row["message"]
    assert got["numpy.stable"].row["loss_tol_ratio"] <= 1 < got["numpy.stable"].row["loss_att_ratio"]
    for i in ids[:-1]:
        assert got[i].status == "ok", (i, got[i].row["message"])
