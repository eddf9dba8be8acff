"""Shared test configuration: hypothesis profiles.

``dev`` (default) keeps the whole suite fast; ``ci`` is what .ci/run uses; ``fuzz`` is for
long local runs: ``HYPOTHESIS_PROFILE=fuzz pytest tests/protocol``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
