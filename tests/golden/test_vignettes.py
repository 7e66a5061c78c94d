"""The shared worked cases (../shared/vignettes/crs_icans.jsonl) as golden tests.

The copies in tests/golden/vignettes/ keep the repository self-contained; when ../shared is beside
the checkout, a test checks that the copies have not drifted from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import aegrade
from tests.conftest import SHARED

HERE = Path(__file__).resolve().parent / "vignettes"


def _cases(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.strip()]


CRS_ICANS = _cases("crs_icans.jsonl")


def test_all_sixteen_crs_icans_vignettes_are_present() -> None:
    assert len(CRS_ICANS) == 16
    assert len({c["id"] for c in CRS_ICANS}) == 16


@pytest.mark.parametrize("case", CRS_ICANS, ids=[c["id"] for c in CRS_ICANS])
def test_crs_icans_vignette(case: dict[str, Any], engine: aegrade.Engine) -> None:
    result = engine.assess(case["request"])
    expected = case["expected"]
    assert result.crs is not None and result.icans is not None
    assert result.crs.grade == expected["crs_grade"], case["justification"]
    assert result.icans.grade == expected["icans_grade"], case["justification"]
    # Every grade is explained: a graded result >= 1 names at least one driving rule.
    for part in (result.crs, result.icans):
        if part.grade:
            assert any(d.drives for d in part.drivers)


@pytest.mark.parametrize("name", ["crs_icans.jsonl", "thrombosis.jsonl"])
def test_vignette_copies_match_shared(name: str) -> None:
    shared = SHARED / "vignettes" / name
    if not shared.exists():
        pytest.skip(f"{shared} is not beside this checkout")
    assert (HERE / name).read_text() == shared.read_text()


THROMBOSIS = _cases("thrombosis.jsonl")


def test_all_ten_thrombosis_vignettes_are_present() -> None:
    assert len(THROMBOSIS) == 10


@pytest.mark.parametrize("case", THROMBOSIS, ids=[c["id"] for c in THROMBOSIS])
def test_thrombosis_vignette(case: dict[str, Any], engine: aegrade.Engine) -> None:
    """The expected flags are present with their severities, and no other flag fires."""
    result = engine.assess(case["request"])
    got = {(f.id, f.severity) for f in result.flags}
    expected = {(f["id"], f["severity"]) for f in case["expected_flags"]}
    assert got == expected, case["justification"]
    order = [f.severity for f in result.flags]
    assert order == sorted(order, key=["critical", "warning", "info"].index)  # most severe first
    for flag in result.flags:
        assert flag.evidence, flag.id  # every flag shows the values that fired it
