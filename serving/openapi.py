"""The service's OpenAPI 3.1 document, served at ``GET /docs.json`` (and shown by the index page).

BentoML would describe ``/recommend`` and ``/no_show_risk`` as taking ``Any`` (the service
validates their bodies itself, to answer with its own 422s) and would leave the Starlette routes
out; this document is built from the pydantic models `serving.service.handle` validates, so it is
the contract a client codes against, and schemathesis tests the server against it.

Every operation carries a worked example: the request example of its model (whose ids are those
of the demo world, `make demo`), and a response example recorded from the demo service (trimmed).
`tests/unit/test_openapi.py` checks that each example validates against its model.

Import rule: pydantic and `serving.schemas` only (nothing of the service's runtime).
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from serving.console_api import CatalogResponse, ModelPlot, WhoAmIResponse
from serving.keys import Role
from serving.schemas import (
    UPLIFT_NOT_LOADED,
    ContactRequest,
    ContactResponse,
    CreatedKey,
    CreateKeyRequest,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    KeyListResponse,
    ModelInfoResponse,
    MonitoringResponse,
    NoShowRiskRequest,
    NoShowRiskResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    RevokedKey,
    ValidationErrorResponse,
    WorklistRequest,
    WorklistResponse,
)

API_VERSION: Final = "1.0.0"
_REQUEST_ID: Final = "5b1f0c8e2a9d4f6b8c3e7a1d0f2b4c6e"

# -------------------------------------------------------------------- response examples
# Recorded from the demo service (medium world, seed 7) and trimmed to a row or two.

RECOMMEND_EXAMPLE: Final[dict[str, Any]] = {
    "specialists": [
        {
            "rank": 1,
            "specialist_id": "1336432848",
            "name": "Brandon Dixon",
            "specialty": {"code": "207RC0000X", "name": "Cardiology"},
            "distance_km": 1.66,
            "next_available": "2025-07-07T12:00:00",
            "next_available_days": 6.5,
            "in_network": True,
            "accepts_plan": True,
            "out_of_network": False,
            "score": 1.4699,
            "reasons": ["1.7 km away", "treats heart failure", "in the patient's network"],
        },
        {
            "rank": 2,
            "specialist_id": "1724204213",
            "name": "Taylor Lutz",
            "specialty": {"code": "207RI0011X", "name": "Interventional Cardiology"},
            "distance_km": 3.37,
            "next_available": "2025-07-03T12:00:00",
            "next_available_days": 2.5,
            "in_network": True,
            "accepts_plan": True,
            "out_of_network": False,
            "score": 1.1129,
            "reasons": [
                "3.4 km away",
                "in the patient's network",
                "next opening in 2 days",
                "patients keep 86% of their visits here",
            ],
        },
    ],
    "candidates_considered": 3,
    "radius_km": 30.0,
    "empty_reason": None,
    "warnings": [],
    "model_version": "1",
    "request_id": _REQUEST_ID,
}
EMPTY_RECOMMEND_EXAMPLE: Final[dict[str, Any]] = {
    "specialists": [],
    "candidates_considered": 0,
    "radius_km": 0.01,
    "empty_reason": (
        "no Cardiology (207RC0000X) specialist accepting new patients within 0.01 km; "
        "widen max_distance_km"
    ),
    "warnings": [],
    "model_version": "1",
    "request_id": _REQUEST_ID,
}
NO_SHOW_EXAMPLE: Final[dict[str, Any]] = {
    "predictions": [
        {
            "appointment_id": "AP00114000",
            "risk": 0.0222,
            "tier": "low",
            "top_factors": ["lead_days", "language", "urgency"],
            "recommended_action": "standard reminder",
            "expected_benefit": 0.0031,
        }
    ],
    "model_version": "1",
    "request_id": _REQUEST_ID,
}
WORKLIST_EXAMPLE: Final[dict[str, Any]] = {
    "rows": [
        {
            "appointment_id": "AP00114223",
            "risk": 0.6346,
            "tier": "high",
            "top_factors": ["prior_no_show_rate", "lead_days", "text_reminder"],
            "recommended_action": "call and offer transport",
            "expected_benefit": 0.0412,
            "appointment_at": "2025-07-03T08:30:00",
            "specialist_id": "1703547657",
            "contact_attempts": 1,
            "last_contact_at": "2025-06-30T10:12:00",
            "last_contact_outcome": "no_answer",
        }
    ],
    "model_version": "1",
    "order": "risk",
    "uplift_model_version": "1",
    "request_id": _REQUEST_ID,
}
# Without an outreach-uplift model (or ordered by benefit: the same row shape).
WORKLIST_NO_UPLIFT_EXAMPLE: Final[dict[str, Any]] = {
    "rows": [{**WORKLIST_EXAMPLE["rows"][0], "expected_benefit": None}],
    "model_version": "1",
    "order": "risk",
    "uplift_model_version": None,
    "request_id": _REQUEST_ID,
}
WORKLIST_CSV_EXAMPLE: Final = (
    "appointment_id,appointment_at,specialist_id,risk,expected_benefit,tier,top_factors,"
    "recommended_action,contact_attempts,last_contact_outcome\n"
    "AP00114223,2025-07-03T08:30:00,1703547657,0.6346,0.0412,high,"
    "prior_no_show_rate|lead_days|text_reminder,call and offer transport,1,no_answer\n"
)
CONTACT_EXAMPLE: Final[dict[str, Any]] = {
    "appointment_id": "AP00114000",
    "recorded_at": "2025-06-30T14:05:12",
    "request_id": _REQUEST_ID,
}
MODEL_INFO_EXAMPLE: Final[dict[str, Any]] = {
    "models": [
        {
            "name": "specialist-ranker",
            "version": "1",
            "run_id": "30bf462181484165b607a15aef13236a",
            "trained_at": "2026-11-23T16:43:01Z",
            "features": ["distance_km", "focus_match", "in_network", "accepts_plan", "..."],
            "metrics": {
                "model": {"ndcg@5": 0.612, "mrr": 0.498, "true ndcg@5": 0.9636},
                "weighted_rule": {"ndcg@5": 0.598, "mrr": 0.487, "true ndcg@5": 0.9553},
            },
            "card_markdown": "# Model card: specialist-ranker v1\n...",
            "plots": ["gain_by_position", "ndcg_by_specialty", "ndcg_by_urgency"],
        },
        {
            "name": "no-show",
            "version": "1",
            "run_id": None,
            "trained_at": None,
            "features": ["lead_days", "same_day", "booked_weekday", "booked_hour", "..."],
            "metrics": {},
            "card_markdown": None,
            "plots": [],
        },
    ],
    "request_id": _REQUEST_ID,
}
MODEL_PLOT_EXAMPLE: Final[dict[str, Any]] = {
    "model": "no-show",
    "name": "calibration",
    "media_type": "image/png",
    "data_base64": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==",
    "request_id": _REQUEST_ID,
}
WHOAMI_EXAMPLE: Final[dict[str, Any]] = {
    "key_id": "8b7a6c5d4e3f2a10",
    "role": "outreach",
    "pages": ["worklist"],
    "request_id": _REQUEST_ID,
}
CATALOG_EXAMPLE: Final[dict[str, Any]] = {
    "as_of": "2025-07-01T00:00:00",
    "specialties": [{"code": "207RC0000X", "name": "Cardiology", "specialists": 212}],
    "reasons": [{"code": "I50.9", "label": "heart failure", "specialty": "207RC0000X"}],
    "plans": [
        {
            "insurance_plan_id": "PLN-B-PPO",
            "plan_name": "Blue Lakes PPO",
            "payer_type": "commercial",
            "plan_type": "PPO",
        }
    ],
    "organizations": [{"organization_id": "ORG0001", "name": "Lakeside Heart", "city": "Chicago"}],
    "languages": ["en", "es"],
    "factor_labels": {"lead_days": "days between booking and visit"},
    "tiers": {"medium": 0.2, "high": 0.4},
    "center": {"latitude": 41.88, "longitude": -87.63},
    "request_id": _REQUEST_ID,
}
RELOAD_EXAMPLE: Final[dict[str, Any]] = {
    "reloaded": True,
    "versions": {"ranker": "1", "no_show": "1"},
    "request_id": _REQUEST_ID,
}
KEY_LIST_EXAMPLE: Final[dict[str, Any]] = {
    "keys": [
        {
            "key_id": "3f9a1c2b4d5e6f70",
            "role": "admin",
            "created_at": "2026-11-23T18:00:03",
            "revoked_at": None,
        },
        {
            "key_id": "8b7a6c5d4e3f2a10",
            "role": "outreach",
            "created_at": "2026-11-23T18:00:04",
            "revoked_at": None,
        },
    ],
    "request_id": _REQUEST_ID,
}
CREATED_KEY_EXAMPLE: Final[dict[str, Any]] = {
    "key_id": "8b7a6c5d4e3f2a10",
    "role": "outreach",
    "secret": "rml_8b7a6c5d4e3f2a10_Zx3kQ0v9T8m2Lr5pWc1yHn7sJd4aBf6eGu0iKo2qXt8",
    "created_at": "2026-11-23T18:00:04",
    "request_id": _REQUEST_ID,
}
REVOKED_KEY_EXAMPLE: Final[dict[str, Any]] = {
    "key_id": "8b7a6c5d4e3f2a10",
    "revoked": True,
    "request_id": _REQUEST_ID,
}
FEEDBACK_EXAMPLE: Final[dict[str, Any]] = {
    "recorded": 1,
    "duplicates": 0,
    "unknown": [{"index": 1, "field": "referral_id"}],
    "request_id": _REQUEST_ID,
}
_WEEK_EXAMPLE: Final[dict[str, Any]] = {
    "group": "2025-W27",
    "rows": 412,
    "no_shows": 61,
    "observed_rate": 0.148,
    "mean_predicted": 0.141,
    "calibration_gap": 0.007,
    "auc": 0.712,
    "ece": 0.021,
    "top20_recall": 0.459,
}
MONITORING_EXAMPLE: Final[dict[str, Any]] = {
    "start": "2025-05-06",
    "end": "2025-06-30",
    "no_show": {
        "model_versions": ["1"],
        "scored": 3120,
        "with_outcome": 2874,
        "overall": {**_WEEK_EXAMPLE, "group": "overall", "rows": 2874, "no_shows": 418},
        "weeks": [_WEEK_EXAMPLE],
        "calibration": [{"decile": 1, "rows": 288, "mean_predicted": 0.031, "observed": 0.028}],
        "subgroups": {
            "payer_type": [{**_WEEK_EXAMPLE, "group": "medicaid"}],
            "age_band": [{**_WEEK_EXAMPLE, "group": "65+"}],
        },
        "training_auc": 0.724,
    },
    "ranker": {
        "referrals": 120,
        "groups": [
            {
                "group": "ranked_first",
                "referrals": 64,
                "completed": 40,
                "leaked": 8,
                "pending": 16,
                "completion_rate": 0.833,
            }
        ],
    },
    "drift": {
        "rows": 3120,
        "status": "moderate",
        "features": [{"feature": "lead_days", "psi": 0.13, "status": "moderate"}],
        "note": None,
    },
    "calibration_degraded": False,
    "auc_dropped": False,
    "flags": [
        {
            "name": "calibration_gap",
            "raised": False,
            "value": 0.007,
            "threshold": 0.03,
            "message": "|observed - predicted| no-show rate over the window",
        },
        {
            "name": "auc_dropped",
            "raised": False,
            "value": 0.012,
            "threshold": 0.03,
            "message": "training test AUC 0.7240 minus the window's 0.7120",
        },
    ],
    "notes": [],
    "request_id": _REQUEST_ID,
}
VALIDATION_EXAMPLE: Final[dict[str, Any]] = {
    "errors": [
        {"field": "referral.patient.latitude", "problem": "must be between -90 and 90"},
        {"field": "referral.specialty", "problem": "is required"},
    ],
    "request_id": _REQUEST_ID,
}

# (model, example) of every response body, for the tests
RESPONSE_EXAMPLES: Final[list[tuple[type[BaseModel], dict[str, Any]]]] = [
    (RecommendResponse, RECOMMEND_EXAMPLE),
    (RecommendResponse, EMPTY_RECOMMEND_EXAMPLE),
    (NoShowRiskResponse, NO_SHOW_EXAMPLE),
    (WorklistResponse, WORKLIST_EXAMPLE),
    (WorklistResponse, WORKLIST_NO_UPLIFT_EXAMPLE),
    (ContactResponse, CONTACT_EXAMPLE),
    (ModelInfoResponse, MODEL_INFO_EXAMPLE),
    (ModelPlot, MODEL_PLOT_EXAMPLE),
    (WhoAmIResponse, WHOAMI_EXAMPLE),
    (CatalogResponse, CATALOG_EXAMPLE),
    (ReloadResponse, RELOAD_EXAMPLE),
    (KeyListResponse, KEY_LIST_EXAMPLE),
    (CreatedKey, CREATED_KEY_EXAMPLE),
    (RevokedKey, REVOKED_KEY_EXAMPLE),
    (ValidationErrorResponse, VALIDATION_EXAMPLE),
    (FeedbackResponse, FEEDBACK_EXAMPLE),
    (MonitoringResponse, MONITORING_EXAMPLE),
]

_REQUESTS: Final = (
    RecommendRequest,
    NoShowRiskRequest,
    WorklistRequest,
    ContactRequest,
    CreateKeyRequest,
    FeedbackRequest,
)
_RESPONSES: Final = (
    RecommendResponse,
    NoShowRiskResponse,
    WorklistResponse,
    ContactResponse,
    ModelInfoResponse,
    ModelPlot,
    WhoAmIResponse,
    CatalogResponse,
    ReloadResponse,
    KeyListResponse,
    CreatedKey,
    RevokedKey,
    ValidationErrorResponse,
    ErrorResponse,
    FeedbackResponse,
    MonitoringResponse,
)

_ERRORS: Final[dict[int, str]] = {
    401: "No valid API key (Authorization: Bearer <secret>, or X-API-Key)",
    403: "The key's role may not call this endpoint",
    404: "Not found",
    409: "Conflict",
    413: "The request body is over the size limit",
    500: "Internal error: the body quotes the request_id to find in the logs",
    503: "Not ready: the models or the store are not loaded (see /readyz for the reason)",
}
_ERROR_EXAMPLES: Final[dict[int, str]] = {
    401: "a valid API key is required",
    403: "the key's role may not call this endpoint",
    404: "not found",
    409: "conflict",
    413: "the request body is over the limit of 4,194,304 bytes",
    500: "internal error; quote the request_id",
    503: "the service is not ready",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(
    model: type[BaseModel], example: Any, description: str, examples: dict[str, Any] | None = None
) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref(model)}
    if examples:
        media["examples"] = {name: {"value": value} for name, value in examples.items()}
    else:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _error(status: int, message: str | None = None) -> dict[str, Any]:
    example = {"error": message or _ERROR_EXAMPLES[status], "request_id": _REQUEST_ID}
    return _json(ErrorResponse, example, _ERRORS[status])


def _model_examples(model: type[BaseModel]) -> list[Any]:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict), model
    examples = extra["examples"]
    assert isinstance(examples, list), model
    return copy.deepcopy(examples)


def _model_example(model: type[BaseModel]) -> Any:
    return _model_examples(model)[0]


def _operation(
    summary: str,
    description: str,
    roles: frozenset[Role] | set[Role],
    ok: dict[str, Any],
    *,
    ok_status: int = 200,
    request: type[BaseModel] | None = None,
    request_examples: dict[str, Any] | None = None,
    errors: dict[int, str | None] | None = None,
    needs_ready: bool = True,
    validated: bool = False,
    tag: str = "API",
) -> dict[str, Any]:
    """One operation; `validated`: a 422 is possible without a body (a path parameter)."""
    role_text = ", ".join(sorted(r.value for r in roles))
    responses: dict[str, Any] = {str(ok_status): ok}
    codes: dict[int, str | None] = {401: None, 403: None, 500: None}
    if request is not None:
        codes[413] = None
    if needs_ready:
        codes[503] = None
    codes.update(errors or {})
    for status in sorted(codes):
        responses[str(status)] = _error(status, codes[status])
    if request is not None or validated:
        responses["422"] = _json(
            ValidationErrorResponse,
            VALIDATION_EXAMPLE,
            "The request is not valid: each error names its field and what is allowed "
            "(the submitted values are never echoed)",
        )
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"{description}\n\nRoles: {role_text}.",
        "tags": [tag],
        "security": [{"bearer": []}, {"apiKey": []}],
        "responses": dict(sorted(responses.items())),
    }
    if request is not None:
        media: dict[str, Any] = {"schema": _ref(request)}
        if request_examples:
            media["examples"] = {name: {"value": value} for name, value in request_examples.items()}
        else:
            media["example"] = _model_example(request)
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    return op


def _plain(summary: str, description: str, ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": description,
        "tags": ["Infrastructure"],
        "security": [],
        "responses": ok,
    }


def _text(description: str, example: str, media: str = "text/plain") -> dict[str, Any]:
    return {
        "description": description,
        "content": {media: {"schema": {"type": "string"}, "example": example}},
    }


FHIR_SERVICE_REQUEST_EXAMPLE: Final[dict[str, Any]] = {
    "resourceType": "ServiceRequest",
    "id": "referral-4711",
    "status": "active",
    "intent": "order",
    "priority": "urgent",
    "contained": [
        {
            "resourceType": "Patient",
            "id": "pt",
            "birthDate": "1958",
            "gender": "female",
            "communication": [
                {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}},
                {
                    "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es-MX"}]},
                    "preferred": True,
                },
            ],
            "address": [
                {
                    "postalCode": "60601",
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                            "extension": [
                                {"url": "latitude", "valueDecimal": 41.8781},
                                {"url": "longitude", "valueDecimal": -87.6298},
                            ],
                        }
                    ],
                }
            ],
        },
        {
            "resourceType": "Coverage",
            "id": "cov",
            "status": "active",
            "beneficiary": {"reference": "#pt"},
            "payor": [{"display": "Payer B"}],
            "class": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                                "code": "plan",
                            }
                        ]
                    },
                    "value": "PLN-B-PPO",
                }
            ],
        },
    ],
    "subject": {"reference": "#pt"},
    "insurance": [{"reference": "#cov"}],
    "performerType": {
        "coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "207RC0000X"}]
    },
    "reasonCode": [
        {"coding": [{"system": "http://snomed.info/sct", "code": "84114007"}]},
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I50.9"}]},
    ],
    "extension": [
        {
            "url": "http://referral-ml.org/fhir/StructureDefinition/referral-type",
            "valueCode": "second_opinion",
        },
        {
            "url": "http://referral-ml.org/fhir/StructureDefinition/max-distance-km",
            "valueDecimal": 30,
        },
    ],
}
FHIR_REQUEST_DESCRIPTION: Final = (
    "Or a FHIR R4 ServiceRequest (or a Bundle holding one ServiceRequest with its Patient and "
    "Coverage), as `application/fhir+json` or `application/json`: specialty from performerType "
    "(NUCC), reason from reasonCode (ICD-10-CM), urgency from priority, the patient contained "
    "or referenced (`Patient/<id>` is read from the store), the plan from the Coverage. The "
    "answer is the same ranked list; an error names the FHIR element. Mapping: docs/fhir.md."
)


def _with_fhir_body(op: dict[str, Any]) -> dict[str, Any]:
    """/recommend also takes a FHIR ServiceRequest: document it as a second media type."""
    op.pop("x-fhir", None)
    op["description"] += "\n\n" + FHIR_REQUEST_DESCRIPTION
    op["requestBody"]["content"]["application/fhir+json"] = {
        "schema": {
            "type": "object",
            "description": "A FHIR R4 ServiceRequest or Bundle (validated with R4B models).",
            "required": ["resourceType"],
            "properties": {
                "resourceType": {"type": "string", "enum": ["ServiceRequest", "Bundle"]}
            },
        },
        "example": FHIR_SERVICE_REQUEST_EXAMPLE,
    }
    return op


def _paths() -> dict[str, Any]:
    ui = {Role.REFERRAL_UI, Role.ADMIN}
    outreach = {Role.OUTREACH, Role.ADMIN}
    admin = {Role.ADMIN}
    every = set(Role)
    recommend = _model_example(RecommendRequest)
    empty = copy.deepcopy(recommend)
    empty["referral"]["preferences"] = {"max_distance_km": 0.01}
    worklist = _model_example(WorklistRequest)
    worklist_csv = {**worklist, "format": "csv"}
    worklist_benefit = _model_examples(WorklistRequest)[1]
    worklist_ok = _json(
        WorklistResponse,
        None,
        "Appointments by risk (or expected benefit), at most `capacity` per day",
        {"with outreach-uplift": WORKLIST_EXAMPLE, "without": WORKLIST_NO_UPLIFT_EXAMPLE},
    )
    worklist_ok["content"]["text/csv"] = {
        "schema": {"type": "string"},
        "example": WORKLIST_CSV_EXAMPLE,
    }
    return {
        "/recommend": {
            "post": _with_fhir_body(
                _operation(
                    "Rank specialists for a referral",
                    "Candidates are the in-network specialists of the needed specialty who accept "
                    "new patients, within an urgency radius that widens when too few are found "
                    "(preferences are hard filters). The champion ranker orders them; each comes "
                    "with reasons a coordinator can read. No candidate left is a 200 with an empty "
                    "list and `empty_reason` naming the filter that removed the last ones. An "
                    "unknown plan is a warning (no network claims are made), not an error.",
                    ui,
                    _json(
                        RecommendResponse,
                        None,
                        "Ranked specialists (possibly none, with the reason)",
                        {"ranked": RECOMMEND_EXAMPLE, "empty": EMPTY_RECOMMEND_EXAMPLE},
                    ),
                    request=RecommendRequest,
                    request_examples={"urgent cardiology": recommend, "nobody that close": empty},
                )
            )
        },
        "/no_show_risk": {
            "post": _operation(
                "Calibrated no-show risk for upcoming appointments",
                "Up to 5,000 appointments per request. Each gets a calibrated probability, a "
                "tier (thresholds set at training), its top 3 factors and the outreach to "
                "offer. A patient_id known to the store adds that patient's history. With the "
                "outreach-uplift model loaded, `expected_benefit` is how much a call is "
                "expected to lower the risk (null without that model, and for appointments "
                "booked less than 2 days ahead or already called). Risk and benefit are for "
                "offering help, never for denying or double-booking care.",
                outreach,
                _json(NoShowRiskResponse, NO_SHOW_EXAMPLE, "One prediction per appointment"),
                request=NoShowRiskRequest,
            )
        },
        "/outreach/worklist": {
            "post": _operation(
                "The outreach worklist",
                "Stored upcoming appointments between `start` and `end` (at most 31 days), "
                "optionally of one specialty or organization, ordered by `order` and capped "
                "at `capacity` calls per day. `order: risk` (default): highest risk first. "
                "`order: expected_benefit`: the largest expected risk reduction of a call "
                "first, appointments without an estimate last, ties by risk; it needs the "
                "outreach-uplift model (409 when it is not loaded). Each row carries "
                "`expected_benefit` (null without that model), the answer the order applied "
                "and the uplift model's version. `format: csv` answers text/csv with the same "
                "rows. Risk and benefit are for offering help, never for denying or "
                "double-booking care.",
                outreach,
                worklist_ok,
                request=WorklistRequest,
                request_examples={
                    "json": worklist,
                    "csv": worklist_csv,
                    "by expected benefit": worklist_benefit,
                },
                errors={409: UPLIFT_NOT_LOADED},
            )
        },
        "/outreach/contact": {
            "post": _operation(
                "Record an outreach attempt",
                "Writes the channel, outcome, note and the calling key to the store.",
                outreach,
                _json(ContactResponse, CONTACT_EXAMPLE, "Recorded"),
                request=ContactRequest,
                errors={404: "no such appointment"},
            )
        },
        "/feedback": {
            "post": _operation(
                "Report outcomes: visits attended, missed or cancelled; referrals' status",
                "1 to 10,000 events. Each is stored once (the same kind, id, outcome or status "
                "and occurred_at again is a duplicate, counted and otherwise ignored) and "
                "applied to the stored appointment (outcome, outcome_at, outreach_call) or "
                "referral (status, status_at, specialist_id), unless that row already holds a "
                "later event. An id the store does not know is listed in `unknown` by the "
                "event's index (the others are still recorded). The worklist sees outcomes at "
                "once, history features after the next reload. Works while the models are not "
                "loaded.",
                {Role.INTEGRATION, Role.OUTREACH, Role.ADMIN},
                _json(FeedbackResponse, FEEDBACK_EXAMPLE, "Recorded, duplicates and unknown ids"),
                request=FeedbackRequest,
                needs_ready=False,
            )
        },
        "/monitoring": {
            "get": {
                **_operation(
                    "Live model performance, calibration and input drift",
                    "From the prediction log (every score /no_show_risk and the worklist "
                    "returned, and /recommend's top-k when the body names a referral_id) and "
                    "the outcomes since fed back: the no-show model per ISO week of the visit "
                    "and overall (AUC, calibration by decile, ECE, top-20%-per-day recall; by "
                    "payer type and age band), the ranker's completion rate by the chosen "
                    "specialist's rank, PSI per input against the training reference, and "
                    "flags (calibration_gap > 0.03, calibration_ece > 0.05, AUC more than 0.03 "
                    "under training; REFERRAL_ML_MONITOR_*). Sets the referral_ml_no_show_auc, "
                    "referral_ml_no_show_calibration_gap and referral_ml_feature_psi gauges.",
                    admin,
                    _json(MonitoringResponse, MONITORING_EXAMPLE, "The report"),
                    validated=True,
                    tag="Admin",
                ),
                "parameters": [
                    {
                        "name": "weeks",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 52, "default": 8},
                        "example": 8,
                    },
                    {
                        "name": "start",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "format": "date"},
                        "example": "2025-05-06",
                    },
                    {
                        "name": "end",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "format": "date"},
                        "example": "2025-06-30",
                    },
                ],
            }
        },
        "/model_info": {
            "get": _operation(
                "The models being served",
                "Name, version, MLflow run, training time and features of each model (the "
                "outreach-uplift model only when it is loaded).",
                admin,
                _json(ModelInfoResponse, MODEL_INFO_EXAMPLE, "The loaded models"),
                tag="Admin",
            )
        },
        "/model_info/{model}/plots/{name}": {
            "get": {
                **_operation(
                    "One plot of a served model's training run",
                    "A PNG the training run logged (calibration, subgroups, gains ...), as "
                    "base64, for the console's models page. The names are listed by /model_info.",
                    admin,
                    _json(ModelPlot, MODEL_PLOT_EXAMPLE, "The plot"),
                    errors={404: "no such plot for this model"},
                    validated=True,
                    tag="Admin",
                ),
                "parameters": [
                    {
                        "name": "model",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "enum": ["specialist-ranker", "no-show", "outreach-uplift"],
                        },
                        "example": "no-show",
                    },
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
                        "example": "calibration",
                    },
                ],
            }
        },
        "/whoami": {
            "get": _operation(
                "Who this key is",
                "The key's id and role, and the console pages that role opens "
                "(referral_ui: referral; outreach: worklist; admin: all three; integration: "
                "none).",
                every,
                _json(WhoAmIResponse, WHOAMI_EXAMPLE, "The key"),
                needs_ready=False,
                tag="Console",
            )
        },
        "/catalog": {
            "get": _operation(
                "The choices the console offers",
                "Specialties with specialists in the directory, their known reasons for "
                "referral, plans, organizations, languages, the words for the no-show model's "
                "factors, the risk tiers and the service's clock. Nothing about any patient.",
                every,
                _json(CatalogResponse, CATALOG_EXAMPLE, "The catalog"),
                tag="Console",
            )
        },
        "/admin/reload": {
            "post": _operation(
                "Reload the models and the store",
                "Loads the configured bundles and the store again and swaps them in at once. On "
                "failure the old models keep serving (409) or, when none were loaded, the "
                "service stays not ready (503); the message says why.",
                admin,
                _json(ReloadResponse, RELOAD_EXAMPLE, "Reloaded"),
                errors={409: "reload failed, still serving {'ranker': '1', 'no_show': '1'}: ..."},
                tag="Admin",
            )
        },
        "/admin/keys": {
            "get": _operation(
                "List API keys",
                "Key ids, roles and dates (never a secret or a hash), oldest first.",
                admin,
                _json(KeyListResponse, KEY_LIST_EXAMPLE, "Every key"),
                needs_ready=False,
                tag="Admin",
            ),
            "post": _operation(
                "Create an API key",
                "The secret is in this answer only: the service stores its hash.",
                admin,
                _json(CreatedKey, CREATED_KEY_EXAMPLE, "Created (keep the secret now)"),
                ok_status=201,
                request=CreateKeyRequest,
                needs_ready=False,
                tag="Admin",
            ),
        },
        "/admin/keys/{key_id}": {
            "delete": {
                **_operation(
                    "Revoke an API key",
                    "Effective at once in every worker. The last active admin key cannot be "
                    "revoked (409): create another first.",
                    admin,
                    _json(RevokedKey, REVOKED_KEY_EXAMPLE, "Revoked"),
                    errors={
                        404: "no such active key",
                        409: "this is the last active admin key: create another admin key first",
                    },
                    needs_ready=False,
                    validated=True,
                    tag="Admin",
                ),
                "parameters": [
                    {
                        "name": "key_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                        "example": "8b7a6c5d4e3f2a10",
                    }
                ],
            }
        },
        "/livez": {
            "get": _plain("Liveness", "200 while the process runs.", {"200": _text("Alive", "\n")})
        },
        "/readyz": {
            "get": _plain(
                "Readiness",
                "200 once the models and the store are loaded; 503 with the reason until then, "
                "or when a model file is missing or corrupt (the service never serves a default "
                "score).",
                {
                    "200": _text("Ready", "\n"),
                    "503": {
                        "description": "Not ready, and why",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "ready": {"type": "boolean"},
                                        "reason": {"type": "string"},
                                    },
                                    "required": ["ready", "reason"],
                                },
                                "example": {
                                    "ready": False,
                                    "reason": "ranker bundle models/ranker: model.txt is truncated",
                                },
                            }
                        },
                    },
                },
            )
        },
        "/metrics": {
            "get": _plain(
                "Prometheus metrics",
                "BentoML's per-endpoint request counts and latencies, plus "
                "referral_ml_risk_tier_total{endpoint,tier}, "
                "referral_ml_empty_recommendations_total{filter} and the monitoring gauges "
                "referral_ml_no_show_auc, referral_ml_no_show_calibration_gap and "
                "referral_ml_feature_psi{feature} (set by GET /monitoring). No patient data.",
                {
                    "200": _text(
                        "Metrics in the Prometheus text format",
                        'referral_ml_risk_tier_total{endpoint="/no_show_risk",tier="high"} 12.0\n',
                    )
                },
            )
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once per process)."""
    pairs = [(m, "validation") for m in _REQUESTS] + [(m, "serialization") for m in _RESPONSES]
    _, defs = models_json_schema(pairs, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "referral-ml",
            "version": API_VERSION,
            "description": (
                "Specialist recommendations and no-show risk for healthcare referrals. Every "
                "API call needs a key (`Authorization: Bearer <secret>` or `X-API-Key`) whose "
                "role allows it: referral_ui (recommend), outreach (risk, worklist, contact, "
                "feedback), integration (feedback), admin (everything, plus reload, model "
                "info, monitoring and keys). Each answer carries a "
                "request_id (also in the X-Request-ID header) and writes one audit row."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "API", "description": "Recommendations, risk and outreach"},
            {"name": "Admin", "description": "Models and keys"},
            {"name": "Console", "description": "What the browser console at /console/ reads"},
            {"name": "Infrastructure", "description": "Probes and metrics (no key)"},
        ],
        "paths": _paths(),
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
