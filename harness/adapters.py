"""The adapter contract and the registry that maps stable ids to adapters.

An adapter is one way of computing softmax-CE in one framework. Its id
(`framework.api[.mode]`, e.g. "numpy.stable") keys result tables, baselines and reports:
renaming one is a breaking change.

Adapters live in `implementations/`, one module per framework, listed in
`IMPLEMENTATION_MODULES` with the package each needs. A module is imported only when the
registry is first asked for adapters, and only if its framework is installed (checked with
`importlib.util.find_spec`, which does not import); the module itself imports its framework
lazily, inside the adapter functions. So `import harness` imports no framework, and a
missing framework removes its adapters with one line saying why.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .cases import LABEL_KINDS, Case
from .dtypes import DTYPE_NAMES
from .errors import UsageError

#: framework -> (implementation module, the top-level package it needs). Each module's
#: adapters run together in one worker process (see `workers`).
IMPLEMENTATION_MODULES: dict[str, tuple[str, str]] = {
    "numpy": ("implementations.numpy_impl", "numpy"),
    "scipy": ("implementations.scipy_impl", "scipy"),
    "torch": ("implementations.torch_impl", "torch"),
    "jax": ("implementations.jax_impl", "jax"),
    "tensorflow": ("implementations.tensorflow_impl", "tensorflow"),
    "liger": ("implementations.liger_impl", "liger_kernel"),  # Triton, CUDA only
}


def first_line(text) -> str:
    """The first line of a message (an exception's, usually), at most 500 characters."""
    lines = str(text).strip().splitlines()
    return (lines[0] if lines else "")[:500]


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

    def version(self) -> str:
        return framework_version(self.framework)


#: Entry-point group through which installed packages ship adapters. Each entry point names
#: a module (registering adapters when imported; it should import its framework lazily) or a
#: `module:attribute` holding an Adapter, a list of them, or a loss function.
ENTRY_POINT_GROUP = "cestab.adapters"

#: The frameworks a user's plain loss function can be written in (see `load_source`).
FUNCTION_FRAMEWORKS = ("torch", "jax", "tensorflow")

_registry: dict[str, Adapter] = {}
_sources: dict[str, str] = {}  # adapter id -> what a worker loads to get it back
_unavailable: dict[str, str] = {}
_loaded = False


def register(adapter: Adapter, source: str | None = None) -> Adapter:
    """Add `adapter` under its id; ids are unique.

    `source` is what a worker process imports to register the same adapter again: by
    default the module that defines `compute`.
    """
    if adapter.id in _registry and _registry[adapter.id] != adapter:
        raise ValueError(f"adapter id {adapter.id!r} registered twice")
    _registry[adapter.id] = adapter
    _sources.setdefault(adapter.id, source or module_of(adapter))
    return adapter


def module_of(adapter: Adapter) -> str:
    """The module defining an adapter's compute function (seen through functools.partial)."""
    fn = adapter.compute
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn.__module__


def source_of(adapter_id: str) -> str:
    return _sources[adapter_id]


def load_source(source: str) -> list[Adapter]:
    """Import a module, or load `module:attribute[@framework]`, and register what it holds.

    The attribute may be an Adapter, a list of Adapters, or a plain function
    `loss(logits, labels) -> per-row loss` written in one framework; cestab wraps it (the
    framework's own autodiff gives the gradient). The framework is the `@framework` suffix,
    or else the one framework module the function's globals refer to.
    """
    spec, _, framework = source.partition("@")
    module_name, _, attr = spec.partition(":")
    before = set(_registry)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import adapter module {module_name!r}: {exc}") from None
    if not attr:
        return [_registry[i] for i in _registry if i not in before]
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, Adapter):
        return [register(obj, source)]
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(a, Adapter) for a in obj):
        return [register(a, source) for a in obj]
    if not callable(obj):
        raise UsageError(f"{spec} is neither an Adapter nor a loss function")
    return [register(from_function(obj, spec, framework), source)]


def from_function(fn, adapter_id: str, framework: str = "") -> Adapter:
    """An (unregistered) adapter around a plain `loss(logits, labels) -> per-row loss`.

    The framework is `framework`, or else the one framework module `fn`'s globals refer to;
    its implementation module's `from_function` does the wrapping (autodiff gives the grad).
    """
    framework = framework or _framework_of(fn, adapter_id)
    if framework not in FUNCTION_FRAMEWORKS:
        raise UsageError(f"unknown framework {framework!r} for {adapter_id}; choose from {', '.join(FUNCTION_FRAMEWORKS)}")
    wrap = getattr(importlib.import_module(IMPLEMENTATION_MODULES[framework][0]), "from_function", None)
    if wrap is None:
        raise UsageError(f"{framework} adapters cannot wrap a plain function yet")
    return _on_rows(wrap(fn, adapter_id=adapter_id))


def _on_rows(adapter: Adapter) -> Adapter:
    """A plain function gets every batch as rows, (N*T, V) for a 3-D case: it was written
    for one layout, and a loss written for (N, V) is not wrong because it takes no (N, T, V)."""

    def flat(call):
        if call is None:
            return None
        return functools.wraps(call)(lambda case, device: call(case.rows(), device))

    return dataclasses.replace(adapter, compute=flat(adapter.compute), prepare=flat(adapter.prepare))


def _framework_of(fn, spec: str) -> str:
    """The one framework module a function's globals refer to (einops-style detection)."""
    names = {getattr(v, "__name__", "").split(".")[0] for v in getattr(fn, "__globals__", {}).values()}
    found = [f for f in FUNCTION_FRAMEWORKS if f in names]
    if len(found) != 1:
        raise UsageError(f"cannot tell the framework of {spec}: append @torch, @jax or @tensorflow")
    return found[0]


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def framework_version(framework: str) -> str:
    """The installed version of a framework's distribution, read without importing it.

    The package name is mapped to its distribution (`tensorflow` is shipped as
    `tensorflow-cpu` or `tensorflow`), so the answer is right whichever wheel is installed.
    """
    package = IMPLEMENTATION_MODULES.get(framework, (None, framework))[1]
    names = _distributions().get(package, [package])
    for dist in names:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU at all (device nodes; imports nothing).

    A framework may still lack CUDA support (a CPU-only build): the adapter then reports
    `unsupported` with the framework's reason when asked for cuda.
    """
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for framework, (module, package) in IMPLEMENTATION_MODULES.items():
        if importlib.util.find_spec(package) is None:
            _unavailable[framework] = f"{package} is not installed (pip install 'cestab[{framework}]')"
            continue
        importlib.import_module(module)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            load_source(entry_point.value)
        except (UsageError, ImportError) as exc:
            _unavailable[f"entry point {entry_point.name}"] = str(exc)


def all_adapters() -> dict[str, Adapter]:
    """Every registered adapter whose framework is installed, by id."""
    _load()
    return dict(_registry)


def unavailable() -> dict[str, str]:
    """framework -> the reason its adapters are absent."""
    _load()
    return dict(_unavailable)


def get(adapter_id: str) -> Adapter:
    adapters = all_adapters()
    if adapter_id in adapters:
        return adapters[adapter_id]
    framework = adapter_id.split(".")[0]
    if framework in _unavailable:
        raise UsageError(f"adapter {adapter_id!r} is unavailable: {_unavailable[framework]}")
    raise UsageError(f"unknown adapter {adapter_id!r}; choose from {', '.join(sorted(adapters))}")
