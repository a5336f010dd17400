"""cestab: how wrong and how fast is each softmax cross-entropy implementation?

The Python API returns pandas DataFrames; the `cestab` command is a thin layer over it.

    >>> import harness
    >>> df = harness.run(adapters=["numpy.stable"], dtypes=["float32"])

Importing this package imports no framework (torch, jax, tensorflow, scipy): adapters
load their framework only when they run.
"""

from harness.adapters import Adapter, Output, all_adapters, register
from harness.numerics.cases import Case
from harness.errors import UsageError
from harness.numerics.reference import loss_and_grad as reference_loss_and_grad
from harness.run.runner import run
from harness.run.summary import summarize

__all__ = [
    "Adapter",
    "Case",
    "Output",
    "UsageError",
    "all_adapters",
    "reference_loss_and_grad",
    "register",
    "run",
    "summarize",
]
