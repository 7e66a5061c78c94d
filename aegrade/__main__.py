"""usage: python -m aegrade COMMAND [ARGUMENTS]

Commands:
  assess [FILE | -] [--format json|text] [--rules RULES_DIR]
                 grade one assessment (the body of POST /v1/assessments) read from FILE, or from
                 standard input when FILE is - or left out, and print the result: the JSON of the
                 API (--format json, the default) or a summary for a clinician (--format text)
  check [RULES_DIR]
                 load every rule file and run its own test cases
  schema [RULES_DIR]
                 write RULES_DIR/schema.json from the rule-file model
  help           this text (also -h, --help, and COMMAND --help)

RULES_DIR defaults to the rules/ of this checkout.

Exit status: 0 done; 2 an error, told in one line on standard error (a missing file, a body that
is not JSON, an invalid assessment naming each field, a rule file that fails its checks), or no
command (this text on standard error).

Examples:
  .venv/bin/python -m aegrade assess examples/assessment.json
  .venv/bin/python -m aegrade assess --format text < examples/assessment.json
  .venv/bin/python -m aegrade check
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from aegrade.errors import AegradeError, InvalidAssessment
from aegrade.models import AssessmentResult, DomainResult

USAGE = __doc__ or ""
COMMANDS = ("assess", "check", "schema", "help")
SEVERITY_ORDER = ("critical", "warning", "info")


class UsageError(Exception):
    """A command line or an input the CLI cannot take; printed as one line, exit status 2."""


def _fail(message: str) -> NoReturn:
    raise UsageError(message)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --- arguments ----------------------------------------------------------------------------------


def _parse_assess(args: Sequence[str]) -> tuple[str, str, Path | None]:
    source: str | None = None
    fmt = "json"
    rules: Path | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--format") or arg.startswith("--rules"):
            name, eq, value = arg.partition("=")
            if not eq:
                if i + 1 >= len(args):
                    _fail(f"assess: {name} needs a value")
                i += 1
                value = args[i]
            if name == "--format":
                if value not in ("json", "text"):
                    _fail(f"assess: --format must be json or text, not {value!r}")
                fmt = value
            elif name == "--rules":
                rules = Path(value)
            else:
                _fail(f"assess: unknown option {arg!r} (see python -m aegrade --help)")
        elif arg == "-" or not arg.startswith("-"):
            if source is not None:
                _fail(f"assess: one input at a time (got {source!r} and {arg!r})")
            source = arg
        else:
            _fail(f"assess: unknown option {arg!r} (see python -m aegrade --help)")
        i += 1
    return source or "-", fmt, rules


def _rules_dir(command: str, args: Sequence[str]) -> Path | None:
    if len(args) > 1:
        _fail(f"{command}: takes at most one argument, RULES_DIR (got {len(args)})")
    if args and args[0].startswith("-"):
        _fail(f"{command}: unknown option {args[0]!r} (see python -m aegrade --help)")
    return Path(args[0]) if args else None


# --- input --------------------------------------------------------------------------------------


def _read_request(source: str) -> Any:
    name = "standard input" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        _fail(f"assess: no such file: {source}")
    except IsADirectoryError:
        _fail(f"assess: {source} is a directory, not a file")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"assess: cannot read {name}: {_one_line(str(exc))}")
    if not text.strip():
        _fail(f"assess: {name} is empty: send one assessment as JSON (see examples/assessment.json)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"assess: {name} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")


def _engine(rules: Path | None) -> Any:
    from aegrade.engine import Engine  # imported here so that --help and usage errors stay fast

    return Engine(rules_dir=rules) if rules is not None else Engine()


# --- the text summary ---------------------------------------------------------------------------


def _grade_line(name: str, result: DomainResult, extra: str = "") -> str:
    if result.grade is None:
        grade = "no grade"
    else:
        grade = f"grade {result.grade}"
    if result.grade_max is not None and result.grade_max != result.grade:
        grade += f" (up to {result.grade_max} with what was not reported)"
    status = result.status.replace("_", " ")
    return f"{name}: {grade}, {status}  [{result.scale}{extra}, {result.ruleset}]"


def _domain_text(result: DomainResult) -> list[str]:
    lines = []
    driving = [d for d in result.drivers if d.drives]
    for driver in driving:
        lines.append(f"  because: {_one_line(driver.criterion)} ({driver.rule}, evidence {driver.evidence_level})")
    if result.domains:
        shown = ", ".join(f"{k} {'not reported' if v is None else v}" for k, v in result.domains.items())
        lines.append(f"  domains: {shown}")
    if result.undetermined_by:
        opened = ", ".join(f"{u.input} (up to {u.up_to})" for u in result.undetermined_by)
        lines.append(f"  could be raised by reporting: {opened}")
    for item in result.interpretations:
        lines.append(f"  interpretation: {item.setting} = {json.dumps(item.value)}")
    for note in result.notes:
        lines.append(f"  note: {_one_line(note)}")
    return lines


def summary(result: AssessmentResult) -> str:
    """A clinician-readable summary of a result: grades, flags by severity, actions, notes, and
    what was not reported."""
    out: list[str] = []
    not_reported: list[str] = []
    if result.crs is not None:
        out.append(_grade_line("CRS", result.crs))
        out += _domain_text(result.crs)
        not_reported += [f"CRS {d}" for d in result.crs.missing]
    else:
        out.append("CRS: not assessed (no vitals or crs section was sent)")
        not_reported.append("CRS (no vitals or crs section)")
    if result.icans is not None:
        out.append(_grade_line("ICANS", result.icans, f", {result.icans.tool or 'no tool'}"))
        out += _domain_text(result.icans)
        not_reported += [f"ICANS {d}" for d in result.icans.missing]
    else:
        out.append("ICANS: not assessed (no neuro section was sent)")
        not_reported.append("ICANS (no neuro section)")
    for other in result.other_scales:
        grade = "no grade" if other.grade is None else f"grade {other.grade}"
        if other.grade_max is not None and other.grade_max != other.grade:
            grade += f" (up to {other.grade_max})"
        out.append(f"{other.subject.upper()} on {other.scale}: {grade}, {other.status.replace('_', ' ')}")

    if result.flags or result.undetermined_flags:
        out.append("Flags:")
        for severity in SEVERITY_ORDER:
            for flag in (f for f in result.flags if f.severity == severity):
                out.append(f"  {severity.upper()}  {flag.id}: {_one_line(flag.message)}")
            for uflag in (f for f in result.undetermined_flags if f.severity == severity):
                out.append(
                    f"  {severity.upper()}?  {uflag.id} (undetermined; missing {', '.join(uflag.missing)}): "
                    f"{_one_line(uflag.message)}"
                )
    else:
        out.append("Flags: none")
    if result.actions or result.undetermined_actions:
        out.append("Blinatumomab actions:")
        for action in result.actions:
            out.append(f"  {action.id}: {_one_line(action.text)}")
            if action.superseded:
                out.append(f"    supersedes {', '.join(action.superseded)}")
        for uaction in result.undetermined_actions:
            out.append(f"  {uaction.id}? undetermined, missing {', '.join(uaction.missing)}: {_one_line(uaction.text)}")
    if result.notes:
        out.append("Notes:")
        out += [f"  - {_one_line(note)}" for note in result.notes]
    out.append("Not reported: " + ("; ".join(not_reported) if not_reported else "nothing the grades use"))
    out.append(f"Assessment {result.id} at {result.evaluated_at.isoformat()}; rule sets "
               + ", ".join(f"{r.id}@{r.version}" for r in result.rulesets))
    out.append("Decision support: the treating clinician confirms every grade and action.")
    return "\n".join(out) + "\n"


# --- commands -----------------------------------------------------------------------------------


def _assess(args: Sequence[str]) -> int:
    source, fmt, rules = _parse_assess(args)
    request = _read_request(source)
    try:
        result = _engine(rules).assess(request)
    except InvalidAssessment as exc:
        fields = "; ".join(
            f"{'.'.join(map(str, e.loc)) or '<root>'}: {_one_line(e.msg)} ({e.code})" for e in exc.errors
        )
        _fail(f"assess: invalid assessment: {fields}")
    sys.stdout.write(result.model_dump_json(indent=2) + "\n" if fmt == "json" else summary(result))
    return 0


def _check(args: Sequence[str]) -> int:
    engine = _engine(_rules_dir("check", args))
    for rs in engine.rulesets:
        print(f"ok  {rs.label}  {len(rs.rules)} rules, {len(rs.file.tests)} test cases  sha256 {rs.sha256}")
    return 0


def _schema(args: Sequence[str]) -> int:
    from aegrade.rulefile import canonical_json, default_rules_dir, rule_file_json_schema

    rules_dir = _rules_dir("schema", args) or default_rules_dir()
    if not rules_dir.is_dir():
        _fail(f"schema: no such directory: {rules_dir}")
    target = rules_dir / "schema.json"
    target.write_text(canonical_json(rule_file_json_schema()))
    print(f"wrote {target}")
    return 0


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv:
        sys.stderr.write(USAGE)
        return 2
    command, rest = argv[0], argv[1:]
    if command in ("-h", "--help", "help") or any(a in ("-h", "--help") for a in rest):
        sys.stdout.write(USAGE)
        return 0
    try:
        if command == "assess":
            return _assess(rest)
        if command == "check":
            return _check(rest)
        if command == "schema":
            return _schema(rest)
        _fail(f"unknown command {command!r}: use one of assess, check, schema (python -m aegrade --help)")
    except UsageError as exc:
        print(f"aegrade: {exc}", file=sys.stderr)
    except AegradeError as exc:
        print(f"aegrade: {command}: {exc.code}: {_one_line(str(exc))}", file=sys.stderr)
    except KeyboardInterrupt:
        print("aegrade: interrupted", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - the CLI's promise: one line, never a traceback
        print(f"aegrade: {command}: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
