"""The hypothesis profiles of the test suite, and which one a run uses (tests/conftest.py loads it).

- "ci": fixed seed, 400 examples a property; loaded when CI is set (`.ci/run`).
- "dev": 300 random examples, for local runs of the whole suite.
- "fast": fixed seed, 20 examples; loaded for the fast lane (`-m "not slow"`), so that every
  property still runs, briefly. The boundaries are pinned by the unit tests, which the fast lane runs.

HYPOTHESIS_PROFILE chooses one explicitly and wins over the rest. Hypothesis keeps its files (example
database, caches) in .pytest_cache/hypothesis, or in HYPOTHESIS_STORAGE_DIRECTORY when that is set,
not in a .hypothesis directory of the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(REPO / ".pytest_cache" / "hypothesis")

settings.register_profile(
    "ci",
    max_examples=400,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile(
    "fast",
    max_examples=20,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

loaded = "dev"


def choose(markexpr: str) -> str:
    """The profile for a run: HYPOTHESIS_PROFILE, else "fast" when slow tests are deselected, else
    "ci" under CI, else "dev"."""
    if os.environ.get("HYPOTHESIS_PROFILE"):
        return os.environ["HYPOTHESIS_PROFILE"]
    if "not slow" in " ".join(markexpr.split()):
        return "fast"
    return "ci" if os.environ.get("CI") else "dev"


def load(name: str) -> None:
    global loaded
    settings.load_profile(name)
    loaded = name


def examples(n: int) -> int:
    """A property's own number of examples (where it sets one), capped by the fast profile's."""
    return min(n, settings.get_profile("fast").max_examples) if loaded == "fast" else n
