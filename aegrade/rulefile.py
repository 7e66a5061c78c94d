"""Rule files: their model, loading, schema checks and hashing.

A rule file (YAML, one rule set) holds the clinical knowledge as data: every rule with its
condition tree, the criterion text it encodes, its citation and its evidence level; the settings
for the points the sources leave open; the combination policy; and its own test cases.

Loading checks a file three times, and a failure names the file and, where it can, the rule:
1. against `rules/schema.json`, the JSON Schema generated from `RuleSetFile` (a misspelled key, a
   wrong type, an unknown operator);
2. against the pydantic model itself;
3. against the fact catalogue of its subject (`aegrade.facts`): an unknown fact, a value of the
   wrong type for its fact, an enum value that does not exist, an undeclared setting or domain.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Union

import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from aegrade.errors import RuleFileError, SettingsError
from aegrade.facts import CATALOGUES, FactSpec, Subject
from aegrade.models import EvidenceLevel, GradeStatus

__all__ = [
    "AllOf",
    "AnyOf",
    "CardIndicators",
    "ChoiceSetting",
    "Condition",
    "FactTest",
    "FeverMasking",
    "LoadedRuleSet",
    "NotOf",
    "NumberSetting",
    "OxygenFlow",
    "Rule",
    "ScaledFact",
    "SettingValue",
    "RuleInputs",
    "RuleSetFile",
    "SettingTest",
    "Vasopressors",
    "default_rules_dir",
    "load_ruleset",
    "load_rulesets",
    "loaded_ruleset",
    "rule_file_json_schema",
]

Scalar = Union[bool, int, float, str]
ComparisonOp = Literal["eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in"]
FactOp = Literal["eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "present", "absent"]
ORDER_OPS = frozenset({"lt", "lte", "gt", "gte"})
SET_OPS = frozenset({"in", "not_in"})
PRESENCE_OPS = frozenset({"present", "absent"})


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class ScaledFact(_RuleModel):
    """Another fact, times a constant: `{fact: fibrinogen_lln_g_L, times: 0.5}`."""

    fact: str
    times: float = 1.0


class SettingValue(_RuleModel):
    """The value of a number setting: `{setting: at_low_pct}`."""

    setting: str


class FactTest(_RuleModel):
    """A test of one fact against a constant `value`, or against `ref` (another fact, scaled, or a
    setting): `{fact: temperature_c, op: gte, value: 38.0}`, `{fact: fibrinogen_g_L, op: lt,
    ref: {fact: fibrinogen_lln_g_L, times: 0.5}}`.

    A test of a fact that was not reported is unknown (so is one whose `ref` fact was not
    reported); `present` and `absent` test the report itself and are always known.
    """

    fact: str
    op: FactOp
    value: Scalar | list[Scalar] | None = None
    ref: ScaledFact | SettingValue | None = None


class SettingTest(_RuleModel):
    """A test of one engine setting: `{setting: vasopressin_alone, op: eq, value: vasopressor}`."""

    setting: str
    op: ComparisonOp
    value: Scalar | list[Scalar]


class AllOf(_RuleModel):
    all: list[Condition] = Field(min_length=1)


class AnyOf(_RuleModel):
    any: list[Condition] = Field(min_length=1)


class NotOf(_RuleModel):
    not_: Condition = Field(alias="not")


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return {AllOf: "all", AnyOf: "any", NotOf: "not", FactTest: "fact", SettingTest: "setting"}.get(type(value))
    if isinstance(value, Mapping):
        for key in ("all", "any", "not", "fact", "setting"):
            if key in value:
                return key
    return None


Condition = Annotated[
    Union[
        Annotated[AllOf, Tag("all")],
        Annotated[AnyOf, Tag("any")],
        Annotated[NotOf, Tag("not")],
        Annotated[FactTest, Tag("fact")],
        Annotated[SettingTest, Tag("setting")],
    ],
    Discriminator(_condition_kind),
]


class _SettingBase(_RuleModel):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    question: str = Field(description="The point the sources leave open.")
    decision: str = Field(description="What the default does, and why.")
    citation: str
    evidence_level: EvidenceLevel
    applies_when: Condition | None = Field(
        default=None,
        description="When this holds, the setting decided the result even if no rule names it.",
    )


class ChoiceSetting(_SettingBase):
    kind: Literal["choice"]
    choices: dict[str, str] = Field(min_length=2, description="Each allowed value and what it means.")
    default: str


class NumberSetting(_SettingBase):
    kind: Literal["number"]
    minimum: float
    maximum: float
    unit: str
    default: float


Setting = Annotated[Union[ChoiceSetting, NumberSetting], Field(discriminator="kind")]


class Rule(_RuleModel):
    """One criterion. `kind` says how it combines (see `Combination`)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
    domain: str
    kind: Literal["grade", "override", "gate", "fallback"] = "grade"
    grade: int | None = Field(default=None, ge=0, le=5)
    status: GradeStatus | None = None
    when: Condition
    criterion: str = Field(min_length=1, description="The criterion this rule encodes, in the source's words.")
    citation: str = Field(min_length=1)
    evidence_level: EvidenceLevel
    interpretation: str | None = Field(
        default=None, description="The setting this rule applies; the explanation names it when the rule drives."
    )
    show: list[str] = Field(default_factory=list, description="Context values shown in the evidence.")
    note: str | None = Field(
        default=None, description="Said in the explanation when this rule fires (a gate or fallback: when it drives)."
    )
    up_to: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description="For a gate or fallback that gives no grade: the highest grade a clinician could still give.",
    )
    emits: str | None = Field(
        default=None, pattern=r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$", description="Flag or action id (collect policy)."
    )
    severity: Literal["info", "warning", "critical"] | None = Field(default=None, description="Of a flag.")
    message: str | None = Field(default=None, description="The flag's message, or the action's text.")
    supersedes: list[str] = Field(
        default_factory=list,
        description="Action ids this action supersedes when it is established (a discontinuation supersedes every restart).",
    )


class Domain(_RuleModel):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    missing_when: Condition = Field(description="When this holds, the domain was not reported.")


class Combination(_RuleModel):
    """How fired rules make one result.

    "worst_domain" (grading rule sets). Precedence, highest first: `override` rules (the worst of
    them); then the first `gate` rule that fired (its status and grade); then `grade` rules (the
    highest grade of any domain, every rule at that grade driving); then, only when no grade rule
    gave a grade of 1 or more, the first `fallback` rule; then the default.

    "collect" (flag and action rule sets): every rule that fires emits its flag or action.
    """

    policy: Literal["worst_domain", "collect"]
    statement: str
    citation: str
    evidence_level: EvidenceLevel
    default_grade: int | None = Field(default=None, ge=0, le=5)
    default_status: GradeStatus | None = None
    undetermined_gate: str = Field(
        default="A gate of this rule set is undetermined: the result cannot be given until the missing inputs are reported.",
        description="Said when a gate rule's condition is unknown: the result is not_assessable, grade null.",
    )
    gate_stands_up_to: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description=(
            "When a gate is undetermined and nothing the unreported inputs allow exceeds this grade, the "
            "gate's own result stands, with `gate_stands_note`."
        ),
    )
    gate_stands_note: str | None = None
    gate_stands_when: Condition | None = Field(
        default=None,
        description="The gate may stand (gate_stands_up_to) only when this is certainly true.",
    )
    order: list[str] = Field(
        default_factory=list, description="Collect policy: the emitted ids in the order shown, most restrictive first."
    )


class SbpFormula(_RuleModel):
    base_mmhg: float
    per_completed_year_mmhg: float


class HypotensionBand(_RuleModel):
    id: str
    label: str
    age_days_at_most: float | None = None
    age_years_below: float | None = None
    sbp_below_mmhg: float | SbpFormula
    citation: str
    evidence_level: EvidenceLevel


class MapThreshold(_RuleModel):
    below_mmhg: float
    from_age_setting: str = Field(description="Number setting: the age from which the MAP threshold applies.")
    citation: str
    evidence_level: EvidenceLevel


class HypotensionFromVitals(_RuleModel):
    """Flags hypotension from vitals when it is not reported and no vasopressor is listed.

    Bands are tried in order; the first whose age limits contain the patient applies. The last
    band must have no age limit.
    """

    statement: str
    setting: str = Field(
        description="Choice setting: 'counts' lets low vitals set hypotension; any other value only notes them."
    )
    bands: list[HypotensionBand] = Field(min_length=1)
    map: MapThreshold | None = None


class EncephalopathyTool(_RuleModel):
    """CAPD below the age setting, or with developmental delay when `capd_with_developmental_delay`."""

    capd_below_age_setting: str
    capd_with_developmental_delay: bool
    criterion: str
    citation: str
    evidence_level: EvidenceLevel


class AsparaginaseExposure(_RuleModel):
    """`asp_active`: a product is given and the last dose is within the window: the pegaspargase
    window is a number setting; other products need `asp_window_days_local` in the request."""

    pegaspargase_window_setting: str
    criterion: str
    citation: str
    evidence_level: EvidenceLevel


class EnoxaparinReference(_RuleModel):
    """Reference initial treatment dose of enoxaparin q12h by age."""

    below_age_months: float
    below_mg_per_kg: float
    from_mg_per_kg: float
    citation: str
    evidence_level: EvidenceLevel


class BodySurfaceArea(_RuleModel):
    """Body surface area from height and weight: sqrt(height_cm x weight_kg / divisor) m2 (Mosteller: 3600)."""

    formula: str
    divisor: float
    citation: str
    evidence_level: EvidenceLevel


class BlinatumomabDosing(_RuleModel):
    """Weight band (fixed dosing from the weight; otherwise BSA), the low-step dose in each band's own
    unit, and the tolerance allowed for rounding when a dose charted in the other unit is converted."""

    fixed_dosing_from_weight_kg: float
    low_step: dict[str, float]
    band_unit: dict[str, str] = Field(description="The dosing unit of each band: fixed and bsa.")
    conversion_tolerance: float = Field(ge=0, le=0.5, description="Fraction of the step, e.g. 0.1 for 10%.")
    bsa: BodySurfaceArea
    citation: str
    evidence_level: EvidenceLevel


class GradeSource(_RuleModel):
    """A grade of this same assessment, by the rule set that graded it, as a bounded fact."""

    fact: str
    ruleset: str
    scale: str = Field(description="How the scale is named to a reader, e.g. 'CTCAE v4.03'.")


class CtcaeTerms(_RuleModel):
    """The clinician-graded CTCAE terms that count, as the worst of their grades, in a fact."""

    fact: str
    scale: str
    terms: list[str] = Field(min_length=1)
    criterion: str
    citation: str
    evidence_level: EvidenceLevel


class LabelGradeRule(_RuleModel):
    """The grade a label action reads: the worst of the reported sources that the setting's value names."""

    fact: str
    subject: Literal["crs", "neuro"]
    setting: str
    sources: dict[str, list[str]] = Field(description="For each choice of the setting: the grade facts it reads.")
    criterion: str
    citation: str
    evidence_level: EvidenceLevel


class DerivedBoolean(_RuleModel):
    """A boolean fact defined by a condition on the input facts (e.g. neuro_red)."""

    fact: str
    when: Condition
    criterion: str
    citation: str
    evidence_level: EvidenceLevel


class ScoreOption(_RuleModel):
    points: int = Field(ge=0)
    when: Condition


class ScorePart(_RuleModel):
    """One part of a score: the points of its first option whose condition holds, else 0."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    options: list[ScoreOption] = Field(min_length=1)


class DerivedScore(_RuleModel):
    """A number fact summed from parts. With unreported inputs it has a lower and an upper bound."""

    fact: str
    parts: list[ScorePart] = Field(min_length=1)
    criterion: str
    citation: str
    evidence_level: EvidenceLevel


class Attribution(_RuleModel):
    """A competing cause: while `competing_cause` holds (or may hold) and the request does not say
    whether `fact` (an `*_other_cause` fact) is true, that attribution is unknown, so the domains
    it could explain are undetermined."""

    fact: str
    competing_cause: Condition
    criterion: str
    citation: str
    evidence_level: EvidenceLevel


class NeuroFinding(_RuleModel):
    """One fact, one place: a boolean fact of this rule set read from a field of the neuro section
    when that field is reported. It is true when the neuro value is one of `true_when` (for a list
    field: when the list holds one of them)."""

    fact: str
    neuro_field: str
    true_when: list[Scalar] = Field(min_length=1)
    criterion: str


class EpisodeCourse(_RuleModel):
    """What the episode path reads from the timeline for the label: a toxicity of `grade_at_least`
    or more, resolved at `resolved_at_most` or less, and the days after which its resolution
    decides the label ("takes more than 7 days to resolve")."""

    grade_at_least: int = Field(ge=1, le=5)
    resolved_at_most: int = Field(ge=0, le=4)
    resolution_days: float = Field(gt=0)
    citation: str
    evidence_level: EvidenceLevel


class OxygenFlow(_RuleModel):
    """Which oxygen devices are graded by their flow. With a device of `required_with` the flow
    decides the grade, so a request without it (or at 0 L/min) is refused; with a device of
    `asked_with` a flow may change the grade under a setting, so the bedside form asks for it."""

    required_with: list[str] = Field(min_length=1, description="Devices (oxygen_device values) that need flow_l_min.")
    asked_with: list[str] = Field(
        default_factory=list, description="Devices whose flow a setting may grade by: asked for, never required."
    )
    criterion: str
    citation: str
    evidence_level: EvidenceLevel

    @property
    def flow_devices(self) -> tuple[str, ...]:
        """Every device whose flow is asked for: the required ones first."""
        return tuple(dict.fromkeys([*self.required_with, *self.asked_with]))


class Vasopressors(_RuleModel):
    """How the reported vasopressor list becomes facts: `count_fact` counts the agents that are not
    in `not_counted`; each `listed_facts` fact is true when its agent is in the list; with
    `imply_hypotension`, a running vasopressor makes hypotension true when it was not reported (and
    hypotension reported false with a vasopressor running is a contradiction)."""

    count_fact: str
    not_counted: list[str] = Field(default_factory=list, description="Agents (crs.vasopressors values) left out of the count.")
    listed_facts: dict[str, str] = Field(
        default_factory=dict, description="Boolean fact -> agent: the fact is true when the agent is listed."
    )
    imply_hypotension: bool
    criterion: str
    citation: str
    evidence_level: EvidenceLevel


class MaskingWindow(_RuleModel):
    """How long fever stays masked after a masking treatment, in an episode: `hours`, or no limit (null)."""

    hours: float | None = Field(default=None, gt=0, le=24 * 365, description="null: for the rest of the episode.")
    question: str
    decision: str
    citation: str
    evidence_level: EvidenceLevel


class MaskingReason(_RuleModel):
    """How an administration's reason is recognised: codes (system and code, compared exactly) and
    words (whole words of reasonCode text and displays, after lower-casing ASCII letters only)."""

    codes: list[dict[str, str]] = Field(default_factory=list, description="{system, code} pairs.")
    words: list[str] = Field(default_factory=list)
    citation: str


class MaskingReasons(_RuleModel):
    """Reasons that decide a masking administration whatever its time: one that treats CRS masks,
    premedication or prophylaxis never does."""

    treats_crs: MaskingReason
    premedication: MaskingReason
    criterion: str
    evidence_level: EvidenceLevel


class CapdAnswers(_RuleModel):
    """How a CAPD item's answer scores: the answers in order, each item's points for them, and the
    items that score in reverse (they ask about what a well child does). A form that asks the
    questions in words scores them from here (service/form.py)."""

    answers: list[str] = Field(min_length=2, description="Answer ids, in order (never ... always).")
    points: list[int] = Field(min_length=2, description="Points of each answer, same order, for an item scored forward.")
    items: int = Field(ge=1, description="How many items the instrument has.")
    reversed_items: list[int] = Field(description="1-based numbers of the items scored in reverse (points read backwards).")
    criterion: str
    citation: str
    evidence_level: EvidenceLevel

    @model_validator(mode="after")
    def _consistent(self) -> "CapdAnswers":
        if len(self.points) != len(self.answers):
            raise ValueError("points must give one value per answer")
        if any(not 1 <= item <= self.items for item in self.reversed_items):
            raise ValueError(f"reversed_items must be item numbers 1-{self.items}")
        return self

    def item_points(self, item: int) -> list[int]:
        """Points of each answer (in `answers` order) for the 1-based `item`."""
        return list(reversed(self.points)) if item in self.reversed_items else list(self.points)


class FeverMasking(_RuleModel):
    """The treatments after which fever is no longer required to grade CRS (an episode's history, and
    FHIR MedicationAdministrations, set crs.fever_masked from them), by class."""

    agents: dict[str, list[str]] = Field(
        min_length=1, description="Class (e.g. anticytokine) -> treatment agents (episode TreatmentAgent values)."
    )
    criterion: str
    citation: str
    evidence_level: EvidenceLevel
    window: MaskingWindow
    reasons: MaskingReasons | None = Field(default=None, description="FHIR input: reasons that decide an administration.")
    undecided_without_onset: list[str] = Field(
        default_factory=list,
        description="Classes (keys of agents) whose administration with no CRS onset in view leaves fever masking undecided.",
    )

    @property
    def all_agents(self) -> frozenset[str]:
        return frozenset(agent for agents in self.agents.values() for agent in agents)


class CardIndicatorBand(_RuleModel):
    from_grade: int = Field(ge=0, le=5)
    indicator: Literal["info", "warning", "critical"]


class CardIndicators(_RuleModel):
    """How a decision-support card (CDS Hooks) flags a result of this rule set. A grade established
    at or above the lowest `from_grade` gives a card with the indicator of the highest band it
    reaches; a lower grade whose grade_max reaches it gives an `undetermined` card; a result left to
    the clinician gives a `clinician_review` card; anything else, no card."""

    established: list[CardIndicatorBand] = Field(min_length=1)
    undetermined: Literal["info", "warning", "critical"]
    clinician_review: Literal["info", "warning", "critical"]
    statement: str
    citation: str
    evidence_level: EvidenceLevel

    @property
    def threshold(self) -> int:
        """The lowest grade that gives a card."""
        return min(band.from_grade for band in self.established)

    def for_grade(self, grade: int | None) -> Literal["info", "warning", "critical"] | None:
        """The indicator of an established grade, or None below the threshold."""
        if grade is None:
            return None
        reached = [band for band in self.established if grade >= band.from_grade]
        return max(reached, key=lambda band: band.from_grade).indicator if reached else None


class Derivations(_RuleModel):
    booleans: list[DerivedBoolean] = Field(
        default_factory=list, description="Evaluated (by both evaluators, three-valued) before the rules."
    )
    scores: list[DerivedScore] = Field(default_factory=list, description="Evaluated with the booleans.")
    attributions: list[Attribution] = Field(default_factory=list, description="Evaluated with the booleans.")
    neuro_findings: list[NeuroFinding] = Field(default_factory=list)
    grade_sources: list[GradeSource] = Field(default_factory=list)
    ctcae_terms: CtcaeTerms | None = None
    label_grades: list[LabelGradeRule] = Field(default_factory=list)
    episode_course: EpisodeCourse | None = None
    hypotension_from_vitals: HypotensionFromVitals | None = None
    encephalopathy_tool: EncephalopathyTool | None = None
    asparaginase_exposure: AsparaginaseExposure | None = None
    enoxaparin_reference: EnoxaparinReference | None = None
    blinatumomab_dosing: BlinatumomabDosing | None = None
    oxygen_flow: OxygenFlow | None = None
    vasopressors: Vasopressors | None = None
    fever_masking: FeverMasking | None = None
    capd_answers: CapdAnswers | None = None


class Expectation(_RuleModel):
    """A grading case sets grade and status (and may set drivers); a collect case sets emits."""

    grade: int | None = Field(default=None, ge=0, le=5)
    grade_max: int | None = Field(default=None, ge=0, le=5, description="When given: the expected grade_max.")
    status: GradeStatus | None = None
    drivers: list[str] | None = Field(default=None, description="Exactly these rules drive, in any order.")
    emits: list[str] | None = Field(default=None, description="Exactly these flags or actions, in any order.")
    undetermined: list[str] | None = Field(
        default=None, description="When given: exactly these undetermined flags or actions, in any order."
    )


class RuleTestCase(_RuleModel):
    id: str
    description: str
    request: dict[str, Any] = Field(description="An Assessment in the API's request form.")
    settings: dict[str, Scalar] = Field(default_factory=dict, description="Settings of this rule set to use.")
    expect: Expectation


class RuleSetFile(_RuleModel):
    """One rule set, as written in `rules/<subject>/<name>.yaml`."""

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    version: str = Field(pattern=r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$", description="Semantic version.")
    title: str
    subject: Subject
    scale: str
    status: Literal["draft", "active", "retired"]
    role: Literal["primary", "additional"] = Field(
        default="primary",
        description="One active primary rule set per subject gives its result; additional ones grade the same subject on another scale.",
    )
    drug: str | None = Field(default=None, description="For action rule sets: the drug the actions concern.")
    citation: str
    combination: Combination
    domains: list[Domain] = Field(min_length=1)
    settings: list[Setting] = Field(default_factory=list)
    derivations: Derivations = Field(default_factory=Derivations)
    card_indicators: CardIndicators | None = Field(
        default=None, description="Grading rule sets: how a decision-support card flags a result (a LOCAL choice)."
    )
    rules: list[Rule] = Field(min_length=1)
    tests: list[RuleTestCase] = Field(min_length=1)


AllOf.model_rebuild()
AnyOf.model_rebuild()
Combination.model_rebuild()
NotOf.model_rebuild()
DerivedBoolean.model_rebuild()
ScoreOption.model_rebuild()
ScorePart.model_rebuild()
DerivedScore.model_rebuild()
Attribution.model_rebuild()
Derivations.model_rebuild()
RuleSetFile.model_rebuild()


def rule_file_json_schema() -> dict[str, Any]:
    """The JSON Schema of a rule file, generated from `RuleSetFile` (written to rules/schema.json)."""
    schema = RuleSetFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "aegrade rule file"
    return schema


@cache
def _schema_validator() -> jsonschema.protocols.Validator:
    schema = rule_file_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def default_rules_dir() -> Path:
    """`rules/` beside the package in a source checkout (the default unless configured)."""
    return Path(__file__).resolve().parent.parent / "rules"


# ----------------------------------------------------------------------------------------------
# Loaded rule set
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedRuleSet:
    """A checked rule file with what the engine needs to run it."""

    file: RuleSetFile
    path: str
    sha256: str

    @property
    def id(self) -> str:
        return self.file.id

    @property
    def version(self) -> str:
        return self.file.version

    @property
    def label(self) -> str:
        return f"{self.file.id}@{self.file.version}"

    @property
    def engine_name(self) -> str:
        """The durable_rules ruleset name: names cannot be registered twice, so it carries the hash."""
        return f"{self.file.id.replace('-', '_')}_v{self.file.version.replace('.', '_')}_{self.sha256[:12]}"

    @property
    def rules(self) -> list[Rule]:
        return self.file.rules

    @cached_property
    def derivation_conditions(self) -> list[tuple[str, Condition]]:
        """See `derivation_conditions`."""
        return derivation_conditions(self.file)

    @cached_property
    def rule_inputs(self) -> dict[str, RuleInputs]:
        """For each rule: the facts it tests, those it tests for presence, and the settings it tests."""
        return {rule.id: _rule_inputs(rule.when) for rule in self.file.rules}

    def rule(self, rule_id: str) -> Rule:
        for rule in self.file.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def setting(self, setting_id: str) -> ChoiceSetting | NumberSetting:
        for setting in self.file.settings:
            if setting.id == setting_id:
                return setting
        raise KeyError(setting_id)

    def resolve_settings(self, overrides: Mapping[str, Any]) -> dict[str, Scalar]:
        """The settings in force: each declared default, replaced by a valid override."""
        declared = {s.id: s for s in self.file.settings}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise SettingsError(f"{self.id}: unknown setting(s) {unknown}; declared: {sorted(declared)}")
        resolved: dict[str, Scalar] = {}
        for setting_id, setting in declared.items():
            value = overrides.get(setting_id, setting.default)
            problem = _setting_value_problem(setting, value)
            if problem:
                raise SettingsError(f"{self.id}.{setting_id}: {problem}")
            resolved[setting_id] = float(value) if isinstance(setting, NumberSetting) else value
        return resolved


RuleInputs = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


def _rule_inputs(condition: Condition) -> RuleInputs:
    tested: dict[str, None] = {}
    presence: dict[str, None] = {}
    settings: dict[str, None] = {}
    for test in iter_tests(condition):
        if isinstance(test, FactTest):
            tested[test.fact] = None
            if test.op in PRESENCE_OPS:
                presence[test.fact] = None
            if isinstance(test.ref, ScaledFact):
                tested[test.ref.fact] = None
            elif isinstance(test.ref, SettingValue):
                settings[test.ref.setting] = None
        else:
            settings[test.setting] = None
    return tuple(tested), tuple(presence), tuple(settings)


def _setting_value_problem(setting: ChoiceSetting | NumberSetting, value: Any) -> str | None:
    if isinstance(setting, ChoiceSetting):
        if not isinstance(value, str) or value not in setting.choices:
            return f"{value!r} is not one of {sorted(setting.choices)}"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return f"{value!r} is not a number"
    if not setting.minimum <= value <= setting.maximum:
        return f"{value!r} is outside {setting.minimum}..{setting.maximum} {setting.unit}"
    return None


def load_ruleset(path: str | Path) -> LoadedRuleSet:
    """Read, check and hash one rule file. Raises RuleFileError naming the file and the rule."""
    path = Path(path)
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RuleFileError(name, f"cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise RuleFileError(name, f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RuleFileError(name, "a rule file must be a mapping at the top level")

    errors = sorted(_schema_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "<top>"
        raise RuleFileError(
            name,
            f"schema violation at {where}: {_short(first.message)}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
            rule=_rule_at(data, list(first.absolute_path)),
        )
    try:
        file = RuleSetFile.model_validate(data)
    except ValidationError as exc:
        first_err = exc.errors()[0]
        where = "/".join(str(p) for p in first_err["loc"])
        raise RuleFileError(
            name, f"invalid at {where}: {first_err['msg']}", rule=_rule_at(data, list(first_err["loc"]))
        ) from exc
    _check_semantics(file, name)
    loaded = LoadedRuleSet(file=file, path=name, sha256=hashlib.sha256(raw).hexdigest())
    _LOADED[loaded.sha256] = loaded
    return loaded


_LOADED: dict[str, LoadedRuleSet] = {}


def loaded_ruleset(sha256: str) -> LoadedRuleSet | None:
    """The rule set with this content hash, if this process has loaded it (a result names the rule
    sets that graded it by id, version and sha256: what presents it reads their declarations here)."""
    return _LOADED.get(sha256)


def load_rulesets(rules_dir: str | Path | None = None) -> list[LoadedRuleSet]:
    """Every `*.yaml` rule file below `rules_dir`, sorted by path; ids must be unique."""
    root = Path(rules_dir) if rules_dir is not None else default_rules_dir()
    if not root.is_dir():
        raise RuleFileError(str(root), "rules directory not found")
    loaded = [load_ruleset(p) for p in sorted(root.rglob("*.yaml"))]
    seen: dict[str, str] = {}
    for rs in loaded:
        if rs.id in seen:
            raise RuleFileError(rs.path, f"rule set id {rs.id!r} is also used by {seen[rs.id]}")
        seen[rs.id] = rs.path
    return loaded


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "…"


def _rule_at(data: Mapping[str, Any], path: list[Any]) -> str | None:
    if len(path) >= 2 and path[0] in ("rules", "tests", "settings", "domains") and isinstance(path[1], int):
        items = data.get(path[0])
        if isinstance(items, list) and path[1] < len(items) and isinstance(items[path[1]], Mapping):
            item_id = items[path[1]].get("id")
            return f"{path[0]}[{path[1]}] {item_id}" if item_id else f"{path[0]}[{path[1]}]"
    return None


# ----------------------------------------------------------------------------------------------
# Semantic checks
# ----------------------------------------------------------------------------------------------

CONTEXT_KEYS: dict[Subject, frozenset[str]] = {
    "crs": frozenset(
        {"temperature_sent", "vasopressors", "hypotension_source", "hypotension_threshold", "oxygen"}
    ),
    "icans": frozenset({"ice_items", "capd_items", "icp_signs", "tool_reason"}),
    "thrombosis": frozenset({"thrombophilia_traits", "exposure_window", "mitchell2008_points"}),
    "blinatumomab": frozenset({"weight_band_reason", "dose"}),
}


def iter_tests(condition: Condition) -> Iterator[FactTest | SettingTest]:
    """Every leaf test of a condition tree."""
    if isinstance(condition, AllOf):
        for child in condition.all:
            yield from iter_tests(child)
    elif isinstance(condition, AnyOf):
        for child in condition.any:
            yield from iter_tests(child)
    elif isinstance(condition, NotOf):
        yield from iter_tests(condition.not_)
    else:
        yield condition


def _check_semantics(file: RuleSetFile, name: str) -> None:
    catalogue = CATALOGUES[file.subject]
    settings = {s.id: s for s in file.settings}
    domains = {d.id for d in file.domains}

    def check_unique(kind: str, ids: list[str]) -> None:
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise RuleFileError(name, f"duplicate {kind} id(s): {dup}")

    check_unique("rule", [r.id for r in file.rules])
    check_unique("domain", [d.id for d in file.domains])
    check_unique("setting", [s.id for s in file.settings])
    check_unique("test", [t.id for t in file.tests])

    for setting in file.settings:
        problem = _setting_value_problem(setting, setting.default)
        if problem:
            raise RuleFileError(name, f"default {problem}", rule=f"setting {setting.id}")
        if isinstance(setting, NumberSetting) and setting.minimum > setting.maximum:
            raise RuleFileError(name, "minimum is above maximum", rule=f"setting {setting.id}")
        if setting.applies_when is not None:
            _check_condition(setting.applies_when, catalogue, settings, name, f"setting {setting.id}")

    for domain in file.domains:
        _check_condition(domain.missing_when, catalogue, settings, name, f"domain {domain.id}")
    if file.combination.gate_stands_when is not None:
        _check_condition(file.combination.gate_stands_when, catalogue, settings, name, "combination.gate_stands_when")

    collect = file.combination.policy == "collect"
    for rule in file.rules:
        where = rule.id
        if rule.domain not in domains:
            raise RuleFileError(name, f"domain {rule.domain!r} is not declared ({sorted(domains)})", rule=where)
        if collect:
            if rule.kind != "grade" or rule.grade is not None or rule.status is not None:
                raise RuleFileError(name, "a collect rule has no kind, grade or status", rule=where)
            if rule.emits is None or rule.message is None:
                raise RuleFileError(name, "a collect rule needs emits and message", rule=where)
            if (rule.severity is None) != (file.drug is not None):
                raise RuleFileError(name, "a flag needs a severity; an action (drug set) has none", rule=where)
        elif rule.emits is not None or rule.severity is not None or rule.message is not None:
            raise RuleFileError(name, "emits, severity and message belong to collect rule sets", rule=where)
        elif rule.kind in ("grade", "override"):
            if rule.grade is None or rule.status is not None:
                raise RuleFileError(name, f"a {rule.kind} rule has a grade and no status", rule=where)
        elif rule.status is None:
            raise RuleFileError(name, f"a {rule.kind} rule needs a status", rule=where)
        if rule.interpretation is not None and rule.interpretation not in settings:
            raise RuleFileError(name, f"interpretation names undeclared setting {rule.interpretation!r}", rule=where)
        unknown_show = sorted(set(rule.show) - CONTEXT_KEYS[file.subject])
        if unknown_show:
            raise RuleFileError(name, f"show names unknown context {unknown_show}", rule=where)
        _check_condition(rule.when, catalogue, settings, name, where)

    for case in file.tests:
        expect = case.expect
        if collect and (expect.emits is None or expect.grade is not None or expect.status is not None):
            raise RuleFileError(name, "a case of a collect rule set expects emits only", rule=f"test {case.id}")
        if not collect and (expect.status is None or expect.emits is not None):
            raise RuleFileError(name, "a case of a grading rule set expects grade and status", rule=f"test {case.id}")

    def number_setting(setting_id: str, what: str) -> None:
        if not isinstance(settings.get(setting_id), NumberSetting):
            raise RuleFileError(name, f"{what} needs number setting {setting_id!r}")

    derivations = file.derivations
    derived_facts = (
        {b.fact for b in derivations.booleans} | {s.fact for s in derivations.scores} | {a.fact for a in derivations.attributions}
    )
    for derived in derivations.booleans:
        spec = catalogue.get(derived.fact)
        if spec is None or spec.type != "boolean":
            raise RuleFileError(name, f"derived boolean {derived.fact!r} is not a boolean fact of {file.subject}")
    for score in derivations.scores:
        spec = catalogue.get(score.fact)
        if spec is None or spec.type != "integer" or not spec.bounded:
            raise RuleFileError(name, f"derived score {score.fact!r} is not a bounded integer fact of {file.subject}")
    for attribution in derivations.attributions:
        spec = catalogue.get(attribution.fact)
        if spec is None or spec.type != "boolean" or spec.always_present:
            raise RuleFileError(name, f"attribution {attribution.fact!r} is not an optional boolean fact of {file.subject}")
    for finding in derivations.neuro_findings:
        spec = catalogue.get(finding.fact)
        if spec is None or spec.type != "boolean":
            raise RuleFileError(name, f"neuro finding {finding.fact!r} is not a boolean fact of {file.subject}")
    for stage_name, condition in derivation_conditions(file):
        _check_condition(condition, catalogue, settings, name, stage_name)
        used = sorted({t.fact for t in iter_tests(condition) if isinstance(t, FactTest)} & derived_facts)
        if used:
            raise RuleFileError(name, f"a derivation tests derived fact(s) {used}: derivations test input facts only", rule=stage_name)
    exposure = file.derivations.asparaginase_exposure
    if exposure is not None:
        number_setting(exposure.pegaspargase_window_setting, "asparaginase_exposure")
    tool = file.derivations.encephalopathy_tool
    if tool is not None:
        number_setting(tool.capd_below_age_setting, "encephalopathy_tool")
    hyp = file.derivations.hypotension_from_vitals
    if hyp is not None:
        last = hyp.bands[-1]
        if last.age_days_at_most is not None or last.age_years_below is not None:
            raise RuleFileError(name, "the last hypotension band must have no age limit")
        if hyp.map is not None:
            number_setting(hyp.map.from_age_setting, "the map threshold")
        choice = settings.get(hyp.setting)
        if not isinstance(choice, ChoiceSetting) or "counts" not in choice.choices:
            raise RuleFileError(name, f"hypotension_from_vitals needs choice setting {hyp.setting!r} with a 'counts' choice")
    _check_declarations(file, name)


def _check_declarations(file: RuleSetFile, name: str) -> None:
    """The declarations that name request values: each value must exist in the request's vocabulary."""
    from aegrade import models
    from aegrade.episodes import TreatmentAgent  # here: aegrade.episodes reads rule files

    catalogue = CATALOGUES[file.subject]
    derivations = file.derivations

    def vocabulary(values: list[str], allowed: tuple[str, ...], what: str) -> None:
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise RuleFileError(name, f"{what}: unknown value(s) {unknown} (known: {list(allowed)})")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise RuleFileError(name, f"{what}: listed twice: {repeated}")

    flow = derivations.oxygen_flow
    if flow is not None:
        spec = catalogue.get("oxygen_device")
        if spec is None:
            raise RuleFileError(name, f"oxygen_flow: subject {file.subject} has no oxygen_device fact")
        devices = [d for d in spec.values if d != "none"]
        vocabulary([*flow.required_with, *flow.asked_with], tuple(devices), "oxygen_flow devices")
    pressors = derivations.vasopressors
    if pressors is not None:
        agents: tuple[str, ...] = typing.get_args(models.Vasopressor)
        vocabulary(pressors.not_counted, agents, "vasopressors.not_counted")
        vocabulary(list(pressors.listed_facts.values()), agents, "vasopressors.listed_facts")
        count = catalogue.get(pressors.count_fact)
        if count is None or count.type != "integer":
            raise RuleFileError(name, f"vasopressors.count_fact {pressors.count_fact!r} is not an integer fact of {file.subject}")
        for fact in pressors.listed_facts:
            listed = catalogue.get(fact)
            if listed is None or listed.type != "boolean":
                raise RuleFileError(name, f"vasopressors.listed_facts: {fact!r} is not a boolean fact of {file.subject}")
        if pressors.imply_hypotension and "hypotension" not in catalogue:
            raise RuleFileError(name, f"vasopressors.imply_hypotension: subject {file.subject} has no hypotension fact")
    masking = derivations.fever_masking
    if masking is not None:
        vocabulary(
            [a for agents in masking.agents.values() for a in agents], typing.get_args(TreatmentAgent), "fever_masking agents"
        )
    cards = file.card_indicators
    if cards is not None:
        if file.combination.policy != "worst_domain":
            raise RuleFileError(name, "card_indicators belong to grading (worst_domain) rule sets")
        grades = [band.from_grade for band in cards.established]
        if len(set(grades)) != len(grades):
            raise RuleFileError(name, f"card_indicators: a from_grade is given twice: {sorted(grades)}")


def derivation_conditions(file: RuleSetFile) -> list[tuple[str, Condition]]:
    """The conditions evaluated before the rules (derived booleans, score options, competing
    causes), each with a name: `derive.<fact>`, `score.<fact>.<part>.<option>`,
    `attribution.<fact>.<index>`. They test input facts only, so one evaluation decides them all."""
    d = file.derivations
    named: list[tuple[str, Condition]] = [(f"derive.{b.fact}", b.when) for b in d.booleans]
    for score in d.scores:
        for part in score.parts:
            named += [(f"score.{score.fact}.{part.id}.{i}", o.when) for i, o in enumerate(part.options)]
    named += [(f"attribution.{a.fact}.{i}", a.competing_cause) for i, a in enumerate(d.attributions)]
    return named


def _check_condition(
    condition: Condition,
    catalogue: Mapping[str, FactSpec],
    settings: Mapping[str, ChoiceSetting | NumberSetting],
    name: str,
    where: str,
) -> None:
    for test in iter_tests(condition):
        if isinstance(test, FactTest) and test.ref is not None:
            _check_ref(test, catalogue, settings, name, where)
            continue
        if isinstance(test, SettingTest):
            setting = settings.get(test.setting)
            if setting is None:
                raise RuleFileError(name, f"undeclared setting {test.setting!r}", rule=where)
            values = test.value if isinstance(test.value, list) else [test.value]
            if (test.op in SET_OPS) != isinstance(test.value, list):
                raise RuleFileError(name, f"setting test {test.setting}: {test.op} needs a list only for in/not_in", rule=where)
            if isinstance(setting, ChoiceSetting) and test.op in ORDER_OPS:
                raise RuleFileError(name, f"setting {test.setting} is a choice; {test.op} does not apply", rule=where)
            for value in values:
                problem = _setting_value_problem(setting, value)
                if problem:
                    raise RuleFileError(name, f"setting test {test.setting}: {problem}", rule=where)
            continue
        spec = catalogue.get(test.fact)
        if spec is None:
            raise RuleFileError(name, f"unknown fact {test.fact!r} (known: {sorted(catalogue)})", rule=where)
        _check_fact_test(test, spec, name, where)


def _check_ref(
    test: FactTest,
    catalogue: Mapping[str, FactSpec],
    settings: Mapping[str, ChoiceSetting | NumberSetting],
    name: str,
    where: str,
) -> None:
    def numeric(fact: str) -> bool:
        spec = catalogue.get(fact)
        return spec is not None and spec.type in ("number", "integer") and not spec.bounded

    if test.op not in ORDER_OPS or test.value is not None:
        raise RuleFileError(name, f"{test.fact} {test.op}: a ref is compared with lt/lte/gt/gte and no value", rule=where)
    if not numeric(test.fact):
        raise RuleFileError(name, f"{test.fact}: a ref needs a numeric fact (known: {sorted(catalogue)})", rule=where)
    ref = test.ref
    if isinstance(ref, ScaledFact) and not numeric(ref.fact):
        raise RuleFileError(name, f"{test.fact} {test.op}: ref fact {ref.fact!r} is not a known number", rule=where)
    if isinstance(ref, SettingValue) and not isinstance(settings.get(ref.setting), NumberSetting):
        raise RuleFileError(name, f"{test.fact} {test.op}: ref setting {ref.setting!r} is not a number setting", rule=where)


def _check_fact_test(test: FactTest, spec: FactSpec, name: str, where: str) -> None:
    def fail(message: str) -> NoReturn:
        raise RuleFileError(name, f"{test.fact} {test.op}: {message}", rule=where)

    if test.op in PRESENCE_OPS:
        if test.value is not None:
            fail("takes no value")
        return
    if test.value is None:
        fail("needs a value")
    values: list[Scalar]
    if test.op in SET_OPS:
        if not isinstance(test.value, list) or not test.value:
            fail("needs a non-empty list")
        values = list(test.value)
    else:
        if isinstance(test.value, list):
            fail("takes a single value, not a list")
        values = [test.value]
    if test.op in ORDER_OPS and spec.type in ("boolean", "enum"):
        fail(f"a {spec.type} fact cannot be ordered")
    for value in values:
        if spec.type == "boolean" and not isinstance(value, bool):
            fail(f"{value!r} is not a boolean")
        if spec.type in ("number", "integer") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            fail(f"{value!r} is not a number")
        if spec.type == "integer" and isinstance(value, float) and not value.is_integer():
            fail(f"{value!r} is not a whole number")
        if spec.type == "enum" and value not in spec.values:
            fail(f"{value!r} is not one of {list(spec.values)}")


def canonical_json(data: Any) -> str:
    """Stable JSON text (sorted keys), used for hashing and schema files."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"

