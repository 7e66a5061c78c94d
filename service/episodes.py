"""Patient episodes in the store: observations and treatments, graded in the context of the history.

Tables (in the audit store's database, created with it):

    patients          one row per patient id; its row lock serializes the writes of one patient
    observations      the assessment as sent, observed_at, and its current grades and timeline entry
    treatments        agent, administered_at, dose
    idempotency_keys  (patient, Idempotency-Key) -> the answer given, replayed for a repeated POST

Each write is one transaction that holds the patient's lock (SELECT ... FOR UPDATE on PostgreSQL;
BEGIN IMMEDIATE on SQLite, which locks the whole database): read the history, grade, insert,
regrade the later observations whose history changed, write their audit records, commit. Two
concurrent writes for one patient therefore run one after the other and neither is lost; a write
that fails leaves nothing behind. Episodes never live in engine sessions (engine-notes.md): the
engine grades each observation statelessly, with the context derived here from the stored history.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    cast,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from aegrade import Engine
from aegrade.episodes import (
    BLINATUMOMAB_COURSE_AGENTS,
    Episode,
    FeverMasking,
    GivenTreatment,
    GradePoint,
    NeuroPoint,
    Observation,
    ObservationResult,
    Treatment,
    TreatmentRecord,
    TreatmentResult,
    apply_fever_masking,
    blinatumomab_course,
    domain_course,
    fever_masking,
    had_seizure,
    timeline_entry,
    with_episode_context,
)
from aegrade.models import Assessment
from service.errors import IdempotencyKeyReused
from service.store import (
    AuditRecord,
    AuditStore,
    CommitUnknown,
    StoreUnavailable,
    insert_records,
    metadata,
    store_unavailable,
    strict_json,
    transaction,
)

__all__ = ["EpisodeStore", "Replayable"]

logger = logging.getLogger("aegrade.episodes")

PATIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

patients = Table(
    "patients",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

observations = Table(
    "observations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("patient_id", String(64), ForeignKey("patients.id"), nullable=False),
    Column("observed_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("request", JSON, nullable=False),
    Column("assessment_id", String(32), nullable=False),
    Column("crs_grade", Integer, nullable=True),
    Column("crs_status", String(32), nullable=True),
    Column("icans_grade", Integer, nullable=True),
    Column("icans_status", String(32), nullable=True),
    Column("entry", JSON, nullable=False),
    Index("ix_observations_patient_time", "patient_id", "observed_at"),
)

treatments = Table(
    "treatments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("patient_id", String(64), ForeignKey("patients.id"), nullable=False),
    Column("agent", String(32), nullable=False),
    Column("administered_at", DateTime(timezone=True), nullable=False),
    Column("dose_mg", Float, nullable=True),
    Column("dose_unit", String(16), nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("ix_treatments_patient_time", "patient_id", "administered_at"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("patient_id", String(64), ForeignKey("patients.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("endpoint", String(32), nullable=False),
    Column("request_sha256", String(64), nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

_TIMELINE_ORDER = (observations.c.observed_at, observations.c.received_at, observations.c.id)



@dataclass(frozen=True)
class Replayable:
    """An answer (JSON text) and whether it is the replay of an earlier one."""

    body: str
    replayed: bool


def _utc(value: datetime) -> datetime:
    """A time read back: SQLite keeps no zone (every time is written in UTC)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class EpisodeStore:
    """Grades observations in the context of the stored history, and keeps episodes."""

    def __init__(self, store: AuditStore, engine: Engine, *, masking_window_hours: float | None = None) -> None:
        """`store`: its SQLAlchemy engine is the process's one. Writes need a store opened with
        `immediate=True` on SQLite (BEGIN IMMEDIATE: what a write reads, the history, cannot change
        before it commits); the grading processes open theirs so."""
        self.store = store
        self.db = store.engine
        self.backend = store.backend
        self.engine = engine
        self.masking_window_hours = masking_window_hours

    # -- writes -----------------------------------------------------------------------------------

    def add_observation(
        self, patient_id: str, observation: Observation, *, key: str | None, assessment_id: str | None = None
    ) -> Replayable:
        """Grade `observation` in the context of the history, store it, regrade the observations
        after it. `assessment_id`: the id its grading gets (chosen by the caller, so that the caller
        can mark the record undelivered when it cannot give the answer)."""
        sent = observation.model_dump_json(exclude_unset=True)
        assessment = observation.assessment()
        self.engine.validate(assessment)  # a contradiction is a 422 before any lock is taken
        observed_at = observation.observed_at.astimezone(timezone.utc)

        def write(conn: Connection, now: datetime) -> str:
            observation_id = uuid.uuid4().hex
            onset = self._onset_before(conn, patient_id, observed_at, inclusive=False)
            history = self._masking_treatments(conn, patient_id)
            course = self._blinatumomab_history(conn, patient_id, observed_at)
            result, masking, grading_ms = self._grade(assessment, observed_at, onset, history, course)
            if assessment_id is not None:
                result = result.model_copy(update={"id": assessment_id})
            as_sent = json.loads(sent)
            audit = [self._audit(result, as_sent, patient_id, observation_id, "graded", grading_ms)]
            conn.execute(
                observations.insert().values(
                    id=observation_id,
                    patient_id=patient_id,
                    observed_at=observed_at,
                    received_at=now,
                    request={k: v for k, v in as_sent.items() if k != "observed_at"},
                    **_grade_columns(observation_id, observed_at, result, masking),
                )
            )
            regraded = self._regrade_after(conn, patient_id, observed_at, history, audit)
            self._insert_audit(conn, audit)
            return ObservationResult(
                **result.model_dump(),
                patient_id=patient_id,
                observation_id=observation_id,
                observed_at=observed_at,
                fever_masking=masking,
                regraded=regraded,
            ).model_dump_json()

        return self._write(patient_id, key, "observations", sent, write)

    def add_treatment(self, patient_id: str, treatment: Treatment, *, key: str | None) -> Replayable:
        """Store a treatment; when it masks fever, regrade the observations after it."""
        sent = treatment.model_dump_json(exclude_unset=True)
        administered_at = treatment.administered_at.astimezone(timezone.utc)

        def write(conn: Connection, now: datetime) -> str:
            record = TreatmentRecord(
                id=uuid.uuid4().hex,
                agent=treatment.agent,
                administered_at=administered_at,
                dose_mg=treatment.dose_mg,
                dose_unit=treatment.dose_unit or ("mg" if treatment.dose_mg is not None else None),
                recorded_at=now,
                masks_fever=treatment.agent in self.engine.fever_masking.all_agents,
            )
            conn.execute(
                treatments.insert().values(patient_id=patient_id, **record.model_dump(exclude={"masks_fever"}))
            )
            regraded: list[str] = []
            if record.masks_fever or record.agent in BLINATUMOMAB_COURSE_AGENTS:
                audit: list[AuditRecord] = []
                history = self._masking_treatments(conn, patient_id)
                regraded = self._regrade_after(conn, patient_id, administered_at, history, audit)
                self._insert_audit(conn, audit)
            return TreatmentResult(**record.model_dump(), regraded=regraded).model_dump_json()

        return self._write(patient_id, key, "treatments", sent, write)

    def _write(
        self, patient_id: str, key: str | None, endpoint: str, sent: str, write: Callable[[Connection, datetime], str]
    ) -> Replayable:
        """One transaction under the patient's lock, with the Idempotency-Key checked inside it."""
        fingerprint = _sha256(f"{endpoint}\n{sent}")
        try:
            with transaction(self.db) as conn:
                now = datetime.now(timezone.utc)
                self._lock_patient(conn, patient_id, now)
                if key is not None:
                    earlier = conn.execute(
                        select(idempotency_keys.c.request_sha256, idempotency_keys.c.response).where(
                            idempotency_keys.c.patient_id == patient_id, idempotency_keys.c.key == key
                        )
                    ).first()
                    if earlier is not None:
                        if earlier.request_sha256 != fingerprint:
                            raise IdempotencyKeyReused(
                                f"Idempotency-Key {key!r} was used for a different request for this patient"
                            )
                        return Replayable(strict_json(earlier.response), replayed=True)
                body = write(conn, now)
                if key is not None:
                    conn.execute(
                        idempotency_keys.insert().values(
                            patient_id=patient_id,
                            key=key,
                            endpoint=endpoint,
                            request_sha256=fingerprint,
                            response=json.loads(body),
                            created_at=now,
                        )
                    )
                answer = Replayable(body, replayed=False)
        except (SQLAlchemyError, CommitUnknown) as exc:
            self.store.failed()
            raise store_unavailable("episode not written", exc) from exc
        self.store.succeeded()
        return answer

    def _lock_patient(self, conn: Connection, patient_id: str, now: datetime) -> None:
        locked = select(patients.c.id).where(patients.c.id == patient_id).with_for_update()
        if conn.execute(locked).first() is not None:
            return
        try:
            with conn.begin_nested():
                conn.execute(patients.insert().values(id=patient_id, created_at=now))
        except IntegrityError:
            pass  # created meanwhile by a concurrent first write (PostgreSQL): lock it
        conn.execute(locked)

    # -- grading in context -----------------------------------------------------------------------

    def _grade(
        self,
        assessment: Assessment,
        observed_at: datetime,
        onset: datetime | None,
        history: Sequence[GivenTreatment],
        course: tuple[list[NeuroPoint], list[GivenTreatment]] = ([], []),
    ) -> tuple[Any, FeverMasking | None, float]:
        """The result in the context of the history (fever masking; the blinatumomab course: seizures,
        recurrence, resolution), its masking, and the grading time in ms."""
        started = time.perf_counter()
        window = self.masking_window_hours
        declaration = self.engine.fever_masking
        masking = fever_masking(observed_at, onset, history, window_hours=window, declaration=declaration)
        graded, notes, interpretations = apply_fever_masking(
            assessment, masking, onset, window_hours=window, declaration=declaration
        )
        course_notes: list[str] = []
        spec = next(
            (rs.file.derivations.episode_course for rs in self.engine.rulesets if rs.file.subject == "blinatumomab"),
            None,
        )
        if spec is not None and graded.blinatumomab is not None:
            graded, course_notes = blinatumomab_course(
                graded,
                observed_at,
                course[0],
                course[1],
                grade_at_least=spec.grade_at_least,
                resolved_at_most=spec.resolved_at_most,
                resolution_days=spec.resolution_days,
            )
        result = with_episode_context(self.engine.assess(graded), notes, interpretations)
        if course_notes:
            result = result.model_copy(update={"notes": [*[f"blinatumomab: {n}" for n in course_notes], *result.notes]})
        return result, masking, (time.perf_counter() - started) * 1000

    def _blinatumomab_history(
        self, conn: Connection, patient_id: str, moment: datetime
    ) -> tuple[list[NeuroPoint], list[GivenTreatment]]:
        """The observations before `moment` (their ICANS grade and whether they report a seizure) and
        the blinatumomab starts and stops: what the label's seizure, recurrence and resolution rules
        read from the episode."""
        rows = conn.execute(
            select(observations.c.observed_at, observations.c.icans_grade, observations.c.request)
            .where(observations.c.patient_id == patient_id, observations.c.observed_at < moment)
            .order_by(*_TIMELINE_ORDER)
        ).all()
        points = [
            NeuroPoint(
                observed_at=_utc(row.observed_at),
                icans_grade=row.icans_grade,
                seizure=had_seizure(Assessment.model_validate_json(json.dumps(row.request))),
            )
            for row in rows
        ]
        given = conn.execute(
            select(treatments.c.agent, treatments.c.administered_at)
            .where(treatments.c.patient_id == patient_id, treatments.c.agent.in_(sorted(BLINATUMOMAB_COURSE_AGENTS)))
            .order_by(treatments.c.administered_at)
        )
        return points, [GivenTreatment(agent=row.agent, administered_at=_utc(row.administered_at)) for row in given]

    def _onset_before(self, conn: Connection, patient_id: str, moment: datetime, *, inclusive: bool) -> datetime | None:
        """The first observation graded CRS >= 1 before `moment` (or at it, when inclusive)."""
        when = observations.c.observed_at <= moment if inclusive else observations.c.observed_at < moment
        first = conn.execute(
            select(func.min(observations.c.observed_at)).where(
                observations.c.patient_id == patient_id, observations.c.crs_grade >= 1, when
            )
        ).scalar()
        return _utc(first) if first is not None else None

    def _masking_treatments(self, conn: Connection, patient_id: str) -> list[GivenTreatment]:
        rows = conn.execute(
            select(treatments.c.agent, treatments.c.administered_at)
            .where(treatments.c.patient_id == patient_id, treatments.c.agent.in_(sorted(self.engine.fever_masking.all_agents)))
            .order_by(treatments.c.administered_at)
        )
        return [GivenTreatment(agent=row.agent, administered_at=_utc(row.administered_at)) for row in rows]

    def _regrade_after(
        self,
        conn: Connection,
        patient_id: str,
        moment: datetime,
        history: Sequence[GivenTreatment],
        audit: list[AuditRecord],
    ) -> list[str]:
        """Grade again, in order, every observation after `moment`: their history has changed. The
        onset is carried along, since a regraded observation may become (or stop being) the onset."""
        later = conn.execute(
            select(observations.c.id, observations.c.observed_at, observations.c.request)
            .where(observations.c.patient_id == patient_id, observations.c.observed_at > moment)
            .order_by(*_TIMELINE_ORDER)
        ).all()
        if not later:
            return []
        onset = self._onset_before(conn, patient_id, moment, inclusive=True)
        regraded = []
        for row in later:
            observed_at = _utc(row.observed_at)
            assessment = Assessment.model_validate_json(json.dumps(row.request))
            course = self._blinatumomab_history(conn, patient_id, observed_at)
            result, masking, grading_ms = self._grade(assessment, observed_at, onset, history, course)
            conn.execute(
                update(observations)
                .where(observations.c.id == row.id)
                .values(**_grade_columns(row.id, observed_at, result, masking))
            )
            sent = {**row.request, "observed_at": observed_at.isoformat()}
            audit.append(self._audit(result, sent, patient_id, row.id, "regraded", grading_ms))
            if onset is None and result.crs is not None and (result.crs.grade or 0) >= 1:
                onset = observed_at
            regraded.append(row.id)
        return regraded

    def _audit(
        self, result: Any, sent: dict[str, Any], patient_id: str, observation_id: str, outcome: str, grading_ms: float
    ) -> AuditRecord:
        return AuditRecord(
            id=result.id,
            created_at=result.evaluated_at,
            outcome=outcome,
            request={"patient_id": patient_id, "observation_id": observation_id, "observation": sent},
            result=json.loads(result.model_dump_json()),
            error=None,
            rulesets=[r.model_dump(mode="json") for r in result.rulesets],
            duration_ms=grading_ms,
        )

    @staticmethod
    def _insert_audit(conn: Connection, records: list[AuditRecord]) -> None:
        insert_records(conn, records)

    # -- reads ------------------------------------------------------------------------------------

    def episode(self, patient_id: str) -> str | None:
        """The episode as JSON text, or None when the patient has no record."""
        started = time.perf_counter()
        try:
            with self.db.connect() as conn:
                if conn.execute(select(patients.c.id).where(patients.c.id == patient_id)).first() is None:
                    return None
                rows = conn.execute(
                    select(
                        observations.c.observed_at,
                        observations.c.crs_grade,
                        observations.c.crs_status,
                        observations.c.icans_grade,
                        observations.c.icans_status,
                        cast(observations.c.entry, Text).label("entry_json"),
                    )
                    .where(observations.c.patient_id == patient_id)
                    .order_by(*_TIMELINE_ORDER)
                ).all()
                given = conn.execute(
                    select(treatments)
                    .where(treatments.c.patient_id == patient_id)
                    .order_by(treatments.c.administered_at, treatments.c.recorded_at)
                ).mappings().all()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"episode unreadable: {type(exc).__name__}") from exc
        times = [_utc(r.observed_at) for r in rows]
        crs_points = _points(times, rows, "crs")
        icans_points = _points(times, rows, "icans")
        records = [
            TreatmentRecord(
                id=t["id"],
                agent=t["agent"],
                administered_at=_utc(t["administered_at"]),
                dose_mg=t["dose_mg"],
                dose_unit=t["dose_unit"],
                recorded_at=_utc(t["recorded_at"]),
                masks_fever=t["agent"] in self.engine.fever_masking.all_agents,
            )
            for t in given
        ]
        crs = domain_course(crs_points)
        if crs.onset_at is not None:
            since = next((t.administered_at for t in records if t.masks_fever and t.administered_at >= crs.onset_at), None)
            crs = crs.model_copy(update={"masking_since": since})
        head = Episode(patient_id=patient_id, crs=crs, icans=domain_course(icans_points), timeline=[], treatments=records)
        # The timeline entries were validated when stored; their JSON text is passed through as stored.
        empty = head.model_dump_json()
        text = empty.replace('"timeline":[]', '"timeline":[' + ",".join(r.entry_json for r in rows) + "]", 1)
        logger.info("episode read: %d observations in %.2f ms", len(rows), (time.perf_counter() - started) * 1000)
        return text


def _points(times: Sequence[datetime], rows: Sequence[Any], domain: str) -> list[GradePoint]:
    """The course points of one domain. The grade and status come from their columns; grade_max
    (v1.1) only from the stored timeline entry, read for the latest point alone (the current one)."""
    points = [
        GradePoint(t, getattr(r, f"{domain}_grade"), getattr(r, f"{domain}_status"))
        for t, r in zip(times, rows, strict=True)
        if getattr(r, f"{domain}_status")
    ]
    if points:
        latest = next(r for r in reversed(rows) if getattr(r, f"{domain}_status"))
        part = json.loads(latest.entry_json).get(domain) or {}
        grade_max = part.get("grade_max", points[-1].grade)
        points[-1] = GradePoint(points[-1].observed_at, points[-1].grade, points[-1].status, grade_max)
    return points


def _grade_columns(
    observation_id: str, observed_at: datetime, result: Any, masking: FeverMasking | None
) -> dict[str, Any]:
    entry = timeline_entry(observation_id, observed_at, result, masking)
    return {
        "assessment_id": result.id,
        "crs_grade": result.crs.grade if result.crs else None,
        "crs_status": result.crs.status if result.crs else None,
        "icans_grade": result.icans.grade if result.icans else None,
        "icans_status": result.icans.status if result.icans else None,
        "entry": entry.model_dump(mode="json"),
    }
