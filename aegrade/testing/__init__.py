"""Hypothesis strategies for testing aegrade, or anything that grades through it (one import).

    from aegrade.testing import assessments, invalid_assessments
"""

from aegrade.testing.strategies import *  # noqa: F403 - the strategies module's __all__ is this package's API
from aegrade.testing.strategies import __all__ as __all__
