"""The judge: the one place where a results row's status is decided.

`judge(case, reference, attempt)` takes what happened when one adapter met one case (an
`Attempt` from the workers: it ran, raised, was refused, crashed or hung) and the truth,
and returns the row's outcome columns: status, message, and the error columns when there
were numbers to measure. The statuses and what each means are the status table's
(`numerics.statuses`); the tolerance is the tolerance table's (`numerics.tolerances`).
"""

from __future__ import annotations

import numpy as np

from harness.adapters.workers import Attempt
from harness.numerics import metrics
from harness.numerics.cases import Case
from harness.numerics.reference import Reference

#: Attempt kinds that are statuses as they are (nothing to measure).
_PASSED_THROUGH = ("unsupported", "error", "crash", "timeout")


def judge(case: Case, ref: Reference, attempt: Attempt) -> dict:
    """The outcome columns of one attempt on one case (see `store.columns`)."""
    if case.invalid and attempt.status in ("ran", "error"):
        return _invalid_labels(case, attempt)
    if attempt.status in _PASSED_THROUGH:
        return {"status": attempt.status, "message": attempt.message}
    out = attempt.output
    row = {"adapter_seconds": attempt.seconds, "compile_seconds": out.compile_seconds, "out_dtype": out.out_dtype}
    row.update(accuracy(ref, out.loss, out.grad, case.dtype))
    return row


def _invalid_labels(case: Case, attempt: Attempt) -> dict:
    """Invalid labels have no answer: raising is right (`rejected`), numbers are `silent`."""
    if attempt.status == "error":
        return {"status": "rejected", "message": attempt.message}
    out = attempt.output
    return {
        "status": "silent",
        "out_dtype": out.out_dtype,
        "adapter_seconds": attempt.seconds,
        "message": f"returned numbers for invalid labels ({case.invalid}): " + metrics.describe_nonfinite(out.loss, out.grad),
    }


def accuracy(ref: Reference, loss, grad, dtype: str) -> dict:
    """Status, message and error columns of a result that came back (valid labels)."""
    rows = ref.defined
    out: dict = {"n_rows_undefined": int((~rows).sum())}
    if rows.size == 0:  # an empty batch: the right answer is empty outputs
        ok = np.shape(loss) == ref.loss.shape and np.shape(grad) == ref.grad.shape
        out["status"] = "ok" if ok else "error"
        out["message"] = "empty batch" + ("" if ok else f": output shapes {np.shape(loss)}, {np.shape(grad)}")
        return out
    if not rows.any():
        out["status"] = "undefined"
        out["message"] = "no finite truth; computed " + metrics.describe_nonfinite(loss, grad)
        return out
    if np.shape(loss) != ref.loss.shape or np.shape(grad) != ref.grad.shape:
        out["status"] = "error"
        out["message"] = (f"output shapes loss {np.shape(loss)}, grad {np.shape(grad)}; "
                          f"expected {ref.loss.shape}, {ref.grad.shape}")
        return out
    m = metrics.measure(ref, loss, grad, dtype)
    n_loss, n_grad = m.pop("n_loss"), m.pop("n_grad")
    out.update(m)
    if m["n_loss_nonfinite"] or m["n_grad_nonfinite"]:
        out["status"] = "nonfinite"
        out["message"] = (
            f"{m['n_loss_nonfinite']} of {n_loss} losses and {m['n_grad_nonfinite']} of "
            f"{n_grad} gradient elements non-finite where the truth is finite"
        )
    elif m["n_loss_bad"] or m["n_grad_bad"]:
        out["status"] = "inaccurate"
        out["message"] = (
            f"{m['n_loss_bad']} of {n_loss} losses (worst row {m['loss_worst_row']}, "
            f"{m['loss_tol_ratio']:.3g}x tolerance) and {m['n_grad_bad']} of {n_grad} gradient "
            f"elements (worst [{m['grad_worst']}], {m['grad_tol_ratio']:.3g}x) outside tolerance"
        )
    elif m["n_loss_lossy"] or m["n_grad_lossy"]:
        out["status"] = "lossy"
        out["message"] = (
            f"{m['n_loss_lossy']} of {n_loss} losses ({m['loss_att_ratio']:.3g}x) and {m['n_grad_lossy']} of "
            f"{n_grad} gradient elements ({m['grad_att_ratio']:.3g}x) outside the attainable bound, within the textbook one"
        )
    else:
        out["status"] = "ok"
        out["message"] = ""
    return out
