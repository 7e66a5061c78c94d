"""Shared test set-up: the hypothesis profiles, and the engine built once per session.

Profiles: "ci" (fixed seed, 2,000 examples a property; loaded automatically when CI is set) and
"dev" (fewer examples, for quick local runs). Choose one with HYPOTHESIS_PROFILE.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import aegrade

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

settings.register_profile(
    "ci",
    max_examples=2000,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def engine() -> aegrade.Engine:
    return aegrade.default_engine()
