"""FHIR inputs: Appointment ndjson -> the appointments table; ServiceRequest -> a /recommend body."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features import contract
from features.directory_import import Problem, column_dtype, frame
from features.fhir_inbound import (
    FhirInputError,
    read_appointments_ndjson,
    recommend_from_service_request,
    wall_clock,
)
from features.schemas import schema_for
from serving.schemas import Patient, Preferences, RecommendRequest, Referral

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir_appointments"
EXT = "http://referral-ml.org/fhir/StructureDefinition/"
AS_OF = date(2025, 7, 1)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


# =========================================================================== Appointment ndjson


def test_good_fixture_maps_every_status_id_time_and_default() -> None:
    # Given a hand-written ndjson with every status, with and without the referral-ml extensions
    df, problems = read_appointments_ndjson(FIXTURES / "good.ndjson")

    # Then each row is exactly the contract row: offsets dropped (wall-clock kept), not converted
    expected = frame(
        "appointments",
        [
            _row("AP1", "1563734692", "new", "2024-01-02 10:49", "2024-01-10 15:00",
                 True, True, "attended", "2024-01-10 15:40"),  # outcome-at extension
            _row("AP2", "1563734692-2", "follow_up", "2024-06-20 08:15", "2024-07-01 09:30",
                 False, False, "no_show", "2024-07-01 09:30"),  # booked-at ext; outcome_at=start
            _row("AP3", "1189433430", "new", "2024-03-01 08:00", "2024-03-12 11:00",
                 False, False, "cancelled", "2024-03-04 09:05"),  # lastUpdated Z -> start's -05:00
            _row("AP4", "1189433430", "follow_up", "2024-03-01 08:00", "2024-03-20 13:00",
                 False, False, "cancelled", "2024-03-20 13:00"),  # no lastUpdated: start
            _row("AP5", "1295509099", "new", "2025-05-01 09:00", "2025-05-15 10:00",
                 False, True, None, None),  # booked: upcoming; Practitioner by NPI identifier
            _row("AP6", "1234567893", "new", "2024-02-01 07:00:00.250", "2024-02-05 08:45:00.5",
                 False, False, "attended", "2024-02-05 08:45:00.5"),  # arrived; no type
            _row("AP7", "1563734692", "new", "2025-06-01 12:00", "2025-06-09 09:00",
                 False, False, None, None),  # pending; contained Patient with referral-ml id
            _row("AP8", "1563734692", "follow_up", "2024-04-01 12:00", "2024-04-09 09:00",
                 False, False, "attended", "2024-04-09 09:05"),  # checked-in
        ],
    )  # fmt: skip
    pd.testing.assert_frame_equal(df, expected)
    # And the only problem is the defaulted visit kind (blank line 3 is counted, not reported)
    assert problems == [
        Problem("line 7", "Appointment.appointmentType", "is missing: read as a new visit", False)
    ]


def test_the_frame_has_the_contract_columns_dtypes_and_passes_the_schema() -> None:
    df, _ = read_appointments_ndjson(FIXTURES / "good.ndjson")
    assert tuple(df.columns) == contract.TABLES["appointments"]
    assert {c: str(t) for c, t in df.dtypes.items()} == {
        c: str(pd.Series([], dtype=column_dtype(c)).dtype)  # type: ignore[call-overload]
        for c in contract.TABLES["appointments"]
    }
    schema_for("appointments").validate(df)


def test_every_bad_line_is_a_problem_and_the_good_lines_around_it_come_through() -> None:
    df, problems = read_appointments_ndjson(FIXTURES / "bad.ndjson")

    assert list(df["appointment_id"]) == ["OK1", "OK5", "OK11"]
    assert [(p.where, p.field, p.skipped) for p in problems] == [
        ("line 2", "", True),  # not JSON
        ("line 3", "resourceType", True),  # a Patient
        ("line 4", "Appointment.status", True),  # "attended" is not a FHIR status
        ("line 6", "Appointment.participant", True),  # no Patient participant
        ("line 7", "Appointment.start", True),  # date-only start (R4B validation)
        ("line 8", "Appointment.slot", True),  # no slot ...
        ("line 8", "Appointment.created", True),  # ... and a date-only created: both reported
        ("line 9", "Appointment.status", True),  # entered-in-error
        ("line 10", "Appointment.id", True),  # the id of line 1 again
        ("line 11", "Appointment.extension:text-reminder", False),  # valueString: read false
    ]
    messages = {p.where: p.message for p in problems}
    assert messages["line 2"].startswith("not JSON: ")
    assert "patient_id" in messages["line 6"]
    assert "date without a time" in messages["line 7"]
    assert messages["line 10"] == "repeats the id of line 1"
    assert str(problems[0]) == "line 2: not JSON: Expecting value at column 52 (skipped)"


def test_problem_messages_do_not_echo_values(tmp_path: Path) -> None:
    # Given an Appointment whose start is malformed and carries a recognisable value
    line = json.loads((FIXTURES / "good.ndjson").read_text().splitlines()[0])
    line["start"] = "2024-13-99T99:99:99-05:00"
    line["comment"] = {"name": "Jane Roe"}
    path = tmp_path / "one.ndjson"
    path.write_text(json.dumps(line) + "\n")

    _, problems = read_appointments_ndjson(path)

    assert {p.field for p in problems} == {"Appointment.start", "Appointment.comment"}
    assert all("2024-13-99" not in str(p) and "Jane" not in str(p) for p in problems)


@pytest.mark.parametrize(
    ("participants", "field_message"),
    [
        (
            [
                {"actor": {"reference": "Patient/A"}},
                {"actor": {"reference": "Patient/B"}},
                {"actor": {"reference": "PractitionerRole/1"}},
            ],
            "more than one Patient participant",
        ),
        (
            [{"actor": {"reference": "Patient/A"}}],
            "specialist_id is missing (no PractitionerRole or Practitioner participant)",
        ),
        (
            [{"actor": {"reference": "Patient/A"}}, {"actor": {"reference": "Practitioner/x1"}}],
            "the Practitioner (with an NPI) participant has no id to use",
        ),
        (
            [{"actor": {"reference": "#p"}}, {"actor": {"reference": "PractitionerRole/1"}}],
            "the Patient participant has no id to use",
        ),
    ],
)
def test_participants_that_name_no_single_patient_or_specialist_skip_the_line(
    tmp_path: Path, participants: list[dict[str, Any]], field_message: str
) -> None:
    line = json.loads((FIXTURES / "good.ndjson").read_text().splitlines()[0])
    line["participant"] = [dict(p, status="accepted") for p in participants]
    line["contained"] = [{"resourceType": "Patient", "id": "p"}]  # no referral-ml identifier
    path = tmp_path / "one.ndjson"
    path.write_text(json.dumps(line) + "\n")

    df, problems = read_appointments_ndjson(path)

    assert df.empty and tuple(df.columns) == contract.TABLES["appointments"]
    assert [(p.where, p.field, p.message) for p in problems] == [
        ("line 1", "Appointment.participant", field_message)
    ]


@pytest.mark.parametrize(
    ("text", "wall"),
    [
        ("2024-03-10T01:30:00-05:00", "2024-03-10 01:30"),
        ("2024-03-10T03:30:00-04:00", "2024-03-10 03:30"),  # after the DST change
        ("2024-03-10T06:30:00Z", "2024-03-10 06:30"),
        ("2024-03-10T06:30:00.123456789+05:30", "2024-03-10 06:30:00.123456"),
    ],
)
def test_an_instant_is_read_as_the_wall_clock_in_its_offset(text: str, wall: str) -> None:
    assert wall_clock(text) == _t(wall)


@pytest.mark.parametrize("text", ["2024-03-10", "2024-03", "2024"])
def test_a_date_only_value_is_not_a_time(text: str) -> None:
    with pytest.raises(ValueError):
        wall_clock(text)


def _row(
    appointment: str,
    specialist: str,
    kind: str,
    booked: str,
    start: str,
    text: bool,
    call: bool,
    outcome: str | None,
    outcome_at: str | None,
) -> dict[str, Any]:
    n = appointment.removeprefix("AP")
    return {
        "appointment_id": appointment,
        "referral_id": f"RF{n}",
        "patient_id": f"PT{n}",
        "specialist_id": specialist,
        "slot_id": f"SL{n}",
        "visit_kind": kind,
        "booked_at": _t(booked),
        "appointment_at": _t(start),
        "text_reminder": text,
        "outreach_call": call,
        "outcome": outcome,
        "outcome_at": None if outcome_at is None else _t(outcome_at),
    }


# =========================================================================== ServiceRequest


def _patient(**changes: Any) -> dict[str, Any]:
    patient: dict[str, Any] = {
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
    }
    patient.update(changes)
    return patient


def _coverage(beneficiary: str = "#pt", plan: str = "PLN-B-PPO") -> dict[str, Any]:
    return {
        "resourceType": "Coverage",
        "id": "cov",
        "status": "active",
        "beneficiary": {"reference": beneficiary},
        "payor": [{"display": "Payer B"}],
        "class": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                            "code": "group",
                        }
                    ]
                },
                "value": "GRP-1",
            },
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                            "code": "plan",
                        }
                    ]
                },
                "value": plan,
            },
        ],
    }


def _service_request(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "contained": [_patient(), _coverage()],
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
            {"url": EXT + "referral-type", "valueCode": "second_opinion"},
            {"url": EXT + "max-distance-km", "valueDecimal": 30},
        ],
    }
    request.update(changes)
    return request


CONTAINED_BODY: dict[str, Any] = {
    "referral": {
        "patient": {
            "age": 67,
            "sex": "F",
            "language": "es",
            "latitude": 41.8781,
            "longitude": -87.6298,
            "insurance_plan_id": "PLN-B-PPO",
        },
        "specialty": "207RC0000X",
        "reason_code": "I50.9",
        "urgency": "urgent",
        "referral_type": "second_opinion",
        "preferences": {"max_distance_km": 30.0},
    },
    "k": 7,
}


def test_a_service_request_with_contained_patient_and_coverage_gives_the_exact_body() -> None:
    body = recommend_from_service_request(_service_request(), k=7, as_of=AS_OF)

    assert body == CONTAINED_BODY
    # And it is a valid /recommend body, the one a referral UI would have typed by hand
    assert RecommendRequest.model_validate(body) == RecommendRequest(
        referral=Referral(
            patient=Patient(
                age=67,
                sex="F",  # type: ignore[arg-type]
                language="es",  # type: ignore[arg-type]
                latitude=41.8781,
                longitude=-87.6298,
                insurance_plan_id="PLN-B-PPO",
            ),
            specialty="207RC0000X",
            reason_code="I50.9",
            urgency="urgent",  # type: ignore[arg-type]
            referral_type="second_opinion",  # type: ignore[arg-type]
            preferences=Preferences(max_distance_km=30),
        ),
        k=7,
    )


def test_defaults_without_priority_extensions_communication_or_k() -> None:
    request = _service_request(extension=[])
    del request["priority"]
    request["contained"][0].pop("communication")

    body = recommend_from_service_request(request, as_of=AS_OF)

    assert "k" not in body and "preferences" not in body["referral"]
    assert body["referral"]["urgency"] == "routine"
    assert body["referral"]["referral_type"] == "provider"
    assert body["referral"]["patient"]["language"] == "en"
    RecommendRequest.model_validate(body)


STORED = {
    "birth_year": 1958,
    "sex": "F",
    "preferred_language": "es",
    "latitude": 41.8781,
    "longitude": -87.6298,
    "insurance_plan_id": "PLN-B-PPO",
}


def test_a_referenced_patient_is_looked_up_and_keeps_its_id_for_continuity() -> None:
    # Given a ServiceRequest naming a stored patient, without insurance
    asked: list[str] = []

    def lookup(patient_id: str) -> dict[str, Any] | None:
        asked.append(patient_id)
        return dict(STORED)

    request = _service_request(contained=[], subject={"reference": "Patient/PT0024700"})
    del request["insurance"]

    body = recommend_from_service_request(request, patient_lookup=lookup, k=7, as_of=AS_OF)

    assert asked == ["PT0024700"]
    expected = copy.deepcopy(CONTAINED_BODY)
    expected["referral"]["patient"]["patient_id"] = "PT0024700"
    assert body == expected
    assert list(body["referral"]["patient"]) == list(Patient.model_fields)
    RecommendRequest.model_validate(body)


def test_an_absolute_patient_url_is_another_servers_patient_and_is_not_looked_up() -> None:
    asked: list[str] = []

    def lookup(patient_id: str) -> dict[str, Any] | None:
        asked.append(patient_id)
        return dict(STORED)

    request = _service_request(
        contained=[], subject={"reference": "https://ehr.example/fhir/Patient/PT0024700"}
    )
    with pytest.raises(FhirInputError) as raised:
        recommend_from_service_request(request, patient_lookup=lookup, as_of=AS_OF)
    assert raised.value.field == "ServiceRequest.subject" and asked == []


def test_a_referenced_patient_with_a_contained_coverage_takes_the_coverage_plan() -> None:
    request = _service_request(
        contained=[_coverage("Patient/PT0024700", plan="PLN-A-HMO")],
        subject={"reference": "Patient/PT0024700"},
    )
    body = recommend_from_service_request(
        request, patient_lookup=lambda _id: dict(STORED), as_of=AS_OF
    )
    assert body["referral"]["patient"]["insurance_plan_id"] == "PLN-A-HMO"


def test_a_contained_patient_keeps_only_a_referral_ml_identifier_as_its_id() -> None:
    identified = _patient(
        identifier=[
            {"system": "http://hospital.example/mrn", "value": "MRN-1"},
            {"system": "urn:referral-ml:patient-id", "value": "PT0000001"},
        ]
    )
    request = _service_request(contained=[identified, _coverage()])
    body = recommend_from_service_request(request, as_of=AS_OF)
    assert body["referral"]["patient"]["patient_id"] == "PT0000001"


def test_a_bundle_resolves_type_id_and_full_url_references() -> None:
    # Given a Bundle: subject by fullUrl (urn:uuid), insurance by Type/id
    request = _service_request(
        contained=[],
        subject={"reference": "urn:uuid:7f3c0e0a-0000-4000-8000-000000000001"},
        insurance=[{"reference": "Coverage/cov"}],
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:sr", "resource": request},
            {
                "fullUrl": "urn:uuid:7f3c0e0a-0000-4000-8000-000000000001",
                "resource": _patient(id="P9"),
            },
            {
                "fullUrl": "https://ehr.example/fhir/Coverage/cov",
                "resource": _coverage("Patient/P9"),
            },
        ],
    }
    body = recommend_from_service_request(bundle, k=7, as_of=AS_OF)
    # Then the body is the contained one's (a urn:uuid entry's id is not a server id: no id)
    assert body == CONTAINED_BODY

    # And a Patient/id subject in a Bundle keeps the id
    request["subject"] = {"reference": "Patient/P9"}
    body = recommend_from_service_request(bundle, as_of=AS_OF)
    assert body["referral"]["patient"]["patient_id"] == "P9"


def test_without_insurance_the_subjects_one_coverage_in_the_bundle_is_used() -> None:
    # Given a Bundle as the exporter writes it: Coverage points at the Patient, not vice versa
    request = _service_request(contained=[], subject={"reference": "Patient/P9"})
    del request["insurance"]
    other = dict(_coverage("Patient/P8", plan="PLN-OTHER"), id="cov8")
    entries = [request, _patient(id="P9"), other, _coverage("Patient/P9")]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in entries],
    }

    body = recommend_from_service_request(bundle, as_of=AS_OF)
    assert body["referral"]["patient"]["insurance_plan_id"] == "PLN-B-PPO"

    # But two Coverages of the subject are ambiguous
    bundle["entry"].append({"resource": dict(_coverage("Patient/P9", plan="PLN-X"), id="c2")})
    with pytest.raises(FhirInputError) as raised:
        recommend_from_service_request(bundle, as_of=AS_OF)
    assert raised.value.field == "ServiceRequest.insurance"


def test_a_patient_with_only_a_postal_code_is_geocoded() -> None:
    patient = _patient(address=[{"postalCode": "02139-1234"}])
    request = _service_request(contained=[patient, _coverage()])
    body = recommend_from_service_request(request, as_of=AS_OF)
    assert (body["referral"]["patient"]["latitude"], body["referral"]["patient"]["longitude"]) == (
        42.3647,
        -71.1042,
    )


@pytest.mark.parametrize(
    ("birth_date", "age"),
    [("1958", 67), ("1958-07", 67), ("1958-08", 66), ("1958-07-01", 67), ("1958-07-02", 66)],
)
def test_age_counts_completed_years_when_the_birth_date_is_precise(
    birth_date: str, age: int
) -> None:
    request = _service_request(contained=[_patient(birthDate=birth_date), _coverage()])
    body = recommend_from_service_request(request, as_of=AS_OF)
    assert body["referral"]["patient"]["age"] == age


@pytest.mark.parametrize(
    ("priority", "urgency"),
    [("routine", "routine"), ("urgent", "urgent"), ("asap", "urgent"), ("stat", "stat")],
)
def test_priority_maps_to_urgency(priority: str, urgency: str) -> None:
    body = recommend_from_service_request(_service_request(priority=priority), as_of=AS_OF)
    assert body["referral"]["urgency"] == urgency


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting (or, with value None, deleting) a '/'-separated path in a request."""

    def mutate(request: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = request
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key: Any = int(last) if last.isdigit() else last
        if value is None:
            del node[key]
        else:
            node[key] = value

    return mutate


def _both(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(request: dict[str, Any]) -> None:
        for one in mutations:
            one(request)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_set("performerType", None), "ServiceRequest.performerType"),
        (_set("performerType/coding/0/system", "urn:other"), "ServiceRequest.performerType"),
        (_set("performerType/coding/0/code", "999999999X"), "ServiceRequest.performerType"),
        (_set("reasonCode", None), "ServiceRequest.reasonCode"),
        (_set("reasonCode/1/coding/0/code", "not-icd"), "ServiceRequest.reasonCode"),
        (_set("priority", "soon"), "ServiceRequest.priority"),
        (_set("subject", {"reference": "#nobody"}), "ServiceRequest.subject"),
        (_set("subject", {"reference": "Patient/PT1"}), "ServiceRequest.subject"),  # no lookup
        (_set("subject", {"reference": "Group/g1"}), "ServiceRequest.subject"),
        (_set("subject", None), "ServiceRequest.subject"),  # R4B: required
        (_both(_set("insurance", None), _set("contained/1", None)), "ServiceRequest.insurance"),
        (_set("insurance", None), None),  # the contained Coverage of the subject is used
        (_set("insurance/0/reference", "#nothing"), "ServiceRequest.insurance"),
        (_set("contained/0/gender", "unknown"), "Patient.gender"),
        (_set("contained/0/birthDate", None), "Patient.birthDate"),
        (_set("contained/0/birthDate", "2030"), "Patient.birthDate"),
        (_set("contained/0/birthDate", "1958-13"), "ServiceRequest.contained[0].birthDate"),
        (_set("contained/0/address", None), "Patient.address"),
        (_set("contained/0/address/0/extension", None), None),  # falls back to 60601: no error
        (
            _set("contained/0/address", [{"postalCode": "00000"}]),
            "Patient.address",
        ),
        (
            _set("contained/0/address/0/extension/0/extension/0/valueDecimal", 95),
            "Patient.address.extension:geolocation",
        ),
        (
            _set("contained/0/communication/1/language/coding/0/code", "de"),
            "Patient.communication.language",
        ),
        (
            _set("contained/0/communication/1/language/coding/0/system", "urn:iso:639"),
            "Patient.communication.language",
        ),
        (_set("contained/1/class/1", None), "Coverage.class"),
        (_set("contained/1/status", "cancelled"), "Coverage.status"),
        (_set("contained/1/beneficiary", {"reference": "Patient/other"}), "Coverage.beneficiary"),
        (_set("extension/0/valueCode", "walk_in"), "ServiceRequest.extension:referral-type"),
        (_set("extension/1/valueDecimal", 0), "ServiceRequest.extension:max-distance-km"),
        (_set("status", None), "ServiceRequest.status"),
        (_set("bogus", 1), "ServiceRequest.bogus"),
        (_set("contained/0", {"resourceType": "NotAType", "id": "pt"}), "ServiceRequest"),
    ],
)
def test_each_missing_or_wrong_piece_names_its_fhir_element(
    mutate: Callable[[dict[str, Any]], None], field: str | None
) -> None:
    request = _service_request()
    mutate(request)
    if field is None:
        RecommendRequest.model_validate(recommend_from_service_request(request, as_of=AS_OF))
        return
    with pytest.raises(FhirInputError) as raised:
        recommend_from_service_request(request, as_of=AS_OF)
    assert raised.value.field == field
    assert str(raised.value) == f"{field}: {raised.value.message}"
    # And the message names the problem, not the patient's values
    for value in ("1958", "60601", "41.8781", "PLN-B-PPO", "es-MX"):
        assert value not in raised.value.message


def test_bundles_and_other_resources_that_are_not_one_referral_are_refused() -> None:
    with pytest.raises(FhirInputError) as raised:
        recommend_from_service_request({"resourceType": "Patient"})
    assert raised.value.field == "resourceType"
    two = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": _service_request()}, {"resource": _service_request(id="sr2")}],
    }
    with pytest.raises(FhirInputError) as raised:
        recommend_from_service_request(two)
    assert raised.value.field == "Bundle.entry"
    with pytest.raises(FhirInputError) as raised:
        recommend_from_service_request(
            {"resourceType": "Bundle", "type": "nope-not-a-type", "x": 1}
        )
    assert raised.value.field.startswith("Bundle.")


def test_an_incomplete_stored_patient_is_an_error_on_the_subject() -> None:
    request = _service_request(contained=[], subject={"reference": "Patient/PT1"})
    del request["insurance"]
    stored = dict(STORED, latitude=None)
    with pytest.raises(FhirInputError) as raised:
        recommend_from_service_request(request, patient_lookup=lambda _id: stored)
    assert raised.value.field == "ServiceRequest.subject"
    assert "latitude" in raised.value.message


def test_importing_the_module_does_not_import_fhir_resources() -> None:
    code = "import sys, features.fhir_inbound; print('fhir.resources' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
