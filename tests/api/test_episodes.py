"""Patient episodes through the HTTP API, on SQLite and on PostgreSQL (skipped, saying so, only
when PostgreSQL is not reachable): the blinatumomab scenario, out-of-order arrival, idempotency,
concurrency, restarts and validation."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from aegrade.episodes import Episode, ObservationResult, TreatmentResult
from service.app import create_app
from service.settings import ServiceSettings

DAY1 = "2026-11-19"


def new_patient() -> str:
    return f"pt-{uuid.uuid4().hex[:12]}"


def observation(time: str, **sections: Any) -> dict[str, Any]:
    return {"observed_at": time, "patient": {"age_years": 9, "weight_kg": 30}, **sections}


FEVER_HYPOTENSION = {
    "vitals": {"temperature_c": 39.2, "sbp_mmhg": 78},
    "crs": {"hypotension": True, "vasopressors": [], "oxygen": {"device": "none"}},
    "blinatumomab": {"dose": {"value": 15, "unit": "mcg/m2/day"}},
}
AFEBRILE_LOW_FLOW = {
    "vitals": {"temperature_c": 37.1},
    "crs": {"hypotension": False, "vasopressors": [], "oxygen": {"device": "nasal_cannula", "flow_l_min": 2}},
}
TOCILIZUMAB = {"agent": "tocilizumab", "administered_at": f"{DAY1}T14:00:00Z", "dose_mg": 240}


def post_observation(client: TestClient, patient: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post(f"/v1/patients/{patient}/observations", json=body, headers=headers)
    assert response.status_code == 200, response.text
    ObservationResult.model_validate(response.json())
    return response.json()  # type: ignore[no-any-return]


def post_treatment(client: TestClient, patient: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post(f"/v1/patients/{patient}/treatments", json=body, headers=headers)
    assert response.status_code == 200, response.text
    TreatmentResult.model_validate(response.json())
    return response.json()  # type: ignore[no-any-return]


def episode(client: TestClient, patient: str) -> dict[str, Any]:
    response = client.get(f"/v1/patients/{patient}/episode")
    assert response.status_code == 200, response.text
    Episode.model_validate(response.json())
    return response.json()  # type: ignore[no-any-return]


# ---- the scenario of the issue -------------------------------------------------------------------


def test_blinatumomab_timeline_fever_masked_by_tocilizumab(client: TestClient) -> None:
    patient = new_patient()
    day1 = post_observation(client, patient, observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION))
    assert (day1["crs"]["grade"], day1["fever_masking"]) == (2, None)

    given = post_treatment(client, patient, TOCILIZUMAB)
    assert (given["agent"], given["masks_fever"], given["dose_unit"], given["regraded"]) == ("tocilizumab", True, "mg", [])

    later = post_observation(client, patient, observation(f"{DAY1}T20:00:00Z", **AFEBRILE_LOW_FLOW))
    assert later["crs"]["grade"] == 2, "afebrile on low-flow oxygen after tocilizumab is still CRS grade 2"
    assert later["fever_masking"] == {
        "agent": "tocilizumab",
        "administered_at": f"{DAY1}T14:00:00Z",
        "onset_at": f"{DAY1}T10:00:00Z",
    }
    assert any("tocilizumab at 2026-11-19T14:00Z" in note for note in later["crs"]["notes"])
    assert any(i["setting"] == "episode_masking_window_hours" for i in later["crs"]["interpretations"])

    course = episode(client, patient)
    assert course["crs"] == {
        "current_grade": 2,
        "current_grade_max": 2,
        "current_status": "graded",
        "peak_grade": 2,
        "peak_at": f"{DAY1}T10:00:00Z",
        "onset_at": f"{DAY1}T10:00:00Z",
        "resolved_at": None,
        "masking_since": f"{DAY1}T14:00:00Z",
    }
    assert [e["crs"]["grade"] for e in course["timeline"]] == [2, 2]
    assert course["timeline"][1]["fever_masking"]["agent"] == "tocilizumab"
    assert any("tocilizumab" in line for line in course["timeline"][1]["crs"]["explanation"])
    assert [t["agent"] for t in course["treatments"]] == ["tocilizumab"]
    assert course["icans"]["peak_grade"] is None


NEURO_NONE = {"consciousness": "alert", "seizure": "none", "motor": "none", "cerebral_edema": "none", "icp_signs": []}


def test_an_incomplete_grade_counts_as_established_and_keeps_its_bound(client: TestClient) -> None:
    """v1.1: the course uses `grade` (what was reported establishes); the timeline shows grade_max and
    what leaves it open; an incomplete grade 0 is not a resolution."""
    patient = new_patient()
    fever_only = post_observation(client, patient, observation(f"{DAY1}T08:00:00Z", vitals={"temperature_c": 39.0}))
    assert (fever_only["crs"]["grade"], fever_only["crs"]["grade_max"], fever_only["crs"]["status"]) == (1, 4, "incomplete")
    icans = post_observation(client, patient, observation(f"{DAY1}T09:00:00Z", neuro={"capd_score": 12, **NEURO_NONE}))
    assert icans["icans"]["grade"] >= 1 and icans["icans"]["status"] == "graded"
    partial = post_observation(client, patient, observation(f"{DAY1}T10:00:00Z", neuro={"capd_score": 0}))
    assert partial["icans"]["grade"] == 0 and partial["icans"]["status"] == "incomplete"
    assert partial["icans"]["grade_max"] > 0

    course = episode(client, patient)
    crs_entry = course["timeline"][0]["crs"]
    assert (crs_entry["grade"], crs_entry["grade_max"], crs_entry["status"]) == (1, 4, "incomplete")
    assert {u["input"] for u in crs_entry["undetermined_by"]} >= {"crs.oxygen", "crs.vasopressors"}
    assert course["crs"]["peak_grade"] == 1 and course["crs"]["onset_at"] == f"{DAY1}T08:00:00Z"
    assert (course["crs"]["current_grade"], course["crs"]["current_grade_max"]) == (1, 4)
    assert course["icans"]["current_status"] == "incomplete"
    assert course["icans"]["current_grade_max"] == partial["icans"]["grade_max"]
    assert course["icans"]["resolved_at"] is None, "an incomplete grade 0 could still be ICANS: not resolved"

    settled = post_observation(client, patient, observation(f"{DAY1}T11:00:00Z", neuro={"capd_score": 0, **NEURO_NONE}))
    assert (settled["icans"]["grade"], settled["icans"]["status"]) == (0, "graded")
    course = episode(client, patient)
    assert course["icans"]["resolved_at"] == f"{DAY1}T11:00:00Z"
    assert course["icans"]["current_grade_max"] == 0


def test_without_the_treatment_the_same_observation_is_not_crs(client: TestClient) -> None:
    """The control of the scenario: the masking comes from the recorded tocilizumab, nothing else."""
    patient = new_patient()
    post_observation(client, patient, observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION))
    later = post_observation(client, patient, observation(f"{DAY1}T20:00:00Z", **AFEBRILE_LOW_FLOW))
    assert (later["crs"]["grade"], later["crs"]["status"], later["fever_masking"]) == (0, "no_crs", None)


def test_treatment_before_onset_does_not_mask(client: TestClient) -> None:
    patient = new_patient()
    post_treatment(client, patient, {"agent": "dexamethasone", "administered_at": f"{DAY1}T06:00:00Z", "dose_mg": 5})
    post_observation(client, patient, observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION))
    later = post_observation(client, patient, observation(f"{DAY1}T20:00:00Z", **AFEBRILE_LOW_FLOW))
    assert later["crs"]["grade"] == 0


def test_explicit_fever_masked_wins_and_the_conflict_is_noted(client: TestClient) -> None:
    patient = new_patient()
    post_observation(client, patient, observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION))
    post_treatment(client, patient, TOCILIZUMAB)
    sent = {**AFEBRILE_LOW_FLOW, "crs": {**AFEBRILE_LOW_FLOW["crs"], "fever_masked": False}}
    later = post_observation(client, patient, observation(f"{DAY1}T20:00:00Z", **sent))
    assert later["crs"]["grade"] == 0
    assert any("fever_masked false was sent" in note and "tocilizumab" in note for note in later["crs"]["notes"])


def test_masking_window_setting(database_url: str) -> None:
    settings = ServiceSettings(database_url=database_url, episode_masking_window_hours=4)
    with TestClient(create_app(settings)) as client:
        patient = new_patient()
        post_observation(client, patient, observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION))
        post_treatment(client, patient, TOCILIZUMAB)
        inside = post_observation(client, patient, observation(f"{DAY1}T18:00:00Z", **AFEBRILE_LOW_FLOW))
        outside = post_observation(client, patient, observation(f"{DAY1}T18:00:01Z", **AFEBRILE_LOW_FLOW))
    assert (inside["crs"]["grade"], outside["crs"]["grade"]) == (2, 0)
    assert any("4 h" in i["text"] for i in inside["crs"]["interpretations"])


# ---- out of order ---------------------------------------------------------------------------------


def test_out_of_order_arrival_is_placed_and_later_grades_recomputed(client: TestClient) -> None:
    in_order, shuffled = new_patient(), new_patient()
    first = observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION)
    last = observation(f"{DAY1}T20:00:00Z", **AFEBRILE_LOW_FLOW)

    post_observation(client, in_order, first)
    post_treatment(client, in_order, TOCILIZUMAB)
    post_observation(client, in_order, last)

    early = post_observation(client, shuffled, last)
    assert early["crs"]["grade"] == 0  # nothing known yet
    given = post_treatment(client, shuffled, TOCILIZUMAB)
    assert given["regraded"] == [early["observation_id"]]  # regraded, still 0: no onset yet
    placed = post_observation(client, shuffled, first)
    assert placed["regraded"] == [early["observation_id"]]

    a, b = episode(client, in_order), episode(client, shuffled)
    assert [e["observed_at"] for e in b["timeline"]] == [f"{DAY1}T10:00:00Z", f"{DAY1}T20:00:00Z"]
    assert [e["crs"]["grade"] for e in b["timeline"]] == [e["crs"]["grade"] for e in a["timeline"]] == [2, 2]
    assert a["crs"] == b["crs"]

    # every grading is on record: the first answer and the regrades
    regraded_id = b["timeline"][1]["assessment_id"]
    record = client.get(f"/v1/assessments/{regraded_id}").json()
    assert record["outcome"] == "regraded"
    assert record["duration_ms"] > 0, "the grading time is measured, not a placeholder"
    assert record["request"]["patient_id"] == shuffled
    assert record["result"]["crs"]["grade"] == 2
    assert client.get(f"/v1/assessments/{early['id']}").json()["result"]["crs"]["grade"] == 0


def test_non_masking_treatment_regrades_nothing(client: TestClient) -> None:
    patient = new_patient()
    post_observation(client, patient, observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION))
    given = post_treatment(client, patient, {"agent": "pegaspargase", "administered_at": f"{DAY1}T08:00:00Z"})
    assert (given["masks_fever"], given["regraded"], given["dose_unit"]) == (False, [], None)


# ---- idempotency ----------------------------------------------------------------------------------


def test_same_idempotency_key_is_stored_once(client: TestClient, shared_database_url: str) -> None:
    patient = new_patient()
    body = observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION)
    first = client.post(f"/v1/patients/{patient}/observations", json=body, headers={"Idempotency-Key": "msg-0001"})
    again = client.post(f"/v1/patients/{patient}/observations", json=body, headers={"Idempotency-Key": "msg-0001"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert len(episode(client, patient)["timeline"]) == 1
    engine = sqlalchemy.create_engine(shared_database_url)
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT count(*) FROM observations WHERE patient_id = :p"), {"p": patient})
        assert rows.scalar() == 1
    engine.dispose()


def test_same_key_with_another_body_is_a_conflict(client: TestClient) -> None:
    patient = new_patient()
    key = {"Idempotency-Key": "msg-0002"}
    post_observation(client, patient, observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION), **key)
    other = client.post(f"/v1/patients/{patient}/observations", json=observation(f"{DAY1}T11:00:00Z", **AFEBRILE_LOW_FLOW), headers=key)
    assert other.status_code == 409 and other.json()["detail"]["code"] == "idempotency_key_reused"
    treatment = client.post(f"/v1/patients/{patient}/treatments", json=TOCILIZUMAB, headers=key)
    assert treatment.status_code == 409
    assert len(episode(client, patient)["timeline"]) == 1


def test_keys_are_per_patient_and_per_treatment(client: TestClient) -> None:
    key = {"Idempotency-Key": "msg-0003"}
    a, b = new_patient(), new_patient()
    post_treatment(client, a, TOCILIZUMAB, **key)
    post_treatment(client, b, TOCILIZUMAB, **key)
    replay = client.post(f"/v1/patients/{a}/treatments", json=TOCILIZUMAB, headers=key)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert len(episode(client, a)["treatments"]) == len(episode(client, b)["treatments"]) == 1


@pytest.mark.parametrize("key", ["", "has space", "é", "x" * 256])
def test_malformed_idempotency_key_is_422(client: TestClient, key: str) -> None:
    response = client.post(
        f"/v1/patients/{new_patient()}/observations",
        json=observation(f"{DAY1}T10:00:00Z"),
        headers={"Idempotency-Key": key.encode()},  # type: ignore[dict-item]
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "idempotency-key"]


# ---- concurrency and restarts ---------------------------------------------------------------------


def test_concurrent_posts_for_one_patient_are_all_kept(client: TestClient) -> None:
    patient = new_patient()
    start = threading.Barrier(8)

    def send(i: int) -> int:
        start.wait() if i < 8 else None
        body = observation(f"{DAY1}T{10 + i // 60:02d}:{i % 60:02d}:00Z", vitals={"temperature_c": 38.0 + (i % 3) / 10})
        return client.post(f"/v1/patients/{patient}/observations", json=body).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(send, range(40)))
    assert codes == [200] * 40
    course = episode(client, patient)
    assert len(course["timeline"]) == 40
    assert [e["observed_at"] for e in course["timeline"]] == sorted(e["observed_at"] for e in course["timeline"])


def test_concurrent_retries_with_one_key_are_stored_once(client: TestClient) -> None:
    patient = new_patient()
    body = observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION)
    start = threading.Barrier(8)

    def send(_: int) -> tuple[int, str]:
        start.wait()
        response = client.post(f"/v1/patients/{patient}/observations", json=body, headers={"Idempotency-Key": "retry-1"})
        return response.status_code, response.json()["observation_id"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert {code for code, _ in answers} == {200}
    assert len({oid for _, oid in answers}) == 1
    assert len(episode(client, patient)["timeline"]) == 1


@pytest.mark.slow
def test_a_restart_loses_nothing(database_url: str) -> None:
    patient = new_patient()
    settings = ServiceSettings(database_url=database_url)
    with TestClient(create_app(settings)) as client:
        post_observation(client, patient, observation(f"{DAY1}T10:00:00Z", **FEVER_HYPOTENSION))
        post_treatment(client, patient, TOCILIZUMAB)
        post_observation(client, patient, observation(f"{DAY1}T20:00:00Z", **AFEBRILE_LOW_FLOW), **{"Idempotency-Key": "k1"})
        before = episode(client, patient)
    with TestClient(create_app(settings)) as client:
        assert episode(client, patient) == before
        replay = client.post(
            f"/v1/patients/{patient}/observations",
            json=observation(f"{DAY1}T20:00:00Z", **AFEBRILE_LOW_FLOW),
            headers={"Idempotency-Key": "k1"},
        )
        assert replay.headers.get("Idempotent-Replayed") == "true"
        assert len(episode(client, patient)["timeline"]) == 2


# ---- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patient", "status"),
    [("a" * 64, 200), ("a" * 65, 404), ("-leading-dash", 404), ("has.dots_and-dashes.1", 200), ("semi;colon", 404)],
)
def test_patient_id_charset_and_length(client: TestClient, patient: str, status: int) -> None:
    patient = patient if status == 404 else patient[:-12] + uuid.uuid4().hex[:12]
    response = client.post(f"/v1/patients/{patient}/observations", json=observation(f"{DAY1}T10:00:00Z", **AFEBRILE_LOW_FLOW))
    assert response.status_code == status, response.text
    if status == 404:  # a malformed id names no patient: 404, saying which path parameter (never its value)
        assert response.json()["code"] == "not_found" and "patient_id" in response.json()["message"]
        assert patient not in response.text


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (observation("2026-11-19T10:00:00"), ["body", "observed_at"]),
        (observation("2099-01-01T00:00:00Z"), ["body", "observed_at"]),
        (observation(1763546400), ["body", "observed_at"]),  # type: ignore[arg-type]
        ({"patient": {"age_years": 9}}, ["body", "observed_at"]),
        ({**observation(f"{DAY1}T10:00:00Z"), "mrn": "123"}, ["body", "mrn"]),
        (observation(f"{DAY1}T10:00:00Z", vitals={"temperature_c": True}), ["body", "vitals", "temperature_c"]),
        (observation(f"{DAY1}T10:00:00Z", vitals={"temperature_c": 38, "temperature_f": 100.4}), ["body", "vitals", "temperature_f"]),
    ],
)
def test_invalid_observations_are_422_naming_the_field(client: TestClient, body: dict[str, Any], loc: list[str]) -> None:
    patient = new_patient()
    response = client.post(f"/v1/patients/{patient}/observations", json=body)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"][: len(loc)] for e in response.json()["detail"]]
    assert client.get(f"/v1/patients/{patient}/episode").status_code == 404, "a refused observation stores nothing"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"agent": "aspirin", "administered_at": f"{DAY1}T10:00:00Z"}, ["body", "agent"]),
        ({"agent": "tocilizumab", "administered_at": f"{DAY1}T10:00:00"}, ["body", "administered_at"]),
        ({"agent": "tocilizumab", "administered_at": "2099-01-01T00:00:00Z"}, ["body", "administered_at"]),
        ({"agent": "tocilizumab", "administered_at": f"{DAY1}T10:00:00Z", "dose_unit": "mg"}, ["body", "dose_unit"]),
        ({"agent": "tocilizumab", "administered_at": f"{DAY1}T10:00:00Z", "dose_mg": -1}, ["body", "dose_mg"]),
    ],
)
def test_invalid_treatments_are_422_naming_the_field(client: TestClient, body: dict[str, Any], loc: list[str]) -> None:
    response = client.post(f"/v1/patients/{new_patient()}/treatments", json=body)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"][: len(loc)] for e in response.json()["detail"]]


def test_unknown_patient_episode_is_404(client: TestClient) -> None:
    response = client.get(f"/v1/patients/{new_patient()}/episode")
    assert response.status_code == 404 and response.json()["detail"]["code"] == "not_found"


def test_episode_endpoints_need_the_key_when_keys_are_set(database_url: str) -> None:
    key = "a-test-key-with-enough-characters"
    with TestClient(create_app(ServiceSettings(database_url=database_url, api_keys=[key]))) as client:
        patient = new_patient()
        body = observation(f"{DAY1}T10:00:00Z", **AFEBRILE_LOW_FLOW)
        assert client.post(f"/v1/patients/{patient}/observations", json=body).status_code == 401
        assert client.get(f"/v1/patients/{patient}/episode").status_code == 401
        ok = client.post(f"/v1/patients/{patient}/observations", json=body, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
