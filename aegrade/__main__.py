"""Command line for rule authors and quick checks.

    python -m aegrade check [RULES_DIR]      load every rule file and run its own test cases
    python -m aegrade schema [RULES_DIR]     write RULES_DIR/schema.json from the rule-file model
    python -m aegrade assess < request.json  grade one assessment (API request form) and print the result
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aegrade.engine import Engine
from aegrade.errors import AegradeError, InvalidAssessment
from aegrade.rulefile import canonical_json, default_rules_dir, rule_file_json_schema


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("check", "schema", "assess"):
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    rules_dir = Path(rest[0]) if rest else default_rules_dir()
    try:
        if command == "schema":
            target = rules_dir / "schema.json"
            target.write_text(canonical_json(rule_file_json_schema()))
            print(f"wrote {target}")
        elif command == "check":
            engine = Engine(rules_dir=rules_dir)
            for rs in engine.rulesets:
                print(f"ok  {rs.label}  {len(rs.rules)} rules, {len(rs.file.tests)} test cases  sha256 {rs.sha256}")
        else:
            result = Engine(rules_dir=rules_dir).assess(json.load(sys.stdin))
            print(result.model_dump_json(indent=2))
    except InvalidAssessment as exc:
        print(json.dumps({"detail": [e.as_dict() for e in exc.errors]}, indent=2, default=str))
        return 1
    except AegradeError as exc:
        print(f"{exc.code}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
