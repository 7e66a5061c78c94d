"""Every example in README.md runs as written and answers what the README shows.

How the README's fenced blocks are read (`readme_blocks`); every block is one of these, and a block
that is none of them fails `test_every_block_is_an_example_an_answer_or_marked`, so no runnable
example can be skipped silently:

- ```sh: a shell example, run with bash from the repository root. When it does not start the
  service itself, it runs against a real uvicorn (tests/api/server.py) on a free port with a fresh
  SQLite store; when it does (`.venv/bin/uvicorn service.app:app`), its own command is run, on a
  free port. Substituted in the example and its answers: `127.0.0.1:8000` -> the free port, the
  default store `sqlite:///./var/aegrade.sqlite3` -> a temporary one.
- ```python: a Python example, run in a subprocess (`.venv/bin/python -c`) from the repository
  root. A line `print(...)  # X` promises that the print writes the line X.
- ```json / ```jsonc right after an example (with only prose between, no heading): its answer. The example's
  standard output is read as a sequence of JSON values, and the answers' values (an answer block
  may hold several; one that is a list of members, `"a": 1, "b": 2`, is read as one object) are
  compared with the last ones printed, in order.
- ```text right after an example: its answer as text; each line must be a line of the output, in
  order, "…" standing for any text.
- ```jsonc whose first line is `// request`: a request and its answer in one block, after a line
  `// answer (shortened)` or `// answer (crs, shortened)` (then the answer is the result's `crs`).
  The request is posted to `POST /v1/assessments` of the running service.
- a block right after `<!-- not an example: REASON -->` (a non-empty reason): not run.

Comparison ("the README's shown fields equal the real ones", `assert_shown`):
- an object shows a subset of the real members (a `"...": "..."` member says so to the reader);
- a list shows every element, unless its last element is "..." / "…": then it shows the first ones;
- a string with "..." or "…" stands for its pieces in order ("…" alone: any string);
- numbers compare with a tolerance of 1e-9; everything else is equal.
- Per-run values are not compared, only their presence: members named in PER_RUN (ids of records,
  times of evaluation and recording, card uuids, sha256 of rule files) and the assessment id at the
  end of an audit-record link.
Error bodies are compared by the members the README shows, so that members added to them later
(a top-level code and message, say) do not break the README.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.server import Server, free_port

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PYTHON = REPO / ".venv" / "bin" / "python"
ELLIPSES = ("...", "…")
PER_RUN = {"id", "evaluated_at", "observation_id", "assessment_id", "recorded_at", "uuid", "sha256"}
NOT_AN_EXAMPLE = re.compile(r"<!--\s*not an example:\s*(\S.*?)\s*-->")
DEFAULT_STORE = "sqlite:///./var/aegrade.sqlite3"
STARTS_SERVICE = ".venv/bin/uvicorn service.app:app"
HEADING = "\0heading"


# --- reading the README -------------------------------------------------------------------------


@dataclass
class Block:
    line: int
    lang: str
    text: str
    marker: str | None  # the reason of a `not an example` marker right before it
    answers: list[Block] = field(default_factory=list)
    answer_of: Block | None = None  # the example this block answers
    new_section: bool = False  # a heading comes between this block and the one before

    @property
    def name(self) -> str:
        return f"README.md:{self.line} ({self.lang or 'no language'})"


def readme_blocks(text: str | None = None) -> list[Block]:
    lines = (text if text is not None else README.read_text()).splitlines()
    blocks: list[Block] = []
    i = 0
    prose_since: list[str] = []
    while i < len(lines):
        fence = re.match(r"^```(\S*)", lines[i])
        if not fence:
            if lines[i].startswith("#"):
                prose_since.append(HEADING)
            prose_since.append(lines[i])
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        before = [line for line in prose_since if line.strip()]
        marker = NOT_AN_EXAMPLE.search(before[-1]) if before else None
        blocks.append(Block(start + 1, fence.group(1), "\n".join(body) + "\n", marker.group(1) if marker else None))
        blocks[-1].new_section = HEADING in prose_since
        prose_since = []
    # Answers: json/jsonc/text blocks that follow an example with nothing but prose between.
    owner: Block | None = None
    for block in blocks:
        if block.new_section:
            owner = None
        if block.marker is not None:
            owner = None
        elif block.lang in ("sh", "python"):
            owner = block
        elif block.lang in ("json", "jsonc", "text") and owner is not None and not is_request_block(block):
            owner.answers.append(block)
            block.answer_of = owner
        else:
            owner = None
    return blocks


def is_request_block(block: Block) -> bool:
    return block.lang == "jsonc" and block.text.lstrip().startswith("// request")


def examples() -> list[Block]:
    return [b for b in readme_blocks() if b.marker is None and (b.lang in ("sh", "python") or is_request_block(b))]


def strip_comments(text: str) -> str:
    """// comments of jsonc, outside strings."""
    out = []
    for line in text.splitlines():
        in_string = False
        escaped = False
        cut = len(line)
        for j, ch in enumerate(line):
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = not in_string
            elif not in_string and line.startswith("//", j):
                cut = j
                break
        out.append(line[:cut])
    return "\n".join(out)


def json_values(text: str) -> list[Any]:
    """A sequence of JSON values; a list of members (`"a": 1, "b": 2`) is read as one object."""
    text = strip_comments(text).strip()
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    try:
        while position < len(text):
            value, position = decoder.raw_decode(text, position)
            values.append(value)
            while position < len(text) and text[position] in " \t\r\n":
                position += 1
        return values
    except json.JSONDecodeError:
        return [json.loads("{" + text + "}")]


# --- comparing ----------------------------------------------------------------------------------


def assert_shown(shown: Any, real: Any, path: str = "$") -> None:
    if isinstance(shown, dict):
        assert isinstance(real, dict), f"{path}: the README shows an object, the answer is {real!r:.200}"
        for key, value in shown.items():
            if key in ELLIPSES:
                continue
            assert key in real, f"{path}: the README shows {key!r}, the answer has only {sorted(real)}"
            if key in PER_RUN and not isinstance(value, (dict, list)):
                assert real[key] is not None or value is None, f"{path}.{key}: missing"
                continue
            assert_shown(value, real[key], f"{path}.{key}")
    elif isinstance(shown, list):
        assert isinstance(real, list), f"{path}: the README shows a list, the answer is {real!r:.200}"
        if shown and shown[-1] in ELLIPSES:
            shown = shown[:-1]
            assert len(real) >= len(shown), f"{path}: the README shows {len(shown)}+ items, the answer has {len(real)}"
        else:
            assert len(real) == len(shown), (
                f"{path}: the README shows {len(shown)} items, the answer has {len(real)}: {json.dumps(real)[:600]}"
            )
        for n, (s, r) in enumerate(zip(shown, real)):
            assert_shown(s, r, f"{path}[{n}]")
    elif isinstance(shown, str) and any(e in shown for e in ELLIPSES):
        assert isinstance(real, str), f"{path}: the README shows a string, the answer is {real!r}"
        pieces = re.split(r"\s*(?:\.\.\.|…)\s*", shown)
        assert re.fullmatch(".*?".join(re.escape(p) for p in pieces), real, re.S), (
            f"{path}: the README shows {shown!r}, the answer is {real!r}"
        )
    elif isinstance(shown, bool) or shown is None or isinstance(shown, str):
        assert shown == real, f"{path}: the README shows {shown!r}, the answer is {real!r}"
    elif isinstance(shown, (int, float)):
        assert isinstance(real, (int, float)) and not isinstance(real, bool), f"{path}: {real!r} is not a number"
        assert math.isclose(shown, real, rel_tol=1e-9, abs_tol=1e-9), f"{path}: the README shows {shown}, the answer is {real}"
    else:  # pragma: no cover
        raise AssertionError(f"{path}: cannot compare {shown!r}")


def assert_text_shown(shown: str, real: str, where: str) -> None:
    lines = real.splitlines()
    position = 0
    for expected in shown.strip().splitlines():
        pattern = re.compile(".*?".join(re.escape(p) for p in re.split(r"\s*(?:\.\.\.|…)\s*", expected.strip())))
        while position < len(lines) and not pattern.fullmatch(lines[position].strip()):
            position += 1
        assert position < len(lines), f"{where}: the README shows the line {expected!r}; the output was:\n{real}"
        position += 1


# --- running ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    store = tmp_path_factory.mktemp("readme") / "aegrade.sqlite3"
    server = Server({"AEGRADE_DATABASE_URL": f"sqlite:///{store}", "AEGRADE_API_KEYS": ""}).start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


def _substitute(text: str, port: int, store: str) -> str:
    text = text.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    text = text.replace(STARTS_SERVICE, f"{STARTS_SERVICE} --port {port}")
    return text.replace(DEFAULT_STORE, store)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGRADE_")}
    env["AEGRADE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'examples.sqlite3'}"
    env["AEGRADE_LOG_LEVEL"] = "WARNING"
    return env


def run_shell(block: Block, port: int, store: str, tmp_path: Path) -> str:
    script = _substitute(block.text, port, store)
    process = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the example's background service dies with its process group
    )
    try:
        out, err = process.communicate(timeout=120)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, f"{block.name} exited {process.returncode}:\n{err.decode()[-3000:]}"
    return out.decode()


def run_python(block: Block, tmp_path: Path) -> str:
    done = subprocess.run(
        [str(PYTHON), "-c", block.text], cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{block.name} raised:\n{done.stderr[-3000:]}"
    return done.stdout


def check_answers(block: Block, output: str, port: int, store: str) -> None:
    json_answers = [a for a in block.answers if a.lang in ("json", "jsonc")]
    text_answers = [a for a in block.answers if a.lang == "text"]
    for answer in text_answers:
        assert_text_shown(_substitute(answer.text, port, store), output, answer.name)
    if not json_answers:
        return
    shown = [v for a in json_answers for v in json_values(_substitute(a.text, port, store))]
    real = json_values(output)
    assert len(real) >= len(shown), f"{block.name}: {len(shown)} answers shown, {len(real)} printed:\n{output[:2000]}"
    for value, got in zip(shown, real[len(real) - len(shown):]):
        assert_shown(value, got, f"{block.name} answer")


EXAMPLES = examples()


@pytest.mark.slow  # about 30 s: a service, and a second one for the example that starts its own
@pytest.mark.parametrize("block", EXAMPLES, ids=[f"line{b.line}-{b.lang}" for b in EXAMPLES])
def test_readme_example(block: Block, service: Server, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    if block.lang == "python":
        output = run_python(block, tmp_path)
        promised = [m.group(1).strip() for m in re.finditer(r"^print\(.*\)\s+#\s*(.+)$", block.text, re.M)]
        assert output.splitlines() == promised, f"{block.name}: printed {output!r}, the README says {promised}"
        check_answers(block, output, service.port, store)
    elif block.lang == "sh":
        port = free_port() if STARTS_SERVICE in block.text else service.port
        output = run_shell(block, port, store, tmp_path)
        check_answers(block, output, port, store)
    else:
        request_text, _, answer_text = strip_comments_keep_answer(block.text)
        response = httpx.post(f"{service.url}/v1/assessments", json=json.loads(request_text), timeout=60)
        assert response.status_code == 200, f"{block.name}: {response.status_code} {response.text[:1000]}"
        real = response.json()
        subject = re.search(r"//\s*answer\s*\((?:(\w+),\s*)?shortened\)", block.text)
        assert subject, f"{block.name}: no `// answer (shortened)` line"
        if subject.group(1):
            real = real[subject.group(1)]
        (shown,) = json_values(answer_text)
        assert_shown(shown, real, f"{block.name} answer")


def strip_comments_keep_answer(text: str) -> tuple[str, str, str]:
    request, sep, answer = re.split(r"^(//\s*answer.*)$", text, maxsplit=1, flags=re.M)
    return strip_comments(request), sep, answer


def test_every_block_is_an_example_an_answer_or_marked() -> None:
    problems = []
    for block in readme_blocks():
        if block.marker is not None:
            continue
        if block.lang in ("sh", "python") or is_request_block(block) or block.answer_of is not None:
            continue
        problems.append(f"{block.name}: neither an example, nor an answer, nor marked <!-- not an example: why -->")
    assert not problems, "\n".join(problems)


def test_the_examples_cover_what_the_readme_promises() -> None:
    blocks = examples()
    shell = "\n".join(b.text for b in blocks if b.lang == "sh")
    for expected in ("/v1/assessments", "/v1/patients/", "/v1/fhir/assessments", "/cds-services/", "-m aegrade assess",
                     "Authorization: Bearer $KEY", "service.migrations"):
        assert expected in shell, expected
    assert any(b.lang == "python" and "Engine(settings=" in b.text for b in blocks)
    for block in blocks:
        for path in re.findall(r"examples/[\w./-]+\.json", block.text):
            assert (REPO / path).is_file(), f"{block.name}: {path} does not exist"


def test_the_comparison_reads_elisions() -> None:
    assert_shown({"a": 1, "...": "..."}, {"a": 1, "b": 2})
    assert_shown({"s": "Seizure ... CSVT ..."}, {"s": "Seizure, focal deficit - urgent imaging for CSVT (MRI)."})
    assert_shown([1, "..."], [1, 2, 3])
    assert_shown({"id": "bb46…"}, {"id": "0123"})
    with pytest.raises(AssertionError):
        assert_shown([1], [1, 2])
    with pytest.raises(AssertionError):
        assert_shown({"grade": 2}, {"grade": 3})
    with pytest.raises(AssertionError):
        assert_shown({"s": "abc…"}, {"s": "xbc"})
    assert json_values('"a": 1, "b": [2]') == [{"a": 1, "b": [2]}]
    assert json_values("401\n[1]\n") == [401, [1]]
    assert json_values('{"url": "http://x//y"} // a comment') == [{"url": "http://x//y"}]
