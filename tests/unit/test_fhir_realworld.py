"""The real-world shaped Bundles (tests/fixtures/fhir/realworld/, README there): each is valid FHIR
R4, its references resolve by the Bundle rules, and it is read and graded as stated."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import aegrade
from aegrade.fhir import FhirMapping, bundle_resources, map_resources

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "fhir" / "realworld"
NOW = datetime(2026, 6, 2, 0, 0, tzinfo=timezone.utc)
FILES = sorted(p.name for p in HERE.glob("*.json"))


def _bundle(name: str) -> dict[str, Any]:
    return json.loads((HERE / name).read_text())  # type: ignore[no-any-return]


def _read(name: str) -> tuple[dict[str, Any], FhirMapping]:
    located = bundle_resources(_bundle(name), ("body",))
    assessment, _, mapping = map_resources(located, now=NOW, window_hours=4.0, masking_window_hours=None, administrations_mask_fever=True)
    return assessment, mapping


@pytest.mark.parametrize("name", FILES)
def test_each_fixture_is_valid_fhir_r4_and_names_its_source(name: str) -> None:
    from fhir.resources.R4B.bundle import Bundle

    bundle = _bundle(name)
    Bundle.model_validate(bundle)
    [tag] = bundle["meta"]["tag"]
    assert tag["system"] == "http://aegrade.org/fhir/CodeSystem/fixture-source" and "written by aegrade" in tag["display"]
    for entry in bundle["entry"]:
        url = entry.get("fullUrl", "")
        if url.startswith("urn:uuid:"):
            assert url[9:] == entry["resource"]["id"] and len(url) == 45  # a UUID, as the resource's id


def test_us_core_searchset_with_pulse_oximetry(engine: aegrade.Engine) -> None:
    assessment, mapping = _read("us-core-9-vital-signs-pulse-oximetry.json")
    assert assessment["vitals"] == {"temperature_c": 38.9, "sbp_mmhg": 104, "dbp_mmhg": 58, "heart_rate_bpm": 118,
                                    "respiratory_rate": 24, "spo2_pct": 95}
    assert mapping.as_of == datetime(2026, 6, 1, 13, 55, tzinfo=timezone.utc)  # -04:00 read as such
    assert [u.input for u in mapping.undetermined] == ["crs.oxygen"]  # 6 L/min, no device charted
    assert any("OperationOutcome" in i.reason for i in mapping.ignored)
    crs = engine.assess(assessment).crs
    assert crs is not None and crs.grade is not None and "crs.oxygen" in [u.input for u in crs.undetermined_by]


def test_r4_examples_contained_medication_by_ingredient(engine: aegrade.Engine) -> None:
    assessment, mapping = _read("r4-examples-collection.json")
    assert assessment["crs"]["vasopressors"] == ["norepinephrine"] and assessment["vitals"]["sbp_mmhg"] == 82
    assert mapping.ignored == []
    crs = engine.assess(assessment).crs
    assert crs is not None and crs.grade == 3


def test_oracle_health_rate_change_events_spo2_component_and_device(engine: aegrade.Engine) -> None:
    assessment, mapping = _read("oracle-health-r4-searchset.json")
    assert assessment["vitals"] == {"temperature_f": 102.2, "spo2_pct": 89}
    assert assessment["crs"]["oxygen"] == {"device": "high_flow_nasal_cannula", "flow_l_min": 40}
    assert assessment["crs"]["vasopressors"] == ["norepinephrine"]  # the 09:10 rate change, 35 min before
    crs = engine.assess(assessment).crs
    assert crs is not None and crs.grade == 3


def test_synthea_transaction() -> None:
    assessment, mapping = _read("synthea-transaction.json")
    assert assessment["vitals"] == {"temperature_c": 37.4, "sbp_mmhg": 121, "dbp_mmhg": 78}
    reasons = {i.source.split("/")[0]: i.reason for i in mapping.ignored}
    assert "Encounter is not read" in reasons["Encounter"] and "not an administration" in reasons["MedicationRequest"]
