"""The adapter contract: what one framework and one of its softmax-CE implementations
must provide, as data (`Adapter`, `Output`, `Prepared`) and one small class (`Framework`).

Adding a framework (MLX, PaddlePaddle, your own array library) is one new file:

1. Subclass `Framework`: `name` (the prefix of its adapter ids and the key of its version),
   `package` (the top-level package it needs, found without importing it), and the glue
   the harness calls: `warm_up` (import it when a worker starts), `to_native`/`to_numpy`
   (exact copies, bfloat16 included), `sync` (wait until a result exists), `refusals`
   (phrases of the framework's errors that mean "this dtype/device is not supported") and,
   if users may hand cestab plain loss functions written in it, `wrap_function`.
2. Write each implementation as `compute(case, device) -> Output` (and, to be timed,
   `prepare(case, device) -> Prepared`), import the framework lazily inside them, and
   `register(Adapter(...))` each one; `register_framework(YourFramework())` once.
3. Make the module known: an entry point in the group `cestab.adapters` (this project's
   `pyproject.toml` lists the built-in `implementations/` this way), or
   `cestab run --adapter yourmodule` for a one-off.

Each module's adapters then run in a worker process of their own (`workers`), appear in
`cestab list` with the framework's version, and go through run, bench, check and report
with no other edit. An adapter id (`framework.api[.mode]`, e.g. "numpy.stable") keys
result tables, baselines and reports: renaming one is a breaking change.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from harness.errors import UsageError, first_line
from harness.numerics.cases import LABEL_KINDS, Case
from harness.numerics.dtypes import DTYPE_NAMES


class Unsupported(Exception):
    """Raised by an adapter when its framework refuses a combination (dtype, labels, device).

    The runner records an `unsupported` row with this message: the framework's own reason,
    as opposed to `error`, an exception nobody expected.
    """


@dataclass(frozen=True)
class Output:
    """What an adapter returns: per-row loss (N,) and gradient of their sum (N, V)."""

    loss: np.ndarray
    grad: np.ndarray
    compile_seconds: float = 0.0  # compilation/tracing done before the timed call, if separable

    @property
    def out_dtype(self) -> str:
        return str(np.asarray(self.loss).dtype)


def _returned(result):
    return result


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Prepared:
    """An adapter's computation bound to inputs already on the device: what `cestab bench` times.

    `forward()` computes the per-row losses and `forward_backward()` the losses and the
    gradient of their sum, through the same code path `compute` uses, but with no conversion
    in or out, so only the framework's work is timed. `sync(result)` returns once `result`
    really exists (CUDA synchronise, `block_until_ready`, TensorFlow's `.numpy()`): devices
    and dispatchers run ahead of Python, and a clock read before that times only the launch.
    `compile_seconds` holds, per pass, compilation done ahead of time in `prepare` (JAX's
    `lower().compile()`); `compiles_on_first_call` marks adapters whose first call compiles
    (torch.compile, XLA through tf.function). `peak_memory`/`reset_peak_memory` read the
    device allocator's peak where the framework has one (`memory_kind` names it); None means
    the bench reads the worker's peak RSS. `release()` frees caches after measuring.
    """

    forward: Callable[[], object]
    forward_backward: Callable[[], object]
    sync: Callable[[object], object] = _returned
    compile_seconds: dict = field(default_factory=dict)
    compiles_on_first_call: bool = False
    peak_memory: Callable[[], int] | None = None
    reset_peak_memory: Callable[[], None] = _nothing
    memory_in_use: Callable[[], int] | None = None
    memory_kind: str = "rss"
    release: Callable[[], None] = _nothing


@dataclass(frozen=True)
class Adapter:
    """One softmax-CE implementation and what it declares it supports.

    `compute(case, device) -> Output` receives the case's exact logits (in the tested dtype)
    and returns the framework's own results, unconverted: anything the framework does to
    its inputs or outputs is a finding, not something to correct here.
    """

    id: str
    framework: str
    compute: Callable[[Case, str], Output]
    description: str = ""
    dtypes: tuple[str, ...] = DTYPE_NAMES
    label_kinds: tuple[str, ...] = LABEL_KINDS
    devices: tuple[str, ...] = ("cpu",)
    supports_ignore: bool = False  # honours Case.ignored (ignore_index or a row mask)
    prepare: Callable[[Case, str], Prepared] | None = None  # for `cestab bench`; None: not timed

    def unsupported_reason(self, case: Case, device: str) -> str | None:
        """Why this adapter cannot run `case` on `device`, or None if it declares it can."""
        if case.dtype not in self.dtypes:
            return f"{self.id} does not support dtype {case.dtype}"
        if case.label_kind not in self.label_kinds:
            return f"{self.id} does not support {case.label_kind} labels"
        if case.has_ignored and not self.supports_ignore:
            return f"{self.id} has no way to ignore rows"
        if device not in self.devices:
            return f"{self.id} does not run on {device}"
        return None



class Framework:
    """The glue between cestab and one framework; one small subclass per implementation
    module (the way einops keeps one backend class per framework).

    Every method has a default that is right for a numpy-like library, so a subclass
    overrides only what differs. Instances are registered with `registry.register_framework`.
    """

    #: The prefix of the framework's adapter ids, the key of its version in run.json.
    name: ClassVar[str] = ""
    #: Top-level package it needs; `missing()` looks for it without importing it.
    package: ClassVar[str] = ""
    #: Phrases in the framework's error messages that mean "this combination (dtype,
    #: label kind, device) is not supported": such errors become `unsupported` rows with the
    #: framework's own words, every other exception stays an `error`.
    refusals: ClassVar[tuple[str, ...]] = ()
    #: Quote the refusal's first line rather than the line that matched (TensorFlow puts
    #: the reason in its first line and the matching detail further down).
    quote_first_line: ClassVar[bool] = False
    #: Groups of dtypes whose cases go to a worker process of their own (`registry.worker_of`),
    #: for a framework whose compilations in one process are the run's long pole; () is one
    #: worker. Only for compilers whose result for a dtype does not depend on what the
    #: process compiled for other dtypes (tested for torch.compile).
    worker_shards: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def missing(self) -> str | None:
        """Why the framework cannot be used here (not installed), or None."""
        if self.package and importlib.util.find_spec(self.package) is None:
            return f"{self.package} is not installed (pip install 'cestab[{self.name}]')"
        return None

    def warm_up(self) -> None:
        """Import the framework when a worker starts, so the import counts as start-up time,
        not as the first adapter's."""
        if self.package:
            importlib.import_module(self.package)

    def set_threads(self, n: int) -> None:
        """Hold the framework to `n` threads per operation (called in a worker after
        `warm_up`, when workers of several frameworks share the cores; see
        `adapters.threads`). The default relies on the environment variables set before
        the import."""

    def to_native(self, a: np.ndarray, device: str):
        """An exact copy of `a` (any tested dtype, bfloat16 included) on `device`."""
        return np.array(a, copy=True)

    def to_numpy(self, x) -> np.ndarray:
        """A host copy of a framework array in its own dtype, bits unchanged."""
        return np.array(x, copy=True)

    def sync(self, x):
        """Return once `x` really exists (devices and dispatchers run ahead of Python)."""
        return x

    def refusal_types(self) -> tuple[type[BaseException], ...]:
        """The exception types among which `refusals` are looked for."""
        return (Exception,)

    def refused(self, exc: BaseException) -> Unsupported | None:
        """`exc` as `Unsupported` (the matching line, in the framework's words) when it is
        one of the framework's refusals, else None: an unexpected failure stays an error."""
        if not isinstance(exc, self.refusal_types()):
            return None
        text = str(getattr(exc, "message", exc))
        for line in text.splitlines():
            if any(phrase in line for phrase in self.refusals):
                return Unsupported(first_line(text if self.quote_first_line else line))
        return None

    @contextlib.contextmanager
    def refusals_as_unsupported(self):
        """Run a block, turning the framework's refusals into `Unsupported`."""
        try:
            yield
        except Exception as exc:
            unsupported = self.refused(exc)
            if unsupported is None:
                raise
            raise unsupported from exc

    def wrap_function(self, fn: Callable, adapter_id: str) -> Adapter:
        """An (unregistered) adapter around a user's `fn(logits, labels) -> per-row loss`
        written in this framework; its autodiff of the summed loss gives the gradient."""
        raise UsageError(f"{self.name} adapters cannot wrap a plain function; write a harness.Adapter")

    @property
    def wraps_functions(self) -> bool:
        """Whether users may hand cestab plain loss functions written in this framework."""
        return type(self).wrap_function is not Framework.wrap_function
