"""The seed case with attribution, end to end through POST /v1/assessments (issue 13): a 7-year-old
on blinatumomab with an MRV-confirmed CSVT, a focal seizure that resolved and a hemiparesis, CAPD 6,
awakening spontaneously. The CSVT can explain the seizure and the hemiparesis; ASTCT grades ICANS by
events "not attributable to any other cause", so the attribution is the clinician's."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

SEED: dict[str, Any] = {
    "patient": {"age_years": 7, "weight_kg": 24},
    "neuro": {
        "capd_score": 6, "consciousness": "awakens_spontaneously", "seizure": "resolved_rapidly",
        "motor": "deep_focal_weakness", "cerebral_edema": "none", "icp_signs": [],
    },
    "thrombosis": {"confirmed_thrombosis_site": "CSVT", "lmwh_agent": "enoxaparin", "lmwh_intent": "treatment"},
    "blinatumomab": {"dose": {"value": 15, "unit": "mcg/m2/day"}, "seizures_this_course": 1},
}


def attributed(value: bool) -> dict[str, Any]:
    body = copy.deepcopy(SEED)
    body["neuro"].update({"seizure_other_cause": value, "motor_other_cause": value, "icp_other_cause": value})
    return body


def post(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/assessments", json=body)
    assert response.status_code == 200, response.text
    stored = client.get(f"/v1/assessments/{response.json()['id']}").json()
    assert stored["result"] == response.json()  # the record never contradicts the answer
    return response.json()  # type: ignore[no-any-return]


def ids(items: list[dict[str, Any]]) -> set[str]:
    return {item["id"] for item in items}


def test_without_attribution_the_csvt_findings_are_undetermined(client: TestClient) -> None:
    result = post(client, SEED)
    icans = result["icans"]
    assert (icans["tool"], icans["grade"], icans["grade_max"], icans["status"]) == ("CAPD", 1, 4, "incomplete")
    assert {u["input"]: u["up_to"] for u in icans["undetermined_by"]} == {
        "neuro.motor_other_cause": 4, "neuro.seizure_other_cause": 3,
    }
    assert any("competing cause" in note and "CSVT" in note for note in icans["notes"])
    # "Discontinue" is never established on a finding the CSVT may explain: it is only undetermined.
    assert not any("DISCONTINUE" in action for action in ids(result["actions"]))
    open_actions = {a["id"]: a for a in result["undetermined_actions"]}
    assert "BLIN-NEURO-G4-DISCONTINUE" in open_actions
    assert "neuro.motor_other_cause" in open_actions["BLIN-NEURO-G4-DISCONTINUE"]["missing"]
    # The CSVT red flag reads the seizure from neuro (one fact, one place); the section implies ALL therapy.
    assert {"NEURO-CSVT-RED-FLAG", "TE-CONFIRMED-CSVT", "NEURO-BLINATUMOMAB-CONFOUNDER"} <= ids(result["flags"])


def test_attributed_to_the_csvt_the_grade_is_settled(client: TestClient) -> None:
    result = post(client, attributed(True))
    icans = result["icans"]
    assert (icans["grade"], icans["grade_max"], icans["status"], icans["undetermined_by"]) == (1, 1, "graded", [])
    assert any("seizure is attributed to another cause" in note for note in icans["notes"])
    assert any("motor weakness is attributed to another cause" in note for note in icans["notes"])
    assert result["actions"] == []
    assert not any(a["id"].startswith("BLIN-NEURO") for a in result["undetermined_actions"])


def test_attributed_to_icans_the_label_says_discontinue(client: TestClient) -> None:
    result = post(client, attributed(False))
    icans = result["icans"]
    assert (icans["grade"], icans["grade_max"], icans["status"]) == (4, 4, "graded")
    assert "BLIN-NEURO-G4-DISCONTINUE" in ids(result["actions"])


@pytest.mark.parametrize(
    ("neuro", "thrombosis", "fields"),
    [
        ({"seizure": "resolved_rapidly"}, {"seizure": False}, {("thrombosis", "seizure"), ("neuro", "seizure")}),
        ({"motor": "none"}, {"focal_deficit": True}, {("thrombosis", "focal_deficit"), ("neuro", "motor")}),
        ({"consciousness": "alert"}, {"altered_consciousness": True},
         {("thrombosis", "altered_consciousness"), ("neuro", "consciousness")}),
        ({"icp_signs": []}, {"papilledema": True}, {("thrombosis", "papilledema"), ("neuro", "icp_signs")}),
        ({"intracranial_hemorrhage": False}, {"ich_present": True},
         {("thrombosis", "ich_present"), ("neuro", "intracranial_hemorrhage")}),
    ],
)
def test_one_fact_in_two_sections_must_agree(
    client: TestClient, neuro: dict[str, Any], thrombosis: dict[str, Any], fields: set[tuple[str, str]]
) -> None:
    body = {"patient": {"age_years": 7}, "neuro": {"capd_score": 0, **neuro}, "thrombosis": thrombosis}
    response = client.post("/v1/assessments", json=body)
    assert response.status_code == 422, response.text
    named = {tuple(error["loc"][-2:]) for error in response.json()["detail"]}
    assert fields <= named


def test_unable_to_perform_with_a_consciousness_other_than_unarousable_is_refused(client: TestClient) -> None:
    body = {"patient": {"age_years": 40}, "neuro": {"unable_to_perform": True, "consciousness": "awakens_to_voice"}}
    response = client.post("/v1/assessments", json=body)
    assert response.status_code == 422
    assert ["neuro", "unable_to_perform"] in [error["loc"][-2:] for error in response.json()["detail"]]
