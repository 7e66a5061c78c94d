"""The bedside form: what it asks, and how its fields become an Assessment.

The form posts plain `application/x-www-form-urlencoded` fields named by their place in the
Assessment (`vitals.sbp_mmhg`, `neuro.ice.orientation`, `neuro.capd.3`, ...), so an error that
pydantic or aegrade.validation reports for a place in the Assessment lands next to its field. A
field left blank is left out of the Assessment ("not reported"): nothing blank counts as normal.
The only fields where "not ticked" means "no" are the checkboxes that the Assessment itself
defines as checkboxes (symptoms and reaction features, aegrade.facts.CHECKBOXES) and the switches
that default to false in the model (developmental delay, the "explained by another cause"
attributions, intracranial hemorrhage, unable to perform). Yes/no questions have a third answer,
"not reported", which is their default.

Answers in words (issue 17): a choice of 5 or fewer is a row of radio buttons styled as buttons
(works without JavaScript); ICE items are buttons with their points; CAPD items are answered
Never/Rarely/Sometimes/Often/Always, and the button posts the item's points, reversed for items 1-4 as the
ICANS rule file declares (derivations.capd_answers), so the nurse answers the question as asked.

Forgiving numbers: a decimal comma is read when it cannot be a thousands separator ("38,5"); a
blood pressure written "85/50", a unit typed into the field ("94%", "38.5 C") and a comma that
could be either ("1,200") each get a message that says what to type. Every error of a submission
is given in one round: the fields that could not be read, the model's bounds for the rest, and the
engine's contradictions (service/pages.py passes the running engine).

Every label, hint, option and message is marked for translation (`N_` where defined, translated
where shown, service/i18n.py); the parser takes the request's `Translator` for its messages.

Validation is the API's: the same pydantic models and the same engine checks.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from aegrade.derive import fahrenheit_to_celsius
from aegrade.engine import Engine
from aegrade.errors import InvalidAssessment
from aegrade.facts import CHECKBOXES
from aegrade.models import Assessment, ThrombosisSection
from aegrade.rulefile import load_rulesets
from service.i18n import ENGLISH, N_, Translator

__all__ = [
    "CAPD_ANSWERS",
    "FIELDS",
    "FLOW_DEVICES",
    "FORM",
    "FormField",
    "FormSection",
    "assessment_from_form",
    "entered_values",
    "errors_from_validation",
    "field_name",
    "flow_devices",
    "form_values",
    "input_names",
    "parse_form",
]

Kind = Literal["number", "integer", "yesno", "check", "choice", "multi"]
YES_NO = (("yes", N_("Yes")), ("no", N_("No")))
SEGMENTED_MAX = 5
"""A choice with this many options or fewer is a row of buttons (radio inputs), not a select."""


@dataclass(frozen=True)
class FormField:
    name: str  # the HTML name and id, and (but for the few mapped below) the Assessment path
    label: str  # English, marked with N_; translated where shown
    kind: Kind
    options: tuple[tuple[str, str], ...] = ()
    unit: str = ""
    hint: str = ""
    group: str = ""  # fields shown together (ICE, CAPD, oxygen)

    @property
    def segmented(self) -> bool:
        """Shown as buttons (radio inputs) rather than a select."""
        return self.kind == "yesno" or (self.kind == "choice" and len(self.options) <= SEGMENTED_MAX)

    @property
    def choices(self) -> tuple[tuple[str, str], ...]:
        """The answers offered: the options, or yes and no."""
        return YES_NO if self.kind == "yesno" else self.options

    @property
    def stacked(self) -> bool:
        """Buttons one under another: answers too long to sit side by side on a phone."""
        return any(len(label) > 14 for _, label in self.choices)

    @property
    def blank_option(self) -> bool:
        """Offers "not reported" as an answer (ICE/CAPD items and the temperature unit do not)."""
        return self.kind in ("yesno", "choice") and self.group not in ("ice", "capd") and self.name != "vitals.temperature_unit"


@dataclass(frozen=True)
class FormSection:
    id: str
    title: str
    fields: tuple[FormField, ...]
    collapsed: bool = False
    hint: str = ""


def _options(*pairs: str) -> tuple[tuple[str, str], ...]:
    """("value", "label") pairs from "value=label" strings."""
    return tuple(tuple(p.split("=", 1)) for p in pairs)  # type: ignore[misc]


# ---- the fields ---------------------------------------------------------------------------------

PATIENT = FormSection(
    "patient",
    N_("Patient"),
    (
        FormField("patient.age_years", N_("Age"), "number", unit=N_("years"), hint=N_("Infants: 0 years and the months, or the months alone.")),
        FormField("patient.age_months", N_("and months"), "integer", unit=N_("months")),
        FormField("patient.weight_kg", N_("Weight"), "number", unit="kg"),
        FormField("patient.developmental_delay", N_("Baseline developmental delay (use CAPD at any age)"), "check"),
    ),
)

VITALS = FormSection(
    "vitals",
    N_("Vital signs"),
    (
        FormField("vitals.temperature", N_("Temperature"), "number", hint=N_("Highest in the last hours.")),
        FormField("vitals.temperature_unit", N_("Temperature unit"), "choice", (("c", "°C"), ("f", "°F"))),
        FormField("vitals.sbp_mmhg", N_("Systolic blood pressure"), "number", unit="mmHg", hint=N_("The upper number only, e.g. 85.")),
        FormField("vitals.map_mmhg", N_("Mean arterial pressure"), "number", unit="mmHg"),
        FormField(
            "vitals.spo2_pct", N_("SpO2"), "number", unit="%",
            hint=N_("ASTCT grades hypoxia by the oxygen support it needs, not by SpO2; a low SpO2 on room air adds a note."),
        ),
    ),
)

VASOPRESSORS = (
    ("none", N_("None running")),
    ("norepinephrine", N_("Norepinephrine")),
    ("epinephrine", N_("Epinephrine")),
    ("phenylephrine", N_("Phenylephrine")),
    ("dopamine", N_("Dopamine")),
    ("vasopressin", N_("Vasopressin")),
    ("other", N_("Other vasopressor")),
)
OXYGEN_DEVICES = (
    ("none", N_("None (room air)")),
    ("nasal_cannula", N_("Nasal cannula (low flow)")),
    ("blow_by", N_("Blow-by")),
    ("high_flow_nasal_cannula", N_("High-flow nasal cannula")),
    ("simple_facemask", N_("Simple face mask")),
    ("nonrebreather", N_("Non-rebreather mask")),
    ("venturi", N_("Venturi mask")),
    ("cpap", N_("CPAP")),
    ("bipap", N_("BiPAP")),
    ("mechanical_ventilation", N_("Mechanical ventilation")),
)


def flow_devices(engine: Engine) -> tuple[str, ...]:
    """The devices whose flow the form asks for: the CRS rule file's oxygen_flow (required, then asked)."""
    return engine.oxygen_flow.flow_devices


def _default_flow_devices() -> tuple[str, ...]:
    for ruleset in load_rulesets():
        declared = ruleset.file.derivations.oxygen_flow
        if ruleset.file.subject == "crs" and ruleset.file.status == "active" and ruleset.file.role == "primary" and declared:
            return declared.flow_devices
    raise LookupError("no active primary CRS rule file in rules/ declares derivations.oxygen_flow")


FLOW_DEVICES = _default_flow_devices()
"""The flow devices of the CRS rule file in rules/. The page reads the running engine's
(`flow_devices(engine)`: the template reads request.app.state.engine); this alias is for callers that
import the name."""

CRS = FormSection(
    "crs",
    N_("CRS: support and treatment"),
    (
        FormField(
            "crs.fever_masked",
            N_("Fever masked by treatment given for CRS (tocilizumab, a corticosteroid or an antipyretic)"),
            "yesno",
            hint=N_(
                "Yes: fever is no longer needed to grade CRS. Premedication does not count. "
                "Not reported without a fever: CRS cannot be graded."
            ),
        ),
        FormField("crs.fever_other_cause", N_("Fever explained by another cause (e.g. documented bacteraemia)"), "check"),
        FormField(
            "crs.hypotension",
            N_("Hypotension needing fluids or vasopressors"),
            "yesno",
            hint=N_("Not reported: judged from the blood pressure for the age."),
        ),
        FormField("crs.vasopressors", N_("Vasopressors running now"), "multi", VASOPRESSORS),
        FormField("crs.oxygen.device", N_("Oxygen device"), "choice", OXYGEN_DEVICES, group="oxygen"),
        FormField(
            "crs.oxygen.flow_l_min", N_("Oxygen flow"), "number", unit="L/min", group="oxygen",
            hint=N_("Needed for {flow_required}."),  # filled in by the template from the CRS rule file
        ),
        FormField("crs.hypotension_other_cause", N_("Hypotension has another cause (e.g. sepsis)"), "check"),
        FormField("crs.hypoxia_other_cause", N_("Hypoxia has another cause (e.g. pneumonia)"), "check"),
    ),
)

POINTS = {n: tuple((str(i), str(i)) for i in range(n + 1)) for n in (1, 3, 4)}
ICE_ITEMS = (
    FormField("neuro.ice.orientation", N_("Orientation: year, month, city, hospital"), "choice", POINTS[4], unit=N_("of 4"), group="ice"),
    FormField("neuro.ice.naming", N_("Names 3 objects"), "choice", POINTS[3], unit=N_("of 3"), group="ice"),
    FormField("neuro.ice.commands", N_("Follows simple commands"), "choice", POINTS[1], unit=N_("of 1"), group="ice"),
    FormField("neuro.ice.writing", N_("Writes a standard sentence"), "choice", POINTS[1], unit=N_("of 1"), group="ice"),
    FormField("neuro.ice.attention", N_("Counts back from 100 by 10"), "choice", POINTS[1], unit=N_("of 1"), group="ice"),
)

# CAPD answers: each item is answered Never, Rarely, Sometimes, Often or Always, and the buttons post
# the item's points. Which answer scores what, and which items score in reverse (1-4 ask about what a
# well child does), is the ICANS rule file's `derivations.capd_answers`; the total of 0-32 is what its
# rules grade (>= 9: grade 3). The words are ours, keyed by the rule file's answer ids.
CAPD_WORDS = {"never": N_("Never"), "rarely": N_("Rarely"), "sometimes": N_("Sometimes"), "often": N_("Often"), "always": N_("Always")}


def _capd_answers() -> tuple[tuple[tuple[str, str], ...], ...]:
    declared = next(
        (r.file.derivations.capd_answers for r in load_rulesets()
         if r.file.subject == "icans" and r.file.status == "active" and r.file.role == "primary" and r.file.derivations.capd_answers),
        None,
    )
    if declared is None:
        raise RuntimeError("the ICANS rule file declares no derivations.capd_answers: the form cannot score CAPD answers")
    return tuple(
        tuple((str(points), CAPD_WORDS[answer]) for points, answer in zip(declared.item_points(item), declared.answers, strict=True))
        for item in range(1, declared.items + 1)
    )


CAPD_ANSWERS = _capd_answers()
"""Per item: (score posted, answer word), in the order Never ... Always."""
# Short labels of our own: the CAPD instrument's text and anchor points are Cornell's (spec/README.md).
CAPD_LABELS = (
    N_("Makes eye contact"),
    N_("Acts with purpose"),
    N_("Aware of surroundings"),
    N_("Says what they need"),
    N_("Restless"),
    N_("Cannot be consoled"),
    N_("Moves little while awake"),
    N_("Slow to respond"),
)
CAPD_ITEMS = tuple(
    FormField(f"neuro.capd.{i}", label, "choice", CAPD_ANSWERS[i], unit=str(i + 1), group="capd")
    for i, label in enumerate(CAPD_LABELS)
)

NEURO = FormSection(
    "neuro",
    N_("ICANS: neurological assessment"),
    (
        *ICE_ITEMS,
        *CAPD_ITEMS,
        FormField("neuro.unable_to_perform", N_("Cannot do ICE/CAPD because unarousable"), "check"),
        FormField(
            "neuro.encephalopathy_other_cause",
            N_("Low ICE/CAPD score explained by another cause (e.g. delirium from sepsis)"),
            "check",
        ),
        FormField(
            "neuro.consciousness",
            N_("Level of consciousness"),
            "choice",
            (
                ("alert", N_("Alert, not drowsy")),
                ("awakens_spontaneously", N_("Awakens spontaneously")),
                ("awakens_to_voice", N_("Awakens to voice")),
                ("awakens_to_tactile", N_("Awakens only to tactile stimulus")),
                ("unarousable", N_("Unarousable or requires vigorous or repetitive tactile stimuli to arouse; stupor or coma")),
            ),
        ),
        FormField("neuro.consciousness_other_cause", N_("Drowsiness explained by sedation or another cause"), "check"),
        FormField(
            "neuro.seizure",
            N_("Seizure"),
            "choice",
            (
                ("none", N_("None")),
                ("resolved_rapidly", N_("Focal or generalized, resolved rapidly")),
                ("nonconvulsive_resolved_with_intervention", N_("Non-convulsive on EEG, resolved with treatment")),
                ("prolonged_over_5_min", N_("Prolonged (over 5 min)")),
                ("repetitive_without_return_to_baseline", N_("Repeated, without return to baseline")),
            ),
        ),
        FormField("neuro.seizure_other_cause", N_("Seizure explained by another cause (e.g. a venous infarct)"), "check"),
        FormField(
            "neuro.motor",
            N_("Motor findings"),
            "choice",
            (
                ("none", N_("None")),
                ("tremor_or_myoclonus", N_("Tremor or myoclonus only")),
                ("deep_focal_weakness", N_("Deep focal weakness (hemi- or paraparesis)")),
            ),
        ),
        FormField("neuro.motor_other_cause", N_("Weakness explained by another cause (e.g. a stroke)"), "check"),
        FormField(
            "neuro.cerebral_edema",
            N_("Cerebral edema on imaging"),
            "choice",
            (("none", N_("None")), ("focal", N_("Focal/local")), ("diffuse", N_("Diffuse"))),
        ),
        FormField(
            "neuro.icp_signs",
            N_("Signs of raised intracranial pressure"),
            "multi",
            (
                ("none", N_("None")),
                ("posturing", N_("Decerebrate or decorticate posturing")),
                ("cn6_palsy", N_("Cranial nerve VI palsy")),
                ("papilledema", N_("Papilledema")),
                ("cushings_triad", N_("Cushing's triad")),
            ),
        ),
        FormField("neuro.intracranial_hemorrhage", N_("Intracranial hemorrhage on imaging"), "check"),
        FormField(
            "neuro.icp_other_cause",
            N_("Cerebral edema or raised-pressure signs explained by another cause (e.g. the hemorrhage)"),
            "check",
        ),
    ),
    # {capd_age}: the ICANS rule set's capd_age_cutoff_years as the engine runs it (filled in by the template)
    hint=N_("ICE for age {capd_age} and over; CAPD under {capd_age} or with developmental delay. Fill the one that applies."),
)

# The thrombosis section is made from ThrombosisSection's fields; its words are ours, one entry per
# field (label, unit, hint), so that every one of them is marked for translation. A field the model
# gains without an entry here is still asked (with a label made from its name), and
# tests/api/test_form_i18n.py fails until it has one.
THROMBOSIS_WORDS: dict[str, tuple[str, str, str]] = {
    "on_all_therapy": (N_("On treatment for ALL (any phase)"), "", ""),
    "asparaginase_product": (N_("Asparaginase product"), "", ""),
    "days_since_last_asparaginase": (N_("Days since the last asparaginase dose"), N_("days"), ""),
    "asp_window_days_local": (N_("Exposure window for other asparaginase products"), N_("days"), N_("A local setting; no published source.")),
    "asparaginase_dose_planned_within_72h": (N_("Asparaginase dose planned within 72 hours"), "", ""),
    "steroid": (N_("Current corticosteroid"), "", N_("Prednisolone counts as prednisone.")),
    "on_blinatumomab": (N_("On blinatumomab"), "", N_("Taken as yes when the blinatumomab section is filled.")),
    "cvc_present": (N_("Central venous catheter in place"), "", ""),
    "immunophenotype": (N_("Immunophenotype"), "", ""),
    "mediastinal_mass_at_dx": (N_("Mediastinal mass at diagnosis"), "", ""),
    "bmi_percentile": (N_("BMI percentile for age and sex"), "", ""),
    "abo_group": (N_("ABO blood group"), "", ""),
    "thrombophilia_traits": (N_("Inherited thrombophilia"), "", ""),
    "family_history_vte": (N_("Family history of venous thrombosis"), "", ""),
    "prior_vte": (N_("Venous thrombosis before"), "", ""),
    "prior_asp_associated_vte": (N_("Venous thrombosis with asparaginase before"), "", ""),
    "fibrinogen_g_L": (N_("Fibrinogen"), "g/L", N_("From mg/dL: divide by 100.")),
    "fibrinogen_lln_g_L": (N_("Fibrinogen, lower limit of normal"), "g/L", ""),
    "antithrombin_pct": (N_("Antithrombin activity"), "%", ""),
    "d_dimer_mg_L_FEU": (N_("D-dimer"), "mg/L FEU", N_("mg/L FEU is the same as µg/mL FEU.")),
    "platelets_10e9_L": (N_("Platelets"), "×10⁹/L", ""),
    "aptt_s": (N_("aPTT"), "s", ""),
    "aptt_uln_s": (N_("aPTT, upper limit of normal"), "s", ""),
    "inr": (N_("INR"), "", ""),
    "alt_U_L": (N_("ALT"), "U/L", ""),
    "alt_uln_U_L": (N_("ALT, upper limit of normal"), "U/L", ""),
    "alt_baseline_abnormal": (N_("ALT abnormal before treatment"), "", ""),
    "bilirubin_umol_L": (N_("Total bilirubin"), "µmol/L", ""),
    "bilirubin_uln_umol_L": (N_("Bilirubin, upper limit of normal"), "µmol/L", ""),
    "bilirubin_baseline_abnormal": (N_("Bilirubin abnormal before treatment"), "", ""),
    "triglycerides_mmol_L": (N_("Triglycerides"), "mmol/L", N_("From mg/dL: divide by 88.5.")),
    "lipase_U_L": (N_("Lipase"), "U/L", ""),
    "lipase_uln_U_L": (N_("Lipase, upper limit of normal"), "U/L", ""),
    "amylase_U_L": (N_("Amylase"), "U/L", ""),
    "amylase_uln_U_L": (N_("Amylase, upper limit of normal"), "U/L", ""),
    "asparaginase_activity_IU_mL": (N_("Serum asparaginase activity"), "IU/mL", ""),
    "asp_activity_sample_is_protocol_trough": (N_("Activity sample taken at the protocol's trough time"), "", ""),
    "teg_hypocoagulable": (N_("TEG shows hypocoagulability"), "", ""),
    "headache": (N_("Headache"), "", ""),
    "vomiting": (N_("Vomiting"), "", ""),
    "visual_disturbance": (N_("Visual disturbance"), "", ""),
    "seizure": (N_("Seizure"), "", ""),
    "focal_deficit": (N_("Focal neurological deficit"), "", ""),
    "altered_consciousness": (N_("Altered consciousness"), "", ""),
    "papilledema": (N_("Papilledema"), "", ""),
    "abdominal_pain": (N_("Abdominal pain"), "", ""),
    "pancreatic_imaging_positive": (N_("Imaging shows pancreatitis"), "", ""),
    "reaction_temporally_related_to_asparaginase": (N_("Reaction soon after an asparaginase dose"), "", ""),
    "urticaria": (N_("Urticaria"), "", ""),
    "rash": (N_("Rash"), "", ""),
    "local_reaction": (N_("Reaction at the injection site"), "", ""),
    "bronchospasm": (N_("Bronchospasm"), "", ""),
    "hypotension": (N_("Hypotension with the reaction"), "", ""),
    "angioedema": (N_("Angioedema"), "", ""),
    "confirmed_thrombosis_site": (N_("Thrombosis confirmed on imaging, site"), "", ""),
    "ich_present": (N_("Intracranial hemorrhage"), "", ""),
    "imaging_clot_stable_or_improved": (N_("Clot stable or smaller on repeat imaging"), "", ""),
    "lmwh_agent": (N_("Low-molecular-weight heparin"), "", N_("Not reported: none documented.")),
    "lmwh_intent": (N_("Heparin given as"), "", ""),
    "enoxaparin_dose_mg_per_kg": (N_("Enoxaparin dose"), "mg/kg", ""),
    "enoxaparin_interval_h": (N_("Enoxaparin dosing interval"), N_("hours"), ""),
    "enoxaparin_is_initial_dose": (N_("This is the first enoxaparin dose"), "", ""),
    "anti_xa_U_mL": (N_("Anti-Xa activity"), "U/mL", ""),
    "anti_xa_hours_post_dose": (N_("Hours from the heparin dose to the anti-Xa sample"), N_("hours"), ""),
    "crcl_mL_min_1_73m2": (N_("Creatinine clearance"), "mL/min/1.73 m²", ""),
    "lp_planned_within_24h": (N_("Lumbar puncture planned within 24 hours"), "", ""),
}
THROMBOSIS_OPTIONS: dict[str, str] = {
    "none": N_("None"),
    "pegaspargase": N_("Pegaspargase"),
    "calaspargase": N_("Calaspargase pegol"),
    "erwinia": N_("Erwinia asparaginase"),
    "native_ecoli": N_("Native E. coli asparaginase"),
    "dexamethasone": N_("Dexamethasone"),
    "prednisone": N_("Prednisone or prednisolone"),
    "B": N_("B-cell"),
    "T": N_("T-cell"),
    "O": "O", "A": "A", "AB": "AB",
    "FVL": N_("Factor V Leiden"),
    "PT20210A": N_("Prothrombin G20210A"),
    "PROTEIN_C_DEF": N_("Protein C deficiency"),
    "PROTEIN_S_DEF": N_("Protein S deficiency"),
    "AT_DEF": N_("Antithrombin deficiency"),
    "LPA_HIGH": N_("High lipoprotein(a)"),
    "MTHFR_TT": N_("MTHFR TT"),
    "CSVT": N_("Cerebral sinus venous thrombosis"),
    "DVT": N_("Deep vein thrombosis"),
    "CVC": N_("Catheter-related thrombosis"),
    "PE": N_("Pulmonary embolism"),
    "arterial": N_("Arterial thrombosis"),
    "enoxaparin": N_("Enoxaparin"),
    "other": N_("Another heparin"),
    "treatment": N_("Treatment"),
    "prophylaxis": N_("Prophylaxis"),
}
"""The words of the thrombosis options ("B" is the immunophenotype; the ABO group "B" is a letter:
the same word serves both, since a blood group is not translated)."""


def _field_from_model(name: str, info: Any) -> FormField:
    """A form field for one ThrombosisSection field, from its type and our words for it."""
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    label, unit, hint = THROMBOSIS_WORDS.get(name, (name.replace("_", " ").capitalize(), "", ""))
    path = f"thrombosis.{name}"

    def options(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
        return tuple((v, THROMBOSIS_OPTIONS.get(v, v)) for v in values)

    if annotation == (bool | None):
        return FormField(path, label, "check" if name in CHECKBOXES else "yesno", hint=hint)
    if annotation == (float | None):
        return FormField(path, label, "number", unit=unit, hint=hint)
    if args and typing.get_origin(args[0]) is list:
        values = typing.get_args(typing.get_args(args[0])[0])
        # "None" says the list is empty (e.g. tested, no thrombophilia trait); nothing ticked is not reported
        return FormField(path, label, "multi", options(("none", *values)), hint=hint)
    if args and typing.get_origin(args[0]) is Literal:
        values = typing.get_args(args[0])
        if name == "abo_group":
            return FormField(path, label, "choice", tuple((v, v) for v in values), hint=hint)
        return FormField(path, label, "choice", options(values), hint=hint)
    raise TypeError(f"no form field for ThrombosisSection.{name}: {annotation}")


THROMBOSIS = FormSection(
    "thrombosis",
    N_("Asparaginase and thrombosis (optional)"),
    tuple(_field_from_model(n, f) for n, f in ThrombosisSection.model_fields.items()),
    collapsed=True,
    hint=N_("Symptoms left unticked count as absent; every other blank counts as not reported."),
)

BLINATUMOMAB = FormSection(
    "blinatumomab",
    N_("Blinatumomab (optional)"),
    (
        FormField("blinatumomab.on", N_("On blinatumomab now"), "check"),
        FormField("blinatumomab.dose.value", N_("Dose"), "number"),
        FormField("blinatumomab.dose.unit", N_("Dose unit"), "choice", (("mcg/day", "mcg/day"), ("mcg/m2/day", "mcg/m²/day"))),
        FormField("blinatumomab.seizures_this_course", N_("Seizures in this course"), "integer"),
        FormField("blinatumomab.days_to_resolution", N_("Days the last grade 3+ toxicity took to resolve"), "number", unit=N_("days")),
    ),
    collapsed=True,
)

FORM: tuple[FormSection, ...] = (PATIENT, VITALS, CRS, NEURO, THROMBOSIS, BLINATUMOMAB)
FIELDS: dict[str, FormField] = {f.name: f for s in FORM for f in s.fields}
GROUPS = {"neuro.ice", "neuro.capd", "crs.oxygen", "blinatumomab.dose"}
LABELS: dict[str, str] = {name: f.label for name, f in FIELDS.items()} | {"neuro.ice": N_("ICE"), "neuro.capd": N_("CAPD")}
"""What the error summary calls each field or group (English; translated where shown)."""


def input_names(tr: Translator = ENGLISH) -> dict[str, str]:
    """Request path -> the form's word for it, translated: how the nurse view names an unreported
    input ("Hypotension needing fluids or vasopressors", not crs.hypotension)."""
    names = {name: tr(label) for name, label in LABELS.items()}
    names |= {
        "vitals.temperature_c": tr(N_("Temperature")),
        "vitals.temperature_f": tr(N_("Temperature")),
        "crs.oxygen": tr(N_("Oxygen device")),
        "neuro.ice_score": tr(N_("ICE")),
        "neuro.capd_score": tr(N_("CAPD")),
        "neuro.ice": tr(N_("ICE")),
        "neuro.capd": tr(N_("CAPD")),
        "blinatumomab.dose": tr(N_("Dose")),
        "crs.ctcae_v4_grade3": tr(N_("CTCAE v4.03 CRS grade (pressor or ventilator)")),
        "patient.height_cm": tr(N_("Height")),
    }
    return names


# ---- parsing ------------------------------------------------------------------------------------


@dataclass
class Parsed:
    data: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def put(self, path: str, value: Any) -> None:
        node = self.data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value


_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
"""A number as typed at the bedside: ASCII digits 0-9, an optional sign and decimal point. Not what
float() also takes: underscores (3_9), other scripts' digits (３９, ٣٩), exponents, inf and nan."""
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,(?:[0-9]{1,2}|[0-9]{4,})")
"""A decimal comma that cannot be a thousands separator: "38,5", "0,25" (never three digits after it)."""
_THOUSANDS_OR_DECIMAL = re.compile(r"[+-]?[0-9]{1,3},[0-9]{3}")
_PRESSURE = re.compile(r"\s*([0-9]+(?:[.,][0-9]+)?)\s*/\s*([0-9]+(?:[.,][0-9]+)?)\s*")
_WITH_UNIT = re.compile(r"\s*([+-]?[0-9]+(?:[.,][0-9]+)?)\s*([%°℃℉]|[°]?\s*[A-Za-zµμ][A-Za-zµμ/²0-9.\s]*)\s*")


def read_number(text: str) -> float | None:
    """A finite number, or None: digits 0-9 with a decimal point, or a decimal comma where it cannot
    be a thousands separator ("38,5" is 38.5; "1,200" is refused, since it could be 1.2 or 1200)."""
    text = text.strip()
    if _DECIMAL_COMMA.fullmatch(text):
        text = text.replace(",", ".")
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _number_error(spec: FormField, raw: str, tr: Translator) -> str:
    """The inline error of a number field, saying what to type instead of what was typed."""
    label = tr(spec.label)
    shown = raw.strip()[:20]
    if any(c.isdigit() and c not in "0123456789" for c in raw) or "_" in raw:
        return tr("Use the digits 0-9 only for {label}: '{raw}' has other characters.").format(label=label, raw=shown)
    pressure = _PRESSURE.fullmatch(raw)
    if pressure:
        if spec.name == "vitals.sbp_mmhg":
            return tr("{label}: systolic only, e.g. {systolic} (the upper number).").format(label=label, systolic=pressure.group(1))
        return tr("One number only for {label}, e.g. {first}.").format(label=label, first=pressure.group(1))
    with_unit = _WITH_UNIT.fullmatch(raw)
    if with_unit and read_number(with_unit.group(1)) is not None:
        number = with_unit.group(1)
        if spec.name == "vitals.temperature":
            return tr("{label}: drop the unit. Enter {number} and choose °C or °F with the buttons.").format(label=label, number=number)
        return tr("{label}: drop the unit. Enter {number} (the unit is given beside the field).").format(label=label, number=number)
    if _THOUSANDS_OR_DECIMAL.fullmatch(raw.strip()):
        whole, _, part = raw.strip().partition(",")
        return tr("{label}: '{raw}' could be {decimal} or {thousands}. Write it with a point for decimals and no separators.").format(
            label=label, raw=shown, decimal=f"{whole}.{part}".rstrip("0").rstrip("."), thousands=whole + part
        )
    if spec.kind == "integer":
        return tr("Enter a whole number for {label}, e.g. 2.").format(label=label)
    return tr("Enter a number for {label}, e.g. 38.5 or 1200 (a point or a comma for decimals, no separators).").format(
        label=label
    )


def parse_form(form: Mapping[str, list[str]], *, tr: Translator = ENGLISH) -> Parsed:
    """The Assessment data the form describes, and the errors of fields that are not even values."""
    out = Parsed()
    unknown = sorted(set(form) - set(FIELDS))
    for name in unknown:
        out.error("", tr("This form has no field '{name}'.").format(name=name[:60]))
    for name, spec in FIELDS.items():
        values = [v for v in form.get(name, []) if v.strip()]
        if spec.kind == "multi":
            _multi(out, spec, values, tr)
            continue
        if len(values) > 1:
            out.error(name, tr("Give one value."))
            continue
        if not values:
            continue
        raw = values[0].strip()
        if spec.kind == "number":
            number = read_number(raw)
            if number is None:
                out.error(name, _number_error(spec, raw, tr))
            else:
                out.put(name, number)
        elif spec.kind == "integer":
            number = read_number(raw)
            if number is None or not number.is_integer():
                out.error(name, _number_error(spec, raw, tr))
            else:
                out.put(name, int(number))
        elif spec.kind == "check":
            out.put(name, True)
        elif spec.kind == "yesno":
            if raw not in ("yes", "no"):
                out.error(name, tr("Choose yes, no or not reported."))
            else:
                out.put(name, raw == "yes")
        elif spec.kind == "choice":
            if raw not in {v for v, _ in spec.options}:
                out.error(name, tr("Choose one of the options."))
            elif spec.group in ("ice", "capd"):
                out.put(name, int(raw))
            else:
                out.put(name, raw)
    _age(out, tr)
    _temperature(out)
    _items(out, "ice", [f.name for f in ICE_ITEMS], tr("Score this item too: the total needs all five ICE tasks."))
    _items(out, "capd", [f.name for f in CAPD_ITEMS], tr("Answer this item too: the total needs all eight CAPD items."))
    _blinatumomab(out, tr)
    return out


def _multi(out: Parsed, spec: FormField, values: list[str], tr: Translator) -> None:
    allowed = {v for v, _ in spec.options}
    if any(v not in allowed for v in values):
        out.error(spec.name, tr("Choose from the options."))
        return
    if not values:
        return
    if "none" in values:
        if len(values) > 1:
            out.error(spec.name, tr("'None' cannot be ticked together with an agent or sign."))
            return
        values = []
    out.put(spec.name, values)


MONTHS_WITH_YEARS = 11
MONTHS_ALONE = 35
"""Months go with whole years (0-11), or alone up to 35 (a child under 3 charted in months)."""


def _age(out: Parsed, tr: Translator) -> None:
    """Years and months become age_years (a fraction of a year, to 4 decimals); months are only for
    infants and toddlers, and never a fraction."""
    patient = out.data.get("patient", {})
    months = patient.pop("age_months", None)
    if months is None or "patient.age_years" in out.errors:
        return
    years = patient.get("age_years")
    if years is not None and not float(years).is_integer():
        out.error("patient.age_months", tr("Give the age either as years with a decimal, or as whole years and months."))
    elif not 0 <= months <= (MONTHS_WITH_YEARS if years is not None else MONTHS_ALONE):
        limit = MONTHS_WITH_YEARS if years is not None else MONTHS_ALONE
        out.error("patient.age_months", tr("Months must be from 0 to {limit}.").format(limit=limit))
    else:
        patient["age_years"] = round((years or 0) + months / 12, 4)
        out.data["patient"] = patient


def _temperature(out: Parsed) -> None:
    vitals = out.data.get("vitals", {})
    unit = vitals.pop("temperature_unit", "c")
    if "temperature" in vitals:
        vitals[f"temperature_{unit}"] = vitals.pop("temperature")


def _items(out: Parsed, group: str, names: list[str], message: str) -> None:
    """ICE and CAPD are sent as items; when some are given, all are needed."""
    neuro = out.data.get("neuro", {})
    given = neuro.pop(group, None)
    if given is None:
        return
    keys = [n.rsplit(".", 1)[1] for n in names]
    missing = [n for n, k in zip(names, keys, strict=True) if k not in given]
    for name in missing:
        if name not in out.errors:
            out.error(name, message)
    if missing:
        return
    neuro[group] = [given[k] for k in keys] if group == "capd" else {k: given[k] for k in keys}


def _blinatumomab(out: Parsed, tr: Translator) -> None:
    section = out.data.get("blinatumomab")
    if section is None:
        return
    section.pop("on", None)
    dose = section.get("dose")
    if dose is not None and set(dose) != {"value", "unit"}:
        missing = "blinatumomab.dose.unit" if "unit" not in dose else "blinatumomab.dose.value"
        if missing not in out.errors:
            out.error(missing, tr("Give both the dose and its unit."))
        section.pop("dose")


# ---- errors from the models and the engine ------------------------------------------------------

_MESSAGES = {
    "greater_than_equal": N_("Must be at least {ge}."),
    "less_than_equal": N_("Must be at most {le}."),
    "greater_than": N_("Must be more than {gt}."),
    "less_than": N_("Must be less than {lt}."),
    "missing": N_("Required."),
    "literal_error": N_("Choose one of the options."),
    "extra_forbidden": N_("This form has no field '{name}'."),
}
_WITH_UNIT_MESSAGES = {
    N_("Must be at least {ge}."): N_("Must be at least {ge} {unit}."),
    N_("Must be at most {le}."): N_("Must be at most {le} {unit}."),
    N_("Must be more than {gt}."): N_("Must be more than {gt} {unit}."),
    N_("Must be less than {lt}."): N_("Must be less than {lt} {unit}."),
}


def field_name(loc: Iterable[str | int]) -> str:
    """The form field (or group) where an error at `loc` in the Assessment is shown."""
    path = ".".join(str(p) for p in loc)
    if path == "patient":
        return "patient.age_years"
    if path in ("vitals.temperature_c", "vitals.temperature_f"):
        return "vitals.temperature"
    if path.startswith("neuro.ice."):
        return path
    if path in ("neuro.ice_score", "neuro.capd_score"):
        return f"neuro.{path.split('.')[1].removesuffix('_score')}"
    if path in FIELDS or path in GROUPS:
        return path
    if path == "crs.oxygen":
        return "crs.oxygen.device"
    while "." in path:
        path = path.rsplit(".", 1)[0]
        if path in FIELDS or path in GROUPS:
            return path
    return ""


_PLAIN = {f.name.rsplit(".", 1)[1]: f.label.lower() for f in FIELDS.values()} | {
    value: label.lower() for f in FIELDS.values() for value, label in f.options if "_" in value
} | {"ice_score": "ICE total", "capd_score": "CAPD total", "ice": "ICE items", "capd": "CAPD items"}


def _plain(message: str) -> str:
    """The engine's messages name fields and values as the API does (flow_l_min, nasal_cannula):
    the form says them as its labels do. They stay in the engine's English (they are quoted as the
    detail of a translated sentence)."""
    message = re.sub(r"\b(?:patient|vitals|crs|neuro|thrombosis|blinatumomab)\.([a-z0-9_.]+)\b", lambda m: m.group(1).rsplit(".", 1)[-1], message)
    message = re.sub(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", lambda m: _PLAIN.get(m.group(0), m.group(0).replace("_", " ")), message)
    return message[0].upper() + message[1:] if message else message


def _engine_message(loc: tuple[str | int, ...], code: str, msg: str, tr: Translator) -> str:
    """An engine check's message in the form's words (translated), its English detail quoted."""
    path = ".".join(str(p) for p in loc)
    if code == "wrong_tool":
        if path.startswith("neuro.ice"):
            return tr("CAPD applies to this patient, not ICE: answer the CAPD items instead.")
        return tr("ICE applies to this patient, not CAPD: score the ICE tasks instead.")
    if code == "missing" and path == "crs.oxygen.flow_l_min":
        return tr("Give the flow: the grade depends on it with this device.")
    if code == "nothing_to_grade":
        return tr("Nothing to grade: enter at least a vital sign, a CRS or ICANS finding, or an optional section.")
    return tr("These answers contradict each other: {detail}.").format(detail=_plain(msg).rstrip("."))


def errors_from_validation(
    exc: ValidationError | InvalidAssessment, data: Mapping[str, Any], *, tr: Translator = ENGLISH
) -> dict[str, list[str]]:
    """Plain-language errors by form field, from pydantic or from aegrade.validation."""
    errors: dict[str, list[str]] = {}
    if isinstance(exc, ValidationError):
        for e in exc.errors():
            name = field_name(e["loc"])
            template = _MESSAGES.get(e["type"])
            ctx = {k: f"{v:g}" if isinstance(v, (int, float)) else v for k, v in e.get("ctx", {}).items()}
            if e["type"] == "extra_forbidden":
                message = tr(_MESSAGES["extra_forbidden"]).format(name=".".join(map(str, e["loc"])))
            elif template is None:
                message = tr("Not accepted: {detail}.").format(detail=str(e["msg"]).rstrip("."))
            elif name == "vitals.temperature" and template in _WITH_UNIT_MESSAGES:
                unit = "°F" if "temperature_f" in data.get("vitals", {}) else "°C"
                message = tr(_WITH_UNIT_MESSAGES[template]).format(unit=unit, **ctx)
            else:
                message = tr(template).format(**ctx)
            errors.setdefault(name, []).append(message)
    else:
        for fe in exc.errors:
            errors.setdefault(field_name(fe.loc), []).append(_engine_message(tuple(fe.loc), fe.code, fe.msg, tr))
    return errors


def _without(data: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """`data` without the fields at `paths` (a deep copy of the dicts on the way)."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for path in paths:
        node: Any = out
        *parents, leaf = path.split(".")
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node[part] = dict(node[part]) if isinstance(node[part], dict) else node[part]
            node = node[part]
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def _merge(into: dict[str, list[str]], more: Mapping[str, list[str]]) -> None:
    """Add errors for fields that have none yet: one round names every field, each once."""
    for name, messages in more.items():
        if name not in into:
            into[name] = list(messages)


def assessment_from_form(
    form: Mapping[str, list[str]], *, tr: Translator = ENGLISH, engine: Engine | None = None
) -> tuple[Assessment | None, Parsed]:
    """The Assessment, or None with every error by field in one round: the fields that could not be
    read, then the model's bounds for the fields that could, then (with `engine`) the engine's checks
    of how the rest fit together, run on the fields that passed the first two. Without a readable
    age the engine's checks wait for the next round: which tool applies depends on it, and an age is
    never guessed."""
    parsed = parse_form(form, tr=tr)
    read_errors = bool(parsed.errors)
    data: dict[str, Any] = parsed.data
    assessment: Assessment | None = None
    model_errors: dict[str, list[str]] = {}
    for _ in range(3):  # each pass leaves out the fields the model refused, to check the rest
        try:
            assessment = Assessment.model_validate(data)
            break
        except ValidationError as exc:
            _merge(model_errors, errors_from_validation(exc, data, tr=tr))
            refused = [".".join(str(p) for p in e["loc"]) for e in exc.errors()]
            if any(e["type"] == "missing" for e in exc.errors()):
                break
            data = _without(data, refused)
    # a required field that is missing because it could not be read is named once, as unreadable
    _merge(parsed.errors, {k: v for k, v in model_errors.items() if k not in parsed.errors})
    if assessment is not None and engine is not None:
        try:
            engine.validate(assessment)
        except InvalidAssessment as exc:
            checks = [fe for fe in exc.errors if not ((read_errors or model_errors) and fe.code == "nothing_to_grade")]
            if checks:
                _merge(parsed.errors, errors_from_validation(InvalidAssessment(checks), data, tr=tr))
    if parsed.errors:
        return None, parsed
    return assessment, parsed


def form_values(form: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """What was typed, to show again (only this form's fields)."""
    return {k: list(v) for k, v in form.items() if k in FIELDS}


def entered_values(values: Mapping[str, list[str]], *, tr: Translator = ENGLISH) -> list[tuple[str, str]]:
    """(label, value in words) of every field that was filled, in the form's order: for the printout
    and the note. A temperature in °F is shown with its °C."""
    out: list[tuple[str, str]] = []
    for name, spec in FIELDS.items():
        given = [v for v in values.get(name, []) if v.strip()]
        if not given or name == "vitals.temperature_unit":
            continue
        words = dict(spec.options)
        if spec.kind == "check":
            text = tr("yes")
        elif spec.kind == "yesno":
            text = tr("yes") if given[0] == "yes" else tr("no") if given[0] == "no" else given[0]
        elif spec.kind in ("choice", "multi"):
            text = ", ".join(tr(words[v]) if v in words else v for v in given)
            if spec.group == "capd":
                text = tr("{answer} ({score} points)").format(answer=text, score=given[0])
        elif name == "vitals.temperature":
            text = _temperature_words(given[0], (values.get("vitals.temperature_unit") or ["c"])[0])
        else:
            unit = tr(spec.unit) if spec.unit else ""
            text = f"{given[0].strip()} {unit}".strip()
        label = tr(spec.label)
        if spec.group == "capd":
            label = tr("CAPD {number}: {label}").format(number=spec.unit, label=label)
        out.append((label, text))
    return out


def _temperature_words(raw: str, unit: str) -> str:
    """"101.3 °F (38.5 °C)", or "38.5 °C"; the text as typed when it is not a number."""
    value = read_number(raw)
    if value is None:
        return raw.strip()
    if unit == "f":
        return f"{value:g} °F ({fahrenheit_to_celsius(value):.1f} °C)"
    return f"{value:g} °C"
