import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.peers.fixtures"]

# Property tests: deterministic by default (the same examples on every run and in CI, no example
# database written), with a moderate number of examples so that they all take a few seconds.
# HYPOTHESIS_PROFILE=dev draws new, and more, examples each run.
settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
