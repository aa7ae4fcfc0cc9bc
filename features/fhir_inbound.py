"""FHIR inputs (docs/fhir.md): Appointment ndjson for training, and a ServiceRequest for /recommend.

Two readers of the mapping that ``features.fhir_export`` writes:

``read_appointments_ndjson(path)``
    One FHIR R4 Appointment per line -> the contract's ``appointments`` table plus a list of
    ``features.directory_import.Problem``. Each line is JSON-parsed, checked to be an
    Appointment, validated with the ``fhir.resources`` R4B model and then mapped. A line that
    cannot be read, or lacks something the contract requires (an id, booked_at,
    appointment_at), is left out *with a Problem naming the line and the FHIR element*; a field
    that was defaulted gives a Problem with ``skipped=False``. Nothing is dropped silently: the
    caller gets the good rows and every problem, and decides (training refuses to train on a
    file with problems unless told otherwise).

``recommend_from_service_request(resource)``
    A ServiceRequest (or a Bundle holding one, with its Patient and Coverage) -> a /recommend
    body as a plain dict with the field names of ``serving.schemas.RecommendRequest``
    (``features`` may not import ``serving``). Anything missing or wrong raises
    ``FhirInputError(field, message)``, where ``field`` is the FHIR element path
    ("ServiceRequest.performerType", "Patient.address"), so the service can answer 422 naming
    it.

Design:

* The R4B models only *validate* (structure, cardinality, primitive formats such as "an instant
  carries an offset"); the mapping then reads the plain JSON, which validation has vouched for.
  The models do not check most code values (Appointment.status, Patient.gender,
  ServiceRequest.priority), so those are checked here against their FHIR value sets.
* ``fhir.resources`` is imported inside the functions that validate: importing it costs a few
  hundred milliseconds and the service should pay that on the first FHIR request only.
* Times: an instant is read as the wall-clock time in the offset it carries (the offset is
  dropped, not converted to UTC), because the contract's times are naive clinic-local times
  and the exporter writes the clinic's local offset. A date without a time is a problem.
* Messages name elements and the kind of problem, never the values (a resource carries PHI).

Rules where docs/fhir.md leaves a choice:

* Appointment: the ``booked-at`` extension wins over ``created``; neither -> skipped (no lead
  time is invented). ``text-reminder``/``outreach-call`` absent -> false, not a problem; not a
  valueBoolean -> false with a repair problem. ``appointmentType`` absent or without ROUTINE /
  FOLLOWUP -> "new" with a repair problem. ``outcome-at`` absent: attended / no_show -> start;
  cancelled -> ``meta.lastUpdated`` moved to the start's offset (a server timestamp, usually
  UTC), else start; it is ignored for an upcoming visit. More than one distinct Patient (or
  PractitionerRole) participant, a contained Patient without a ``urn:referral-ml:patient-id``
  identifier, or a Practitioner without an NPI -> skipped; a repeated Appointment.id -> the
  later line is skipped. At most five validation errors are listed per line.
* ServiceRequest: ``patient_id`` is the id of a *relative* ``Patient/id`` subject (the
  service's own id space; only such an id is passed to ``patient_lookup``), else a contained or
  Bundle Patient's ``urn:referral-ml:patient-id`` identifier, else omitted. Age: a year-only
  birthDate gives the year difference (the contract's birth_year rule); a full date counts
  completed years. ``gender`` other/unknown is refused (the contract knows F and M). A language
  outside the contract's list is refused, not mapped to English. Without ServiceRequest.insurance
  the subject's one Coverage in the request (contained or Bundle) is used, else the stored plan;
  a Coverage that is cancelled or not the subject's is refused. Preferences come from one
  referral-ml extension only: ``max-distance-km`` (valueDecimal > 0).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd

from features import codes, contract, fhir_codes, zipgeo
from features.directory_import import Problem, frame
from features.fhir_codes import (
    BCP47_SYSTEM,
    COVERAGE_CLASS_SYSTEM,
    GEOLOCATION_URL,
    ICD10_CM_SYSTEM,
    NPI_SYSTEM,
    NUCC_SYSTEM,
    PATIENT_ID_SYSTEM,
    V2_0276_SYSTEM,
)

# --------------------------------------------------------------------------- systems, extensions

EXT_BASE: Final = fhir_codes.EXTENSION_BASE
# A Patient identifier with system fhir_codes.PATIENT_ID_SYSTEM holds referral-ml's own
# patient_id: the only identifier of a contained Patient trusted as the patient's id.

# referral-ml extension names (EXT_BASE + name).
BOOKED_AT: Final = "booked-at"
TEXT_REMINDER: Final = "text-reminder"
OUTREACH_CALL: Final = "outreach-call"
OUTCOME_AT: Final = "outcome-at"
REFERRAL_TYPE: Final = "referral-type"
MAX_DISTANCE_KM: Final = "max-distance-km"  # ServiceRequest, valueDecimal > 0: a hard radius

# --------------------------------------------------------------------------- value sets

# Appointment.status (http://hl7.org/fhir/appointmentstatus) -> the contract's outcome.
# None: booked but not happened yet (the visit is upcoming).
OUTCOME_OF_STATUS: Final[dict[str, str | None]] = {
    "fulfilled": "attended",
    "arrived": "attended",
    "checked-in": "attended",
    "noshow": "no_show",
    "cancelled": "cancelled",
    "booked": None,
    "pending": None,
    "proposed": None,
}
SKIPPED_STATUSES: Final = frozenset({"entered-in-error", "waitlist"})
VISIT_KIND_OF_TYPE: Final[dict[str, str]] = {"ROUTINE": "new", "FOLLOWUP": "follow_up"}
URGENCY_OF_PRIORITY: Final[dict[str, str]] = {
    "routine": "routine",
    "urgent": "urgent",
    "asap": "urgent",
    "stat": "stat",
}
SEX_OF_GENDER: Final[dict[str, str]] = {"female": "F", "male": "M"}
# What `patient_lookup` returns: the patients table without its id and audit-only columns.
STORED_PATIENT_KEYS: Final = tuple(
    c
    for c in contract.TABLES["patients"]
    if c != "patient_id" and c not in contract.AUDIT_ONLY_COLUMNS
)

# [base/]Type/id[/_history/version], the FHIR literal reference grammar (ids: 1-64 of A-Za-z0-9-.).
_REFERENCE: Final = re.compile(
    r"^(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_MAX_ERRORS_PER_LINE: Final = 5
_DATE_ONLY: Final = re.compile(r"^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$")
_DATE_ONLY_MESSAGE: Final = "is a date without a time; a date-time with its UTC offset is needed"


# =========================================================================== shared helpers


class FhirInputError(ValueError):
    """A FHIR input the service cannot use; ``field`` is the FHIR element path to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _DateOnlyError(ValueError):
    """A date (or partial date) where a date-time with an offset is needed."""


def wall_clock(text: str) -> datetime:
    """A FHIR dateTime/instant as the naive wall-clock time in the offset it carries.

    '2024-03-01T09:30:00-05:00' -> 2024-03-01 09:30 (not converted to UTC). Raises ValueError
    for a date-only or partial value ('2024-03-01', '2024-03') or text that is not a date-time.
    """
    if "T" not in text:
        raise _DateOnlyError(text)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def _parse_reference(reference: object) -> tuple[str, str] | None:
    """('Patient', 'p1') for 'Patient/p1' (relative, absolute or versioned); ('#', 'x') for '#x'."""
    if not isinstance(reference, str):
        return None
    if reference.startswith("#"):
        return ("#", reference[1:]) if len(reference) > 1 else None
    match = _REFERENCE.match(reference)
    return (match.group(1), match.group(2)) if match else None


def _extensions(resource: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """The referral-ml extensions `name` (EXT_BASE + name) on a resource or element."""
    url = EXT_BASE + name
    return [e for e in resource.get("extension") or () if e.get("url") == url]


def _codings(concept: object, system: str) -> list[str]:
    """The codes of a CodeableConcept's codings with `system`, in order."""
    if not isinstance(concept, Mapping):
        return []
    return [
        c["code"]
        for c in concept.get("coding") or ()
        if c.get("system") == system and isinstance(c.get("code"), str)
    ]


def _number(value: object) -> float | None:
    """A JSON number as float (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _element_path(root: str, loc: Iterable[object]) -> str:
    """'ServiceRequest.contained[0].birthDate' from pydantic's ('contained', 0, 'birthDate')."""
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _short_message(error: Mapping[str, Any]) -> str:
    """A short description of one pydantic error that never quotes the submitted value (it is
    only looked at to tell a date-only value from another malformed date-time)."""
    kind = str(error.get("type", ""))
    if kind == "missing":
        return "is required but missing"
    if kind == "extra_forbidden":
        return "is not an element of this R4B resource"
    message = str(error.get("msg", "is not valid"))
    if "Instant" in message or "DateTime" in message:
        value = error.get("input")
        if isinstance(value, str) and _DATE_ONLY.match(value):
            return _DATE_ONLY_MESSAGE
        return "is not a FHIR date-time with its UTC offset (e.g. 2024-03-01T09:30:00-05:00)"
    message = message.removeprefix("Value error, ").rstrip(".")
    return message[:120]


def _validation_errors(resource: Mapping[str, Any], resource_type: str) -> list[tuple[str, str]]:
    """[(element path, message)] from validating `resource` with its R4B model; [] when valid."""
    from pydantic import ValidationError

    model = _r4b_model(resource_type)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [
            (_element_path(resource_type, e["loc"]), _short_message(e))
            for e in exc.errors(include_url=False)
        ]
    except Exception as exc:  # fhir.resources raises KeyError/TypeError for unknown resource types
        return [(resource_type, f"cannot be read as an R4B {resource_type} ({type(exc).__name__})")]
    return []


def _r4b_model(resource_type: str) -> Any:
    """The fhir.resources R4B model class (imported lazily: the import is the expensive part)."""
    if resource_type == "Appointment":
        from fhir.resources.R4B.appointment import Appointment

        return Appointment
    if resource_type == "ServiceRequest":
        from fhir.resources.R4B.servicerequest import ServiceRequest

        return ServiceRequest
    if resource_type == "Bundle":
        from fhir.resources.R4B.bundle import Bundle

        return Bundle
    raise KeyError(resource_type)


def warm() -> None:
    """Import the R4B models /recommend validates with and index the ZIP table, so that the
    first FHIR request does not pay for them (a service calls this in the background)."""
    for resource_type in ("ServiceRequest", "Bundle"):
        _r4b_model(resource_type)
    zipgeo.warm()


# =========================================================================== Part 1: Appointments


@dataclass
class _Line:
    """Problems found on one ndjson line; the row is kept unless one of them skips it."""

    where: str
    problems: list[Problem] = field(default_factory=list)
    skipped: bool = False

    def skip(self, field_name: str, message: str) -> None:
        self.problems.append(Problem(self.where, field_name, message, skipped=True))
        self.skipped = True

    def repair(self, field_name: str, message: str) -> None:
        self.problems.append(Problem(self.where, field_name, message, skipped=False))


def read_appointments_ndjson(path: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Read FHIR Appointments (one per line, blank lines ignored) as the `appointments` table.

    Returns the rows that could be mapped, with exactly the contract's columns and the
    generator's dtypes, and one Problem per line left out or field defaulted (in line order).
    """
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}  # appointment_id -> the line that had it first
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _Line(f"line {number}")
            row = _read_line(raw, line)
            if row is not None and row["appointment_id"] in seen:
                earlier = seen[row["appointment_id"]]
                line.skip("Appointment.id", f"repeats the id of line {earlier}")
            problems.extend(line.problems)
            if row is not None and not line.skipped:
                seen[row["appointment_id"]] = number
                rows.append(row)
    return frame("appointments", rows), problems


def _read_line(raw: bytes, line: _Line) -> dict[str, Any] | None:
    """One ndjson line -> a row (None for a blank line or one that cannot be read)."""
    try:
        text = raw.decode("utf-8-sig").strip()  # a byte-order mark is tolerated
    except UnicodeDecodeError:
        line.skip("", "not UTF-8 text")
        return None
    if not text:
        return None
    try:
        resource = json.loads(text)
    except json.JSONDecodeError as exc:
        line.skip("", f"not JSON: {exc.msg} at column {exc.colno}")
        return None
    if not isinstance(resource, dict) or resource.get("resourceType") != "Appointment":
        line.skip("resourceType", "is not Appointment")
        return None
    errors = _validation_errors(resource, "Appointment")
    for path, message in errors[:_MAX_ERRORS_PER_LINE]:
        line.skip(path, message)
    if len(errors) > _MAX_ERRORS_PER_LINE:
        line.skip("Appointment", f"{len(errors) - _MAX_ERRORS_PER_LINE} more validation errors")
    if errors:
        return None
    return _appointment_row(resource, line)


def _appointment_row(a: dict[str, Any], line: _Line) -> dict[str, Any] | None:
    """Map one valid R4B Appointment; records problems on `line` (None when skipped)."""
    status = a.get("status")
    if status in SKIPPED_STATUSES:
        line.skip("Appointment.status", f"{status}: not a booked visit")
        return None
    if status not in OUTCOME_OF_STATUS:
        line.skip("Appointment.status", "is not an Appointment status code")
        return None
    outcome = OUTCOME_OF_STATUS[status]
    appointment_at = _time(a.get("start"), "Appointment.start", line, required=True)
    row: dict[str, Any] = {
        "appointment_id": _required(a.get("id"), "Appointment.id", "appointment_id", line),
        "referral_id": _required(
            _based_on(a), "Appointment.basedOn", "referral_id (a ServiceRequest reference)", line
        ),
        "patient_id": _patient_participant(a, line),
        "specialist_id": _specialist_participant(a, line),
        "slot_id": _required(_slot(a), "Appointment.slot", "slot_id (a Slot reference)", line),
        "visit_kind": _visit_kind(a, line),
        "booked_at": _booked_at(a, line),
        "appointment_at": appointment_at,
        "text_reminder": _flag(a, TEXT_REMINDER, line),
        "outreach_call": _flag(a, OUTREACH_CALL, line),
        "outcome": outcome,
        "outcome_at": _outcome_at(a, outcome, appointment_at, line),
    }
    return None if line.skipped else row


def _required(value: str | None, element: str, column: str, line: _Line) -> str | None:
    if not value:
        line.skip(element, f"{column} is missing")
    return value


def _time(value: object, element: str, line: _Line, *, required: bool) -> datetime | None:
    """A dateTime/instant element as wall-clock time; a date-only value skips the line."""
    if value is None:
        if required:
            line.skip(element, "is missing")
        return None
    try:
        return wall_clock(str(value))
    except _DateOnlyError:
        line.skip(element, _DATE_ONLY_MESSAGE)
    except ValueError:
        line.skip(element, "is not a FHIR dateTime")
    return None


def _based_on(a: Mapping[str, Any]) -> str | None:
    """The id of the first ServiceRequest in basedOn."""
    for ref in a.get("basedOn") or ():
        parsed = _parse_reference(ref.get("reference"))
        if parsed and parsed[0] == "ServiceRequest":
            return parsed[1]
    return None


def _slot(a: Mapping[str, Any]) -> str | None:
    slots = a.get("slot") or ()
    parsed = _parse_reference(slots[0].get("reference")) if slots else None
    return parsed[1] if parsed and parsed[0] == "Slot" else None


def _actors(a: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p["actor"] for p in a.get("participant") or () if isinstance(p.get("actor"), dict)]


def _contained(resource: Mapping[str, Any], local_id: str) -> dict[str, Any] | None:
    for item in resource.get("contained") or ():
        if isinstance(item, dict) and item.get("id") == local_id:
            return item
    return None


def _identifier(identifiers: object, system: str) -> str | None:
    for ident in identifiers if isinstance(identifiers, list) else ():
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def _actor_id(a: Mapping[str, Any], actor: Mapping[str, Any], kind: str, system: str) -> str | None:
    """The id of a participant actor of resource type `kind`, or None when it is another type.

    'Kind/id' gives the id; a contained '#x' or a logical reference (identifier only) gives the
    identifier with `system`, or '' (present, but no id to trust)."""
    parsed = _parse_reference(actor.get("reference"))
    if parsed and parsed[0] == kind:
        return parsed[1]
    if parsed and parsed[0] == "#":
        target = _contained(a, parsed[1])
        if target is None or target.get("resourceType") != kind:
            return None
        return _identifier(target.get("identifier"), system) or ""
    if parsed is None and actor.get("type") == kind:
        ident = actor.get("identifier")
        return _identifier([ident] if isinstance(ident, dict) else [], system) or ""
    return None


def _one(ids: list[str], element: str, what: str, line: _Line) -> str | None:
    """The single distinct id among `ids` ('' = present without a usable id); else a problem."""
    distinct = list(dict.fromkeys(ids))
    if len(distinct) > 1:
        line.skip(element, f"more than one {what} participant")
        return None
    if distinct and not distinct[0]:
        line.skip(element, f"the {what} participant has no id to use")
        return None
    return distinct[0] if distinct else None


def _patient_participant(a: Mapping[str, Any], line: _Line) -> str | None:
    ids = [
        i
        for actor in _actors(a)
        if (i := _actor_id(a, actor, "Patient", PATIENT_ID_SYSTEM)) is not None
    ]
    if not ids:
        line.skip("Appointment.participant", "patient_id is missing (no Patient participant)")
        return None
    return _one(ids, "Appointment.participant", "Patient", line)


def _specialist_participant(a: Mapping[str, Any], line: _Line) -> str | None:
    """The PractitionerRole's id; else the NPI of a Practitioner (identifier, or an NPI id)."""
    actors = _actors(a)
    roles = [
        i for x in actors if (i := _actor_id(a, x, "PractitionerRole", NPI_SYSTEM)) is not None
    ]
    if roles:
        return _one(roles, "Appointment.participant", "PractitionerRole", line)
    npis = []
    for actor in actors:
        found = _actor_id(a, actor, "Practitioner", NPI_SYSTEM)
        if found is not None:
            npis.append(found if codes.is_valid_npi(found) else "")
    if not npis:
        line.skip(
            "Appointment.participant",
            "specialist_id is missing (no PractitionerRole or Practitioner participant)",
        )
        return None
    return _one(npis, "Appointment.participant", "Practitioner (with an NPI)", line)


def _visit_kind(a: Mapping[str, Any], line: _Line) -> str:
    found = _codings(a.get("appointmentType"), V2_0276_SYSTEM)
    for code in found:
        if code in VISIT_KIND_OF_TYPE:
            return VISIT_KIND_OF_TYPE[code]
    what = "has no ROUTINE or FOLLOWUP (v2-0276) coding" if found else "is missing"
    line.repair("Appointment.appointmentType", f"{what}: read as a new visit")
    return "new"


def _value_datetime(a: Mapping[str, Any], name: str, line: _Line) -> tuple[bool, datetime | None]:
    """(present, value) of a valueDateTime extension; a wrong value skips the line."""
    found = _extensions(a, name)
    if not found:
        return False, None
    element = f"Appointment.extension:{name}"
    value = found[0].get("valueDateTime")
    if value is None:
        line.skip(element, "has no valueDateTime")
        return True, None
    return True, _time(value, element, line, required=True)


def _booked_at(a: Mapping[str, Any], line: _Line) -> datetime | None:
    """The booked-at extension (explicit) when present, else Appointment.created."""
    present, value = _value_datetime(a, BOOKED_AT, line)
    if present:
        return value
    if a.get("created") is None:
        line.skip(
            "Appointment.created", "booked_at is missing (no created, no booked-at extension)"
        )
        return None
    return _time(a.get("created"), "Appointment.created", line, required=True)


def _flag(a: Mapping[str, Any], name: str, line: _Line) -> bool:
    """A valueBoolean extension; absent means False (documented, not a problem)."""
    found = _extensions(a, name)
    if not found:
        return False
    value = found[0].get("valueBoolean")
    if not isinstance(value, bool):
        line.repair(f"Appointment.extension:{name}", "has no valueBoolean: read as false")
        return False
    return value


def _outcome_at(
    a: Mapping[str, Any], outcome: str | None, start: datetime | None, line: _Line
) -> datetime | None:
    """The outcome-at extension; without it the visit's start, or for a cancellation
    meta.lastUpdated (moved to the start's offset) when present."""
    if outcome is None:
        return None
    present, value = _value_datetime(a, OUTCOME_AT, line)
    if present:
        return value
    updated = (a.get("meta") or {}).get("lastUpdated")
    if outcome == "cancelled" and updated is not None and start is not None:
        return _in_offset_of(str(updated), str(a["start"]))
    return start


def _in_offset_of(instant: str, local: str) -> datetime:
    """`instant` as wall-clock time in the offset `local` carries.

    meta.lastUpdated is a server's timestamp (usually UTC), not a clinic-local time: it is moved
    to the offset of the appointment's start before the offset is dropped, so a cancellation time
    is on the clinic's clock like every other time (both are valid instants: validated)."""
    offset = datetime.fromisoformat(local.replace("Z", "+00:00")).tzinfo
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return moment.astimezone(offset).replace(tzinfo=None)


# =========================================================================== Part 2: ServiceRequest


@dataclass
class _Context:
    """Where references of one request resolve: the ServiceRequest's contained resources and,
    for a Bundle, its entries (by 'Type/id' and by fullUrl)."""

    contained: dict[str, dict[str, Any]]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def coverages(self) -> list[dict[str, Any]]:
        """Every Coverage the request carries (contained first, then Bundle entries), once."""
        found: dict[int, dict[str, Any]] = {}
        for item in [*self.contained.values(), *self.entries.values()]:
            if item.get("resourceType") == "Coverage":
                found.setdefault(id(item), item)
        return list(found.values())

    def resolve(self, reference: object, kind: str) -> tuple[dict[str, Any] | None, str | None]:
        """(resource or None, server id or None) of a reference to a `kind` resource.

        '#x' -> the contained resource x; a relative 'Kind/id' -> a contained resource with that
        id, else the Bundle entry 'Kind/id'; anything else (an absolute URL, a urn:uuid) -> the
        Bundle entry with that fullUrl. The server id is the id of a *relative* 'Kind/id'
        reference only: that names a resource of the service's own store (a Patient's id, used
        for continuity of care and for `patient_lookup`); an absolute URL names another
        server's resource, whose id means nothing here."""
        parsed = _parse_reference(reference)
        if parsed is not None and parsed[0] == "#":
            return _of_kind(self.contained.get(parsed[1]), kind), None
        if parsed is not None and parsed[0] != kind:
            return None, None
        if parsed is not None and reference == f"{kind}/{parsed[1]}":
            server_id = parsed[1]
            found = _of_kind(self.contained.get(server_id), kind)
            return found or _of_kind(self.entries.get(reference), kind), server_id
        return _of_kind(self.entries.get(str(reference)), kind), None


def _of_kind(resource: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return resource if resource is not None and resource.get("resourceType") == kind else None


def recommend_from_service_request(
    resource: Mapping[str, Any],
    *,
    patient_lookup: Callable[[str], dict[str, Any] | None] | None = None,
    k: int | None = None,
    as_of: date | None = None,
) -> dict[str, Any]:
    """A /recommend body (``{"referral": {...}, "k": k}``) from a FHIR R4 ServiceRequest or Bundle.

    `patient_lookup(id)` returns the stored patient (keys ``STORED_PATIENT_KEYS``) for a
    'Patient/id' subject that the resource does not carry; `as_of` (default today) is the date
    ages are computed at. `k` is left out when None (the service's default applies).
    Raises FhirInputError naming the FHIR element that is missing or wrong.
    """
    request, context = _request_and_context(resource)
    patient, stored_plan = _patient(request, context, patient_lookup, as_of or date.today())
    patient["insurance_plan_id"] = _plan_id(request, context, stored_plan)
    if "patient_id" in patient:  # keep serving's field order: patient_id comes last
        patient["patient_id"] = patient.pop("patient_id")
    referral: dict[str, Any] = {
        "patient": patient,
        "specialty": _specialty(request),
        "reason_code": _reason_code(request),
        "urgency": _urgency(request),
        "referral_type": _referral_type(request),
    }
    preferences = _preferences(request)
    if preferences:
        referral["preferences"] = preferences
    body: dict[str, Any] = {"referral": referral}
    if k is not None:
        body["k"] = k
    return body


def _raise_if_invalid(resource: Mapping[str, Any], resource_type: str) -> None:
    errors = _validation_errors(resource, resource_type)
    if errors:
        raise FhirInputError(*errors[0])


def _request_and_context(resource: Mapping[str, Any]) -> tuple[dict[str, Any], _Context]:
    """The ServiceRequest (validated) and where its references resolve."""
    if not isinstance(resource, Mapping):
        raise FhirInputError("resourceType", "the body must be a FHIR resource (a JSON object)")
    kind = resource.get("resourceType")
    if kind == "ServiceRequest":
        request = dict(resource)
        _raise_if_invalid(request, "ServiceRequest")
        return request, _Context(_contained_by_id(request))
    if kind == "Bundle":
        return _from_bundle(resource)
    raise FhirInputError("resourceType", "must be ServiceRequest or Bundle")


def _contained_by_id(resource: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(c["id"]): c
        for c in resource.get("contained") or ()
        if isinstance(c, dict) and c.get("id")
    }


def _from_bundle(bundle: Mapping[str, Any]) -> tuple[dict[str, Any], _Context]:
    """The Bundle's one ServiceRequest, its other entries indexed by 'Type/id' and fullUrl."""
    _raise_if_invalid(bundle, "Bundle")
    requests: list[dict[str, Any]] = []
    entries: dict[str, dict[str, Any]] = {}
    for entry in bundle.get("entry") or ():
        item = entry.get("resource")
        if not isinstance(item, dict):
            continue
        if item.get("resourceType") == "ServiceRequest":
            requests.append(item)
        if item.get("id"):
            entries[f"{item['resourceType']}/{item['id']}"] = item
        if entry.get("fullUrl"):
            entries[str(entry["fullUrl"])] = item
    if len(requests) != 1:
        raise FhirInputError("Bundle.entry", "must hold exactly one ServiceRequest")
    return requests[0], _Context(_contained_by_id(requests[0]), entries)


# --------------------------------------------------------------------------- the patient


def _patient(
    request: Mapping[str, Any],
    context: _Context,
    lookup: Callable[[str], dict[str, Any] | None] | None,
    as_of: date,
) -> tuple[dict[str, Any], str | None]:
    """(the patient fields but insurance_plan_id, the stored patient's plan when looked up)."""
    reference = (request.get("subject") or {}).get("reference")
    parsed = _parse_reference(reference)
    if parsed is not None and parsed[0] not in ("#", "Patient"):
        raise FhirInputError("ServiceRequest.subject", "must refer to a Patient")
    found, server_id = context.resolve(reference, "Patient")
    if found is not None:
        out = _from_fhir_patient(found, as_of)
        patient_id = server_id or _identifier(found.get("identifier"), PATIENT_ID_SYSTEM)
        if patient_id:
            out["patient_id"] = patient_id
        return out, None
    stored = lookup(server_id) if lookup is not None and server_id else None
    if stored is None:
        raise FhirInputError(
            "ServiceRequest.subject",
            "cannot be resolved: not contained, not in the Bundle and not a known patient",
        )
    assert server_id is not None
    return _from_stored_patient(stored, server_id, as_of), _stored_plan(stored)


def _from_stored_patient(stored: Mapping[str, Any], patient_id: str, as_of: date) -> dict[str, Any]:
    missing = [key for key in STORED_PATIENT_KEYS if stored.get(key) is None]
    if missing:
        raise FhirInputError(
            "ServiceRequest.subject", f"the stored patient lacks {', '.join(missing)}"
        )
    return {
        "age": as_of.year - int(stored["birth_year"]),
        "sex": str(stored["sex"]),
        "language": str(stored["preferred_language"]),
        "latitude": float(stored["latitude"]),
        "longitude": float(stored["longitude"]),
        "patient_id": patient_id,
    }


def _stored_plan(stored: Mapping[str, Any]) -> str | None:
    plan = stored.get("insurance_plan_id")
    return str(plan) if plan else None


def _from_fhir_patient(patient: Mapping[str, Any], as_of: date) -> dict[str, Any]:
    latitude, longitude = _position(patient)
    return {
        "age": _age(patient.get("birthDate"), as_of),
        "sex": _sex(patient.get("gender")),
        "language": _language(patient.get("communication") or []),
        "latitude": latitude,
        "longitude": longitude,
    }


def _age(birth_date: object, as_of: date) -> int:
    """Completed years at `as_of`: year-only -> the year difference (the contract's birth_year
    rule); year-month and full dates count the birthday not yet reached."""
    if not isinstance(birth_date, str):
        raise FhirInputError("Patient.birthDate", "is missing (the patient's age is needed)")
    parts = [int(p) for p in birth_date.split("-")]
    age = as_of.year - parts[0]
    if len(parts) >= 2 and (as_of.month, as_of.day) < (parts[1], parts[2] if len(parts) > 2 else 1):
        age -= 1
    if age < 0:
        raise FhirInputError("Patient.birthDate", "is after the date the age is computed at")
    return age


def _sex(gender: object) -> str:
    if gender not in SEX_OF_GENDER:
        raise FhirInputError(
            "Patient.gender", "must be female or male (the matcher models these two)"
        )
    return SEX_OF_GENDER[str(gender)]


def _language(communication: list[dict[str, Any]]) -> str:
    """The preferred (else first) communication language's BCP-47 primary subtag; 'en' when none."""
    if not communication:
        return "en"
    chosen = next((c for c in communication if c.get("preferred") is True), communication[0])
    tags = _codings(chosen.get("language"), BCP47_SYSTEM)
    if not tags:
        raise FhirInputError("Patient.communication.language", f"has no {BCP47_SYSTEM} coding")
    primary = tags[0].split("-")[0].lower()
    if primary not in contract.LANGUAGES:
        raise FhirInputError(
            "Patient.communication.language",
            "is not a language the service models (" + ", ".join(contract.LANGUAGES) + ")",
        )
    return primary


def _position(patient: Mapping[str, Any]) -> tuple[float, float]:
    """address[0]'s geolocation extension, else its postalCode's centroid."""
    addresses = patient.get("address") or []
    address = addresses[0] if addresses else {}
    for ext in address.get("extension") or ():
        if ext.get("url") != GEOLOCATION_URL:
            continue
        parts = {e.get("url"): _number(e.get("valueDecimal")) for e in ext.get("extension") or ()}
        lat, lon = parts.get("latitude"), parts.get("longitude")
        if lat is not None and lon is not None:
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise FhirInputError(
                    "Patient.address.extension:geolocation", "latitude or longitude out of range"
                )
            return lat, lon
    info = zipgeo.lookup(address.get("postalCode"))
    if info is None:
        raise FhirInputError(
            "Patient.address",
            "address[0] has neither a geolocation extension nor a known US postal code",
        )
    return info.latitude, info.longitude


# --------------------------------------------------------------------------- coverage


def _plan_id(request: Mapping[str, Any], context: _Context, stored_plan: str | None) -> str:
    """insurance_plan_id: the 'plan' class of the Coverage that ServiceRequest.insurance[0]
    names; without insurance, the one Coverage of the subject the request carries (contained
    or in the Bundle: the exporter links Coverage to Patient only), else the stored plan."""
    insurance = request.get("insurance") or []
    if insurance:
        coverage, _ = context.resolve(insurance[0].get("reference"), "Coverage")
        if coverage is None:
            raise FhirInputError(
                "ServiceRequest.insurance", "cannot be resolved to a contained or Bundle Coverage"
            )
        if not _is_subjects(request, coverage, context):
            raise FhirInputError("Coverage.beneficiary", "is not the ServiceRequest's subject")
        return _plan_class(coverage)
    carried = [c for c in context.coverages() if _is_subjects(request, c, context)]
    if len(carried) > 1:
        raise FhirInputError(
            "ServiceRequest.insurance", "is missing and the subject has more than one Coverage"
        )
    if carried:
        return _plan_class(carried[0])
    if stored_plan:
        return stored_plan
    raise FhirInputError(
        "ServiceRequest.insurance", "is missing and the patient has no stored plan"
    )


def _plan_class(coverage: Mapping[str, Any]) -> str:
    if coverage.get("status") in ("cancelled", "entered-in-error"):
        raise FhirInputError("Coverage.status", "is not in force (cancelled or entered-in-error)")
    for item in coverage.get("class") or ():
        concept = item.get("type") or {}
        if any(
            c.get("code") == "plan" and c.get("system") in (COVERAGE_CLASS_SYSTEM, None)
            for c in concept.get("coding") or ()
        ) and item.get("value"):
            return str(item["value"])
    raise FhirInputError("Coverage.class", "has no class of type plan")


def _is_subjects(
    request: Mapping[str, Any], coverage: Mapping[str, Any], context: _Context
) -> bool:
    """True when the Coverage's beneficiary is the ServiceRequest's subject: the same reference,
    the same resolved resource, or the same Patient id."""
    subject = (request.get("subject") or {}).get("reference")
    beneficiary = (coverage.get("beneficiary") or {}).get("reference")
    if subject is not None and subject == beneficiary:
        return True
    a, a_id = context.resolve(subject, "Patient")
    b, b_id = context.resolve(beneficiary, "Patient")
    return (a is not None and a is b) or (a_id is not None and a_id == b_id)


# --------------------------------------------------------------------------- the referral


def _specialty(request: Mapping[str, Any]) -> str:
    concept = request.get("performerType")
    if concept is None:
        raise FhirInputError("ServiceRequest.performerType", "is missing (the specialty)")
    found = _codings(concept, NUCC_SYSTEM)
    if not found:
        raise FhirInputError("ServiceRequest.performerType", f"has no {NUCC_SYSTEM} coding")
    if found[0] not in codes.nucc_codes():
        raise FhirInputError("ServiceRequest.performerType", "is not a NUCC taxonomy code")
    return found[0]


def _reason_code(request: Mapping[str, Any]) -> str:
    concepts = request.get("reasonCode") or []
    if not concepts:
        raise FhirInputError("ServiceRequest.reasonCode", "is missing (the reason for referral)")
    for concept in concepts:
        found = _codings(concept, ICD10_CM_SYSTEM)
        if found:
            if not codes.is_icd10_cm(found[0].strip().upper()):
                raise FhirInputError("ServiceRequest.reasonCode", "is not an ICD-10-CM code")
            return found[0]
    raise FhirInputError("ServiceRequest.reasonCode", f"has no {ICD10_CM_SYSTEM} coding")


def _urgency(request: Mapping[str, Any]) -> str:
    priority = request.get("priority")
    if priority is None:
        return "routine"
    if priority not in URGENCY_OF_PRIORITY:
        raise FhirInputError("ServiceRequest.priority", "is not routine, urgent, asap or stat")
    return URGENCY_OF_PRIORITY[str(priority)]


def _referral_type(request: Mapping[str, Any]) -> str:
    found = _extensions(request, REFERRAL_TYPE)
    if not found:
        return "provider"
    value = found[0].get("valueCode")
    if value not in contract.REFERRAL_TYPES:
        raise FhirInputError(
            f"ServiceRequest.extension:{REFERRAL_TYPE}",
            "must be a valueCode of " + ", ".join(contract.REFERRAL_TYPES),
        )
    return str(value)


def _preferences(request: Mapping[str, Any]) -> dict[str, Any]:
    """Hard constraints from referral-ml extensions: only max-distance-km for now."""
    out: dict[str, Any] = {}
    found = _extensions(request, MAX_DISTANCE_KM)
    if found:
        value = _number(found[0].get("valueDecimal"))
        if value is None or value <= 0:
            raise FhirInputError(
                f"ServiceRequest.extension:{MAX_DISTANCE_KM}", "must be a valueDecimal above 0"
            )
        out["max_distance_km"] = value
    return out
