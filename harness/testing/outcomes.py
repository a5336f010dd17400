"""One case through several adapters in this process, keeping each adapter's raw output.

Tests need both what the results table records about an adapter (its row: status, metrics)
and what the adapter returned (for the element list of a mismatch report). The row comes
from `run.rows.rows_for_case`, the very code a `cestab run` uses, so a test judges exactly as
a run does; the executor below only keeps the outputs it hands on.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.adapters import Adapter, Output
from harness.numerics.cases import Case
from harness.run.rows import rows_for_case
from harness.adapters.workers import InProcess


@dataclass(frozen=True)
class Outcome:
    """An adapter's results row on a case, and its output when it ran."""

    row: dict
    output: Output | None

    @property
    def status(self) -> str:
        return self.row["status"]


class _Keeping(InProcess):
    """InProcess, keeping each adapter's output by id."""

    def __init__(self):
        super().__init__()
        self.outputs: dict[str, Output | None] = {}

    def run(self, case, adapter_list, device):
        for adapter, attempt in super().run(case, adapter_list, device):
            self.outputs[adapter.id] = attempt.output
            yield adapter, attempt


def outcomes(case: Case, adapter_list: list[Adapter], device: str = "cpu") -> dict[str, Outcome]:
    """adapter id -> Outcome of every adapter in `adapter_list` on `case` (in process)."""
    executor = _Keeping()
    rows = rows_for_case(case, adapter_list, executor, device, base={})
    return {row["adapter"]: Outcome(row, executor.outputs.get(row["adapter"])) for row in rows}
