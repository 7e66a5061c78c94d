"""Every numeric threshold of the thrombosis flags and blinatumomab actions: below, at, above."""

from __future__ import annotations

from typing import Any

import pytest

import aegrade

PEG = {"asparaginase_product": "pegaspargase", "days_since_last_asparaginase": 10}
TX = {"lmwh_agent": "enoxaparin", "lmwh_intent": "treatment"}


def flag_ids(engine: aegrade.Engine, section: dict[str, Any], age: float = 7) -> set[str]:
    return {f.id for f in engine.assess({"patient": {"age_years": age}, "thrombosis": section}).flags}


CASES: list[tuple[str, dict[str, Any], float, str, bool]] = [
    # (what, thrombosis section, age, flag, fires)
    ("age 9.99", PEG, 9.99, "VTE-RISK-AGE10", False),
    ("age 10", PEG, 10, "VTE-RISK-AGE10", True),
    ("pegaspargase day 28", {**PEG, "days_since_last_asparaginase": 28}, 12, "VTE-RISK-AGE10", True),
    ("pegaspargase day 28.5", {**PEG, "days_since_last_asparaginase": 28.5}, 12, "VTE-RISK-AGE10", False),
    ("erwinia without a local window", {"asparaginase_product": "erwinia", "days_since_last_asparaginase": 2}, 12, "VTE-RISK-AGE10", False),
    ("erwinia day 7 of 7", {"asparaginase_product": "erwinia", "days_since_last_asparaginase": 7, "asp_window_days_local": 7}, 12, "VTE-RISK-AGE10", True),
    ("erwinia day 8 of 7", {"asparaginase_product": "erwinia", "days_since_last_asparaginase": 8, "asp_window_days_local": 7}, 12, "VTE-RISK-AGE10", False),
    ("BMI 94.9", {**PEG, "bmi_percentile": 94.9}, 7, "VTE-RISK-OBESITY", False),
    ("BMI 95", {**PEG, "bmi_percentile": 95}, 7, "VTE-RISK-OBESITY", True),
    ("Mitchell 2", {**PEG, "steroid": "dexamethasone", "cvc_present": True, "thrombophilia_traits": []}, 7, "VTE-SCORE-MITCHELL2008-HIGH", False),
    ("Mitchell 3", {**PEG, "steroid": "dexamethasone", "cvc_present": True, "thrombophilia_traits": ["FVL"]}, 7, "VTE-SCORE-MITCHELL2008-HIGH", True),
    ("Mitchell 3 by family history", {**PEG, "steroid": "prednisone", "cvc_present": True, "thrombophilia_traits": [], "family_history_vte": True}, 7, "VTE-SCORE-MITCHELL2008-HIGH", True),
    ("fibrinogen 1.0 = 0.5 LLN", {"fibrinogen_g_L": 1.0, "fibrinogen_lln_g_L": 2.0}, 7, "LAB-FIBRINOGEN-CTCAE-G3", False),
    ("fibrinogen 0.99", {"fibrinogen_g_L": 0.99, "fibrinogen_lln_g_L": 2.0}, 7, "LAB-FIBRINOGEN-CTCAE-G3", True),
    ("fibrinogen 0.5", {"fibrinogen_g_L": 0.5, "fibrinogen_lln_g_L": 2.0}, 7, "LAB-FIBRINOGEN-CTCAE-G3", True),
    ("fibrinogen 0.5 not G4", {"fibrinogen_g_L": 0.5, "fibrinogen_lln_g_L": 2.0}, 7, "LAB-FIBRINOGEN-CTCAE-G4", False),
    ("fibrinogen 0.49", {"fibrinogen_g_L": 0.49, "fibrinogen_lln_g_L": 2.0}, 7, "LAB-FIBRINOGEN-CTCAE-G4", True),
    ("fibrinogen 0.49 without LLN", {"fibrinogen_g_L": 0.49}, 7, "LAB-FIBRINOGEN-CTCAE-G4", True),
    ("fibrinogen 0.6 = 0.25 LLN of 2.4", {"fibrinogen_g_L": 0.6, "fibrinogen_lln_g_L": 2.4}, 7, "LAB-FIBRINOGEN-CTCAE-G4", False),
    ("fibrinogen 0.59 < 0.25 LLN of 2.4", {"fibrinogen_g_L": 0.59, "fibrinogen_lln_g_L": 2.4}, 7, "LAB-FIBRINOGEN-CTCAE-G4", True),
    ("AT 50", {**PEG, "antithrombin_pct": 50}, 7, "LAB-ANTITHROMBIN-LOW", False),
    ("AT 49.9", {**PEG, "antithrombin_pct": 49.9}, 7, "LAB-ANTITHROMBIN-LOW", True),
    ("aPTT 2.5 ULN", {"aptt_s": 75, "aptt_uln_s": 30}, 7, "LAB-APTT-CTCAE-G3", False),
    ("aPTT above 2.5 ULN", {"aptt_s": 75.1, "aptt_uln_s": 30}, 7, "LAB-APTT-CTCAE-G3", True),
    ("INR 2.5", {"inr": 2.5}, 7, "LAB-INR-CTCAE-G3", False),
    ("INR 2.51", {"inr": 2.51}, 7, "LAB-INR-CTCAE-G3", True),
    ("ALT 5 ULN", {"alt_U_L": 200, "alt_uln_U_L": 40, "alt_baseline_abnormal": False}, 7, "LAB-ALT-CTCAE-G3", False),
    ("ALT above 5 ULN", {"alt_U_L": 201, "alt_uln_U_L": 40, "alt_baseline_abnormal": False}, 7, "LAB-ALT-CTCAE-G3", True),
    ("ALT 20 ULN", {"alt_U_L": 800, "alt_uln_U_L": 40, "alt_baseline_abnormal": False}, 7, "LAB-ALT-CTCAE-G4", False),
    ("ALT above 20 ULN", {"alt_U_L": 801, "alt_uln_U_L": 40, "alt_baseline_abnormal": False}, 7, "LAB-ALT-CTCAE-G4", True),
    ("ALT with abnormal baseline", {"alt_U_L": 801, "alt_uln_U_L": 40, "alt_baseline_abnormal": True}, 7, "LAB-ALT-CTCAE-G4", False),
    ("ALT with baseline not reported", {"alt_U_L": 801, "alt_uln_U_L": 40}, 7, "LAB-ALT-CTCAE-G4", False),
    ("bilirubin 3 ULN", {"bilirubin_umol_L": 60, "bilirubin_uln_umol_L": 20, "bilirubin_baseline_abnormal": False}, 7, "LAB-BILI-CTCAE-G3", False),
    ("bilirubin above 3 ULN", {"bilirubin_umol_L": 60.1, "bilirubin_uln_umol_L": 20, "bilirubin_baseline_abnormal": False}, 7, "LAB-BILI-CTCAE-G3", True),
    ("bilirubin 10 ULN", {"bilirubin_umol_L": 200, "bilirubin_uln_umol_L": 20, "bilirubin_baseline_abnormal": False}, 7, "LAB-BILI-CTCAE-G4", False),
    ("bilirubin above 10 ULN", {"bilirubin_umol_L": 200.1, "bilirubin_uln_umol_L": 20, "bilirubin_baseline_abnormal": False}, 7, "LAB-BILI-CTCAE-G4", True),
    ("TG 5.7", {"triglycerides_mmol_L": 5.7}, 7, "LAB-TG-CTCAE-G3", False),
    ("TG 5.71", {"triglycerides_mmol_L": 5.71}, 7, "LAB-TG-CTCAE-G3", True),
    ("TG 11.4", {"triglycerides_mmol_L": 11.4}, 7, "LAB-TG-CTCAE-G4", False),
    ("TG 11.41", {"triglycerides_mmol_L": 11.41}, 7, "LAB-TG-CTCAE-G4", True),
    ("lipase 3 ULN with pain", {"lipase_U_L": 180, "lipase_uln_U_L": 60, "abdominal_pain": True}, 7, "PANC-PTWG-AAP", False),
    ("lipase above 3 ULN with pain", {"lipase_U_L": 180.5, "lipase_uln_U_L": 60, "abdominal_pain": True}, 7, "PANC-PTWG-AAP", True),
    ("amylase above 3 ULN with imaging", {"amylase_U_L": 301, "amylase_uln_U_L": 100, "pancreatic_imaging_positive": True}, 7, "PANC-PTWG-AAP", True),
    ("only one PTWG criterion", {"abdominal_pain": True}, 7, "PANC-PTWG-AAP", False),
    ("activity 0.1", {"asp_activity_sample_is_protocol_trough": True, "asparaginase_activity_IU_mL": 0.1}, 7, "ASP-ACTIVITY-BELOW-TARGET", False),
    ("activity 0.099", {"asp_activity_sample_is_protocol_trough": True, "asparaginase_activity_IU_mL": 0.099}, 7, "ASP-ACTIVITY-BELOW-TARGET", True),
    ("activity not a trough", {"asp_activity_sample_is_protocol_trough": False, "asparaginase_activity_IU_mL": 0.05}, 7, "ASP-ACTIVITY-BELOW-TARGET", False),
    ("enoxaparin 1.1 (tolerance 0.1)", {**TX, "enoxaparin_is_initial_dose": True, "enoxaparin_interval_h": 12, "enoxaparin_dose_mg_per_kg": 1.1}, 7, "AC-ENOX-START-DOSE-DEVIATES", True),
    ("enoxaparin 1.09", {**TX, "enoxaparin_is_initial_dose": True, "enoxaparin_interval_h": 12, "enoxaparin_dose_mg_per_kg": 1.09}, 7, "AC-ENOX-START-DOSE-DEVIATES", False),
    ("infant 1.5 mg/kg below 2 months", {**TX, "enoxaparin_is_initial_dose": True, "enoxaparin_interval_h": 12, "enoxaparin_dose_mg_per_kg": 1.5}, 1.9 / 12, "AC-ENOX-START-DOSE-DEVIATES", False),
    ("1.5 mg/kg at 2 months", {**TX, "enoxaparin_is_initial_dose": True, "enoxaparin_interval_h": 12, "enoxaparin_dose_mg_per_kg": 1.5}, 2 / 12, "AC-ENOX-START-DOSE-DEVIATES", True),
    ("enoxaparin 2.0", {**TX, "enoxaparin_interval_h": 12, "enoxaparin_dose_mg_per_kg": 2.0}, 7, "AC-ENOX-ABOVE-MAX", False),
    ("enoxaparin 2.01", {**TX, "enoxaparin_interval_h": 12, "enoxaparin_dose_mg_per_kg": 2.01}, 7, "AC-ENOX-ABOVE-MAX", True),
    ("anti-Xa 0.5", {**TX, "anti_xa_U_mL": 0.5, "anti_xa_hours_post_dose": 4}, 7, "AC-ANTIXA-SUBTHERAPEUTIC", False),
    ("anti-Xa 0.49", {**TX, "anti_xa_U_mL": 0.49, "anti_xa_hours_post_dose": 4}, 7, "AC-ANTIXA-SUBTHERAPEUTIC", True),
    ("anti-Xa 1.0", {**TX, "anti_xa_U_mL": 1.0, "anti_xa_hours_post_dose": 6}, 7, "AC-ANTIXA-SUPRATHERAPEUTIC", False),
    ("anti-Xa 1.01", {**TX, "anti_xa_U_mL": 1.01, "anti_xa_hours_post_dose": 6}, 7, "AC-ANTIXA-SUPRATHERAPEUTIC", True),
    ("anti-Xa 2.0", {**TX, "anti_xa_U_mL": 2.0, "anti_xa_hours_post_dose": 5}, 7, "AC-ANTIXA-HOLD-LEVEL", False),
    ("anti-Xa 2.01", {**TX, "anti_xa_U_mL": 2.01, "anti_xa_hours_post_dose": 5}, 7, "AC-ANTIXA-HOLD-LEVEL", True),
    ("anti-Xa at 3.9 h", {**TX, "anti_xa_U_mL": 0.3, "anti_xa_hours_post_dose": 3.9}, 7, "AC-ANTIXA-TIMING", True),
    ("anti-Xa at 4 h", {**TX, "anti_xa_U_mL": 0.3, "anti_xa_hours_post_dose": 4}, 7, "AC-ANTIXA-TIMING", False),
    ("anti-Xa at 6 h", {**TX, "anti_xa_U_mL": 0.3, "anti_xa_hours_post_dose": 6}, 7, "AC-ANTIXA-TIMING", False),
    ("anti-Xa at 6.1 h", {**TX, "anti_xa_U_mL": 0.3, "anti_xa_hours_post_dose": 6.1}, 7, "AC-ANTIXA-TIMING", True),
    ("anti-Xa time unknown", {**TX, "anti_xa_U_mL": 0.3}, 7, "AC-ANTIXA-TIMING", True),
    ("CrCl 30", {**TX, "crcl_mL_min_1_73m2": 30}, 7, "AC-RENAL-IMPAIRMENT", False),
    ("CrCl 29.9", {**TX, "crcl_mL_min_1_73m2": 29.9}, 7, "AC-RENAL-IMPAIRMENT", True),
    ("platelets 50", {**TX, "platelets_10e9_L": 50}, 7, "AC-PLT-25-50-ON-TREATMENT-LMWH", False),
    ("platelets 49.9", {**TX, "platelets_10e9_L": 49.9}, 7, "AC-PLT-25-50-ON-TREATMENT-LMWH", True),
    ("platelets 25", {**TX, "platelets_10e9_L": 25}, 7, "AC-PLT-25-50-ON-TREATMENT-LMWH", True),
    ("platelets 25 not below 25", {**TX, "platelets_10e9_L": 25}, 7, "AC-PLT-LT25-ON-TREATMENT-LMWH", False),
    ("platelets 24.9", {**TX, "platelets_10e9_L": 24.9}, 7, "AC-PLT-LT25-ON-TREATMENT-LMWH", True),
    ("platelets 30 on prophylaxis", {"lmwh_agent": "enoxaparin", "lmwh_intent": "prophylaxis", "platelets_10e9_L": 30}, 7, "AC-PLT-25-50-ON-TREATMENT-LMWH", False),
    ("AT 50 on LMWH", {"lmwh_agent": "other", "antithrombin_pct": 50}, 7, "AC-LMWH-LOW-ANTITHROMBIN", False),
    ("AT 49 on LMWH", {"lmwh_agent": "other", "antithrombin_pct": 49}, 7, "AC-LMWH-LOW-ANTITHROMBIN", True),
]


@pytest.mark.parametrize(("what", "section", "age", "flag", "fires"), CASES, ids=[c[0] for c in CASES])
def test_threshold(engine: aegrade.Engine, what: str, section: dict[str, Any], age: float, flag: str, fires: bool) -> None:
    assert (flag in flag_ids(engine, section, age)) is fires, what


def test_local_setting_is_named_in_the_flag_it_decides(engine: aegrade.Engine) -> None:
    result = engine.assess({"patient": {"age_years": 7}, "thrombosis": {**TX, "platelets_10e9_L": 30}})
    flag = next(f for f in result.flags if f.id == "AC-PLT-25-50-ON-TREATMENT-LMWH")
    settings = {i.setting for i in flag.interpretations}
    assert settings == {"asparaginase-thrombosis.plt_stop_10e9_l", "asparaginase-thrombosis.plt_full_dose_10e9_l"}
    assert all("local setting" in i.text for i in flag.interpretations)
    assert flag.evidence["platelets_10e9_L"] == 30 and flag.evidence["setting.plt_stop_10e9_l"] == 25


def test_site_settings_move_the_thresholds() -> None:
    engine = aegrade.Engine(settings={"asparaginase-thrombosis": {"at_low_pct": 70, "asp_window_pegaspargase_days": 14}})
    assert "LAB-ANTITHROMBIN-LOW" in flag_ids(engine, {**PEG, "antithrombin_pct": 65})
    assert "VTE-RISK-AGE10" not in flag_ids(engine, {**PEG, "days_since_last_asparaginase": 15}, 12)


def test_impossible_laboratory_values_are_refused(engine: aegrade.Engine) -> None:
    for section, loc in [
        ({"fibrinogen_g_L": -0.1}, ("thrombosis", "fibrinogen_g_L")),
        ({"fibrinogen_g_L": 20.1}, ("thrombosis", "fibrinogen_g_L")),
        ({"fibrinogen_lln_g_L": 0}, ("thrombosis", "fibrinogen_lln_g_L")),
        ({"antithrombin_pct": 301}, ("thrombosis", "antithrombin_pct")),
        ({"alt_uln_U_L": 0}, ("thrombosis", "alt_uln_U_L")),
        ({"platelets_10e9_L": True}, ("thrombosis", "platelets_10e9_L")),
        ({"lmwh_intent": "treatment"}, ("thrombosis", "lmwh_intent")),
        ({"prior_vte": False, "prior_asp_associated_vte": True}, ("thrombosis", "prior_vte")),
        ({"thrombophilia_traits": ["FVL", "FVL"]}, ("thrombosis", "thrombophilia_traits", 1)),
        ({"unknown_lab": 1}, ("thrombosis", "unknown_lab")),
    ]:
        with pytest.raises(aegrade.InvalidAssessment) as info:
            engine.assess({"patient": {"age_years": 7}, "thrombosis": section})
        assert loc in [e.loc for e in info.value.errors], (section, info.value.errors)
    with pytest.raises(aegrade.InvalidAssessment) as info:
        engine.assess({"patient": {"age_years": 7}, "thrombosis": {"on_blinatumomab": False}, "blinatumomab": {}})
    assert ("thrombosis", "on_blinatumomab") in [e.loc for e in info.value.errors]


# ---- blinatumomab ----------------------------------------------------------------------------


def actions(engine: aegrade.Engine, weight: float | None, neuro: dict[str, Any] | None, blin: dict[str, Any]) -> set[str]:
    patient: dict[str, Any] = {"age_years": 40}
    if weight is not None:
        patient["weight_kg"] = weight
        patient["height_cm"] = 150  # a dose charted in the other unit is compared after conversion (v1.1 §2)
    request: dict[str, Any] = {"patient": patient, "blinatumomab": blin}
    if neuro is not None:
        request["neuro"] = neuro
    return {a.id for a in engine.assess(request).actions}


# ICE 2 with every other ICANS domain reported as normal: ICANS grade 3, complete (grade_max 3).
NEURO_ICE_2 = {"ice_score": 2, "consciousness": "alert", "seizure": "none", "motor": "none", "cerebral_edema": "none", "icp_signs": []}


@pytest.mark.parametrize(
    ("weight", "dose", "band"),
    [
        (44.9, {"value": 15, "unit": "mcg/m2/day"}, "bsa"),
        (44.9, {"value": 28, "unit": "mcg/day"}, "bsa"),  # the weight decides the band, not the unit
        (45, {"value": 28, "unit": "mcg/day"}, "fixed"),
        (45, {"value": 15, "unit": "mcg/m2/day"}, "fixed"),
    ],
)
def test_weight_band_edge(engine: aegrade.Engine, weight: float, dose: dict[str, Any], band: str) -> None:
    patient = {"age_years": 40, "weight_kg": weight, "height_cm": 150}  # converts a dose charted in the other unit
    result = engine.assess({"patient": patient, "neuro": NEURO_ICE_2, "blinatumomab": {"dose": dose}})
    assert result.icans is not None and (result.icans.grade, result.icans.grade_max) == (3, 3)
    withhold = next(a for a in result.actions if a.id == "BLIN-NEURO-G3-WITHHOLD")
    assert withhold.rule == f"blin.neuro_g3_withhold.{band}"


def test_weight_band_unknown_without_weight_or_dose(engine: aegrade.Engine) -> None:
    """No weight and no dose: the band is unknown, and whether the dose was at the low step too, so
    withhold-or-discontinue is undetermined (v1.1), with the unknown-band wording."""
    result = engine.assess({"patient": {"age_years": 40}, "neuro": NEURO_ICE_2, "blinatumomab": {}})
    assert not {"BLIN-NEURO-G3-WITHHOLD", "BLIN-NEURO-G3-DISCONTINUE"} & {a.id for a in result.actions}
    withhold = next(a for a in result.undetermined_actions if a.id == "BLIN-NEURO-G3-WITHHOLD")
    assert withhold.rule == "blin.neuro_g3_withhold.unknown"
    assert "blinatumomab.dose" in withhold.missing
    assert "BLIN-NEURO-G3-DISCONTINUE" in {a.id for a in result.undetermined_actions}


@pytest.mark.parametrize(
    ("dose", "days", "expected"),
    [
        ({"value": 9, "unit": "mcg/day"}, None, "BLIN-NEURO-G3-DISCONTINUE"),
        ({"value": 28, "unit": "mcg/day"}, None, "BLIN-NEURO-G3-WITHHOLD"),
        ({"value": 5, "unit": "mcg/m2/day"}, None, "BLIN-NEURO-G3-DISCONTINUE"),
        ({"value": 15, "unit": "mcg/m2/day"}, 7, "BLIN-NEURO-G3-WITHHOLD"),
        ({"value": 15, "unit": "mcg/m2/day"}, 7.5, "BLIN-NEURO-G3-DISCONTINUE"),
    ],
)
def test_neuro_grade_3_withhold_or_discontinue(engine: aegrade.Engine, dose: dict[str, Any], days: float | None, expected: str) -> None:
    blin: dict[str, Any] = {"dose": dose}
    if days is not None:
        blin["days_to_resolution"] = days
    found = actions(engine, 70, NEURO_ICE_2, blin)
    assert expected in found and len(found & {"BLIN-NEURO-G3-WITHHOLD", "BLIN-NEURO-G3-DISCONTINUE"}) == 1


def test_neuro_grade_3_incomplete_leaves_the_action_undetermined(engine: aegrade.Engine) -> None:
    """ICE 2 alone is ICANS grade 3 at least, up to 4: the grade 3 action is not given as certain."""
    result = engine.assess({"patient": {"age_years": 40, "weight_kg": 70}, "neuro": {"ice_score": 2}, "blinatumomab": {"dose": {"value": 28, "unit": "mcg/day"}}})
    assert result.icans is not None and (result.icans.grade, result.icans.grade_max, result.icans.status) == (3, 4, "incomplete")
    assert "BLIN-NEURO-G3-WITHHOLD" not in {a.id for a in result.actions}
    assert {"BLIN-NEURO-G3-WITHHOLD", "BLIN-NEURO-G4-DISCONTINUE"} <= {a.id for a in result.undetermined_actions}


@pytest.mark.parametrize(("seizures", "fires"), [(0, False), (1, False), (2, True), (3, True)])
def test_seizure_count_edge(engine: aegrade.Engine, seizures: int, fires: bool) -> None:
    assert ("BLIN-SEIZURE-DISCONTINUE" in actions(engine, 70, None, {"seizures_this_course": seizures})) is fires
