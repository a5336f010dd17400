"""pytest plugin (entry point `pytest11: cestab`): the `cestab` fixture for other projects' tests.

    def test_my_kernel_is_no_worse(cestab):
        cestab.assert_no_worse_than(my_loss, baseline="torch.cross_entropy", dtypes=("float32",))

`my_loss(logits, labels) -> per-row loss` runs on cestab's regimes (small shapes) and corpus
next to the baseline adapter; the test fails with cestab's mismatch report (the tolerance, the
worst elements, the `cestab repro` line) wherever it is less accurate (`harness.testing.comparison`).

Installed with cestab, this module is loaded by every pytest session in the environment, so
it imports no framework (and no hypothesis) at import time: only the `harness` package itself
(numpy, pandas); `harness.testing.comparison` and the frameworks load when a test asks for the
fixture. Disable it with `-p no:cestab`.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def cestab(tmp_path):
    """A `harness.testing.comparison.Checker`; failing cases are saved under the test's tmp_path."""
    from harness.testing.comparison import Checker

    return Checker(folder=tmp_path / "cestab-failures")
