"""`import harness` loads no framework (nor Ray); loading the registry loads none either."""

import subprocess
import sys

FRAMEWORKS = ["torch", "jax", "jaxlib", "tensorflow", "keras", "optax", "scipy", "ray"]


def loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_harness_loads_no_framework():
    assert loaded_after("import harness") == []


def test_listing_adapters_loads_no_framework():
    assert loaded_after("import harness; harness.all_adapters()") == []


def test_running_a_numpy_adapter_loads_no_other_framework():
    code = "import harness; harness.run(adapters=['numpy.stable'], dtypes=['float32'], shapes=[(2, 3)])"
    assert loaded_after(code) == []
