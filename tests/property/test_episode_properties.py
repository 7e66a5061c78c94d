"""Episodes over any sequence of observations and treatments, in a real SQLite store: the peak is
the maximum of the stored grades, and nothing depends on the order in which the events arrived."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aegrade
from aegrade.episodes import Observation, Treatment
from service.episodes import EpisodeStore
from service.store import AuditStore
from tests.profiles import examples

START = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)

# Few distinct times, so that ties (observation and treatment at the same minute) come up often.
times = st.integers(min_value=0, max_value=12).map(lambda hours: (START + timedelta(hours=hours)).isoformat())

crs_sections = st.fixed_dictionaries(
    {},
    optional={
        "hypotension": st.booleans(),
        "vasopressors": st.lists(st.sampled_from(["norepinephrine", "vasopressin", "epinephrine"]), unique=True),
        "oxygen": st.one_of(
            st.just({"device": "none"}),
            st.builds(lambda f: {"device": "nasal_cannula", "flow_l_min": f}, st.sampled_from([1.0, 6.0, 6.5])),
            st.just({"device": "nonrebreather"}),
        ),
        "fever_masked": st.booleans(),
    },
).filter(lambda crs: not (crs.get("hypotension") is False and crs.get("vasopressors")))  # a contradiction (422)
observations = st.builds(
    lambda t, temp, crs, ice: {
        "observed_at": t,
        "patient": {"age_years": 30},
        **({"vitals": {"temperature_c": temp}} if temp is not None else {}),
        **({"crs": crs} if crs is not None else {}),
        **({"neuro": {"ice_score": ice}} if ice is not None else {}),
    },
    times,
    st.none() | st.sampled_from([36.5, 37.9, 38.0, 39.5]),
    st.none() | crs_sections,
    st.none() | st.integers(min_value=0, max_value=10),
).filter(lambda o: len(o) > 2)  # observed_at and patient alone grade nothing: a 422 (nothing_to_grade)
treatments = st.builds(
    lambda agent, t: {"agent": agent, "administered_at": t},
    st.sampled_from(["tocilizumab", "dexamethasone", "acetaminophen", "pegaspargase", "blinatumomab_start"]),
    times,
)
events = st.lists(
    st.one_of(observations.map(lambda o: ("observation", o)), treatments.map(lambda t: ("treatment", t))),
    min_size=1,
    max_size=10,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, engine: aegrade.Engine) -> Iterator[EpisodeStore]:
    path: Path = tmp_path_factory.mktemp("episodes") / "episodes.sqlite3"
    audit = AuditStore(f"sqlite:///{path}", immediate=True)
    audit.create_schema()
    yield EpisodeStore(audit, engine)
    audit.close()


def replay(store: EpisodeStore, sequence: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    patient = f"prop-{uuid.uuid4().hex}"
    for kind, body in sequence:
        if kind == "observation":
            store.add_observation(patient, Observation.model_validate(body), key=None)
        else:
            store.add_treatment(patient, Treatment.model_validate(body), key=None)
    text = store.episode(patient)
    assert text is not None
    return json.loads(text)  # type: ignore[no-any-return]


def grades(episode: dict[str, Any]) -> list[tuple[str, int | None, int | None]]:
    """Per observation: its time and grades (sorted, since ties have no defined order)."""
    return sorted(
        (
            (e["observed_at"], (e["crs"] or {}).get("grade", -1), (e["icans"] or {}).get("grade", -1))
            for e in episode["timeline"]
        ),
        key=repr,
    )


# 250 examples, each two replays into SQLite; the masking and peak rules are pinned by
# tests/unit/test_episode_logic.py and the API scenarios of tests/api/test_episodes.py.
@settings(max_examples=examples(250))
@given(sequence=events, data=st.data())
def test_peak_is_the_maximum_and_arrival_order_does_not_matter(
    store: EpisodeStore, sequence: list[tuple[str, dict[str, Any]]], data: st.DataObject
) -> None:
    arrived = data.draw(st.permutations(sequence), label="arrival order")
    chronological = sorted(
        sequence, key=lambda event: event[1].get("observed_at") or event[1]["administered_at"]
    )
    a, b = replay(store, chronological), replay(store, arrived)

    for episode in (a, b):
        for domain in ("crs", "icans"):
            stored = [e[domain]["grade"] for e in episode["timeline"] if e[domain] and e[domain]["grade"] is not None]
            assert episode[domain]["peak_grade"] == (max(stored) if stored else None)
        times_seen = [e["observed_at"] for e in episode["timeline"]]
        assert times_seen == sorted(times_seen)

    assert grades(a) == grades(b)
    for domain in ("crs", "icans"):
        for key in ("peak_grade", "peak_at", "onset_at", "masking_since"):
            assert a[domain][key] == b[domain][key], (domain, key)
    observed = [body["observed_at"] for kind, body in sequence if kind == "observation"]
    if len(set(observed)) == len(observed):
        # Observations made at the same instant are ordered by arrival (the later one received is
        # the current one), so the current grade and resolution are compared only without ties.
        assert a["crs"] == b["crs"] and a["icans"] == b["icans"]
    def given_treatments(episode: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted((t["agent"], t["administered_at"]) for t in episode["treatments"])

    assert given_treatments(a) == given_treatments(b)
