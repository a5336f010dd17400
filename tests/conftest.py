"""Shared test settings: hypothesis profiles (derandomized in CI, deeper on demand), drawn
without the loaded modules' constants (`strategies.without_local_constants`): else a test's
examples depend on which modules the tests before it imported (one more module in harness,
or a test that imports one, changed what `find` shrank to in test_strategies)."""

import os

from hypothesis import HealthCheck, settings

from harness.inputs import strategies

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("deep", parent=settings.get_profile("ci"), derandomize=False, max_examples=2000)
settings.load_profile(os.environ.get("CESTAB_HYPOTHESIS_PROFILE", "ci"))

# For the whole session (the search's pool enters and leaves it again inside: nested, it
# restores this).
strategies.without_local_constants().__enter__()
