"""The service's errors: a subtree of aegrade's (aegrade/errors.py), each class with a stable code
and the HTTP status it is answered with.

    AegradeError                              (aegrade/errors.py)
    └── ServiceError              service_error              500  base of the service's errors
        ├── Unauthorized          unauthorized               401  API key missing or wrong
        ├── CsrfRejected          csrf_rejected              403  the form's CSRF token is missing or wrong
        ├── NotFound              not_found                  404  no such assessment, episode or route
        ├── MethodNotAllowed      method_not_allowed         405  the route does not take this method
        ├── NotAcceptable         not_acceptable             406  FHIR: only FHIR JSON is served (_format, Accept)
        ├── BodyTimeout           body_timeout               408  the body did not arrive in time
        ├── IdempotencyKeyReused  idempotency_key_reused     409  an Idempotency-Key reused with another request
        ├── PrefetchMissing       prefetch_missing           412  CDS Hooks: a prefetch is missing
        ├── BodyTooLarge          body_too_large             413  over AEGRADE_MAX_BODY_BYTES
        ├── UnsupportedEncoding   unsupported_content_encoding  415  a Content-Encoding other than identity
        ├── UnsupportedCharset    unsupported_charset        415  a JSON charset other than UTF-8
        ├── InternalError         internal_error             500  an unexpected error: no grade
        ├── StoreUnavailable      store_unavailable          503  the audit store cannot be written or read
        └── GradingUnavailable    grading_unavailable        503  no grade came in time
            └── GradingFailed     grading_failed             ---  the grading process stopped or hung
                                                                  (answered 500 engine_error when it
                                                                  crashed, else 503 grading_unavailable)

Errors that are answered with the per-field list (400 json_invalid, 422) are aegrade's
InvalidAssessment (and FhirInputError, a kind of it) or FastAPI's request validation. Every answer
that is not 2xx has one shape, `{"code", "message", "detail"}` (service/http.py): `detail` is
`{"code", "message"}` for these errors and the per-field list for those; on /v1/fhir/* the same content
is answered as an OperationOutcome (service/fhir_native.py). `SERVICE_ERROR_CODES` is
the closed list; README.md documents each code and a test fails when the two drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from aegrade.errors import AegradeError

__all__ = [
    "SERVICE_ERROR_CODES",
    "BodyTimeout",
    "BodyTooLarge",
    "CsrfRejected",
    "GradingFailed",
    "GradingUnavailable",
    "IdempotencyKeyReused",
    "InternalError",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PrefetchMissing",
    "ServiceError",
    "StoreUnavailable",
    "Unauthorized",
    "UnsupportedCharset",
    "UnsupportedEncoding",
]


class ServiceError(AegradeError):
    """An error the service answers with `status` and `{"code", "message", "detail": {"code", "message"}}`."""

    code = "service_error"
    status = 500

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers) if headers else None


class Unauthorized(ServiceError):
    code, status = "unauthorized", 401


class CsrfRejected(ServiceError):
    code, status = "csrf_rejected", 403


class NotFound(ServiceError):
    code, status = "not_found", 404


class MethodNotAllowed(ServiceError):
    code, status = "method_not_allowed", 405


class NotAcceptable(ServiceError):
    """/v1/fhir/*: a `_format` or an `Accept` naming only formats the service does not produce (XML, Turtle)."""

    code, status = "not_acceptable", 406


class BodyTimeout(ServiceError):
    code, status = "body_timeout", 408


class IdempotencyKeyReused(ServiceError):
    code, status = "idempotency_key_reused", 409


class PrefetchMissing(ServiceError):
    code, status = "prefetch_missing", 412


class BodyTooLarge(ServiceError):
    code, status = "body_too_large", 413


class UnsupportedEncoding(ServiceError):
    code, status = "unsupported_content_encoding", 415


class UnsupportedCharset(ServiceError):
    code, status = "unsupported_charset", 415


class InternalError(ServiceError):
    code, status = "internal_error", 500


class StoreUnavailable(ServiceError):
    """The audit store cannot be written or read: no grade may be given. `commit_unknown`: the error
    was the COMMIT's own, so the store may have kept the transaction (service/store.py `transaction`)."""

    code, status = "store_unavailable", 503
    commit_unknown: bool = False


class GradingUnavailable(ServiceError):
    """No grade came within AEGRADE_GRADING_TIMEOUT_S."""

    code, status = "grading_unavailable", 503


class GradingFailed(GradingUnavailable):
    """The grading process stopped, hung or could not be reached; no grade was given. `crashed`:
    it stopped (answered as an engine error, 500), rather than ran out of time (503)."""

    code = "grading_failed"

    def __init__(self, message: str, *, crashed: bool, sent: bool = True) -> None:
        super().__init__(message)
        self.crashed = crashed
        self.sent = sent  # False: the job never reached a grading process (nothing can be on record)


SERVICE_ERROR_CODES: dict[str, type[ServiceError]] = {
    cls.code: cls
    for cls in (
        ServiceError,
        Unauthorized,
        CsrfRejected,
        NotFound,
        MethodNotAllowed,
        NotAcceptable,
        BodyTimeout,
        IdempotencyKeyReused,
        PrefetchMissing,
        BodyTooLarge,
        UnsupportedEncoding,
        UnsupportedCharset,
        InternalError,
        StoreUnavailable,
        GradingUnavailable,
        GradingFailed,
    )
}
