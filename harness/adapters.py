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

import functools
import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
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
}


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


_registry: dict[str, Adapter] = {}
_unavailable: dict[str, str] = {}
_loaded = False


def register(adapter: Adapter) -> Adapter:
    """Add `adapter` under its id; ids are unique."""
    if adapter.id in _registry and _registry[adapter.id] is not adapter:
        raise ValueError(f"adapter id {adapter.id!r} registered twice")
    _registry[adapter.id] = adapter
    return adapter


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


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for framework, (module, dist) in IMPLEMENTATION_MODULES.items():
        if importlib.util.find_spec(dist) is None:
            _unavailable[framework] = f"{dist} is not installed (pip install 'cestab[{framework}]')"
            continue
        importlib.import_module(module)
    _loaded = True


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
