"""The blinatumomab label on the episode path (blinatumomab-actions.md v1.1 §4-5): recurrence after a
restart and seizures since the current start are read from the stored timeline, and the
explanation names what was used. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

DAY = "2026-11-19"
PATIENT = {"age_years": 40, "weight_kg": 70}
NEURO_NONE = {"motor": "none", "cerebral_edema": "none", "icp_signs": []}
DOSE = {"dose": {"value": 28, "unit": "mcg/day"}}


def new_patient() -> str:
    return f"pt-{uuid.uuid4().hex[:12]}"


def observe(client: TestClient, patient: str, time: str, neuro: dict[str, Any]) -> dict[str, Any]:
    body = {"observed_at": f"{DAY}T{time}:00Z", "patient": PATIENT, "neuro": {**NEURO_NONE, **neuro}, "blinatumomab": DOSE}
    response = client.post(f"/v1/patients/{patient}/observations", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def give(client: TestClient, patient: str, agent: str, time: str) -> None:
    response = client.post(f"/v1/patients/{patient}/treatments", json={"agent": agent, "administered_at": f"{DAY}T{time}:00Z"})
    assert response.status_code == 200, response.text


ICANS_3 = {"ice_score": 2, "consciousness": "alert", "seizure": "none"}
ICANS_0 = {"ice_score": 10, "consciousness": "alert", "seizure": "none"}


def test_icans_3_stop_restart_icans_3_again_discontinues(client: TestClient) -> None:
    patient = new_patient()
    give(client, patient, "blinatumomab_start", "01:00")
    first = observe(client, patient, "05:00", ICANS_3)
    assert [a["id"] for a in first["actions"]][0] == "BLIN-NEURO-G3-WITHHOLD"
    give(client, patient, "blinatumomab_stop", "05:30")
    observe(client, patient, "12:00", ICANS_0)
    give(client, patient, "blinatumomab_start", "16:00")
    again = observe(client, patient, "20:00", ICANS_3)
    assert [a["id"] for a in again["actions"]] == ["BLIN-NEURO-G3-DISCONTINUE"]
    assert any("recurred_after_restart derived from the episode" in note for note in again["notes"])


def test_two_seizures_in_one_exposure_discontinue(client: TestClient) -> None:
    patient = new_patient()
    give(client, patient, "blinatumomab_start", "01:00")
    seizure = {"ice_score": 8, "consciousness": "alert", "seizure": "resolved_rapidly"}
    first = observe(client, patient, "05:00", seizure)
    assert "BLIN-SEIZURE-DISCONTINUE" not in [a["id"] for a in first["actions"]]
    second = observe(client, patient, "09:00", seizure)
    assert [a["id"] for a in second["actions"]] == ["BLIN-SEIZURE-DISCONTINUE"]
    assert any("seizures_this_course derived from the episode: 2" in note for note in second["notes"])


def test_a_late_start_regrades_the_observations_after_it(client: TestClient) -> None:
    patient = new_patient()
    seizure = {"ice_score": 8, "consciousness": "alert", "seizure": "resolved_rapidly"}
    observe(client, patient, "05:00", seizure)
    second = observe(client, patient, "09:00", seizure)
    assert "BLIN-SEIZURE-DISCONTINUE" not in [a["id"] for a in second["actions"]]  # no start recorded yet
    give(client, patient, "blinatumomab_start", "01:00")  # charted late
    timeline = client.get(f"/v1/patients/{patient}/episode").json()["timeline"]
    assert timeline[-1]["actions"] == ["BLIN-SEIZURE-DISCONTINUE"]
