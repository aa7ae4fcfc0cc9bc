"""HTTP request/response models of the service (pydantic 2) and their converters.

Every model forbids unknown fields. Validation errors are reported through `error_details`, which
names the field path and what is allowed and never echoes the submitted value (a request carries
PHI: ages, locations, reason codes).

Decisions worth knowing:

* ``reason_code`` must have the ICD-10-CM shape (``I50.9``); a well-formed code that the service's
  reason list (`features.codes.reasons`) does not know is *accepted* with a warning
  (`request_warnings`): focus matching works on the 3-character category, so it still matches
  when the category is known, and is simply False for every specialist otherwise.
* ``specialty`` must be one of the NUCC codes the service models (`features.codes.specialties`);
  the JSON schema lists them as an enum, and the error points there instead of listing them.
* Date-times are clinic-local wall-clock times without an offset (the data contract's convention);
  a value with ``Z`` or ``+hh:mm`` is rejected rather than silently shifted.
* A preference for language or sex makes it a hard filter: the preferred value replaces the
  patient's own in `MatchRequest` (so ``language_match``/``sex_match`` mean "matches the
  preference") and ``require_language``/``require_sex`` are set.

Import rule: this module uses `features` and third-party libraries only, and importing it loads
neither lightgbm nor scikit-learn (`features.matcher` is imported lazily in `to_match_request`).
"""

from __future__ import annotations

import csv
import io
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NaiveDatetime,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from features import contract
from features.availability import NO_SLOT_DAYS
from features.codes import (
    NUCC_PATTERN,
    focus_labels,
    icd10_category,
    is_icd10_cm,
    is_valid_npi,
    nucc_names,
    reasons,
    specialties,
)
from features.no_show import FLAT_OPTIONAL, FLAT_REQUIRED
from features.retrieval import MAX_RADIUS_KM

if TYPE_CHECKING:  # features.matcher imports lightgbm, which imports scikit-learn when installed
    from features.matcher import MatchRequest, MatchResult

MAX_K: Final = 50
DEFAULT_K: Final = 5
MAX_APPOINTMENTS: Final = 5_000
MAX_WORKLIST_DAYS: Final = 31  # calendar days, start and end included
MAX_CAPACITY: Final = 500
MAX_AGE: Final = 120
MAX_NOTE_CHARS: Final = 200
MAX_ID_CHARS: Final = 64
MAX_APPOINTMENT_DISTANCE_KM: Final = 20_000.0  # half the Earth's circumference, roughly
ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_ID_RE: Final = re.compile(ID_PATTERN)
KEY_ID_PATTERN: Final = r"^[0-9a-f]{16}$"
_KEY_ID_RE: Final = re.compile(KEY_ID_PATTERN)

UNKNOWN_PLAN_WARNING: Final = (
    "the insurance plan is not in the directory: no network claims made "
    "(in_network, accepts_plan and out_of_network are all false)"
)
UNKNOWN_REASON_WARNING: Final = (
    "reason_code is a well-formed ICD-10-CM code but not in this service's reason list; "
    "specialists are matched on its 3-character category"
)
UNKNOWN_REASON_CATEGORY_WARNING: Final = (
    "reason_code is a well-formed ICD-10-CM code whose category this service does not know; "
    "no specialist's focus can match it (focus_match is false for all)"
)


# --------------------------------------------------------------------------- enums


class Role(StrEnum):
    """What an API key may call: recommend; risk and worklist; reload, model info and keys;
    integration: systems that push outcomes (POST /feedback only)."""

    REFERRAL_UI = "referral_ui"
    OUTREACH = "outreach"
    ADMIN = "admin"
    INTEGRATION = "integration"


class Sex(StrEnum):
    F = "F"
    M = "M"


class Language(StrEnum):
    EN = "en"
    ES = "es"
    ZH = "zh"
    VI = "vi"
    PT = "pt"
    HT = "ht"
    KO = "ko"
    AR = "ar"
    RU = "ru"
    PL = "pl"
    FR = "fr"
    TL = "tl"


class Urgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    STAT = "stat"


class ReferralType(StrEnum):
    PROVIDER = "provider"
    SELF = "self"
    EMERGENCY = "emergency"
    SECOND_OPINION = "second_opinion"
    FOLLOW_UP = "follow_up"


class PayerType(StrEnum):
    COMMERCIAL = "commercial"
    MEDICARE = "medicare"
    MEDICAID = "medicaid"
    SELF_PAY = "self_pay"


class VisitKind(StrEnum):
    NEW = "new"
    FOLLOW_UP = "follow_up"


class RiskTier(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ContactChannel(StrEnum):
    """How the outreach team reached out."""

    CALL = "call"
    TEXT = "text"
    EMAIL = "email"
    LETTER = "letter"
    TRANSPORT = "transport"


class ContactOutcome(StrEnum):
    """What came of one outreach attempt."""

    REACHED = "reached"
    CONFIRMED = "confirmed"
    LEFT_MESSAGE = "left_message"
    NO_ANSWER = "no_answer"
    WRONG_NUMBER = "wrong_number"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    TRANSPORT_ARRANGED = "transport_arranged"
    DECLINED = "declined"


class WorklistFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


class WorklistOrder(StrEnum):
    """How the worklist is ordered before each day's capacity cut."""

    RISK = "risk"  # highest no-show risk first
    EXPECTED_BENEFIT = "expected_benefit"  # largest risk reduction if called first


# The enums above spell out the contract's values; fail at import if the two drift apart.
for _enum, _values in (
    (Sex, contract.SEXES),
    (Language, contract.LANGUAGES),
    (Urgency, contract.URGENCIES),
    (ReferralType, contract.REFERRAL_TYPES),
    (PayerType, contract.PAYER_TYPES),
    (VisitKind, contract.VISIT_KINDS),
):
    if tuple(m.value for m in _enum) != tuple(_values):
        raise RuntimeError(f"{_enum.__name__} differs from the data contract: {_values}")

RECOMMENDED_ACTIONS: Final[dict[RiskTier, str]] = {
    RiskTier.HIGH: "call and offer transport",
    RiskTier.MEDIUM: "extra text reminder",
    RiskTier.LOW: "standard reminder",
}


# --------------------------------------------------------------------------- field types


def _range(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[Any], Any]:
    """A validator for lo <= v <= hi (lo < v with lo_open) whose message states both bounds."""
    lo_text, hi_text = f"{lo:g}", f"{hi:g}"
    message = (
        f"must be greater than {lo_text} and at most {hi_text}"
        if lo_open
        else f"must be between {lo_text} and {hi_text}"
    )

    def check(v: Any) -> Any:
        ok = (lo < v if lo_open else lo <= v) and v <= hi  # NaN fails both
        if not ok:
            raise PydanticCustomError("out_of_range", message)
        return v

    return check


def _range_schema(lo: float, hi: float, *, lo_open: bool = False) -> Any:
    key = "exclusiveMinimum" if lo_open else "minimum"
    return Field(json_schema_extra={key: lo, "maximum": hi})


def _check_id(v: str) -> str:
    if not _ID_RE.match(v):
        raise PydanticCustomError(
            "bad_id",
            f"must be 1-{MAX_ID_CHARS} characters: letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit",
        )
    return v


def _check_key_id(v: str) -> str:
    if not _KEY_ID_RE.match(v):
        raise PydanticCustomError("bad_key_id", "must be a key id: 16 lowercase hex digits")
    return v


def _check_npi(v: str) -> str:
    if not is_valid_npi(v):
        raise PydanticCustomError(
            "bad_npi", "must be a 10-digit NPI whose last digit is the Luhn check digit"
        )
    return v


def _check_specialty(v: str) -> str:
    code = v.strip().upper()
    if not NUCC_PATTERN.match(code):
        raise PydanticCustomError(
            "bad_specialty",
            "must be a NUCC taxonomy code (10 characters ending in X, like 207RC0000X)",
        )
    if code not in specialties():
        raise PydanticCustomError(
            "unknown_specialty",
            "is not a specialty this service models; the codes it accepts are listed in the "
            "'specialty' enum of the API's OpenAPI schema (NUCC taxonomy codes)",
        )
    return code


def _check_reason(v: str) -> str:
    code = v.strip().upper()
    if not is_icd10_cm(code):
        raise PydanticCustomError(
            "bad_reason_code",
            "must be an ICD-10-CM code: a letter (not U), two characters, then optionally a dot "
            "and 1-4 more, like I50.9",
        )
    return code


Id = Annotated[
    str,
    AfterValidator(_check_id),
    WithJsonSchema({"type": "string", "pattern": ID_PATTERN, "maxLength": MAX_ID_CHARS}),
]
Npi = Annotated[
    str,
    AfterValidator(_check_npi),
    WithJsonSchema(
        {"type": "string", "pattern": "^[0-9]{10}$", "description": "NPI (Luhn-checked)"}
    ),
]
SpecialtyCode = Annotated[
    str,
    AfterValidator(_check_specialty),
    WithJsonSchema(
        {
            "type": "string",
            "enum": sorted(specialties()),
            "description": "NUCC taxonomy code of a specialty the service models",
        }
    ),
]
ReasonCode = Annotated[
    str,
    AfterValidator(_check_reason),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$",
            "description": "ICD-10-CM code (unknown but well-formed codes are accepted with a warning)",
        }
    ),
]
# Date-times are clinic-local wall-clock times (no offset), which JSON Schema's "date-time" format
# (RFC 3339, offset required) would reject: the schema gives their pattern instead.
_LOCAL_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?$"
LocalDatetime = Annotated[
    NaiveDatetime,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _LOCAL_PATTERN,
            "description": "clinic-local date-time, ISO 8601 without a UTC offset",
            "examples": ["2025-07-01T08:00:00"],
        }
    ),
]
# A date-time the service reports: clinic-local, or UTC with Z / an offset (training times).
ReportedDatetime = Annotated[
    datetime,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _LOCAL_PATTERN[:-1] + "(Z|[+-][0-9]{2}:[0-9]{2})?$",
            "description": "ISO 8601 date-time; clinic-local unless it carries Z or an offset",
        }
    ),
]
Latitude = Annotated[float, AfterValidator(_range(-90, 90)), _range_schema(-90, 90)]
Longitude = Annotated[float, AfterValidator(_range(-180, 180)), _range_schema(-180, 180)]
Age = Annotated[int, AfterValidator(_range(0, MAX_AGE)), _range_schema(0, MAX_AGE)]
K = Annotated[int, AfterValidator(_range(1, MAX_K)), _range_schema(1, MAX_K)]
MaxDistanceKm = Annotated[
    float,
    AfterValidator(_range(0, MAX_RADIUS_KM, lo_open=True)),
    _range_schema(0, MAX_RADIUS_KM, lo_open=True),
]
DistanceKm = Annotated[
    float,
    AfterValidator(_range(0, MAX_APPOINTMENT_DISTANCE_KM)),
    _range_schema(0, MAX_APPOINTMENT_DISTANCE_KM),
]
Capacity = Annotated[int, AfterValidator(_range(1, MAX_CAPACITY)), _range_schema(1, MAX_CAPACITY)]
Probability = Annotated[float, AfterValidator(_range(0, 1)), _range_schema(0, 1)]


def _field_error(field: str, kind: str, message: str) -> PydanticCustomError:
    """An error raised by a model validator but reported on one of the model's fields."""
    return PydanticCustomError(kind, message, {"field": field})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- /recommend

# The examples' ids (plan, patient, appointment, specialist) are those of the demo world
# (`make demo`: medium, seed 7), so the OpenAPI examples work against it as they stand.
_PATIENT_EXAMPLE: Final[JsonDict] = {
    "age": 67,
    "sex": "F",
    "language": "es",
    "latitude": 41.8781,
    "longitude": -87.6298,
    "insurance_plan_id": "PLN-B-PPO",
    "patient_id": "PT0024700",
}
_REFERRAL_EXAMPLE: Final[JsonDict] = {
    "patient": _PATIENT_EXAMPLE,
    "specialty": "207RC0000X",
    "reason_code": "I50.9",
    "urgency": "urgent",
    "referral_type": "provider",
    "preferences": {
        "max_distance_km": 30,
        "language": "es",
        "allow_out_of_network": False,
    },
}


class Patient(_Model):
    """The patient as matching needs them: no names, the id only for continuity of care."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PATIENT_EXAMPLE]})

    age: Age
    sex: Sex
    language: Language
    latitude: Latitude
    longitude: Longitude
    insurance_plan_id: Id
    patient_id: Id | None = None


class Preferences(_Model):
    """Hard constraints the patient asked for (each one given is a filter, not a preference)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"max_distance_km": 30, "language": "es", "sex": "F"}]}
    )

    max_distance_km: MaxDistanceKm | None = None
    language: Language | None = None
    sex: Sex | None = None
    allow_out_of_network: bool = False


class Referral(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [_REFERRAL_EXAMPLE]})

    patient: Patient
    specialty: SpecialtyCode
    reason_code: ReasonCode
    urgency: Urgency = Urgency.ROUTINE
    referral_type: ReferralType = ReferralType.PROVIDER
    referring_system: Id | None = None
    preferences: Preferences | None = None
    referral_id: Id | None = Field(
        default=None,
        description="The stored referral this request is for: its top-k is then written to "
        "the prediction log, for monitoring (never a patient id)",
    )


class RecommendRequest(_Model):
    """POST /recommend."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"referral": _REFERRAL_EXAMPLE, "k": 5}]}
    )

    referral: Referral
    k: K = DEFAULT_K


class SpecialtyOut(_Model):
    code: str
    name: str


class SpecialistOut(_Model):
    """One ranked specialist, with the facts a coordinator reads and plain-language reasons."""

    rank: int
    specialist_id: str
    name: str
    specialty: SpecialtyOut
    distance_km: float
    next_available: ReportedDatetime | None
    next_available_days: float | None
    in_network: bool
    accepts_plan: bool
    out_of_network: bool
    score: float
    reasons: list[str]
    latitude: float | None = None  # the practice's position (public directory data)
    longitude: float | None = None
    availability_listed: bool = True  # False: the directory publishes no schedule for them


class RecommendResponse(_Model):
    """An empty `specialists` list is a normal answer: `empty_reason` says why."""

    specialists: list[SpecialistOut]
    candidates_considered: int
    radius_km: float
    empty_reason: str | None
    warnings: list[str]
    model_version: str
    request_id: str


def to_match_request(req: RecommendRequest, *, as_of: datetime | None = None) -> MatchRequest:
    """The runtime request for `features.matcher.Matcher.recommend` (use ``req.k`` as k).

    Age and referral_type are not matcher inputs and are dropped. A language or sex preference
    replaces the patient's own value and becomes a hard filter (see the module docstring).
    """
    from features.matcher import MatchRequest  # lazily: keeps lightgbm out of a schema import

    ref = req.referral
    p = ref.patient
    pref = ref.preferences or Preferences()
    return MatchRequest(
        latitude=float(p.latitude),
        longitude=float(p.longitude),
        specialty=ref.specialty,
        reason_code=ref.reason_code,
        urgency=ref.urgency.value,
        insurance_plan_id=p.insurance_plan_id,
        language=(pref.language or p.language).value,
        sex=(pref.sex or p.sex).value,
        patient_id=p.patient_id,
        referring_system=ref.referring_system,
        as_of=None if as_of is None else pd.Timestamp(as_of),
        allow_out_of_network=pref.allow_out_of_network,
        max_distance_km=None if pref.max_distance_km is None else float(pref.max_distance_km),
        require_language=pref.language is not None,
        require_sex=pref.sex is not None,
    )


def request_warnings(req: RecommendRequest) -> list[str]:
    """Warnings known from the request alone (the unknown-plan one comes from the result)."""
    code = req.referral.reason_code
    if code in reasons():
        return []
    if icd10_category(code) in focus_labels():
        return [UNKNOWN_REASON_WARNING]
    return [UNKNOWN_REASON_CATEGORY_WARNING]


def specialty_name(code: str) -> str:
    """Display name of a NUCC code (the service's own name first, then the taxonomy's)."""
    known = specialties().get(code)
    return known.name if known else nucc_names().get(code, code)


def match_response(
    result: MatchResult,
    directory: Mapping[str, tuple[str, str]],
    *,
    as_of: datetime,
    model_version: str,
    request_id: str,
    warnings: Sequence[str] = (),
    positions: Mapping[str, tuple[float, float]] | None = None,
) -> RecommendResponse:
    """The /recommend response for a matcher result (pure: no I/O).

    `directory`: specialist_id -> (display name, NUCC specialty code), e.g. built once from the
    specialists table. `as_of`: the request's clock, turning next_available_days into a
    date-time (None when no free slot is known). `warnings` (e.g. `request_warnings`) come
    first; the unknown-plan warning is added when the result says so. `positions`:
    specialist_id -> (latitude, longitude) of the practice, for the console's map.
    """
    out: list[SpecialistOut] = []
    for m in result.matches:
        if m.specialist_id not in directory:
            raise KeyError(f"specialist {m.specialist_id} is not in the directory mapping")
        name, code = directory[m.specialist_id]
        f = m.features
        days = float(f.get("next_available_days", NO_SLOT_DAYS))
        known_slot = days < NO_SLOT_DAYS and m.availability_listed
        where = positions.get(m.specialist_id) if positions is not None else None
        out.append(
            SpecialistOut(
                rank=m.rank,
                specialist_id=m.specialist_id,
                name=name,
                specialty=SpecialtyOut(code=code, name=specialty_name(code)),
                distance_km=round(float(f.get("distance_km", float("nan"))), 2),
                next_available=as_of + timedelta(days=days) if known_slot else None,
                next_available_days=round(days, 2) if known_slot else None,
                in_network=bool(f.get("in_network", 0.0)),
                accepts_plan=bool(f.get("accepts_plan", 0.0)),
                out_of_network=m.out_of_network,
                score=m.score,
                reasons=list(m.reasons),
                latitude=where[0] if where else None,
                longitude=where[1] if where else None,
                availability_listed=m.availability_listed,
            )
        )
    notes = list(warnings)
    if result.unknown_plan and UNKNOWN_PLAN_WARNING not in notes:
        notes.append(UNKNOWN_PLAN_WARNING)
    return RecommendResponse(
        specialists=out,
        candidates_considered=result.candidates,
        radius_km=result.radius_km,
        empty_reason=result.empty_reason if not out else None,
        warnings=notes,
        model_version=model_version,
        request_id=request_id,
    )


# --------------------------------------------------------------------------- /no_show_risk

_APPOINTMENT_EXAMPLE: Final[JsonDict] = {
    "appointment_id": "AP00114000",
    "patient_id": "PT0024700",
    "age": 67,
    "sex": "F",
    "language": "es",
    "insurance_plan_id": "PLN-B-PPO",
    "payer_type": "medicare",
    "specialist_id": "1315150122",
    "specialty": "207RC0000X",
    "booked_at": "2025-06-19T22:41:00",
    "appointment_at": "2025-07-01T08:00:00",
    "urgency": "routine",
    "referral_type": "provider",
    "visit_kind": "new",
    "text_reminder": True,
    "outreach_call": False,
}


class Appointment(_Model):
    """One upcoming appointment: the flat row of `features.no_show` (see `appointments_frame`).

    `insurance_plan_id` is not a model input: it only fills `payer_type` when that is absent
    (through the plan -> payer type mapping given to `appointments_frame`). One of them is
    required. Missing optional inputs are treated by the model as unknown.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [_APPOINTMENT_EXAMPLE]})

    appointment_id: Id
    patient_id: Id | None = None
    age: Age
    sex: Sex
    language: Language
    insurance_plan_id: Id | None = None
    payer_type: PayerType | None = None
    distance_km: DistanceKm | None = None
    specialist_id: Npi | None = None
    organization_id: Id | None = None
    specialty: SpecialtyCode
    booked_at: LocalDatetime
    appointment_at: LocalDatetime
    urgency: Urgency
    referral_type: ReferralType
    visit_kind: VisitKind | None = None
    text_reminder: bool | None = None
    outreach_call: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Appointment:
        if self.booked_at > self.appointment_at:
            raise _field_error(
                "booked_at", "booked_after_visit", "must not be after appointment_at"
            )
        if self.payer_type is None and self.insurance_plan_id is None:
            raise _field_error(
                "payer_type", "payer_missing", "give payer_type or insurance_plan_id (or both)"
            )
        return self


class NoShowRiskRequest(_Model):
    """POST /no_show_risk: 1 to 5,000 appointments with distinct ids."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"appointments": [_APPOINTMENT_EXAMPLE]}]}
    )

    appointments: list[Appointment] = Field(min_length=1, max_length=MAX_APPOINTMENTS)

    @model_validator(mode="after")
    def _distinct_ids(self) -> NoShowRiskRequest:
        seen: set[str] = set()
        for i, a in enumerate(self.appointments):
            if a.appointment_id in seen:
                raise _field_error(
                    f"appointments.{i}.appointment_id",
                    "duplicate_id",
                    "must be distinct: an earlier appointment has the same id",
                )
            seen.add(a.appointment_id)
        return self


# The flat columns, in order: every one is an Appointment field (payer_type may come from the plan).
_FLAT_FIELDS: Final = (*FLAT_REQUIRED, *FLAT_OPTIONAL)


def appointments_frame(
    req: NoShowRiskRequest, plan_payer_types: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The flat rows `features.no_show.build_features` consumes, in FLAT order.

    All FLAT_REQUIRED columns, then each FLAT_OPTIONAL column at least one appointment gives
    (the others are left out, so the model sees them as unknown). `plan_payer_types`
    (insurance_plan_id -> payer_type, from the plans table) fills a missing payer_type.
    Dtypes: ids and categories as strings, times as naive datetime64, age/distance as float,
    reminder flags as bool (float with NaN when some rows leave them out).
    """
    plans = plan_payer_types or {}
    appointments = req.appointments
    # One C-level attribute fetch per appointment, then columns by transposing (a Python loop
    # over every field of every appointment took most of this function's time).
    fetch = operator.attrgetter(*_FLAT_FIELDS, "insurance_plan_id")
    fields = list(zip(*map(fetch, appointments), strict=True)) if appointments else []
    columns = {c: list(v) for c, v in zip(_FLAT_FIELDS, fields, strict=False)}
    if not columns:
        columns = {c: [] for c in _FLAT_FIELDS}
    else:
        payer, plan = columns["payer_type"], fields[-1]
        for i, (given, plan_id) in enumerate(zip(payer, plan, strict=True)):
            if given is None and plan_id is not None:
                payer[i] = plans.get(plan_id)
    index = pd.RangeIndex(len(appointments))
    out: dict[str, pd.Series] = {}
    for col, values in columns.items():
        if col not in FLAT_REQUIRED and all(v is None for v in values):
            continue
        if col in ("booked_at", "appointment_at"):
            out[col] = pd.to_datetime(pd.Series(values, index=index))
        elif col in ("age", "distance_km"):
            out[col] = pd.Series(values, index=index, dtype=float)
        elif col in ("text_reminder", "outreach_call"):
            given = all(v is not None for v in values)
            out[col] = pd.Series(
                values if given else [float("nan") if v is None else float(v) for v in values],
                index=index,
                dtype=bool if given else float,
            )
        else:
            text = [v if v is None or type(v) is str else str(v) for v in values]
            out[col] = pd.Series(text, index=index, dtype="str")
    return pd.DataFrame(out, index=index)


class RiskRow(_Model):
    appointment_id: str
    risk: Probability
    tier: RiskTier
    top_factors: list[str] = Field(max_length=3)
    recommended_action: str
    expected_benefit: Probability | None = Field(
        default=None,
        description="How much an outreach call is expected to lower this appointment's no-show "
        "probability (risk minus the risk if called; 0 to risk), by the outreach-uplift model. "
        "Null when that model is not loaded or its effect is not estimated for the appointment "
        "(booked less than its minimum lead time ahead, 2 days by default, or already called). "
        "For offering help, never for denying care.",
    )


class NoShowRiskResponse(_Model):
    predictions: list[RiskRow]
    model_version: str
    request_id: str


def risk_rows(
    appointment_ids: Sequence[str],
    risk: Sequence[float],
    tiers: Sequence[str],
    top_factors: Sequence[Sequence[str]],
    benefits: Sequence[float | None] | None = None,
) -> list[RiskRow]:
    """Response rows from the predictor's outputs (`NoShowPredictor.predict/tier/top_factors`)
    and, when an outreach-uplift model is loaded, `UpliftPredictor.expected_benefit` (NaN or
    None: not estimated, reported as null)."""
    n = len(appointment_ids)
    if not n == len(risk) == len(tiers) == len(top_factors):
        raise ValueError("appointment ids, risks, tiers and factors differ in length")
    if benefits is not None and len(benefits) != n:
        raise ValueError("appointment ids and expected benefits differ in length")
    benefit = [None] * n if benefits is None else [_finite_or_none(b) for b in benefits]
    tier_of = {t: RiskTier(str(t)) for t in set(tiers)}  # three tiers, parsed once each
    return [
        RiskRow(
            appointment_id=i,
            risk=float(r),
            tier=tier_of[t],
            top_factors=list(f)[:3],
            recommended_action=RECOMMENDED_ACTIONS[tier_of[t]],
            expected_benefit=b,
        )
        for i, r, t, f, b in zip(appointment_ids, risk, tiers, top_factors, benefit, strict=True)
    ]


def _finite_or_none(value: float | None) -> float | None:
    """A benefit as the response carries it: NaN (not estimated) and None become null."""
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


# --------------------------------------------------------------------------- /outreach


class WorklistRequest(_Model):
    """POST /outreach/worklist: appointments between start and end (dates, both included)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "start": "2025-07-01",
                    "end": "2025-07-03",
                    "specialty": "207RC0000X",
                    "capacity": 40,
                    "format": "json",
                },
                {
                    "start": "2025-07-01",
                    "end": "2025-07-03",
                    "capacity": 40,
                    "order": "expected_benefit",
                },
            ]
        }
    )

    start: date
    end: date
    specialty: SpecialtyCode | None = None
    organization_id: Id | None = None
    capacity: Capacity = 20
    format: WorklistFormat = WorklistFormat.JSON
    order: WorklistOrder = Field(
        default=WorklistOrder.RISK,
        description="'risk' (default): highest no-show risk first. 'expected_benefit': the "
        "largest expected risk reduction of a call first (appointments without an estimate "
        "last), ties by risk; needs the outreach-uplift model (409 when it is not loaded). "
        "Either way at most `capacity` appointments per day are kept, in this order.",
    )

    @model_validator(mode="after")
    def _window(self) -> WorklistRequest:
        if self.end < self.start:
            raise _field_error("end", "end_before_start", "must not be before start")
        if (self.end - self.start).days + 1 > MAX_WORKLIST_DAYS:
            raise _field_error(
                "end",
                "window_too_long",
                f"must be at most {MAX_WORKLIST_DAYS} days from start (both days included)",
            )
        return self


class WorklistRow(RiskRow):
    appointment_at: ReportedDatetime
    specialist_id: str | None
    specialist_name: str | None = None
    specialty: str | None = None  # NUCC code of the specialist
    contact_attempts: int = 0
    last_contact_at: ReportedDatetime | None = None
    last_contact_outcome: ContactOutcome | None = None


# The 409 of order=expected_benefit while no outreach-uplift model is loaded.
UPLIFT_NOT_LOADED: Final = (
    "order=expected_benefit needs the outreach-uplift model, which is not loaded; use order=risk"
)


class WorklistResponse(_Model):
    rows: list[WorklistRow]
    model_version: str
    order: WorklistOrder = Field(description="The order applied (the request's `order`)")
    uplift_model_version: str | None = Field(
        description="The outreach-uplift model's version (null: not loaded, every "
        "expected_benefit is null)"
    )
    request_id: str


WORKLIST_CSV_COLUMNS: Final = (
    "appointment_id",
    "appointment_at",
    "specialist_id",
    "risk",
    "expected_benefit",
    "tier",
    "top_factors",
    "recommended_action",
    "contact_attempts",
    "last_contact_outcome",
)


def worklist_csv(rows: Sequence[WorklistRow]) -> str:
    """The worklist as CSV (format=csv); top factors are '|'-joined like the contract's lists;
    risk and expected benefit with 4 decimals (benefit empty when null)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(WORKLIST_CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r.appointment_id,
                r.appointment_at.isoformat(),
                r.specialist_id or "",
                f"{r.risk:.4f}",
                "" if r.expected_benefit is None else f"{r.expected_benefit:.4f}",
                r.tier.value,
                contract.SEP.join(r.top_factors),
                r.recommended_action,
                r.contact_attempts,
                r.last_contact_outcome.value if r.last_contact_outcome else "",
            ]
        )
    return buf.getvalue()


class ContactRequest(_Model):
    """POST /outreach/contact: the result of one outreach attempt."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "appointment_id": "AP00114000",
                    "channel": "call",
                    "outcome": "transport_arranged",
                    "note": "ride booked for 8:15",
                }
            ]
        }
    )

    appointment_id: Id
    channel: ContactChannel
    outcome: ContactOutcome
    note: str | None = Field(default=None, max_length=MAX_NOTE_CHARS)


class ContactResponse(_Model):
    appointment_id: str
    recorded_at: ReportedDatetime
    request_id: str


# --------------------------------------------------------------------------- /feedback

MAX_FEEDBACK_EVENTS: Final = 10_000
FEEDBACK_TAGS: Final = ("appointment", "referral")


class AppointmentOutcome(StrEnum):
    ATTENDED = "attended"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"


class ReferralStatus(StrEnum):
    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    LEAKED = "leaked"


class AppointmentEvent(_Model):
    """What became of an appointment (attended, missed or cancelled), and whether it had an
    outreach call (null: leave the stored flag)."""

    kind: Literal["appointment"]
    appointment_id: Id
    outcome: AppointmentOutcome
    occurred_at: LocalDatetime
    outreach_call: bool | None = None


class ReferralEvent(_Model):
    """A referral's new status, and the specialist it went to when known."""

    kind: Literal["referral"]
    referral_id: Id
    status: ReferralStatus
    occurred_at: LocalDatetime
    specialist_id: Npi | None = None


FeedbackEvent = Annotated[AppointmentEvent | ReferralEvent, Field(discriminator="kind")]
_FEEDBACK_EXAMPLE: Final[JsonDict] = {
    "events": [
        {
            "kind": "appointment",
            "appointment_id": "AP00114000",
            "outcome": "attended",
            "occurred_at": "2025-07-01T08:05:00",
            "outreach_call": False,
        },
        {
            "kind": "referral",
            "referral_id": "RF0042000",
            "status": "completed",
            "occurred_at": "2025-07-01T09:00:00",
            "specialist_id": "1336432848",
        },
    ]
}


class FeedbackRequest(_Model):
    """POST /feedback: 1 to 10,000 outcome events (idempotent: a replayed event is counted as
    a duplicate, stored and applied once)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_FEEDBACK_EXAMPLE]})

    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_FEEDBACK_EVENTS)


class UnknownEvent(_Model):
    index: int = Field(description="Position of the event in `events`")
    field: str = Field(description="appointment_id or referral_id: not in the store")


class FeedbackResponse(_Model):
    recorded: int = Field(description="Events new to the store (applied to its rows)")
    duplicates: int = Field(description="Events already recorded (or repeated in this body)")
    unknown: list[UnknownEvent]
    request_id: str


# --------------------------------------------------------------------------- /monitoring

MAX_MONITOR_WEEKS: Final = 52
Weeks = Annotated[
    int, AfterValidator(_range(1, MAX_MONITOR_WEEKS)), _range_schema(1, MAX_MONITOR_WEEKS)
]


class MonitoringRequest(_Model):
    """GET /monitoring (query parameters): the window is `start`..`end` (dates, both
    included; appointments by visit day); without them, the `weeks` weeks up to today (the
    service's clock). `end` alone: the `weeks` weeks up to it."""

    weeks: Weeks = 8
    start: date | None = None
    end: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> MonitoringRequest:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise _field_error("end", "end_before_start", "must not be before start")
        return self


class Performance(_Model):
    """The no-show model on one group of scored appointments with a known outcome (attended or
    no-show; cancellations are left out, as in training)."""

    group: str = Field(description="'overall', an ISO week (2025-W27) or a subgroup's value")
    rows: int
    no_shows: int
    observed_rate: float | None
    mean_predicted: float | None
    calibration_gap: float | None = Field(description="observed_rate - mean_predicted")
    auc: float | None = Field(description="ROC AUC (null with one class only)")
    ece: float | None = Field(description="Expected calibration error over risk deciles")
    top20_recall: float | None = Field(
        description="Share of the no-shows among the riskiest 20% of each day's scored visits"
    )


class CalibrationBin(_Model):
    decile: int
    rows: int
    mean_predicted: float
    observed: float


class NoShowMonitoring(_Model):
    model_versions: list[str]
    scored: int = Field(description="Appointments in the window scored before their visit")
    with_outcome: int
    overall: Performance
    weeks: list[Performance]
    calibration: list[CalibrationBin]
    subgroups: dict[str, list[Performance]] = Field(
        description="By payer_type and age_band (race/ethnicity is audit-only: never here)"
    )
    training_auc: float | None = Field(description="The model's test AUC at training")


class RankerGroup(_Model):
    group: str = Field(description="ranked_first, lower_rank or not_recommended")
    referrals: int
    completed: int
    leaked: int
    pending: int = Field(description="No final status yet (scheduled or other)")
    completion_rate: float | None = Field(description="completed / (completed + leaked)")


class RankerMonitoring(_Model):
    referrals: int = Field(description="Referrals with a logged recommendation in the window")
    groups: list[RankerGroup]


class FeaturePsi(_Model):
    feature: str
    psi: float
    status: str = Field(description="stable, moderate or significant (features.drift)")


class DriftMonitoring(_Model):
    rows: int = Field(description="Scored appointments whose inputs were rebuilt")
    status: str
    features: list[FeaturePsi] = Field(description="Worst first")
    note: str | None = None


class MonitoringFlag(_Model):
    name: str = Field(description="calibration_gap, calibration_ece or auc_dropped")
    raised: bool
    value: float | None
    threshold: float
    message: str


class MonitoringResponse(_Model):
    start: date
    end: date
    no_show: NoShowMonitoring | None
    ranker: RankerMonitoring | None
    drift: DriftMonitoring | None
    calibration_degraded: bool = Field(
        description="|observed - predicted| or ECE over its threshold (flags)"
    )
    auc_dropped: bool | None = Field(description="null without a training AUC to compare")
    flags: list[MonitoringFlag]
    notes: list[str]
    request_id: str


# --------------------------------------------------------------------------- /model_info


class ModelInfo(_Model):
    name: str
    version: str
    run_id: str | None = None
    trained_at: ReportedDatetime | None = None
    features: list[str]
    metrics: dict[str, dict[str, float | None]] = Field(
        default_factory=dict,
        description="Test-window metrics of the training run by ranking: 'model', each "
        "baseline, and for the no-show model 'ceiling' (the true probabilities; synthetic "
        "worlds). Empty when the model was not exported with its reports.",
    )
    card_markdown: str | None = Field(default=None, description="The model card (Markdown)")
    plots: list[str] = Field(
        default_factory=list,
        description="Plots of the training run: GET /model_info/{model}/plots/{name}",
    )


class ModelInfoResponse(_Model):
    models: list[ModelInfo]
    request_id: str


# --------------------------------------------------------------------------- /admin


class ReloadResponse(_Model):
    """POST /admin/reload: the models now being served."""

    reloaded: bool
    versions: dict[str, str]
    request_id: str


class CreateKeyRequest(_Model):
    """POST /admin/keys: a new key for this role (its secret is shown once, in the answer)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "outreach"}]})

    role: Role


class CreatedKey(_Model):
    key_id: str
    role: Role
    secret: str = Field(description="Shown once: only its hash is stored")
    created_at: ReportedDatetime
    request_id: str


class KeyInfo(_Model):
    key_id: str
    role: Role
    created_at: ReportedDatetime
    revoked_at: ReportedDatetime | None


class KeyListResponse(_Model):
    keys: list[KeyInfo]
    request_id: str


class RevokeKeyRequest(_Model):
    """DELETE /admin/keys/{key_id} (the path parameter, validated like a body)."""

    key_id: Annotated[
        str,
        AfterValidator(_check_key_id),
        WithJsonSchema({"type": "string", "pattern": KEY_ID_PATTERN}),
    ]


class RevokedKey(_Model):
    key_id: str
    revoked: bool
    request_id: str


# --------------------------------------------------------------------------- errors (bodies)


class Problem(_Model):
    field: str = Field(description="Dotted path of the field, or 'body'")
    problem: str = Field(description="What is allowed (the submitted value is never echoed)")


class ValidationErrorResponse(_Model):
    """422: every problem found, each naming its field."""

    errors: list[Problem]
    request_id: str


class ErrorResponse(_Model):
    """401, 403, 404, 409, 413, 503 (and 500, which quotes the request_id for the logs)."""

    error: str
    request_id: str


# --------------------------------------------------------------------------- errors

_PROBLEMS: Final[dict[str, str]] = {
    "missing": "is required",
    "extra_forbidden": "is not a field of this request",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "datetime_type": "must be an ISO 8601 date-time",
    "datetime_parsing": "must be an ISO 8601 date-time (YYYY-MM-DDTHH:MM:SS)",
    "datetime_from_date_parsing": "must be an ISO 8601 date-time (YYYY-MM-DDTHH:MM:SS)",
    "timezone_naive": "must be a clinic-local date-time without a UTC offset or Z",
    "date_type": "must be an ISO 8601 date",
    "date_parsing": "must be an ISO 8601 date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "must be an ISO 8601 date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "must be a date without a time of day",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "union_tag_not_found": "is required",
    "json_invalid": "is not valid JSON",
}


def _problem(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in _PROBLEMS:
        return _PROBLEMS[kind]
    if kind in ("enum", "literal_error"):
        return f"must be one of {ctx.get('expected', 'the allowed values')}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "union_tag_invalid":
        return f"must be one of {ctx.get('expected_tags', 'the allowed kinds')}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    # Custom errors carry our own messages; pydantic's other messages name the rule, not the
    # value (include_input=False keeps the value itself out).
    return str(err["msg"])


def error_details(exc: ValidationError) -> list[dict[str, str]]:
    """`[{"field": "referral.patient.latitude", "problem": "must be between -90 and 90"}, ...]`.

    The submitted values are never included (PHI): only the field path and the rule.
    """
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False, include_context=True):
        loc = [str(p) for p in err["loc"]]
        ctx = err.get("ctx") or {}
        if "field" in ctx:  # a model-level rule reported on one field
            loc.extend(str(ctx["field"]).split("."))
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # the tag's field
            loc.append(str(ctx.get("discriminator", "kind")).strip("'"))
        elif len(loc) >= 3 and loc[0] == "events" and loc[2] in FEEDBACK_TAGS:
            del loc[2]  # events.3.appointment.outcome -> events.3.outcome
        out.append({"field": ".".join(loc) or "body", "problem": _problem(err)})
    return out
