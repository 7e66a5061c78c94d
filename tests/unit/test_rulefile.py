"""Rule files: the real ones load and check; every kind of bad file fails naming the file and rule."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import aegrade
from aegrade.rulefile import canonical_json, default_rules_dir, load_ruleset, load_rulesets, rule_file_json_schema

RULES = default_rules_dir()
CRS_FILE = RULES / "crs" / "astct-2019.yaml"
ICANS_FILE = RULES / "icans" / "astct-2019.yaml"


def test_schema_json_is_generated_from_the_model() -> None:
    """rules/schema.json must be regenerated (python -m aegrade schema) when the model changes."""
    assert (RULES / "schema.json").read_text() == canonical_json(rule_file_json_schema())


def test_real_rule_files_load_with_unique_ids_and_every_rule_cited() -> None:
    loaded = load_rulesets()
    assert {rs.id for rs in loaded} >= {"astct-crs", "astct-icans"}
    for rs in loaded:
        assert len(rs.sha256) == 64
        for rule in rs.rules:
            assert rule.citation.strip() and rule.criterion.strip()
            assert rule.evidence_level in ("P", "R2", "R1", "U", "LOCAL")
            if rule.interpretation:  # the interpretation a rule applies is flagged as unverified
                assert rs.setting(rule.interpretation).evidence_level in ("U", "LOCAL"), rule.id


@pytest.mark.slow
def test_every_rule_is_reached_by_a_test_of_its_own_file(engine: aegrade.Engine) -> None:
    """Engine.self_test enforces this; here it is checked independently of that code path."""
    engines: dict[tuple[str, tuple[tuple[str, Any], ...]], aegrade.Engine] = {}
    for rs in engine.rulesets:
        reached: set[str] = set()
        for case in rs.file.tests:
            key = (rs.id, tuple(sorted(case.settings.items())))
            if key not in engines:
                engines[key] = aegrade.Engine(settings={rs.id: dict(case.settings)}, self_test=False)
            result = engines[key].assess(case.request)
            subject = rs.file.subject
            if subject in ("crs", "icans"):
                parts = [result.crs if subject == "crs" else result.icans, *result.other_scales]
                part = next(p for p in parts if p is not None and p.ruleset == rs.label)
                reached |= {d.rule for d in part.drivers}
            else:
                reached |= {o.rule for o in (result.flags if subject == "thrombosis" else result.actions)}
                if case.expect.undetermined is not None:  # a rule that can only be undetermined (unknown weight band)
                    reached |= {
                        o.rule
                        for o in (result.undetermined_flags if subject == "thrombosis" else result.undetermined_actions)
                    }
        assert reached == {r.id for r in rs.rules}


def test_hash_changes_with_the_file(tmp_path: Path) -> None:
    copy = tmp_path / "crs.yaml"
    copy.write_bytes(CRS_FILE.read_bytes())
    before = load_ruleset(copy).sha256
    copy.write_bytes(CRS_FILE.read_bytes() + b"\n# a comment\n")
    assert load_ruleset(copy).sha256 != before


# ---- bad files ---------------------------------------------------------------------------------


def _mutated(tmp_path: Path, mutate: Callable[[dict[str, Any]], None], source: Path = CRS_FILE) -> Path:
    data = yaml.safe_load(source.read_text())
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def _rule(data: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in data["rules"] if r["id"] == rule_id)


def _setting_test(data: dict[str, Any], rule_id: str) -> dict[str, Any]:
    """The first setting test of a rule whose condition is an `all`."""
    return next(part for part in _rule(data, rule_id)["when"]["all"] if "setting" in part)


BAD_FILES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("misspelled rule field", lambda d: _rule(d, "crs.fever.present").update(critrion="x"), "crs.fever.present"),
    (
        "string threshold",
        lambda d: _rule(d, "crs.fever.present").update(when={"fact": "temperature_c", "op": "gte", "value": "38.0"}),
        "not a number",
    ),
    (
        "boolean threshold",
        lambda d: _rule(d, "crs.fever.present").update(when={"fact": "temperature_c", "op": "gte", "value": True}),
        "not a number",
    ),
    (
        "unknown operator",
        lambda d: _rule(d, "crs.fever.present").update(when={"fact": "temperature_c", "op": "=>", "value": 38.0}),
        "crs.fever.present",
    ),
    (
        "unknown fact",
        lambda d: _rule(d, "crs.fever.present").update(when={"fact": "temprature_c", "op": "gte", "value": 38.0}),
        "unknown fact 'temprature_c'",
    ),
    (
        "unknown enum value",
        lambda d: _rule(d, "crs.oxygen.blow_by")["when"]["all"][0].update(value="blowby"),
        "'blowby' is not one of",
    ),
    (
        "ordering an enum",
        lambda d: _rule(d, "crs.oxygen.blow_by")["when"]["all"][0].update(op="gt"),
        "cannot be ordered",
    ),
    ("undeclared domain", lambda d: _rule(d, "crs.fever.present").update(domain="temperature"), "domain 'temperature'"),
    (
        "undeclared setting",
        lambda d: _setting_test(d, "crs.hypotension.vasopressin_only").update(setting="vasopresin_alone"),
        "undeclared setting",
    ),
    (
        "setting value outside its choices",
        lambda d: _setting_test(d, "crs.hypotension.vasopressin_only").update(value="maybe"),
        "not one of",
    ),
    ("grade out of range", lambda d: _rule(d, "crs.fever.present").update(grade=6), "crs.fever.present"),
    ("grade rule without grade", lambda d: _rule(d, "crs.fever.present").pop("grade"), "has a grade"),
    ("duplicate rule id", lambda d: d["rules"].append(dict(d["rules"][0])), "duplicate rule"),
    ("missing evidence level", lambda d: _rule(d, "crs.fever.present").pop("evidence_level"), "crs.fever.present"),
    ("bad evidence level", lambda d: _rule(d, "crs.fever.present").update(evidence_level="R3"), "crs.fever.present"),
    ("bad version", lambda d: d.update(version="1.0"), "version"),
    ("no tests", lambda d: d.update(tests=[]), "tests"),
    ("show of unknown context", lambda d: _rule(d, "crs.fever.present").update(show=["temp"]), "unknown context"),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_rule_file_is_refused_naming_file_and_rule(
    tmp_path: Path, name: str, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    path = _mutated(tmp_path, mutate)
    with pytest.raises(aegrade.RuleFileError) as info:
        load_ruleset(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message, message


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("rules: [unclosed")
    with pytest.raises(aegrade.RuleFileError, match="not valid YAML"):
        load_ruleset(path)


def _rules_dir_with(tmp_path: Path, crs: Callable[[dict[str, Any]], None]) -> Path:
    root = tmp_path / "rules"
    shutil.copytree(RULES, root)
    data = yaml.safe_load(CRS_FILE.read_text())
    crs(data)
    (root / "crs" / "astct-2019.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return root


def test_failing_self_test_stops_the_engine(tmp_path: Path) -> None:
    def wrong_threshold(data: dict[str, Any]) -> None:  # the ">= 6 L/min" error of other calculators
        _rule(data, "crs.oxygen.low_flow_nasal_cannula")["when"]["all"][1].update(op="lt")
        _rule(data, "crs.oxygen.high_flow")["when"]["all"][1].update(op="gte")

    with pytest.raises(aegrade.RuleSelfTestFailed) as info:
        aegrade.Engine(rules_dir=_rules_dir_with(tmp_path, wrong_threshold))
    assert "nc-6.0-low-flow" in str(info.value)


def test_a_rule_no_test_reaches_stops_the_engine(tmp_path: Path) -> None:
    def untested_rule(data: dict[str, Any]) -> None:
        data["rules"].append(
            {
                **_rule(data, "crs.oxygen.blow_by"),
                "id": "crs.oxygen.untested",
                # Never true in the file's cases, and possible only where blow-by already gives grade 2,
                # so it changes no case's grade_max: only the reach check can catch it.
                "when": {
                    "all": [
                        {"fact": "oxygen_device", "op": "eq", "value": "blow_by"},
                        {"fact": "oxygen_flow_l_min", "op": "gt", "value": 70.0},
                    ]
                },
            }
        )

    with pytest.raises(aegrade.RuleSelfTestFailed, match="crs.oxygen.untested"):
        aegrade.Engine(rules_dir=_rules_dir_with(tmp_path, untested_rule))


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(aegrade.SettingsError, match="unknown setting"):
        aegrade.Engine(settings={"astct-crs": {"facemask": "flow"}})
    with pytest.raises(aegrade.SettingsError, match="not one of"):
        aegrade.Engine(settings={"astct-crs": {"facemask_low_flow": "sometimes"}})
    with pytest.raises(aegrade.SettingsError, match="outside"):
        aegrade.Engine(settings={"astct-icans": {"capd_age_cutoff_years": 21}})
    with pytest.raises(aegrade.SettingsError, match="unknown or inactive rule set"):
        aegrade.Engine(settings={"astct-crs-2": {}})


def test_schema_file_is_valid_json_schema() -> None:
    import jsonschema

    schema = json.loads((RULES / "schema.json").read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
