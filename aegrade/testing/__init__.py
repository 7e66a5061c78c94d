"""Hypothesis strategies for testing aegrade, or anything that grades through it (one import).

    from aegrade.testing import assessments, invalid_assessments
"""

from aegrade.testing.strategies import (
    FIELD_BOUNDS,
    assessments,
    crs_sections,
    fact_values,
    invalid_assessments,
    neuro_sections,
    patients,
    thresholds,
    tool_for,
    vitals_sections,
)

__all__ = [
    "FIELD_BOUNDS",
    "assessments",
    "crs_sections",
    "fact_values",
    "invalid_assessments",
    "neuro_sections",
    "patients",
    "thresholds",
    "tool_for",
    "vitals_sections",
]
