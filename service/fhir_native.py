"""FHIR-native answers on /v1/fhir/*: the CapabilityStatement, errors as OperationOutcome, the
grades as Observations an EHR can file back, and the output codes of our CodeSystem.

Why here and not in aegrade/: these are renderings of answers the service already gives (the
AssessmentResult and the error body `{code, message, detail}`, service/http.py); nothing here
grades, and aegrade/fhir.py (the input mapping) stays free of HTTP.

- **Negotiation** (`negotiate`): `_format` (json, application/json, application/fhir+json) or an
  `Accept` that prefers `application/fhir+json` asks for FHIR. Only JSON is served: a `_format` or
  an `Accept` that names only other FHIR formats (XML, Turtle) is a 406.
- **OperationOutcome for every error** (`FhirErrors`, an ASGI layer around the whole service, so that
  the errors of the body limit, of authentication and of routing are covered as well as the route's
  own): on /v1/fhir/* every answer of status 400 or more is rewritten from our one error shape to an
  OperationOutcome. Nothing is lost: the answer's `code` is an extension, its `message` the
  narrative, and each entry of `detail` an issue whose `details.coding` carries our code (system
  ERROR_SYSTEM), `details.text` the message and `expression` the FHIRPath of the field.
- **Observations out** (`observation_bundle`): one Observation per graded subject (CRS, ICANS), see
  its docstring for each element and why.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field

import aegrade
from aegrade.fhir import FhirAssessmentResult, Located, MappedValue
from aegrade.fhir_codes import AEGRADE_SYSTEM
from aegrade.models import DomainResult
from service.errors import NotAcceptable
from service.middleware import Hygiene

__all__ = [
    "ASSESSMENTS_OPERATION",
    "ASSESSMENT_ID_SYSTEM",
    "ERROR_CODE_EXTENSION",
    "ERROR_SYSTEM",
    "FHIR_BUNDLE_SCHEMA",
    "FHIR_JSON",
    "FhirErrors",
    "FhirResourceOut",
    "GRADE_QUESTIONS",
    "Negotiation",
    "OBSERVATION_ID_SYSTEM",
    "OUTPUT_CODES",
    "OperationOutcomeOut",
    "OutputCode",
    "capability_statement",
    "fhir_path",
    "is_fhir_path",
    "negotiate",
    "observation_bundle",
    "operation_definition",
    "operation_outcome",
]

FHIR_JSON = "application/fhir+json"
FHIR_PREFIX = "/v1/fhir"
ERROR_SYSTEM = "http://aegrade.org/fhir/CodeSystem/error"
"""Our error codes (README: Errors): the `code` of an error body, and the `type` of each field error."""
ERROR_CODE_EXTENSION = "http://aegrade.org/fhir/StructureDefinition/error-code"
"""On an OperationOutcome: the `code` the same error has in our JSON error body."""
ASSESSMENT_ID_SYSTEM = "http://aegrade.org/fhir/sid/assessment"
"""The audit record's id (GET /v1/assessments/{id})."""
OBSERVATION_ID_SYSTEM = "http://aegrade.org/fhir/sid/assessment-observation"
"""One Observation of one audit record: `<record id>-crs`, `<record id>-icans`."""
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
XHTML = "http://www.w3.org/1999/xhtml"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# ---- negotiation -------------------------------------------------------------------------------

_FORMAT_JSON = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})
"""The `_format` values of FHIR JSON (FHIR R4 http.html: `_format`; application/json+fhir is the
media type of DSTU2 and STU3, still sent by older clients). Parameters (fhirVersion) are ignored."""
_OTHER_FHIR_FORMATS = frozenset(
    {"xml", "text/xml", "application/xml", "application/fhir+xml", "ttl", "text/turtle", "application/fhir+turtle", "application/x-turtle"}
)


@dataclass(frozen=True)
class Negotiation:
    """What the client asked for. `fhir`: FHIR resources (POST /v1/fhir/assessments answers a Bundle
    of Observations instead of the AssessmentResult). `media_type`: that of every FHIR resource
    answered (application/fhir+json, or application/json when the client asked for that only)."""

    fhir: bool
    media_type: str


def _accept_ranges(accept: str) -> dict[str, float]:
    """Accept's media ranges and their q-values (a range repeated keeps its highest q)."""
    ranges: dict[str, float] = {}
    for part in accept.split(","):
        kind, *parameters = (p.strip() for p in part.split(";"))
        if not kind:
            continue
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges[kind.lower()] = max(q, ranges.get(kind.lower(), 0.0))
    return ranges


def negotiate(accept: str | None, format_param: str | None) -> Negotiation | None:
    """The FHIR format asked for, from `Accept` and `_format` (which overrides it); None: only a
    format this service does not produce was asked for (406)."""
    if format_param is not None:
        if format_param.split(";", 1)[0].strip().lower() not in _FORMAT_JSON:
            return None
        return Negotiation(fhir=True, media_type=FHIR_JSON)
    ranges = _accept_ranges(accept or "")
    fhir_q = ranges.get(FHIR_JSON, 0.0)
    json_q = ranges.get("application/json", 0.0)
    if fhir_q > 0 and fhir_q >= json_q:
        return Negotiation(fhir=True, media_type=FHIR_JSON)
    if json_q > 0:
        return Negotiation(fhir=False, media_type="application/json")
    wanted = [kind for kind, q in ranges.items() if q > 0]
    if wanted and all(kind in _OTHER_FHIR_FORMATS for kind in wanted):
        return None  # a FHIR client asking for XML or Turtle only: we cannot give it
    return Negotiation(fhir=False, media_type=FHIR_JSON)


def is_fhir_path(path: str, root_path: str = "") -> bool:
    """Whether a request path is under /v1/fhir (behind a proxy prefix `root_path`, after it)."""
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    return path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/")


def _scope_negotiation(scope: Scope) -> Negotiation | None:
    headers = dict(scope.get("headers") or [])
    accept = headers.get(b"accept", b"").decode("latin-1")
    format_param: str | None = None
    for pair in scope.get("query_string", b"").decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        if name == "_format":
            format_param = unquote_plus(value)
    return negotiate(accept, format_param)


# ---- OperationOutcome --------------------------------------------------------------------------

_FIELD_ISSUE_TYPES: dict[str, str] = {
    "json_invalid": "structure",
    "duplicate_key": "structure",
    "extra_forbidden": "structure",
    "missing": "required",
    "nothing_to_grade": "required",
    "literal_error": "code-invalid",
    "enum": "code-invalid",
    "contradiction": "business-rule",
    "wrong_tool": "business-rule",
    "duplicate": "business-rule",
    "finite_number": "value",
    "nul_character": "value",
    "nesting_too_deep": "structure",
    "number_too_large": "value",
    "fhir_invalid": "invalid",
}
"""A field error's type -> the FHIR IssueType (http://hl7.org/fhir/issue-type). Pydantic's type and
bound errors (`*_type`, `greater_than*`, `less_than*`, `too_*`, `*_parsing`, patterns) are `value`;
everything else is `invalid`, the root of the value set."""
_VALUE_ERROR = re.compile(r"(_type|_parsing|^greater_than.*|^less_than.*|^too_.*|_pattern_mismatch|^finite_number)$")

_PROBLEM_ISSUE_TYPES: dict[str, str] = {
    "unauthorized": "login",
    "csrf_rejected": "forbidden",
    "not_found": "not-found",
    "method_not_allowed": "not-supported",
    "not_acceptable": "not-supported",
    "body_timeout": "timeout",
    "idempotency_key_reused": "conflict",
    "prefetch_missing": "required",
    "body_too_large": "too-costly",
    "unsupported_content_encoding": "not-supported",
    "unsupported_charset": "not-supported",
    "internal_error": "exception",
    "store_unavailable": "no-store",
    "grading_unavailable": "timeout",
}
"""A problem's code (service/errors.py) -> the FHIR IssueType. Engine errors (500: evaluator
disagreement, a lost result, a crashed grading process) are `exception`."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def fhir_path(loc: Sequence[Any], root: str = "Bundle") -> str | None:
    """The FHIRPath of a field error's `loc` (["body", "entry", 3, "resource", "valueQuantity",
    "value"] -> "Bundle.entry[3].resource.valueQuantity.value"); None when it is not a path in the
    body (a JSON syntax error's loc is a character offset: its message says where)."""
    if not loc or loc[0] != "body":
        return None
    path = root
    for i, part in enumerate(loc[1:]):
        if isinstance(part, bool):
            return None
        if isinstance(part, int):
            if i == 0:
                return None  # ["body", 69]: a character offset
            path += f"[{part}]"
        elif _IDENTIFIER.fullmatch(str(part)):
            path += f".{part}"
        else:  # a key that is no FHIRPath identifier (repeated keys can be anything): delimited
            escaped = str(part).replace("\\", "\\\\").replace("`", "\\`")
            path += f".`{escaped}`"
    return path


_FHIR_CODE = re.compile(r"[^\s]+( [^\s]+)*")
"""A FHIR `code` value (FHIR R4 datatypes: no leading, trailing or double whitespace)."""


def _details(code: str, text: str) -> dict[str, Any]:
    """An issue's details: our code, and the message (FHIR strings are never empty: left out then)."""
    details: dict[str, Any] = {"coding": [{"system": ERROR_SYSTEM, "code": code if _FHIR_CODE.fullmatch(code) else "invalid"}]}
    text = fhir_string(text)
    if text:
        details["text"] = text
    return details


_NOT_FHIR_STRING = re.compile(r"[^ \r\n\t\S]")


def fhir_string(text: str) -> str:
    r"""`text` as a FHIR string ([ \r\n\t\S]+): other white space (a form feed, a vertical tab, a
    separator) becomes a space; "" when nothing but white space is left (the element is then left out)."""
    text = _NOT_FHIR_STRING.sub(" ", text)
    return text if text.strip() else ""


def _field_issue(entry: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(entry.get("type", ""))
    issue_type = _FIELD_ISSUE_TYPES.get(kind) or ("value" if _VALUE_ERROR.search(kind) else "invalid")
    issue: dict[str, Any] = {"severity": "error", "code": issue_type, "details": _details(kind, str(entry.get("msg", "")))}
    where = fhir_path(list(entry.get("loc") or ()))
    if where is not None:
        issue["expression"] = [where]
    return issue


def _problem_issue(status: int, code: str, message: str) -> dict[str, Any]:
    issue_type = _PROBLEM_ISSUE_TYPES.get(code) or ("exception" if status >= 500 else "processing")
    return {
        "severity": "fatal" if status >= 500 else "error",
        "code": issue_type,
        "details": _details(code, message),
    }


def _narrative(text: str) -> dict[str, str]:
    return {"status": "generated", "div": f'<div xmlns="{XHTML}"><p>{html.escape(text, quote=False)}</p></div>'}


def operation_outcome(status: int, body: Any) -> dict[str, Any]:
    """The OperationOutcome of an error answer: `body` is our error body {code, message, detail}
    (anything else, such as a non-JSON body, is described by its status alone)."""
    if not (isinstance(body, Mapping) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str)):
        body = {"code": f"http_{status}", "message": f"HTTP {status}", "detail": None}
    code, message, detail = body["code"], body["message"], body.get("detail")
    if not _FHIR_CODE.fullmatch(code):
        code = f"http_{status}"
    if isinstance(detail, list) and detail and all(isinstance(e, Mapping) for e in detail):
        issues = [_field_issue(entry) for entry in detail]
    else:
        issues = [_problem_issue(status, code, message)]
    return {
        "resourceType": "OperationOutcome",
        "text": _narrative(message or code),
        "extension": [{"url": ERROR_CODE_EXTENSION, "valueCode": code}],
        "issue": issues,
    }


def _outcome_bytes(status: int, body: bytes) -> bytes:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    return json.dumps(operation_outcome(status, parsed), ensure_ascii=False, separators=(",", ":")).encode()


async def _not_acceptable(scope: Scope, receive: Receive, send: Send) -> None:
    error = NotAcceptable("only FHIR JSON is served: _format json, application/json or application/fhir+json; Accept application/fhir+json")
    body = json.dumps(operation_outcome(error.status, {"code": error.code, "message": error.message}), separators=(",", ":")).encode()
    headers = [(b"content-type", FHIR_JSON.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class FhirErrors:
    """ASGI layer, outermost: on /v1/fhir/* a format that cannot be served is a 406, and every
    answer of status 400 or more becomes an OperationOutcome (its status and other headers kept),
    whichever layer made it: the body limit, authentication, routing, the route, the error handlers.
    HEAD answers have no body and pass unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_fhir_path(scope["path"], scope.get("root_path", "")):
            await self.app(scope, receive, send)
            return
        negotiation = _scope_negotiation(scope)
        head = scope["method"] == "HEAD"
        if negotiation is None:  # answered through Hygiene: logged, with the security headers, as any answer
            await Hygiene(_not_acceptable)(scope, receive, send)
            return
        if head:
            await self.app(scope, receive, send)
            return
        media_type = negotiation.media_type.encode()
        held: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and int(message["status"]) >= 400:
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(bytes(message.get("body", b"")))
            if message.get("more_body", False):
                return
            await flush()

        async def flush() -> None:
            nonlocal held
            assert held is not None
            start, held = held, None
            outcome = _outcome_bytes(int(start["status"]), b"".join(chunks))
            kept = [(k, v) for k, v in start.get("headers", ()) if k.lower() not in (b"content-type", b"content-length")]
            headers = [*kept, (b"content-type", media_type), (b"content-length", str(len(outcome)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": outcome, "more_body": False})

        await self.app(scope, receive, rewrite)
        if held is not None:  # a start with no final body: answer it whole
            await flush()


# ---- our output codes --------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputCode:
    """A code of AEGRADE_SYSTEM the service writes (never reads): `role` question (an
    Observation.code or component code), answer (a value) or interpretation; `answers` the question
    codes an answer answers; `grade` the grade an answer stands for."""

    code: str
    display: str
    definition: str
    role: Literal["question", "answer", "interpretation"]
    value_type: str | None = None
    answers: tuple[str, ...] = ()
    grade: int | None = None


GRADE_QUESTIONS: dict[str, tuple[str, str]] = {
    "crs": ("crs-grade-astct-2019", "CRS grade (ASTCT 2019)"),
    "icans": ("icans-grade-astct-2019", "ICANS grade (ASTCT 2019)"),
}
"""The subject of the AssessmentResult -> the code of its Observation and its display."""


def _grade_bounds() -> tuple[int, int]:
    """The grades a result can carry: the bounds of DomainResult.grade (aegrade/models.py)."""
    low, high = 0, 5
    for bound in DomainResult.model_fields["grade"].metadata:
        low = int(getattr(bound, "ge", low))
        high = int(getattr(bound, "le", high))
    return low, high


def _output_codes() -> dict[str, OutputCode]:
    low, high = _grade_bounds()
    questions = tuple(code for code, _ in GRADE_QUESTIONS.values())
    codes = [
        *(
            OutputCode(code, display, f"The {display} aegrade computed from the resources listed in derivedFrom; "
                       "the value is one of the grade-N answers, or absent (dataAbsentReason) when no grade could be given.",
                       "question", "CodeableConcept", answers=())
            for code, display in GRADE_QUESTIONS.values()
        ),
        OutputCode("grade-max", "Highest grade still possible",
                   "Component: the highest grade the unreported inputs still allow (grade_max); equal to the value when nothing unreported could raise it.",
                   "question", "CodeableConcept"),
        OutputCode("undetermined-input", "Unreported input that could raise the grade",
                   "Component, one per input: the request path of an unreported input whose report could raise the grade, and the grade it could lead to.",
                   "question", "string"),
        *(
            OutputCode(f"grade-{n}", f"Grade {n}", f"Grade {n} of the scale named by the question.", "answer",
                       answers=(*questions, "grade-max"), grade=n)
            for n in range(low, high + 1)
        ),
        OutputCode("graded", "Graded", "Everything that could raise the grade was reported: the grade is final.", "interpretation"),
        OutputCode("incomplete", "Incomplete",
                   "The reported inputs establish the grade; unreported inputs could raise it up to grade-max.", "interpretation"),
        OutputCode("no_crs", "No CRS", "CRS grade 0: no fever and no masking treatment.", "interpretation"),
        OutputCode("not_assessable", "Not assessable",
                   "The reported inputs establish no grade; grade-max says what the missing inputs could make it.", "interpretation"),
        OutputCode("clinician_review", "Left to the clinician",
                   "The rules leave the grade to the treating clinician (e.g. fever masked by treatment, no hypotension or hypoxia).",
                   "interpretation"),
    ]
    return {c.code: c for c in codes}


OUTPUT_CODES: dict[str, OutputCode] = _output_codes()
"""The codes of AEGRADE_SYSTEM in the service's FHIR answers (served with the input codes at GET
/v1/fhir/CodeSystem/assessment)."""


# ---- Observations out --------------------------------------------------------------------------


def _instant(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def _reference(at: Located) -> str | None:
    """How an answer points at an input resource: its absolute fullUrl (the server it came from),
    else ResourceType/id (resolved on the EHR that files the answer), else its urn:uuid fullUrl."""
    full_url = at.full_url or ""
    if full_url.startswith(("http://", "https://")):
        return full_url
    rid, kind = at.resource.get("id"), at.resource.get("resourceType")
    if isinstance(rid, str) and rid and isinstance(kind, str):
        return f"{kind}/{rid}"
    if full_url.startswith(("urn:uuid:", "urn:oid:")):
        return full_url
    return None


def _used_by(subject: str, value: MappedValue) -> bool:
    """Whether a mapped value is an input of the subject's grade (recorded-only values are not)."""
    field = value.field or ""
    if subject == "crs":
        return field.startswith(("vitals.", "crs."))
    return field.startswith("neuro.") or field == "patient.developmental_delay"


_DERIVED_FROM_TYPES = frozenset({"Observation", "QuestionnaireResponse", "DocumentReference", "ImagingStudy", "Media", "MolecularSequence"})
"""The resource types Observation.derivedFrom may point at (FHIR R4). A MedicationAdministration
(vasopressors, fever masking) or the Patient (age) cannot: the note names them instead."""


def _grade_concept(grade: int) -> dict[str, Any]:
    code = OUTPUT_CODES[f"grade-{grade}"]
    return {"coding": [{"system": AEGRADE_SYSTEM, "code": code.code, "display": code.display}], "text": code.display}


def _explanation(subject: str, part: DomainResult, record_id: str, other_sources: Sequence[str]) -> str:
    label = subject.upper()
    grade = f"grade {part.grade}" if part.grade is not None else "no grade"
    lines = [f"{label}: {grade} ({part.scale}, rule set {part.ruleset}), status {part.status}."]
    if part.grade_max is not None and part.grade_max != part.grade:
        lines.append(f"Unreported inputs could raise it to grade {part.grade_max}.")
    for driver in part.drivers:
        if driver.drives:
            lines.append(f"- {driver.criterion} [{driver.rule}; {driver.citation}; evidence {driver.evidence_level}]")
    if part.missing:
        lines.append("Not reported (never read as normal): " + ", ".join(part.missing) + ".")
    lines += part.notes
    if other_sources:
        lines.append("Also read from: " + ", ".join(other_sources) + ".")
    lines.append(f"Decision support: the treating clinician confirms the grade. aegrade audit record {record_id}.")
    return "\n".join(lines)


def _observation(
    subject: str, part: DomainResult, result: FhirAssessmentResult, by_label: Mapping[str, Located], patient: str | None
) -> dict[str, Any]:
    """One graded subject as an Observation:

    - status `final` when the grade is given and nothing unreported could raise it, else
      `preliminary` (incomplete, not assessable, left to the clinician): a grade that may still
      rise must not be filed as settled;
    - category `survey` ("assessment tool/survey instrument observations", e.g. Apgar): a grade is
      the score of an assessment instrument computed from findings, not a finding of the physical
      exam (`exam`), which are its inputs;
    - code our `crs-grade-astct-2019` / `icans-grade-astct-2019`; the value a coded answer
      `grade-N` (a grade is an ordinal category, not a quantity: grade 4 is not twice grade 2), or a
      dataAbsentReason `unknown` when no grade could be given;
    - interpretation our status code; components `grade-max` and one `undetermined-input` per input;
    - derivedFrom: the Observations that gave this subject's inputs; the note names the rest.
    """
    question, display = GRADE_QUESTIONS[subject]
    references: list[str] = []
    others: list[str] = []
    for value in result.mapping.mapped:
        at = by_label.get(value.source)
        if not _used_by(subject, value) or at is None:
            continue
        reference = _reference(at)
        if reference is None:
            continue
        if at.resource.get("resourceType") in _DERIVED_FROM_TYPES:
            if reference not in references:
                references.append(reference)
        elif f"{reference} ({value.field})" not in others:
            others.append(f"{reference} ({value.field})")
    settled = part.grade is not None and part.grade_max == part.grade
    status_code = OUTPUT_CODES[part.status]
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [
            {"use": "official", "system": OBSERVATION_ID_SYSTEM, "value": f"{result.id}-{subject}"},
            {"use": "secondary", "system": ASSESSMENT_ID_SYSTEM, "value": result.id},
        ],
        "status": "final" if settled else "preliminary",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}]}],
        "code": {"coding": [{"system": AEGRADE_SYSTEM, "code": question, "display": display}], "text": display},
        "effectiveDateTime": _instant(result.mapping.as_of),
        "issued": _instant(result.evaluated_at),
    }
    if patient is not None:
        observation["subject"] = {"reference": patient}
    if part.grade is not None:
        observation["valueCodeableConcept"] = _grade_concept(part.grade)
    else:
        observation["dataAbsentReason"] = {
            "coding": [{"system": DATA_ABSENT_REASON, "code": "unknown", "display": "Unknown"}],
            "text": f"no grade: {status_code.display.lower()}",
        }
    observation["interpretation"] = [
        {"coding": [{"system": AEGRADE_SYSTEM, "code": status_code.code, "display": status_code.display}], "text": status_code.definition}
    ]
    observation["method"] = {"text": f"{part.scale} consensus grading, aegrade rule set {part.ruleset}"}
    if references:
        observation["derivedFrom"] = [{"reference": r} for r in references]
    observation["note"] = [{"text": _explanation(subject, part, result.id, others)}]
    components: list[dict[str, Any]] = []
    if part.grade_max is not None:
        components.append({"code": _own("grade-max"), "valueCodeableConcept": _grade_concept(part.grade_max)})
    for undetermined in part.undetermined_by:
        components.append(
            {"code": _own("undetermined-input"), "valueString": f"{undetermined.input} (could lead to grade {undetermined.up_to})"}
        )
    if components:
        observation["component"] = components
    return observation


def _own(code: str) -> dict[str, Any]:
    own = OUTPUT_CODES[code]
    return {"coding": [{"system": AEGRADE_SYSTEM, "code": own.code, "display": own.display}], "text": own.display}


def _full_url(record_id: str, part: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{OBSERVATION_ID_SYSTEM}/{record_id}/{part}')}"


def observation_bundle(result: FhirAssessmentResult, located: Iterable[Located]) -> dict[str, Any]:
    """The grades as FHIR: a Bundle of type collection holding one Observation per graded subject
    and, when something of the answer is not in them, an OperationOutcome of information issues
    (resources not used and why; flags, actions and other scales, which stay in the JSON answer)."""
    located = list(located)
    by_label = {at.label: at for at in located}
    patients = [at for at in located if at.resource.get("resourceType") == "Patient"]
    patient = _reference(patients[0]) if len(patients) == 1 else None
    entries: list[dict[str, Any]] = []
    for subject, part in (("crs", result.crs), ("icans", result.icans)):
        if part is not None:
            entries.append({"fullUrl": _full_url(result.id, subject), "resource": _observation(subject, part, result, by_label, patient)})
    issues = [
        {"severity": "information", "code": "informational", "details": {"text": f"not used: {ignored.source}: {ignored.reason}"}}
        for ignored in result.mapping.ignored
    ]
    json_only = {
        "flags": len(result.flags) + len(result.undetermined_flags),
        "label actions": len(result.actions) + len(result.undetermined_actions),
        "grades by other scales": len(result.other_scales),
    }
    for what, count in json_only.items():
        if count:
            issues.append(
                {
                    "severity": "information",
                    "code": "informational",
                    "details": {"text": f"{what} ({count}): in the JSON answer only, GET /v1/assessments/{result.id}"},
                }
            )
    if issues:
        outcome = {"resourceType": "OperationOutcome", "issue": issues}
        entries.append({"fullUrl": _full_url(result.id, "outcome"), "resource": outcome})
    return {
        "resourceType": "Bundle",
        "identifier": {"system": ASSESSMENT_ID_SYSTEM, "value": result.id},
        "type": "collection",
        "timestamp": _instant(result.evaluated_at),
        "entry": entries,
    }


# ---- CapabilityStatement -----------------------------------------------------------------------

ASSESSMENTS_OPERATION = "http://aegrade.org/fhir/OperationDefinition/assessments"
"""The canonical URL of the operation POST /v1/fhir/assessments; served at
GET /v1/fhir/OperationDefinition/assessments."""


def operation_definition() -> dict[str, Any]:
    """POST /v1/fhir/assessments as a FHIR OperationDefinition: system level, one Bundle in, one
    Bundle out (so both are sent and answered as the resource itself, FHIR R4 operations.html)."""
    return {
        "resourceType": "OperationDefinition",
        "id": "assessments",
        "url": ASSESSMENTS_OPERATION,
        "version": aegrade.__version__,
        "name": "Assessments",
        "title": "Grade CRS and ICANS from a Bundle",
        "status": "active",
        "kind": "operation",
        "publisher": "aegrade project",
        "description": "Maps a Bundle's Patient, Observations and MedicationAdministrations to an assessment, grades CRS and "
        "ICANS by ASTCT 2019, and records both on the audit trail before answering.",
        "affectsState": True,  # every grading is recorded
        "code": "assessments",
        "comment": "Invoked as POST /v1/fhir/assessments (not $assessments). Errors are an OperationOutcome.",
        "system": True,
        "type": False,
        "instance": False,
        "parameter": [
            {
                "name": "bundle",
                "use": "in",
                "min": 1,
                "max": "1",
                "type": "Bundle",
                "documentation": "A collection, transaction, searchset or batch-response Bundle, sent as the body.",
            },
            {
                "name": "return",
                "use": "out",
                "min": 1,
                "max": "1",
                "type": "Bundle",
                "documentation": "With Accept: application/fhir+json, a collection Bundle: one Observation per graded subject "
                "(and an OperationOutcome of information issues). Otherwise aegrade's JSON AssessmentResult, which is no FHIR resource.",
            },
        ],
    }


STARTED = datetime.now(timezone.utc)
"""When this service instance started: the CapabilityStatement's date (kind instance)."""


def capability_statement(*, api_keys: bool, public_base_url: str | None = None) -> dict[str, Any]:
    """What this instance of the service does in FHIR R4 (4.0.1) terms: JSON only; the CodeSystem
    read; POST of a Bundle to /v1/fhir/assessments, declared as an operation (it is no FHIR
    interaction) whose documentation says the URL and what comes back. `public_base_url`
    (AEGRADE_PUBLIC_BASE_URL, never the request's Host) gives implementation.url."""
    security = (
        "Authorization: Bearer <API key> is required (AEGRADE_API_KEYS is set) on every route but this one."
        if api_keys
        else "No authentication is configured on this instance (AEGRADE_API_KEYS is not set): put it behind a gateway that authenticates."
    )
    return {
        "resourceType": "CapabilityStatement",
        "id": "aegrade",
        "name": "AegradeCapabilityStatement",
        "title": "aegrade: adverse-event grading from FHIR R4 resources",
        "status": "active",
        "date": _instant(STARTED),
        "publisher": "aegrade project",
        "description": "Grades CRS and ICANS (ASTCT 2019) from a FHIR R4 Bundle of Patient, Observation, MedicationAdministration "
        "and Medication resources. Decision support: the treating clinician confirms every grade.",
        "kind": "instance",
        "software": {"name": "aegrade", "version": aegrade.__version__},
        "implementation": {
            "description": "aegrade FHIR R4 interface, under /v1/fhir",
            **({"url": public_base_url.rstrip("/") + FHIR_PREFIX} if public_base_url else {}),
        },
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Every error on /v1/fhir/* is an OperationOutcome; the error's aegrade code is in issue.details.coding "
                f"({ERROR_SYSTEM}) and in the extension {ERROR_CODE_EXTENSION}.",
                "security": {"description": security},
                "resource": [
                    {
                        "type": "CodeSystem",
                        "documentation": "GET /v1/fhir/CodeSystem/assessment: aegrade's own codes (the items read, the grades answered).",
                        "interaction": [{"code": "read"}],
                    },
                    {
                        "type": "OperationDefinition",
                        "documentation": "GET /v1/fhir/OperationDefinition/assessments: the operation below.",
                        "interaction": [{"code": "read"}],
                    },
                ],
                "operation": [
                    {
                        "name": "assessments",
                        "definition": ASSESSMENTS_OPERATION,
                        "documentation": "POST a Bundle (collection, transaction, searchset or batch-response) to /v1/fhir/assessments. "
                        "With Accept: application/fhir+json (or _format=json) the answer is a collection Bundle of Observations "
                        "(CRS and ICANS grades, coded in http://aegrade.org/fhir/CodeSystem/assessment, derivedFrom the Observations "
                        "used); otherwise aegrade's JSON AssessmentResult with the mapping.",
                    }
                ],
            }
        ],
    }


# ---- OpenAPI models ----------------------------------------------------------------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FhirResourceOut(_Open):
    """A FHIR R4 resource (elements as in the FHIR specification)."""

    resourceType: str


class IssueOut(_Open):
    severity: Literal["fatal", "error", "warning", "information"]
    code: str = Field(description="A code of the FHIR IssueType value set (http://hl7.org/fhir/issue-type).")
    details: dict[str, Any] | None = Field(default=None, description=f"Our code in coding ({ERROR_SYSTEM}); the message in text.")
    expression: list[str] | None = Field(default=None, description="FHIRPath of the element at fault, e.g. Bundle.entry[3].resource.")


class OperationOutcomeOut(_Open):
    """Every error on /v1/fhir/*: a FHIR R4 OperationOutcome (README: FHIR R4 input)."""

    resourceType: Literal["OperationOutcome"]
    issue: list[IssueOut] = Field(min_length=1)


FHIR_BUNDLE_SCHEMA: dict[str, Any] = {
    "title": "FhirBundleOut",
    "description": "The grades as FHIR (Accept: application/fhir+json): a collection Bundle of Observations "
    "(and an OperationOutcome of information issues when something is not in them).",
    "type": "object",
    "required": ["resourceType", "type", "entry"],
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"const": "collection"},
        "identifier": {"type": "object"},
        "timestamp": {"type": "string"},
        "entry": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["resource"],
                "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}},
                },
            },
        },
    },
}
"""The OpenAPI schema of that answer (inline: it is no request or response model of FastAPI's)."""
