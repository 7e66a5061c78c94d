"""The grading process: `POST /v1/assessments` is graded and put on record in a child process.

    web process (uvicorn, event loop)                  grading process (python -m service.grader)
    body bytes ── frame ──────────── socketpair ────▶  json.loads, Assessment, Engine.assess
                                                       (both evaluators), audit records of the
    answer ◀──── frame (one per batch) ◀────────────   whole batch committed in one transaction

Why a process of its own:
- Grading is CPU work (both evaluators, about 0.1-0.2 ms) and so is writing the audit record. In
  the web process they shared one interpreter lock with the HTTP work and with the audit writer's
  thread; in a process of their own they run beside it, on another core.
- durable_rules is a C extension that has crashed and hung the process on inputs it mishandles
  (../shared/spec/engine-notes.md and aegrade/_durable.py). A crash or a hang here costs the
  requests in flight a 500 or a 503 (never a grade), the crash is put on record, and a new grading
  process is started; the web process stays up.

What crosses the socket: the request body exactly as received, and back the result's JSON or what
went wrong. The grading process does what FastAPI did for a JSON body (`json.loads`, then the
Assessment model), so answers, errors and statuses are those of the in-process path. Frames are
pickles of plain tuples between two processes of this service, over a socketpair no one else holds.

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
from aegrade.errors import EngineError, InvalidAssessment
from aegrade.models import Assessment
from service.store import AuditRecord, AuditStore, RawJSON

__all__ = ["Grader", "GraderConfig", "GradingFailed", "Reply"]

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
    # Tests only: "module:function", a function (config -> Engine) that builds the engine instead,
    # to put a fault into the grading process (an evaluator that disagrees, a crash, a hang).
    engine_factory: str | None = None


@dataclass(frozen=True)
class Reply:
    """The grading process's answer to one body.

    kind: "graded" (payload: the result's JSON), "json_invalid" (payload: (position, message)),
    "unreadable" (the body could not be decoded), "invalid" (payload: pydantic's errors as
    (loc, msg, type)), "invalid_assessment" (payload: the engine's errors as (loc, msg, code)),
    "engine_error" (payload: (code, message); the failure is on record) or "store_unavailable"
    (payload: the message; nothing was recorded and no grade may be given).
    """

    kind: str
    payload: Any


class GradingFailed(Exception):
    """The grading process stopped, hung or could not be reached; no grade was given."""

    def __init__(self, message: str, *, crashed: bool) -> None:
        super().__init__(message)
        self.crashed = crashed


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
        self._outgoing: dict[_Worker, list[tuple[int, bytes]]] = {}
        self._flush_scheduled = False
        self._numbers = 0
        self.closing = False

    @property
    def pids(self) -> list[int | None]:
        return [worker.pid for worker in self.workers]

    @property
    def restarts(self) -> int:
        return sum(worker.restarts for worker in self.workers)

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

    async def grade(self, body: bytes, *, timeout: float) -> Reply:
        """Send one body to be graded and recorded; its Reply. GradingFailed when its grading
        process stopped, or gave no reply within `timeout` seconds (that process is then replaced)."""
        deadline = time.monotonic() + timeout
        worker = await self._choose(deadline)
        self._numbers += 1
        number = self._numbers
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        worker.pending[number] = future
        self._outgoing.setdefault(worker, []).append((number, body))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())):
                return await future
        except TimeoutError as exc:
            worker.pending.pop(number, None)
            worker.replace(f"no reply within {timeout:g} s")
            raise GradingFailed(f"the grading process gave no reply within {timeout:g} s", crashed=False) from exc

    async def _choose(self, deadline: float) -> _Worker:
        """The ready grading process with the fewest requests in flight (waiting while all restart)."""
        while True:
            ready = [worker for worker in self.workers if worker.ready.is_set()]
            if ready:
                return min(ready, key=lambda worker: len(worker.pending))
            if self.closing or time.monotonic() >= deadline:
                raise GradingFailed("no grading process is running (they are restarting)", crashed=False)
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

    def send(self, batch: list[tuple[int, bytes]]) -> None:
        if self._writer is None or self._writer.is_closing():
            self._fail([n for n, _ in batch], GradingFailed("the grading process is not running", crashed=True))
            return
        self._writer.write(_frame(batch))

    async def _receive(self, reader: asyncio.StreamReader, process: subprocess.Popen[bytes]) -> None:
        try:
            while True:
                replies = await _read_frame(reader)
                for number, kind, payload in replies:
                    future = self.pending.pop(number, None)
                    if future is not None and not future.done():
                        future.set_result(Reply(kind, payload))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
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

    def replace(self, why: str) -> None:
        """Stop this grading process (its requests in flight get no grade) and start another."""
        if self.grader.closing or (self._replacing is not None and not self._replacing.done()):
            return
        self.ready.clear()
        self._fail(list(self.pending), GradingFailed(f"the grading process was stopped: {why}", crashed=True))
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
                return
            except RuntimeError:
                logger.exception("the grading process could not be restarted; trying again in 5 s")
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
    """Wait up to `timeout` seconds for the process to exit (and reap it); whether it did."""
    try:
        await asyncio.to_thread(process.wait, timeout)
    except subprocess.TimeoutExpired:
        return False
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
    try:
        if config.engine_factory is not None:
            module, _, name = config.engine_factory.partition(":")
            engine = getattr(importlib.import_module(module), name)(config)
        else:
            engine = Engine(rules_dir=config.rules_dir, settings=config.rule_settings)
        store = AuditStore(config.database_url)
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
            for start in range(0, len(batch), MAX_BATCH):
                sock.sendall(_frame(_commit(store, _grade_batch(engine, batch[start : start + MAX_BATCH]))))
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


def _commit(store: AuditStore, graded: _Graded) -> list[tuple[int, str, Any]]:
    """Commit the batch's records in one transaction; its replies, a grade only once committed."""
    if not graded.records:
        return graded.replies
    committing = time.perf_counter()
    try:
        store.record_many(graded.records)
    except Exception as exc:  # StoreUnavailable, or anything else: no grade without its record
        logger.error("audit store unavailable: %s", exc)
        return [
            (number, "store_unavailable", f"audit records not stored: {type(exc).__name__}")
            if kind in ("graded", "engine_error") else (number, kind, payload)
            for number, kind, payload in graded.replies
        ]
    if graded.timings and logger.isEnabledFor(logging.INFO):
        logger.info(
            "committed in %.2f ms: %s",
            (time.perf_counter() - committing) * 1000,
            ", ".join(f"assessment {assessment_id} graded in {ms:.2f} ms" for assessment_id, ms in graded.timings),
        )
    return graded.replies


class _FrameReader:
    """Blocking reads of frames; `batch()` returns every body that has arrived, waiting for one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def batch(self) -> list[tuple[int, bytes]] | None:
        items: list[tuple[int, bytes]] = []
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


def _grade_batch(engine: Engine, batch: list[tuple[int, bytes]]) -> _Graded:
    """Grade every body of the batch: the replies, and the audit records they need committed."""
    replies: list[tuple[int, str, Any]] = []
    records: list[AuditRecord] = []
    timings: list[tuple[str, float]] = []
    for number, body in batch:
        started = time.perf_counter()
        try:
            parsed_json = json.loads(body)  # what FastAPI does with a JSON body
        except json.JSONDecodeError as exc:
            replies.append((number, "json_invalid", (exc.pos, exc.msg)))
            continue
        except Exception:  # not UTF-8 or UTF-16/32, nesting too deep, ...
            replies.append((number, "unreadable", None))
            continue
        try:
            assessment = Assessment.model_validate(parsed_json, from_attributes=True)  # as FastAPI validates a body
        except ValidationError as exc:
            errors = [(tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors(include_url=False, include_input=False)]
            replies.append((number, "invalid", errors))
            continue
        request_json = RawJSON(assessment.model_dump_json(exclude_unset=True))
        try:
            result = engine.assess(assessment)
        except InvalidAssessment as exc:
            replies.append((number, "invalid_assessment", [(tuple(e.loc), e.msg, e.code) for e in exc.errors]))
            continue
        except EngineError as exc:
            failure = AuditRecord.failed(
                request=request_json, code=exc.code, message=str(exc), duration_ms=(time.perf_counter() - started) * 1000
            )
            records.append(failure)
            replies.append((number, "engine_error", (exc.code, str(exc))))
            logger.error("assessment %s failed in the engine: %s", failure.id, exc.code)
            continue
        graded = time.perf_counter()
        body_json = result.model_dump_json()
        records.append(AuditRecord.graded(result, request=request_json, result_json=body_json, duration_ms=(graded - started) * 1000))
        replies.append((number, "graded", body_json))
        timings.append((result.id, (graded - started) * 1000))
    return _Graded(replies, records, timings)


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
