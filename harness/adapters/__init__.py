"""Adapters: the contract every implementation meets (`contract`), the registry that finds
them (`registry`) and the worker processes that run them in isolation (`workers`).

The names implementation modules and users' plug-ins import are re-exported here:
`from harness.adapters import Adapter, Output, Prepared, Unsupported, register`.
"""

from harness.adapters.contract import Adapter, Framework, Output, Prepared, Unsupported
from harness.adapters.registry import (
    all_adapters,
    framework_version,
    get,
    load_source,
    register,
    register_framework,
    unavailable,
)
from harness.errors import first_line

__all__ = [
    "Adapter",
    "Framework",
    "Output",
    "Prepared",
    "Unsupported",
    "all_adapters",
    "first_line",
    "framework_version",
    "get",
    "load_source",
    "register",
    "register_framework",
    "unavailable",
]
