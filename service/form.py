"""The bedside form: what it asks, and how its fields become an Assessment.

The form posts plain `application/x-www-form-urlencoded` fields named by their place in the
Assessment (`vitals.sbp_mmhg`, `neuro.ice.orientation`, `neuro.capd.3`, ...), so an error that
pydantic or aegrade.validation reports for a place in the Assessment lands next to its field. A
field left blank is left out of the Assessment ("not reported"): nothing blank counts as normal.
The only fields where "not ticked" means "no" are the checkboxes that the Assessment itself
defines as checkboxes (symptoms and reaction features, aegrade.facts.CHECKBOXES) and the switches
that default to false in the model (developmental delay, the "explained by another cause"
attributions, intracranial hemorrhage, unable to perform). Fever masked is a yes/no/not reported
choice: left out it is unknown, and without a fever CRS then cannot be graded.

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

from aegrade.engine import Engine
from aegrade.errors import InvalidAssessment
from aegrade.facts import CHECKBOXES
from aegrade.models import Assessment, ThrombosisSection
from aegrade.rulefile import load_rulesets

__all__ = ["FLOW_DEVICES", "FORM", "FormField", "FormSection", "errors_from_validation", "flow_devices", "parse_form"]

Kind = Literal["number", "integer", "yesno", "check", "choice", "multi"]


@dataclass(frozen=True)
class FormField:
    name: str  # the HTML name and id, and (but for the few mapped below) the Assessment path
    label: str
    kind: Kind
    options: tuple[tuple[str, str], ...] = ()
    unit: str = ""
    hint: str = ""
    group: str = ""  # fields shown together (ICE, CAPD, oxygen)


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
    "Patient",
    (
        FormField("patient.age_years", "Age", "number", unit="years", hint="Fractions for infants, e.g. 0.5"),
        FormField("patient.weight_kg", "Weight", "number", unit="kg"),
        FormField("patient.developmental_delay", "Baseline developmental delay (use CAPD at any age)", "check"),
    ),
)

VITALS = FormSection(
    "vitals",
    "Vital signs",
    (
        FormField("vitals.temperature", "Temperature", "number", hint="Highest in the last hours"),
        FormField("vitals.temperature_unit", "Temperature unit", "choice", _options("c=°C", "f=°F")),
        FormField("vitals.sbp_mmhg", "Systolic blood pressure", "number", unit="mmHg"),
        FormField("vitals.map_mmhg", "Mean arterial pressure", "number", unit="mmHg"),
        FormField("vitals.spo2_pct", "SpO2", "number", unit="%"),
    ),
)

VASOPRESSORS = _options(
    "none=None running",
    "norepinephrine=Norepinephrine",
    "epinephrine=Epinephrine",
    "phenylephrine=Phenylephrine",
    "dopamine=Dopamine",
    "vasopressin=Vasopressin",
    "other=Other vasopressor",
)
OXYGEN_DEVICES = _options(
    "none=None (room air)",
    "nasal_cannula=Nasal cannula (low flow)",
    "blow_by=Blow-by",
    "high_flow_nasal_cannula=High-flow nasal cannula",
    "simple_facemask=Simple face mask",
    "nonrebreather=Non-rebreather mask",
    "venturi=Venturi mask",
    "cpap=CPAP",
    "bipap=BiPAP",
    "mechanical_ventilation=Mechanical ventilation",
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
    "CRS: support and treatment",
    (
        FormField(
            "crs.fever_masked",
            "Fever masked (tocilizumab, steroid or antipyretic given for CRS)",
            "yesno",
            hint="Yes: fever is no longer needed to grade CRS. Left blank without a fever, CRS cannot be graded.",
        ),
        FormField("crs.fever_other_cause", "Fever explained by another cause (e.g. documented bacteraemia)", "check"),
        FormField(
            "crs.hypotension",
            "Hypotension needing fluids or vasopressors",
            "yesno",
            hint="Left blank: judged from the blood pressure for the age.",
        ),
        FormField("crs.vasopressors", "Vasopressors running now", "multi", VASOPRESSORS),
        FormField("crs.oxygen.device", "Oxygen device", "choice", OXYGEN_DEVICES, group="oxygen"),
        FormField(
            "crs.oxygen.flow_l_min", "Oxygen flow", "number", unit="L/min", group="oxygen",
            hint="Needed for {flow_required}.",  # filled in by the template from the CRS rule file
        ),
        FormField("crs.hypotension_other_cause", "Hypotension has another cause (e.g. sepsis)", "check"),
        FormField("crs.hypoxia_other_cause", "Hypoxia has another cause (e.g. pneumonia)", "check"),
    ),
)

POINTS = {n: tuple((str(i), str(i)) for i in range(n + 1)) for n in (1, 3, 4)}
ICE_ITEMS = (
    FormField("neuro.ice.orientation", "Orientation: year, month, city, hospital", "choice", POINTS[4], unit="of 4", group="ice"),
    FormField("neuro.ice.naming", "Names 3 objects", "choice", POINTS[3], unit="of 3", group="ice"),
    FormField("neuro.ice.commands", "Follows simple commands", "choice", POINTS[1], unit="of 1", group="ice"),
    FormField("neuro.ice.writing", "Writes a standard sentence", "choice", POINTS[1], unit="of 1", group="ice"),
    FormField("neuro.ice.attention", "Counts back from 100 by 10", "choice", POINTS[1], unit="of 1", group="ice"),
)
# Short labels of our own: the CAPD instrument's text and anchor points are Cornell's (spec/README.md).
CAPD_LABELS = (
    "Eye contact",
    "Purposeful actions",
    "Aware of surroundings",
    "Communicates needs",
    "Restless",
    "Inconsolable",
    "Underactive",
    "Slow to respond",
)
CAPD_ITEMS = tuple(
    FormField(f"neuro.capd.{i}", f"CAPD {i + 1}: {label}", "choice", POINTS[4], unit="0-4", group="capd")
    for i, label in enumerate(CAPD_LABELS)
)

NEURO = FormSection(
    "neuro",
    "ICANS: neurological assessment",
    (
        *ICE_ITEMS,
        *CAPD_ITEMS,
        FormField("neuro.unable_to_perform", "Cannot do ICE/CAPD: unarousable", "check"),
        FormField(
            "neuro.encephalopathy_other_cause",
            "Low ICE/CAPD score explained by another cause (e.g. delirium from sepsis)",
            "check",
        ),
        FormField(
            "neuro.consciousness",
            "Level of consciousness",
            "choice",
            _options(
                "alert=Alert",
                "awakens_spontaneously=Awakens spontaneously",
                "awakens_to_voice=Awakens to voice",
                "awakens_to_tactile=Awakens only to touch",
                "unarousable=Unarousable",
            ),
        ),
        FormField("neuro.consciousness_other_cause", "Drowsiness explained by sedation or another cause", "check"),
        FormField(
            "neuro.seizure",
            "Seizure",
            "choice",
            _options(
                "none=None",
                "resolved_rapidly=Focal or generalized, resolved rapidly",
                "nonconvulsive_resolved_with_intervention=Non-convulsive on EEG, resolved with treatment",
                "prolonged_over_5_min=Prolonged (over 5 min)",
                "repetitive_without_return_to_baseline=Repeated, without return to baseline",
            ),
        ),
        FormField("neuro.seizure_other_cause", "Seizure explained by another cause (e.g. a venous infarct)", "check"),
        FormField(
            "neuro.motor",
            "Motor findings",
            "choice",
            _options("none=None", "tremor_or_myoclonus=Tremor or myoclonus only", "deep_focal_weakness=Deep focal weakness (hemi- or paraparesis)"),
        ),
        FormField("neuro.motor_other_cause", "Weakness explained by another cause (e.g. a stroke)", "check"),
        FormField(
            "neuro.cerebral_edema",
            "Cerebral edema on imaging",
            "choice",
            _options("none=None", "focal=Focal/local", "diffuse=Diffuse"),
        ),
        FormField(
            "neuro.icp_signs",
            "Signs of raised intracranial pressure",
            "multi",
            _options(
                "none=None",
                "posturing=Decerebrate or decorticate posturing",
                "cn6_palsy=Cranial nerve VI palsy",
                "papilledema=Papilledema",
                "cushings_triad=Cushing's triad",
            ),
        ),
        FormField("neuro.intracranial_hemorrhage", "Intracranial hemorrhage on imaging", "check"),
        FormField(
            "neuro.icp_other_cause",
            "Cerebral edema or raised-pressure signs explained by another cause (e.g. the hemorrhage)",
            "check",
        ),
    ),
    # {capd_age}: the ICANS rule set's capd_age_cutoff_years as the engine runs it (filled in by the template)
    hint="ICE for age {capd_age} and over; CAPD under {capd_age} or with developmental delay. Fill the one that applies.",
)


_UNIT_SUFFIXES = (
    ("_10e9_L", "x10⁹/L"), ("_mg_L_FEU", "mg/L FEU"), ("_umol_L", "µmol/L"), ("_mmol_L", "mmol/L"),
    ("_IU_mL", "IU/mL"), ("_U_mL", "U/mL"), ("_U_L", "U/L"), ("_g_L", "g/L"), ("_mL_min_1_73m2", "mL/min/1.73 m²"),
    ("_mg_per_kg", "mg/kg"), ("_pct", "%"), ("_s", "s"), ("_h", "h"),
)
_WORDS = {
    "alt": "ALT", "inr": "INR", "cvc": "CVC", "vte": "VTE", "bmi": "BMI", "abo": "ABO", "lmwh": "LMWH", "teg": "TEG",
    "ich": "ICH", "asp": "asparaginase", "dx": "diagnosis", "lp": "LP", "crcl": "CrCl", "xa": "Xa", "uln": "ULN",
    "lln": "LLN", "aptt": "aPTT", "d": "D",
}


def _humanize(name: str) -> tuple[str, str]:
    """A label and a unit from a field name: fibrinogen_lln_g_L -> ("Fibrinogen LLN", "g/L")."""
    unit = ""
    for suffix, text in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            name, unit = name[: -len(suffix)], text
            break
    words = " ".join(_WORDS.get(w, w) for w in name.split("_"))
    return words[0].upper() + words[1:], unit


def _field_from_model(name: str, info: Any) -> FormField:
    """A form field for one ThrombosisSection field, from its type and description."""
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    label, unit = _humanize(name)
    hint = info.description or ""
    if annotation == (bool | None):
        return FormField(f"thrombosis.{name}", label, "check" if name in CHECKBOXES else "yesno", hint=hint)
    if annotation == (float | None):
        return FormField(f"thrombosis.{name}", label, "number", unit=unit, hint=hint)
    if args and typing.get_origin(args[0]) is list:
        values = typing.get_args(typing.get_args(args[0])[0])
        # "None" says the list is empty (e.g. tested, no thrombophilia trait); nothing ticked is not reported
        return FormField(f"thrombosis.{name}", label, "multi", (("none", "None"), *((v, v) for v in values)), hint=hint)
    if args and typing.get_origin(args[0]) is Literal:
        values = typing.get_args(args[0])
        return FormField(f"thrombosis.{name}", label, "choice", tuple((v, v) for v in values), hint=hint)
    raise TypeError(f"no form field for ThrombosisSection.{name}: {annotation}")


THROMBOSIS = FormSection(
    "thrombosis",
    "Asparaginase and thrombosis (optional)",
    tuple(_field_from_model(n, f) for n, f in ThrombosisSection.model_fields.items()),
    collapsed=True,
    hint="Symptoms left unticked count as absent; every other blank counts as not reported.",
)

BLINATUMOMAB = FormSection(
    "blinatumomab",
    "Blinatumomab (optional)",
    (
        FormField("blinatumomab.on", "On blinatumomab now", "check"),
        FormField("blinatumomab.dose.value", "Dose", "number"),
        FormField("blinatumomab.dose.unit", "Dose unit", "choice", _options("mcg/day=mcg/day", "mcg/m2/day=mcg/m²/day")),
        FormField("blinatumomab.seizures_this_course", "Seizures in this course", "integer"),
        FormField("blinatumomab.days_to_resolution", "Days the last grade 3+ toxicity took to resolve", "number"),
    ),
    collapsed=True,
)

FORM: tuple[FormSection, ...] = (PATIENT, VITALS, CRS, NEURO, THROMBOSIS, BLINATUMOMAB)
FIELDS: dict[str, FormField] = {f.name: f for s in FORM for f in s.fields}
GROUPS = {"neuro.ice", "neuro.capd", "crs.oxygen", "blinatumomab.dose"}
LABELS: dict[str, str] = {name: f.label for name, f in FIELDS.items()} | {"neuro.ice": "ICE", "neuro.capd": "CAPD"}
"""What the error summary calls each field or group."""

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


def _number(text: str) -> float | None:
    """A finite number, or None. A comma is refused, never guessed: "1,200" could be 1.2 or 1200."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _number_error(spec: FormField, raw: str) -> str:
    """The inline error of a number field, naming the field; saying so when the digits are not 0-9."""
    what = "a whole number" if spec.kind == "integer" else "a number"
    if any(c.isdigit() and c not in "0123456789" for c in raw) or "_" in raw:
        return f"Enter {what} for {spec.label} with the digits 0-9 only: '{raw[:20]}' has other characters."
    if spec.kind == "integer":
        return f"Enter {what} for {spec.label}, e.g. 2."
    return f"Enter {what} for {spec.label} with a point for decimals and no separators, e.g. 38.5 or 1200."


def parse_form(form: Mapping[str, list[str]]) -> Parsed:
    """The Assessment data the form describes, and the errors of fields that are not even values."""
    out = Parsed()
    unknown = sorted(set(form) - set(FIELDS))
    for name in unknown:
        out.error("", f"This form has no field '{name[:60]}'.")
    for name, spec in FIELDS.items():
        values = [v for v in form.get(name, []) if v.strip()]
        if spec.kind == "multi":
            _multi(out, spec, values)
            continue
        if len(values) > 1:
            out.error(name, "Give one value.")
            continue
        if not values:
            continue
        raw = values[0].strip()
        if spec.kind == "number":
            number = _number(raw)
            if number is None:
                out.error(name, _number_error(spec, raw))
            else:
                out.put(name, number)
        elif spec.kind == "integer":
            number = _number(raw)
            if number is None or not number.is_integer():
                out.error(name, _number_error(spec, raw))
            else:
                out.put(name, int(number))
        elif spec.kind == "check":
            out.put(name, True)
        elif spec.kind == "yesno":
            if raw not in ("yes", "no"):
                out.error(name, "Choose yes, no or not reported.")
            else:
                out.put(name, raw == "yes")
        elif spec.kind == "choice":
            if raw not in {v for v, _ in spec.options}:
                out.error(name, "Choose one of the options.")
            elif spec.group in ("ice", "capd"):
                out.put(name, int(raw))
            else:
                out.put(name, raw)
    _temperature(out)
    _items(out, "ice", [f.name for f in ICE_ITEMS], "all five ICE tasks")
    _items(out, "capd", [f.name for f in CAPD_ITEMS], "all eight CAPD items")
    _blinatumomab(out)
    return out


def _multi(out: Parsed, spec: FormField, values: list[str]) -> None:
    allowed = {v for v, _ in spec.options}
    if any(v not in allowed for v in values):
        out.error(spec.name, "Choose from the options.")
        return
    if not values:
        return
    if "none" in values:
        if len(values) > 1:
            out.error(spec.name, "'None' cannot be ticked together with an agent or sign.")
            return
        values = []
    out.put(spec.name, values)


def _temperature(out: Parsed) -> None:
    vitals = out.data.get("vitals", {})
    unit = vitals.pop("temperature_unit", "c")
    if "temperature" in vitals:
        vitals[f"temperature_{unit}"] = vitals.pop("temperature")


def _items(out: Parsed, group: str, names: list[str], what: str) -> None:
    """ICE and CAPD are sent as items; when some are given, all are needed."""
    neuro = out.data.get("neuro", {})
    given = neuro.pop(group, None)
    if given is None:
        return
    keys = [n.rsplit(".", 1)[1] for n in names]
    missing = [n for n, k in zip(names, keys, strict=True) if k not in given]
    for name in missing:
        out.error(name, f"Score this item too: the total needs {what}.")
    if missing:
        return
    neuro[group] = [given[k] for k in keys] if group == "capd" else {k: given[k] for k in keys}


def _blinatumomab(out: Parsed) -> None:
    section = out.data.get("blinatumomab")
    if section is None:
        return
    section.pop("on", None)
    dose = section.get("dose")
    if dose is not None and set(dose) != {"value", "unit"}:
        missing = "blinatumomab.dose.unit" if "unit" not in dose else "blinatumomab.dose.value"
        out.error(missing, "Give both the dose and its unit.")
        section.pop("dose")


# ---- errors from the models and the engine ------------------------------------------------------

_MESSAGES = {
    "greater_than_equal": "Must be at least {ge}.",
    "less_than_equal": "Must be at most {le}.",
    "greater_than": "Must be more than {gt}.",
    "less_than": "Must be less than {lt}.",
    "missing": "Required.",
    "literal_error": "Choose one of the options.",
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


def _with_unit(message: str, name: str, data: Mapping[str, Any]) -> str:
    if name == "vitals.temperature":
        unit = "°F" if "temperature_f" in data.get("vitals", {}) else "°C"
        return f"{message[:-1]} {unit}."
    return message


_PLAIN = {f.name.rsplit(".", 1)[1]: f.label.lower() for f in FIELDS.values()} | {
    value: label.lower() for f in FIELDS.values() for value, label in f.options if "_" in value
} | {"ice_score": "ICE total", "capd_score": "CAPD total", "ice": "ICE items", "capd": "CAPD items"}


def _plain(message: str) -> str:
    """The engine's messages name fields and values as the API does (flow_l_min, nasal_cannula):
    the form says them as its labels do."""
    message = re.sub(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", lambda m: _PLAIN.get(m.group(0), m.group(0).replace("_", " ")), message)
    return message[0].upper() + message[1:]


def errors_from_validation(exc: ValidationError | InvalidAssessment, data: Mapping[str, Any]) -> dict[str, list[str]]:
    """Plain-language errors by form field, from pydantic or from aegrade.validation."""
    errors: dict[str, list[str]] = {}
    if isinstance(exc, ValidationError):
        for e in exc.errors():
            name = field_name(e["loc"])
            template = _MESSAGES.get(e["type"])
            ctx = {k: f"{v:g}" if isinstance(v, (int, float)) else v for k, v in e.get("ctx", {}).items()}
            message = template.format(**ctx) if template else str(e["msg"])
            if e["type"] == "extra_forbidden":
                message = f"This form has no field '{'.'.join(map(str, e['loc']))}'."
            errors.setdefault(name, []).append(_with_unit(message, name, data))
    else:
        for fe in exc.errors:
            name = field_name(fe.loc)
            message = _plain(fe.msg)
            if fe.code == "wrong_tool":
                message = message.split(";")[0] + ". Score the items of the tool that applies."
            errors.setdefault(name, []).append(message)
    return errors


def assessment_from_form(form: Mapping[str, list[str]]) -> tuple[Assessment | None, Parsed]:
    """The Assessment, or None with errors by field."""
    parsed = parse_form(form)
    if parsed.errors:
        return None, parsed
    try:
        return Assessment.model_validate(parsed.data), parsed
    except ValidationError as exc:
        parsed.errors = errors_from_validation(exc, parsed.data)
        return None, parsed


def form_values(form: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """What was typed, to show again (only this form's fields)."""
    return {k: list(v) for k, v in form.items() if k in FIELDS}

