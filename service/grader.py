"""The grading processes: every route's grading is done, and put on record, in a child process.

    web process (uvicorn, event loop)                  grading process (python -m service.grader)
    Job ──────── frame ──────────── socketpair ────▶   parse, Engine.assess (both evaluators),
    (JSON, form, FHIR, CDS Hooks, episodes)            audit records of the whole batch committed
    answer ◀──── frame (one per batch) ◀────────────   in one transaction (an episode write: its own)

Every route reaches this module through one function, `service.grading.grade_and_record`: the JSON
route sends the body as received, the form, FHIR and CDS Hooks routes the Assessment they parsed
(with what to keep on record and what to add to the result), the episode routes the observation or
treatment. The grading process writes every record of a grading; the web process writes only
the failure record of a grading process that crashed, and undelivered marks.

Why a process of its own:
- Grading is CPU work (both evaluators, about 0.1-0.2 ms) and so is writing the audit record. In
  the web process they shared one interpreter lock with the HTTP work and with the audit writer's
  thread; in a process of their own they run beside it, on another core.
- durable_rules is a C extension that has crashed and hung the process on inputs it mishandles
  (../shared/spec/engine-notes.md and aegrade/_durable.py). A crash or a hang here costs the
  requests in flight a 500 or a 503 (never a grade), the crash is put on record, and a new grading
  process is started; the web process stays up.

What crosses the socket: Jobs (a body as JSON text and what the route adds), and back the answer's
JSON or what went wrong. The grading process does what FastAPI does for a JSON body (`json.loads`,
then the model), so answers, errors and statuses are those of FastAPI's own path. Frames are pickles
of plain values between two processes of this service, over a socketpair no one else holds: a
length and a pickle, which `multiprocessing.connection` would also do, but with blocking reads that
the event loop cannot await.

A record is committed before its answer is sent, as on every other path: the grading process
commits the batch, then replies.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import logging
import os
import pickle
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from aegrade import Engine
from aegrade.episodes import Observation, Treatment
from aegrade.errors import EngineError, InvalidAssessment
from aegrade.fhir import FhirMapping, with_fhir_context
from aegrade.models import Assessment, AssessmentResult
from service.episodes import EpisodeStore
from service.errors import GradingFailed, IdempotencyKeyReused
from service.store import AuditRecord, AuditStore, RawJSON, StoreUnavailable

__all__ = ["Grader", "GraderConfig", "GradingFailed", "Job", "Reply", "recorded_request"]

logger = logging.getLogger("aegrade.service")

_HEADER = struct.Struct("!I")
READY_TIMEOUT_S = 120.0
MAX_BATCH = 16  # bodies graded and committed together (see _grading_process)


@dataclass(frozen=True)
class GraderConfig:
    """What the grading process needs to build the same engine and store as the web process."""

    database_url: str
    rules_dir: str | None
    rule_settings: dict[str, dict[str, Any]]
    log_level: str
    lock_timeout_s: float = 15.0  # every wait on the store (service/store.py)
    masking_window_hours: float | None = None  # episodes (service/episodes.py)
    # Tests only: "module:function", a function (config -> Engine) that builds the engine instead,
    # to put a fault into the grading process (an evaluator that disagrees, a crash, a hang).
    engine_factory: str | None = None


@dataclass(frozen=True)
class Job:
    """One grading for the grading process.

    kind: "assessment" (body: an Assessment as JSON text), "observation" or "treatment" (body: the
    episode route's Observation or Treatment as JSON text, for `patient_id`, with `key` its
    Idempotency-Key). `assessment_id` is the id the grading gets: the web process chooses it, so
    that it can mark the record undelivered when it cannot give the answer. `recorded_request`
    (JSON text) replaces the body as the record's request; `finish` names what is added to the
    result before it is recorded: ("fhir", mapping as JSON text, administrations_mask_fever).
    """

    kind: str
    body: bytes
    assessment_id: str
    recorded_request: str | None = None
    finish: tuple[Any, ...] | None = None
    patient_id: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Reply:
    """The grading process's answer to one body.

    kind: "graded" (payload: the result's JSON), "episode" (payload: (answer JSON, replayed)),
    "json_invalid" (payload: (line, column, message, position)), "unreadable" (the body could not be decoded),
    "invalid" (payload: pydantic's errors as (loc, msg, type)), "invalid_assessment" (payload: the
    engine's errors as (loc, msg, code)), "idempotency_conflict" (payload: the message),
    "engine_error" (payload: (code, message); the failure is on record) or "store_unavailable"
    (payload: the message; nothing was recorded and no grade may be given).
    """

    kind: str
    payload: Any



# ---- the web process's side -----------------------------------------------------------------------


class Grader:
    """A pool of grading processes: sends them bodies and awaits their replies; a process that
    stops or hangs is replaced. `grade()` must be awaited on the event loop that ran `start()`.

    `launch()` starts the processes at once, so that they build their engines while the web process
    builds its own; `start()` then waits until they are ready.
    """

    def __init__(self, config: GraderConfig, *, processes: int = 1) -> None:
        self.config = config
        self.expected_rulesets: list[tuple[str, str]] = []
        self.workers = [_Worker(self) for _ in range(processes)]
        self._outgoing: dict[_Worker, list[tuple[int, Job]]] = {}
        self._flush_scheduled = False
        self._numbers = 0
        self.closing = False

    @property
    def pids(self) -> list[int | None]:
        return [worker.pid for worker in self.workers]

    @property
    def restarts(self) -> int:
        return sum(worker.restarts for worker in self.workers)

    @property
    def can_grade(self) -> bool:
        """False while no grading process is ready and the latest attempt to start one failed: the
        service cannot grade until a retry succeeds (a process being replaced normally is True)."""
        return any(worker.ready.is_set() or not worker.start_failed for worker in self.workers)

    def launch(self) -> None:
        """Start every grading process (they build their engines meanwhile)."""
        for worker in self.workers:
            worker.launch()

    async def start(self, expected_rulesets: Sequence[tuple[str, str]]) -> None:
        """Wait until every grading process (launched, or started here) built an engine that passed
        its self-test with these rule sets, (id, sha256) as the web process loaded them; raises
        RuntimeError when one does not."""
        self.expected_rulesets = sorted(expected_rulesets)
        results = await asyncio.gather(*(worker.start() for worker in self.workers), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.close(timeout=5)
            raise failures[0]

    async def grade(self, job: Job, *, timeout: float) -> Reply:
        """Send one job to be graded and recorded; its Reply. GradingFailed when its grading
        process stopped, or gave no reply within `timeout` seconds (that process is then replaced)."""
        deadline = time.monotonic() + timeout
        worker = await self._choose(deadline)
        sent_at = time.monotonic()
        self._numbers += 1
        number = self._numbers
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        worker.pending[number] = future
        self._outgoing.setdefault(worker, []).append((number, job))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())):
                return await future
        except TimeoutError as exc:
            worker.pending.pop(number, None)
            if worker.last_reply_at < sent_at:
                # No reply of any kind since this job was sent: the process hangs. A process that
                # answered meanwhile is working through a backlog, and is left running.
                worker.replace(f"no reply within {timeout:g} s", crashed=False)
            raise GradingFailed(f"the grading process gave no reply within {timeout:g} s", crashed=False) from exc
        except asyncio.CancelledError:
            worker.pending.pop(number, None)
            raise

    async def _choose(self, deadline: float) -> _Worker:
        """The ready grading process with the fewest requests in flight (waiting while all restart)."""
        while True:
            ready = [worker for worker in self.workers if worker.ready.is_set()]
            if ready:
                return min(ready, key=lambda worker: len(worker.pending))
            if self.closing or time.monotonic() >= deadline:
                raise GradingFailed("no grading process is running (they are restarting)", crashed=False, sent=False)
            await asyncio.sleep(0.05)

    def _flush(self) -> None:
        """Send the bodies queued in this turn of the event loop, one frame per grading process."""
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, {}
        for worker, batch in outgoing.items():
            worker.send(batch)

    async def close(self, timeout: float = 30.0) -> None:
        """Let each grading process finish its batch and exit (it stops when its socket closes)."""
        self.closing = True
        await asyncio.gather(*(worker.close(timeout) for worker in self.workers))


class _Worker:
    """One grading process: its socket, its requests in flight, its replacement when it stops."""

    def __init__(self, grader: Grader) -> None:
        self.grader = grader
        self.process: subprocess.Popen[bytes] | None = None
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self.ready = asyncio.Event()
        self.restarts = 0
        self.start_failed = False  # the latest attempt to (re)start this process failed
        self.last_reply_at = 0.0  # time.monotonic() of the latest reply frame
        self._launched: socket.socket | None = None  # our end of a launched process's socketpair
        self._writer: asyncio.StreamWriter | None = None
        self._receiving: asyncio.Task[None] | None = None
        self._replacing: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def launch(self) -> None:
        ours, theirs = socket.socketpair()
        # A fresh interpreter running this module (not multiprocessing, whose "spawn" imports the
        # web process's __main__ again): it inherits one end of the socketpair and the standard
        # error, and gets its configuration as the first frame.
        process = subprocess.Popen(
            [sys.executable, "-m", "service.grader", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        theirs.close()
        ours.sendall(_frame(self.grader.config))  # small: fits the socket's buffer at once
        self.process = process
        self._launched = ours

    async def start(self) -> None:
        """Connect to the launched process (launching one if none is) and wait until it is ready."""
        if self._launched is None:
            self.launch()
        ours, process, self._launched = self._launched, self.process, None
        assert ours is not None and process is not None
        try:
            reader, writer = await asyncio.open_connection(sock=ours)
            ready = await asyncio.wait_for(_read_frame(reader), READY_TIMEOUT_S)
        except (asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
            ours.close()
            process.kill()
            await _reaped(process, 5)
            raise RuntimeError(f"the grading process did not start (exit code {process.returncode})") from exc
        expected = self.grader.expected_rulesets
        if ready[0] != "ready" or sorted(ready[1]) != expected:
            writer.close()
            process.kill()
            await _reaped(process, 5)
            if ready[0] != "ready":
                raise RuntimeError(f"the grading process could not start: {ready[1]}")
            raise RuntimeError(
                f"the grading process loaded other rule sets ({sorted(ready[1])}) than the web process "
                f"({expected}); were the rule files changed during startup?"
            )
        self._writer = writer
        self._receiving = asyncio.create_task(self._receive(reader, process))
        self.ready.set()
        logger.info("grading process %s ready", process.pid)

    def send(self, batch: list[tuple[int, Job]]) -> None:
        if self._writer is None or self._writer.is_closing():
            self._fail([n for n, _ in batch], GradingFailed("the grading process is not running", crashed=True))
            return
        self._writer.write(_frame(batch))

    async def _receive(self, reader: asyncio.StreamReader, process: subprocess.Popen[bytes]) -> None:
        try:
            while True:
                replies = await _read_frame(reader)
                self.last_reply_at = time.monotonic()
                for number, kind, payload in replies:
                    future = self.pending.pop(number, None)
                    if future is not None and not future.done():
                        future.set_result(Reply(kind, payload))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        self.ready.clear()  # no more jobs to a process whose socket is closed
        if self.grader.closing:
            return
        await _reaped(process, 1)
        message = f"the grading process stopped (exit code {process.returncode})"
        logger.error("%s; %d request(s) in flight get no grade; starting another", message, len(self.pending))
        self.replace(message)

    def _fail(self, numbers: list[int], error: GradingFailed) -> None:
        for number in numbers:
            future = self.pending.pop(number, None)
            if future is not None and not future.done():
                future.set_exception(error)

    def replace(self, why: str, *, crashed: bool = True) -> None:
        """Stop this grading process (its requests in flight get no grade) and start another.
        `crashed`: it stopped by itself (its requests get 500); else it hung and was stopped (503)."""
        if self.grader.closing or (self._replacing is not None and not self._replacing.done()):
            return
        self.ready.clear()
        self._fail(list(self.pending), GradingFailed(f"the grading process was stopped: {why}", crashed=crashed))
        self._replacing = asyncio.create_task(self._replace())

    async def _replace(self) -> None:
        old = self.process
        self._disconnect()
        if old is not None:
            old.kill()
            await _reaped(old, 10)
        self.restarts += 1
        while not self.grader.closing:
            try:
                await self.start()
                self.start_failed = False
                return
            except Exception as exc:  # noqa: BLE001 - whatever stopped it, try again: never leave no process
                self.start_failed = True
                logger.error("the grading process could not be restarted (%s); trying again in 5 s", type(exc).__name__)
                await asyncio.sleep(5)

    def _disconnect(self) -> None:
        if self._launched is not None:
            self._launched.close()
            self._launched = None
        if self._receiving is not None and self._receiving is not asyncio.current_task():
            self._receiving.cancel()
        if self._writer is not None:
            self._writer.close()
        self._writer = self._receiving = None

    async def close(self, timeout: float) -> None:
        if self._replacing is not None:
            self._replacing.cancel()
        self.ready.clear()
        self._disconnect()
        self._fail(list(self.pending), GradingFailed("the service is stopping", crashed=False))
        if self.process is not None and not await _reaped(self.process, timeout):
            self.process.kill()
            await _reaped(self.process, 5)


async def _reaped(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to `timeout` seconds for the process to exit (and reap it); whether it did. Polls on
    the event loop: no thread of the shared pool waits for it."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return pickle.loads(await reader.readexactly(size))


# ---- the grading process --------------------------------------------------------------------------


def _grading_process(sock: socket.socket) -> None:
    """The grading process: read its configuration, build the engine (self-tested) and the store,
    say ready, then grade batches until the web process closes the socket."""
    inbox = _FrameReader(sock)
    config = inbox.frame()
    if not isinstance(config, GraderConfig):
        return
    _configure_logging(config.log_level)
    sys.excepthook = _log_scrubbed  # an exception that ends the process: its type and frames, never its message
    try:
        if config.engine_factory is not None:
            module, _, name = config.engine_factory.partition(":")
            engine = getattr(importlib.import_module(module), name)(config)
        else:
            engine = Engine(rules_dir=config.rules_dir, settings=config.rule_settings)
        store = AuditStore(config.database_url, lock_timeout_s=config.lock_timeout_s, immediate=True)
        episodes = EpisodeStore(store, engine, masking_window_hours=config.masking_window_hours)
    except Exception as exc:  # reported to the web process, which refuses to start
        sock.sendall(_frame(("failed", f"{type(exc).__name__}: {exc}")))
        return
    sock.sendall(_frame(("ready", [(rs.id, rs.sha256) for rs in engine.rulesets])))
    gc.collect()
    gc.freeze()  # the engine lives as long as the process: never scan it again (as in service/app.py)
    # One thread: read what has arrived, grade it, commit it, reply; meanwhile the next bodies
    # gather in the socket. At most MAX_BATCH bodies a transaction, so that answers flow back to
    # the web process while the rest are graded: with 32 clients, unbounded batches kept both
    # processes waiting on each other (bench/service.py: about 2,500 POSTs/s, against 2,900 with 16,
    # 2,700 with 8 and 2,450 with 4, where syncs to disk add up). A committer thread beside the
    # grading one was slower still (1,650/s): the two contend for the interpreter lock and the
    # commits became small and frequent.
    try:
        while True:
            batch = inbox.batch()
            if batch is None:
                return
            # Once the store fails in this batch, the rest of it is answered store_unavailable at
            # once: waiting again for each slice or episode write would add up past the time limit.
            failed: str | None = None
            for start in range(0, len(batch), MAX_BATCH):
                graded = _grade_batch(engine, episodes, batch[start : start + MAX_BATCH], store_failed=failed)
                replies, failed = _commit(store, graded, graded.store_failed)
                sock.sendall(_frame(replies))
    except OSError:  # the web process is gone
        return
    finally:
        store.close()


@dataclass
class _Graded:
    """One batch graded: its replies, and the audit records to commit before they are sent."""

    replies: list[tuple[int, str, Any]]
    records: list[AuditRecord]
    timings: list[tuple[str, float]]  # (assessment id, grading time in ms)
    store_failed: str | None = None  # the store failed in this batch (the message)


def _commit(store: AuditStore, graded: _Graded, failed: str | None) -> tuple[list[tuple[int, str, Any]], str | None]:
    """Commit the batch's records in one transaction: its replies, a grade only once committed, and
    whether the store failed (`failed`: it already did in this batch, so no commit is tried)."""
    if not graded.records:
        return graded.replies, failed
    committing = time.perf_counter()
    if failed is None:
        try:
            store.record_many(graded.records)
        except Exception as exc:  # StoreUnavailable, or anything else: no grade without its record
            logger.error("audit store unavailable: %s", type(exc).__name__)
            failed = f"audit records not stored: {type(exc).__name__}"
            if getattr(exc, "commit_unknown", False):
                _mark_commit_unknown(store, [record.id for record in graded.records])
    if failed is not None:
        replies = [
            (number, "store_unavailable", failed) if kind in ("graded", "engine_error") else (number, kind, payload)
            for number, kind, payload in graded.replies
        ]
        return replies, failed
    if graded.timings and logger.isEnabledFor(logging.INFO):
        logger.info(
            "committed in %.2f ms: %s",
            (time.perf_counter() - committing) * 1000,
            ", ".join(f"assessment {assessment_id} graded in {ms:.2f} ms" for assessment_id, ms in graded.timings),
        )
    return graded.replies, None


def _mark_commit_unknown(store: AuditStore, assessment_ids: list[str]) -> None:
    """The COMMIT of these records failed, so the store may have kept them while the client is told
    503: mark them undelivered, so that a record that exists never says its grade was given. The
    store may refuse this too (it just failed): then it is logged, and the record, if it exists,
    is the one that cannot be corrected (as when the web process dies after a commit)."""
    try:
        store.mark_undelivered(assessment_ids, "the store's answer to the COMMIT was lost: recorded perhaps, not answered")
    except Exception as exc:  # noqa: BLE001 - the grading process must go on
        logger.error("records %s: COMMIT outcome unknown, and not marked undelivered: %s", ", ".join(assessment_ids[:3]), type(exc).__name__)


class _FrameReader:
    """Blocking reads of frames; `batch()` returns every body that has arrived, waiting for one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def batch(self) -> list[tuple[int, Job]] | None:
        items: list[tuple[int, Job]] = []
        while True:
            frame = self._take()
            if frame is not None:
                items.extend(frame)
                continue
            if items and not select.select([self.sock], [], [], 0)[0]:
                return items
            if not self._receive():
                return items or None

    def frame(self) -> Any:
        """The next whole frame, waiting for it; None when the socket closes first."""
        while True:
            frame = self._take()
            if frame is not None:
                return frame
            if not self._receive():
                return None

    def _receive(self) -> bool:
        """Wait for more bytes; False when the socket is closed."""
        chunk = self.sock.recv(1 << 20)
        self.buffer += chunk
        return bool(chunk)

    def _take(self) -> Any:
        if len(self.buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self.buffer)
        if len(self.buffer) < _HEADER.size + size:
            return None
        frame = pickle.loads(bytes(self.buffer[_HEADER.size : _HEADER.size + size]))
        del self.buffer[: _HEADER.size + size]
        return frame


def _grade_batch(
    engine: Engine, episodes: EpisodeStore, batch: list[tuple[int, Job]], *, store_failed: str | None = None
) -> _Graded:
    """Do every job of the batch: the replies, and the audit records they need committed (an
    episode job commits its own transaction, and is answered with the batch). Once the store has
    failed (`store_failed`), episode writes are answered store_unavailable without waiting again.

    An unexpected exception in one job is that job's engine error (no grade, on record), logged
    with its type and frames only (its message may quote the request): it never stops the process."""
    graded = _Graded([], [], [], store_failed)
    for number, job in batch:
        started = time.perf_counter()
        try:
            if job.kind == "assessment":
                kind, payload = _assessment(engine, job, started, graded)
            elif graded.store_failed is not None:
                kind, payload = "store_unavailable", graded.store_failed
            else:
                kind, payload = _episode(episodes, job, started, graded)
                if kind == "store_unavailable":
                    graded.store_failed = payload
        except Exception as exc:  # noqa: BLE001 - one job's fault is that job's answer
            kind, payload = _unexpected(job, exc, started, graded)
        graded.replies.append((number, kind, payload))
    return graded


def _unexpected(job: Job, exc: Exception, started: float, graded: _Graded) -> tuple[str, Any]:
    """An exception the engine does not raise on purpose: an engine error for this job, on record."""
    from service.middleware import scrubbed_traceback

    logger.error("%s %s: unexpected %s\n%s", job.kind, job.assessment_id, type(exc).__name__, scrubbed_traceback(exc))
    message = f"unexpected {type(exc).__name__} while grading; no grade was given"
    graded.records.append(
        AuditRecord.failed(
            request=recorded_request(job), code=EngineError.code, message=message,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
    )
    return "engine_error", (EngineError.code, message)


def recorded_request(job: Job) -> RawJSON:
    """The job's request as it goes on record: the JSON text it was sent as, else a JSON string."""
    text = job.recorded_request or job.body.decode("utf-8", errors="replace")
    try:
        return RawJSON(json.dumps(json.loads(text), allow_nan=False, ensure_ascii=False))
    except ValueError:
        return RawJSON(json.dumps(text, ensure_ascii=False))


def _parsed(body: bytes) -> tuple[str, Any]:
    """What FastAPI does with a JSON body: ("ok", the value) or the reply for a body that is not JSON."""
    try:
        return "ok", json.loads(body)
    except json.JSONDecodeError as exc:
        return "json_invalid", (exc.lineno, exc.colno, exc.msg, exc.pos)
    except Exception:  # not UTF-8 or UTF-16/32, nesting too deep, ...
        return "unreadable", None


def _pydantic_errors(exc: ValidationError) -> list[tuple[tuple[Any, ...], str, str]]:
    return [(tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors(include_url=False, include_input=False)]


def _assessment(engine: Engine, job: Job, started: float, graded: _Graded) -> tuple[str, Any]:
    """Grade one Assessment; its record joins the batch's."""
    kind, parsed_json = _parsed(job.body)
    if kind != "ok":
        return kind, parsed_json
    try:
        assessment = Assessment.model_validate(parsed_json, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as exc:
        return "invalid", _pydantic_errors(exc)
    request_json = RawJSON(job.recorded_request or assessment.model_dump_json(exclude_unset=True))
    try:
        result = engine.assess(assessment)
    except InvalidAssessment as exc:
        return "invalid_assessment", [(tuple(e.loc), e.msg, e.code) for e in exc.errors]
    except EngineError as exc:
        failure = AuditRecord.failed(
            request=request_json, code=exc.code, message=str(exc), duration_ms=(time.perf_counter() - started) * 1000
        )
        graded.records.append(failure)
        logger.error("assessment %s failed in the engine: %s", failure.id, exc.code)
        return "engine_error", (exc.code, str(exc))
    result = _finished(result.model_copy(update={"id": job.assessment_id}), job.finish)
    done = time.perf_counter()
    body_json = result.model_dump_json()
    graded.records.append(
        AuditRecord.graded(result, request=request_json, result_json=body_json, duration_ms=(done - started) * 1000)
    )
    graded.timings.append((result.id, (done - started) * 1000))
    return "graded", body_json


def _finished(result: AssessmentResult, finish: tuple[Any, ...] | None) -> AssessmentResult:
    """What the route adds to the result before it is recorded (Job.finish)."""
    if finish is None:
        return result
    if finish[0] == "fhir":
        _, mapping_json, administrations_mask_fever = finish
        return with_fhir_context(result, FhirMapping.model_validate_json(mapping_json), administrations_mask_fever)
    raise EngineError(f"unknown finish {finish[0]!r}")


def _episode(episodes: EpisodeStore, job: Job, started: float, graded: _Graded) -> tuple[str, Any]:
    """An episode write: graded and committed in its own transaction (service/episodes.py)."""
    assert job.patient_id is not None
    try:
        if job.kind == "observation":
            observation = Observation.model_validate_json(job.body)
            answer = episodes.add_observation(
                job.patient_id, observation, key=job.key, assessment_id=job.assessment_id
            )
        elif job.kind == "treatment":
            answer = episodes.add_treatment(job.patient_id, Treatment.model_validate_json(job.body), key=job.key)
        else:
            raise EngineError(f"unknown job {job.kind!r}")
    except ValidationError as exc:
        return "invalid", _pydantic_errors(exc)
    except InvalidAssessment as exc:
        return "invalid_assessment", [(tuple(e.loc), e.msg, e.code) for e in exc.errors]
    except IdempotencyKeyReused as exc:
        return "idempotency_conflict", str(exc)
    except StoreUnavailable as exc:
        logger.error("audit store unavailable: %s", exc)
        if exc.commit_unknown:
            _mark_commit_unknown(episodes.store, [job.assessment_id])
        return "store_unavailable", str(exc)
    except EngineError as exc:
        failure = AuditRecord.failed(
            request=RawJSON(job.body.decode()), code=exc.code, message=str(exc),
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        graded.records.append(failure)
        logger.error("%s %s failed in the engine: %s", job.kind, failure.id, exc.code)
        return "engine_error", (exc.code, str(exc))
    logger.info("%s stored in %.2f ms%s", job.kind, (time.perf_counter() - started) * 1000, " (replayed)" if answer.replayed else "")
    return "episode", (answer.body, answer.replayed)


def _log_scrubbed(kind: type[BaseException], exc: BaseException, _tb: Any) -> None:
    from service.middleware import scrubbed_traceback

    logger.critical("the grading process stopped: %s\n%s", kind.__name__, scrubbed_traceback(exc))


def _configure_logging(level: str) -> None:
    root = logging.getLogger("aegrade")
    root.setLevel(level)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s [grader {os.getpid()}]: %(message)s"))
    root.addHandler(handler)


if __name__ == "__main__":  # started by Grader as: python -m service.grader <socket fd>
    # Run the imported module's function, not this __main__ copy's: the configuration frame holds a
    # service.grader.GraderConfig.
    from service.grader import _grading_process as run

    run(socket.socket(fileno=int(sys.argv[1])))
