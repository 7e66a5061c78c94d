"""`python -m aegrade`, run as a user runs it: help on stdout, errors in one line with exit status 2,
never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "assessment.json"

pytestmark = pytest.mark.slow  # each test starts python -m aegrade, most build an engine (about 1 s each)


def aegrade(*args: str, stdin: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aegrade", *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_help_is_on_stdout_lists_the_commands_and_exits_0(flag: str) -> None:
    done = aegrade(flag)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("usage: python -m aegrade")
    for command in ("assess", "check", "schema", "--format json|text"):
        assert command in done.stdout


def test_a_command_s_help_is_the_help() -> None:
    done = aegrade("assess", "--help")
    assert done.returncode == 0 and "usage: python -m aegrade" in done.stdout


def test_no_argument_prints_usage_on_stderr_and_exits_2() -> None:
    done = aegrade()
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage: python -m aegrade") and "assess" in done.stderr


def test_an_unknown_command_is_one_line() -> None:
    assert "unknown command 'grade'" in one_line_error(aegrade("grade"))


def test_assess_a_file_as_json() -> None:
    done = aegrade("assess", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["crs"]["grade"], result["icans"]["grade"]) == (3, 3)


def test_assess_reads_stdin_with_a_dash_or_no_file() -> None:
    for args in (("assess", "-"), ("assess",)):
        done = aegrade(*args, stdin=EXAMPLE.read_text())
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["crs"]["grade"] == 3


def test_assess_text_is_a_summary_for_a_clinician() -> None:
    done = aegrade("assess", "--format", "text", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "CRS: grade 3, graded" in out and "ICANS: grade 3, graded" in out and "ICE" in out
    assert "hypotension requiring a vasopressor" in out
    assert "Flags: none" in out and "Not reported:" in out
    assert not out.lstrip().startswith("{")


def test_assess_text_shows_grade_max_flags_by_severity_actions_and_what_was_not_reported() -> None:
    request = {
        "patient": {"age_years": 7, "weight_kg": 24.5},
        "vitals": {"temperature_c": 39.0},
        "crs": {"fever_masked": False},
        "neuro": {"capd_score": 10, "consciousness": "awakens_to_voice", "seizure": "none", "motor": "none",
                  "cerebral_edema": "none", "icp_signs": []},
        "thrombosis": {"confirmed_thrombosis_site": "CSVT", "lmwh_agent": "enoxaparin", "lmwh_intent": "treatment"},
        "blinatumomab": {"dose": {"value": 15, "unit": "mcg/m2/day"}},
    }
    done = aegrade("assess", "--format=text", stdin=json.dumps(request))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "CRS: grade 1 (up to 4 with what was not reported), incomplete" in out
    assert "could be raised by reporting: crs." in out
    assert "ICANS: grade 3, graded" in out and "CAPD" in out
    flags = out.split("Flags:\n", 1)[1].split("Blinatumomab actions:", 1)[0]
    severities = [line.split()[0].rstrip("?") for line in flags.splitlines()]
    order = {"CRITICAL": 0, "WARNING": 1, "INFO": 2}
    assert severities and [order[s] for s in severities] == sorted(order[s] for s in severities)
    assert "NEURO-CSVT-RED-FLAG" in flags and "TE-CSVT-WITH-ICH (undetermined; missing thrombosis.ich_present)" in flags
    assert "BLIN-NEURO-G3-WITHHOLD: Label for neurological toxicity grade 3" in out
    assert "Notes:" in out
    assert "Not reported: CRS hypotension; CRS oxygen" in out


def test_bad_json_is_one_line_naming_the_place() -> None:
    line = one_line_error(aegrade("assess", "-", stdin='{"patient": {"age_years": 7,}}'))
    assert line.startswith("aegrade: assess: standard input is not JSON:") and "line 1, column" in line


def test_a_missing_file_is_one_line() -> None:
    assert one_line_error(aegrade("assess", "no-such-request.json")) == "aegrade: assess: no such file: no-such-request.json"


def test_an_empty_input_is_one_line() -> None:
    assert "is empty" in one_line_error(aegrade("assess", stdin=""))


def test_an_invalid_assessment_is_one_line_naming_the_field() -> None:
    request = {"patient": {"age_years": 9}, "neuro": {"ice_score": 8}}
    line = one_line_error(aegrade("assess", stdin=json.dumps(request)))
    assert line.startswith("aegrade: assess: invalid assessment: neuro.ice_score: CAPD applies to this patient")
    assert "(wrong_tool)" in line


def test_several_invalid_fields_stay_on_one_line() -> None:
    request = {"patient": {"age_years": 500}, "vitals": {"temperature_c": "hot"}, "extra": 1}
    line = one_line_error(aegrade("assess", stdin=json.dumps(request)))
    assert "patient.age_years" in line and "vitals.temperature_c" in line and "extra" in line


def test_bad_options_are_one_line() -> None:
    assert "--format must be json or text" in one_line_error(aegrade("assess", "--format", "xml", str(EXAMPLE)))
    assert "unknown option '--verbose'" in one_line_error(aegrade("assess", "--verbose"))
    assert "--format needs a value" in one_line_error(aegrade("assess", "--format"))


def test_check_lists_every_rule_set() -> None:
    done = aegrade("check")
    assert done.returncode == 0, done.stderr
    assert {line.split()[1].split("@")[0] for line in done.stdout.splitlines()} >= {"astct-crs", "astct-icans"}
    assert all(line.startswith("ok  ") for line in done.stdout.splitlines())


def test_check_of_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(aegrade("check", str(tmp_path / "nowhere")))
    assert line.startswith("aegrade: check: rule_file_invalid:")


def test_schema_writes_the_schema_of_a_rules_directory(tmp_path: Path) -> None:
    done = aegrade("schema", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {tmp_path / 'schema.json'}"
    written = json.loads((tmp_path / "schema.json").read_text())
    assert written == json.loads((REPO / "rules" / "schema.json").read_text())


def test_assess_with_another_rules_directory_that_is_missing_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(aegrade("assess", "--rules", str(tmp_path / "none"), str(EXAMPLE)))
    assert "rule_file_invalid" in line
