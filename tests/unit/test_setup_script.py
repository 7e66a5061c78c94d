"""The README's set-up command is scripts/setup, and CI (.ci/run) runs that same script and then the
README's test command: CI proves the set-up a new user follows."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup"


def _readme_commands() -> list[str]:
    """The commands of the README's set-up block (the first ```sh block of "Install, test, run")."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Install, test, run", 1)[1]
    block = re.search(r"^```sh\n(.*?)^```", section, re.S | re.M)
    assert block, "no ```sh block in the README's install section"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def _code_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_has_two_commands_and_the_run_command() -> None:
    commands = _readme_commands()
    assert commands == ["scripts/setup", ".venv/bin/python -m pytest", ".venv/bin/uvicorn service.app:app"], commands


def test_ci_runs_the_setup_script_then_the_readme_test_command() -> None:
    setup, test, _ = _readme_commands()
    lines = _code_lines(REPO / ".ci" / "run")
    setup_at = next(i for i, line in enumerate(lines) if line == setup)
    test_at = next(i for i, line in enumerate(lines) if line.startswith(test))
    assert setup_at < test_at
    assert not any("pip install" in line or "apt-get" in line or "npm install" in line for line in lines), (
        "installs belong in scripts/setup, which .ci/run calls"
    )
    assert 'export CI="${CI:-true}"' in lines
    assert lines[-1] == "exit $status"


def test_the_setup_script_is_executable_bash_and_installs_what_the_readme_says() -> None:
    assert os.access(SETUP, os.X_OK)
    text = SETUP.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(SETUP)], check=True)  # it parses
    for package in ("gcc", "-dev", "-venv", "chromium", "nodejs", "npm", "wrk", "curl", "openssl"):
        assert re.search(r"need \S*" + re.escape(package), text), package
    assert "apt-get install" in text and "sudo" in text
    assert not re.search(r"need \S*postgres", text) and "PostgreSQL is not installed" in text
    assert "pip install -q --disable-pip-version-check -e '.[dev]'" in text
    assert "npm install --prefix tests/browser" in text
