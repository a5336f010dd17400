"""The registry: stable adapter ids -> adapters, framework names -> `Framework`s.

Built-in and third-party implementations are found the same way: through the entry-point
group `cestab.adapters` (this project's `pyproject.toml` names each module of
`implementations/`), or named on the command line (`--adapter module[:attr][@framework]`).
A module is imported when the registry is first asked for adapters; it registers its
`Framework` and its adapters, and imports the framework itself only inside the adapter
functions. A framework whose package is not installed (`Framework.missing`) removes its
adapters with one line saying why. So `import harness` imports no framework and
`cestab list` stays fast.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import pkgutil
import re

from harness.adapters.contract import Adapter, Framework
from harness.errors import UsageError, first_line

#: Entry-point group through which packages (cestab itself included) ship adapters. Each
#: entry point names a module (registering its Framework and adapters when imported) or a
#: `module:attribute[@framework]` holding an Adapter, a list of them, or a loss function.
ENTRY_POINT_GROUP = "cestab.adapters"

#: The package of the built-in implementations: scanned only when cestab runs from a
#: checkout that was never installed (no entry points to read).
BUILT_IN_PACKAGE = "implementations"

#: Packages whose versions run.json records besides the registered frameworks' own.
COMPANION_PACKAGES = ("keras", "optax")

_registry: dict[str, Adapter] = {}
_sources: dict[str, str] = {}  # adapter id -> what a worker loads to get it back
_frameworks: dict[str, Framework] = {}
_unavailable: dict[str, str] = {}
_loaded = False


def register_framework(framework: Framework) -> Framework:
    """Make a framework's glue known under `framework.name` (once per module)."""
    known = _frameworks.get(framework.name)
    if known is not None and type(known) is not type(framework):
        raise UsageError(f"framework name {framework.name!r} is taken by {type(known).__module__}")
    _frameworks.setdefault(framework.name, framework)
    return _frameworks[framework.name]


def framework(name: str) -> Framework | None:
    """The registered glue of a framework, or None (an adapter of no declared framework)."""
    return _frameworks.get(name)


def register(adapter: Adapter, source: str | None = None) -> Adapter:
    """Add `adapter` under its id; ids are unique.

    `source` is what a worker process imports to register the same adapter again: by
    default the module that defines `compute`.
    """
    if adapter.id in _registry and _registry[adapter.id] != adapter:
        raise UsageError(f"adapter id {adapter.id!r} is registered twice ({source or module_of(adapter)} and "
                         f"{_sources.get(adapter.id)})")
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


def worker_of(adapter_id: str, dtype: str | None = None) -> str:
    """The worker that runs `adapter_id` on a case of `dtype`: its source, and "#k" for the
    k-th of its framework's `worker_shards` that holds the dtype."""
    source = _sources[adapter_id]
    fw = _frameworks.get(get(adapter_id).framework)
    for k, shard in enumerate(fw.worker_shards if fw is not None and dtype else ()):
        if dtype in shard:
            return f"{source}#{k}"
    return source


def source_of_worker(worker: str) -> str:
    """The source a worker (`worker_of`) imports."""
    return worker.partition("#")[0]


def load_source(source: str) -> list[Adapter]:
    """Import a module, or load `module:attribute[@framework]`, and register what it holds.

    The attribute may be an Adapter, a list of Adapters, or a plain function
    `loss(logits, labels) -> per-row loss` written in one framework; cestab wraps it (the
    framework's own autodiff gives the gradient). The framework is the `@framework` suffix,
    or else the one framework module the function's globals refer to.

    A user's module is someone else's code: whatever it raises at import (an exception, a
    SyntaxError, `sys.exit(7)`), a malformed spec, or an id that clashes with one already
    registered is one `UsageError` line, never a traceback or a silent exit.
    """
    spec, _, framework_name = source.partition("@")
    module_name, _, attr = spec.partition(":")
    if not module_name or not _DOTTED.fullmatch(module_name) or (":" in spec and not _DOTTED.fullmatch(attr)):
        raise UsageError(f"bad adapter {source!r}: write MODULE:FUNCTION[@FRAMEWORK], e.g. my_losses:ce@torch")
    before = set(_registry)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import adapter module {module_name!r}: {first_line(exc)}") from None
    except (Exception, SystemExit) as exc:  # the module's own code failed (or exited) on import
        raise UsageError(f"cannot import adapter module {module_name!r}: it raised "
                         f"{first_line(f'{type(exc).__name__}: {exc}')}") from None
    if not attr:
        return [_registry[i] for i in _registry if i not in before]
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    except Exception as exc:  # a module __getattr__ of the user's
        raise UsageError(f"{spec}: {first_line(f'{type(exc).__name__}: {exc}')}") from None
    if isinstance(obj, Adapter):
        adapters = [obj]
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(a, Adapter) for a in obj):
        adapters = list(obj)
    elif not callable(obj):
        raise UsageError(f"{spec} is neither an Adapter nor a loss function")
    else:
        adapters = [from_function(obj, spec, framework_name)]
    out = []
    for a in adapters:
        if a.id in _registry and _registry[a.id] != a:
            if _sources.get(a.id) == source:  # the same spec loaded again (a second run in this process)
                out.append(_registry[a.id])
                continue
            raise UsageError(f"adapter id {a.id!r} of {source} is already taken (by {_sources.get(a.id, 'another adapter')}); "
                             "give yours another id")
        out.append(register(a, source))
    return out


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def function_frameworks() -> list[str]:
    """The frameworks a user's plain loss function can be written in."""
    _load()
    return sorted(name for name, fw in _frameworks.items() if fw.wraps_functions and not fw.missing())


def from_function(fn, adapter_id: str, framework: str = "") -> Adapter:
    """An (unregistered) adapter around a plain `loss(logits, labels) -> per-row loss`.

    The framework is `framework` (a name), or else the one framework package `fn`'s
    globals refer to; that framework's `Framework.wrap_function` does the wrapping.
    """
    _load()
    choices = function_frameworks()
    framework = framework or _framework_of(fn, adapter_id, choices)
    if framework not in choices:
        raise UsageError(f"unknown framework {framework!r} for {adapter_id}; choose from {', '.join(choices)}")
    return _on_rows(_frameworks[framework].wrap_function(fn, adapter_id))


def _on_rows(adapter: Adapter) -> Adapter:
    """A plain function gets every batch as rows, (N*T, V) for a 3-D case: it was written
    for one layout, and a loss written for (N, V) is not wrong because it takes no (N, T, V)."""

    def flat(call):
        if call is None:
            return None
        return functools.wraps(call)(lambda case, device: call(case.rows(), device))

    return dataclasses.replace(adapter, compute=flat(adapter.compute), prepare=flat(adapter.prepare))


def _framework_of(fn, spec: str, choices: list[str]) -> str:
    """The one framework a function's globals refer to (einops-style detection)."""
    names = {getattr(v, "__name__", "").split(".")[0] for v in getattr(fn, "__globals__", {}).values()}
    found = [f for f in choices if _frameworks[f].package in names]
    if len(found) != 1:
        raise UsageError(f"cannot tell the framework of {spec}: append @" + ", @".join(choices))
    return found[0]


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def framework_version(name: str) -> str:
    """The installed version of a framework's (or any package's) distribution, read without
    importing it. The package is mapped to its distribution (`tensorflow` ships as
    `tensorflow-cpu` or `tensorflow`), so the answer is right whichever wheel is installed."""
    fw = _frameworks.get(name)
    package = fw.package if fw is not None and fw.package else name
    for dist in _distributions().get(package, [package]):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def versions() -> dict:
    """Versions of cestab's own dependencies and of every framework it knows (run.json)."""
    _load()
    out = {name: framework_version(name) for name in ("numpy", "pandas", "ml_dtypes", "pyarrow")}
    out["cestab"] = framework_version("cestab")
    for name in (*sorted(_frameworks), *sorted(u for u in _unavailable if " " not in u), *COMPANION_PACKAGES):
        out[name] = framework_version(name)
    return out


def describe(adapter_list) -> dict:
    """What run.json records of the adapters a run used and the frameworks it could not."""
    return {
        "adapters": {a.id: {"framework": a.framework, "version": framework_version(a.framework)} for a in adapter_list},
        "unavailable_frameworks": unavailable(),
        "versions": versions(),
    }


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU at all (device nodes; imports nothing).

    A framework may still lack CUDA support (a CPU-only build): the adapter then reports
    `unsupported` with the framework's reason when asked for cuda.
    """
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _entry_points() -> list[tuple[str, str]]:
    """(name, value) of every `cestab.adapters` entry point; the built-in modules by a scan
    of their package when this checkout was never installed."""
    found = [(ep.name, ep.value) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    if not any(value.startswith(BUILT_IN_PACKAGE + ".") for _, value in found):
        built_in = importlib.import_module(BUILT_IN_PACKAGE)
        found = [(m.name, f"{BUILT_IN_PACKAGE}.{m.name}") for m in pkgutil.iter_modules(built_in.__path__)] + found
    # frameworks first: a package's plain loss function is wrapped by a registered Framework
    return sorted(found, key=lambda nv: not nv[1].startswith(BUILT_IN_PACKAGE + "."))


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name, value in _entry_points():
        try:
            load_source(value)
        except UsageError as exc:
            _unavailable[f"entry point {name}"] = str(exc)
    for fw in list(_frameworks.values()):
        reason = fw.missing()
        if reason:
            _unavailable[fw.name] = reason
            for adapter_id in [i for i, a in _registry.items() if a.framework == fw.name]:
                del _registry[adapter_id]


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
    framework_name = adapter_id.split(".")[0]
    if framework_name in _unavailable:
        raise UsageError(f"adapter {adapter_id!r} is unavailable: {_unavailable[framework_name]}")
    raise UsageError(f"unknown adapter {adapter_id!r}; choose from {', '.join(sorted(adapters))}")


def resolve(ids=None, plugins=()) -> list[Adapter]:
    """Adapters by id (None: every available one), plus users' `module:function` plug-ins."""
    extra = [a for spec in plugins for a in load_source(spec)]
    if ids is None:
        chosen = [] if plugins else sorted(all_adapters().values(), key=lambda a: a.id)
    else:
        if not ids:
            raise UsageError("no adapters selected")
        chosen = [get(i) for i in ids]
    return chosen + [a for a in extra if a not in chosen]
