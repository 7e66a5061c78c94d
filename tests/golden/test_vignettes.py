"""The shared worked cases (../shared/vignettes/crs_icans.jsonl) as golden tests.

The copies in tests/golden/vignettes/ keep the repository self-contained; when ../shared is beside
the checkout, a test checks that the copies have not drifted from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import aegrade
from tests.conftest import SHARED

HERE = Path(__file__).resolve().parent / "vignettes"


def _cases(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.strip()]


CRS_ICANS = _cases("crs_icans.jsonl")


def test_all_sixteen_crs_icans_vignettes_are_present() -> None:
    assert len(CRS_ICANS) == 16
    assert len({c["id"] for c in CRS_ICANS}) == 16


@pytest.mark.parametrize("case", CRS_ICANS, ids=[c["id"] for c in CRS_ICANS])
def test_crs_icans_vignette(case: dict[str, Any], engine: aegrade.Engine) -> None:
    result = engine.assess(case["request"])
    expected = case["expected"]
    assert result.crs is not None and result.icans is not None
    assert result.crs.grade == expected["crs_grade"], case["justification"]
    assert result.icans.grade == expected["icans_grade"], case["justification"]
    # Every grade is explained: a graded result >= 1 names at least one driving rule.
    for part in (result.crs, result.icans):
        if part.grade:
            assert any(d.drives for d in part.drivers)


@pytest.mark.parametrize("name", ["crs_icans.jsonl", "thrombosis.jsonl"])
def test_vignette_copies_match_shared(name: str) -> None:
    shared = SHARED / "vignettes" / name
    if not shared.exists():
        pytest.skip(f"{shared} is not beside this checkout")
    assert (HERE / name).read_text() == shared.read_text()


THROMBOSIS = _cases("thrombosis.jsonl")


def test_all_ten_thrombosis_vignettes_are_present() -> None:
    assert len(THROMBOSIS) == 10


@pytest.mark.parametrize("case", THROMBOSIS, ids=[c["id"] for c in THROMBOSIS])
def test_thrombosis_vignette(case: dict[str, Any], engine: aegrade.Engine) -> None:
    """The expected flags are present with their severities, and no other flag fires."""
    result = engine.assess(case["request"])
    got = {(f.id, f.severity) for f in result.flags}
    expected = {(f["id"], f["severity"]) for f in case["expected_flags"]}
    assert got == expected, case["justification"]
    order = [f.severity for f in result.flags]
    assert order == sorted(order, key=["critical", "warning", "info"].index)  # most severe first
    for flag in result.flags:
        assert flag.evidence, flag.id  # every flag shows the values that fired it


SECTION_8_IDS = {
    "VTE-RISK-AGE10", "VTE-RISK-MEDIASTINAL-MASS", "VTE-RISK-ASP-STEROID", "VTE-RISK-CVC", "VTE-RISK-THROMBOPHILIA",
    "VTE-RISK-OBESITY", "VTE-RISK-NON-O", "VTE-RISK-PRIOR-VTE", "VTE-SCORE-MITCHELL2008-HIGH",
    "VTE-PROPHYLAXIS-NOT-DOCUMENTED", "LAB-FIBRINOGEN-CTCAE-G3", "LAB-FIBRINOGEN-CTCAE-G4", "LAB-ANTITHROMBIN-LOW",
    "LAB-APTT-CTCAE-G3", "LAB-INR-CTCAE-G3", "LAB-ALT-CTCAE-G3", "LAB-ALT-CTCAE-G4", "LAB-BILI-CTCAE-G3",
    "LAB-BILI-CTCAE-G4", "LAB-TG-CTCAE-G3", "LAB-TG-CTCAE-G4", "PANC-PTWG-AAP", "ASP-ACTIVITY-BELOW-TARGET",
    "HSR-ANAPHYLAXIS-CTCAE-G3PLUS", "HSR-ALLERGIC-REACTION", "NEURO-CSVT-RED-FLAG", "NEURO-CSVT-SOFT-SIGNS",
    "NEURO-BLINATUMOMAB-CONFOUNDER", "NEURO-TEG-DOES-NOT-EXCLUDE-THROMBOSIS", "NEURO-DDIMER-DOES-NOT-EXCLUDE-CSVT",
    "TE-CONFIRMED-CSVT", "TE-CONFIRMED-PE", "TE-CONFIRMED-ARTERIAL", "TE-CONFIRMED-DVT-OR-CVC", "TE-CSVT-WITH-ICH",
    "TE-TERMINOLOGY-TROUSSEAU", "AC-ENOX-START-DOSE-DEVIATES", "AC-ENOX-ABOVE-MAX", "AC-ANTIXA-TIMING",
    "AC-ANTIXA-SUBTHERAPEUTIC", "AC-ANTIXA-SUPRATHERAPEUTIC", "AC-ANTIXA-HOLD-LEVEL", "AC-RENAL-IMPAIRMENT",
    "AC-PLT-25-50-ON-TREATMENT-LMWH", "AC-PLT-LT25-ON-TREATMENT-LMWH", "AC-LP-WITHIN-24H", "AC-LMWH-LOW-ANTITHROMBIN",
    "REEXP-ASP-WITHOUT-ANTICOAG", "REEXP-ASP-IMAGING-NOT-DOCUMENTED",
}
BLINATUMOMAB_IDS = {
    "BLIN-CRS-G3-INTERRUPT", "BLIN-CRS-G4-DISCONTINUE", "BLIN-NEURO-G3-WITHHOLD", "BLIN-NEURO-G3-DISCONTINUE",
    "BLIN-NEURO-G4-DISCONTINUE", "BLIN-SEIZURE-DISCONTINUE", "BLIN-INTERRUPTION-CYCLE", "BLIN-RESTART-PREMEDICATION",
}


def test_every_section_8_flag_and_every_label_action_is_implemented(engine: aegrade.Engine) -> None:
    emitted = {r.file.id: {rule.emits for rule in r.rules} for r in engine.rulesets}
    assert emitted["asparaginase-thrombosis"] == SECTION_8_IDS
    assert emitted["blinatumomab-label-actions"] == BLINATUMOMAB_IDS
    severities = {
        rule.emits: rule.severity for r in engine.rulesets if r.file.id == "asparaginase-thrombosis" for rule in r.rules
    }
    spec = SHARED / "spec" / "asparaginase-thrombosis-research.md"
    if spec.exists():  # the ids and severities as §8 writes them
        import re

        section = spec.read_text().split("## 8. Declarative rule set", 1)[1].split("## 9.", 1)[0]
        pairs = re.findall(r"- id: ([A-Z0-9-]+)\n  when:.*?\n  severity: (\w+)", section, flags=re.S)
        assert {i for i, _ in pairs} == SECTION_8_IDS
        assert {i: s for i, s in pairs} == severities
        actions = set(re.findall(r"^\| (BLIN-[A-Z0-9-]+) \|", (SHARED / "spec" / "blinatumomab-actions.md").read_text(), flags=re.M))
        assert actions == BLINATUMOMAB_IDS
