"""HTTP schemas: examples validate, each rule names its field, errors never echo values (PHI),
and requests convert into the runtime objects of `features`."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from features import contract
from features.availability import NO_SLOT_DAYS
from features.codes import focus_labels, reasons, specialties
from features.matcher import Match, MatchResult
from features.no_show import FLAT_OPTIONAL, FLAT_REQUIRED, build_features, flatten_world
from serving.schemas import (
    MAX_APPOINTMENTS,
    RECOMMENDED_ACTIONS,
    UNKNOWN_PLAN_WARNING,
    UNKNOWN_REASON_CATEGORY_WARNING,
    UNKNOWN_REASON_WARNING,
    WORKLIST_CSV_COLUMNS,
    Appointment,
    ContactRequest,
    Language,
    NoShowRiskRequest,
    Patient,
    Preferences,
    RecommendRequest,
    Referral,
    RiskTier,
    Sex,
    WorklistRequest,
    WorklistRow,
    appointments_frame,
    error_details,
    match_response,
    request_warnings,
    risk_rows,
    to_match_request,
    worklist_csv,
)

pytestmark = pytest.mark.unit

REQUEST_MODELS: list[type[BaseModel]] = [
    Patient,
    Preferences,
    Referral,
    RecommendRequest,
    Appointment,
    NoShowRiskRequest,
    WorklistRequest,
    ContactRequest,
]


def example(model: type[BaseModel]) -> dict[str, Any]:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    return copy.deepcopy(extra["examples"][0])  # type: ignore[index,arg-type]


def details(model: type[BaseModel], payload: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(payload)
    return error_details(info.value)


def set_path(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node: Any = payload
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return payload


@pytest.mark.parametrize("model", REQUEST_MODELS, ids=lambda m: m.__name__)
def test_every_request_example_validates_and_appears_in_the_json_schema(
    model: type[BaseModel],
) -> None:
    # Given the worked examples that feed the OpenAPI docs
    schema = model.model_json_schema()
    # Then each one is in the schema and validates
    assert schema["examples"]
    for ex in schema["examples"]:
        model.model_validate(ex)


def test_the_enums_spell_out_the_contract() -> None:
    # Given the contract's allowed values, Then the API enums list exactly those
    assert [s.value for s in Sex] == list(contract.SEXES)
    assert [lang.value for lang in Language] == list(contract.LANGUAGES)
    assert set(RECOMMENDED_ACTIONS) == set(RiskTier)


def test_the_specialty_schema_lists_the_known_codes() -> None:
    # Given the /recommend JSON schema, Then the specialty enum is where a client finds the codes
    schema = Referral.model_json_schema()
    assert schema["properties"]["specialty"]["enum"] == sorted(specialties())


RECOMMEND_CASES = [
    # (id, path to set, value, expected field, expected problem fragment)
    (
        "latitude",
        "referral.patient.latitude",
        91.5,
        "referral.patient.latitude",
        "must be between -90 and 90",
    ),
    ("longitude", "referral.patient.longitude", -180.5, "referral.patient.longitude", "-180"),
    ("age", "referral.patient.age", 121, "referral.patient.age", "between 0 and 120"),
    ("unknown specialty", "referral.specialty", "207ZZ9999X", "referral.specialty", "OpenAPI"),
    ("bad specialty", "referral.specialty", "cardiology", "referral.specialty", "NUCC"),
    ("bad ICD", "referral.reason_code", "50.9X", "referral.reason_code", "ICD-10-CM"),
    ("k=0", "k", 0, "k", "between 1 and 50"),
    ("k=51", "k", 51, "k", "between 1 and 50"),
    ("k text", "k", "many", "k", "integer"),
    ("extra field", "referral.patient.ssn", "123-45-6789", "referral.patient.ssn", "not a field"),
    ("bad sex", "referral.patient.sex", "X", "referral.patient.sex", "'F' or 'M'"),
    ("bad language", "referral.patient.language", "de", "referral.patient.language", "'en'"),
    ("bad urgency", "referral.urgency", "asap", "referral.urgency", "'stat'"),
    ("bad referral type", "referral.referral_type", "x", "referral.referral_type", "one of"),
    (
        "distance 0",
        "referral.preferences.max_distance_km",
        0,
        "referral.preferences.max_distance_km",
        "greater than 0 and at most 150",
    ),
    (
        "distance 151",
        "referral.preferences.max_distance_km",
        151,
        "referral.preferences.max_distance_km",
        "at most 150",
    ),
    (
        "bad id",
        "referral.patient.insurance_plan_id",
        "plan 7; drop",
        "referral.patient.insurance_plan_id",
        "letters, digits",
    ),
    ("long id", "referral.patient.patient_id", "P" * 65, "referral.patient.patient_id", "1-64"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "problem"),
    [c[1:] for c in RECOMMEND_CASES],
    ids=[c[0] for c in RECOMMEND_CASES],
)
def test_recommend_rules_reject_with_the_field_path(
    path: str, value: Any, field: str, problem: str
) -> None:
    # Given a valid /recommend request with one field broken
    payload = set_path(example(RecommendRequest), path, value)
    # When it is validated
    found = details(RecommendRequest, payload)
    # Then exactly that field is reported, with what is allowed
    assert [d["field"] for d in found] == [field]
    assert problem in found[0]["problem"]


def test_a_missing_field_is_reported_as_required() -> None:
    payload = example(RecommendRequest)
    del payload["referral"]["patient"]["latitude"]
    assert details(RecommendRequest, payload) == [
        {"field": "referral.patient.latitude", "problem": "is required"}
    ]


def appointments(n: int) -> dict[str, Any]:
    one = example(Appointment)
    return {
        "appointments": [
            {**one, "appointment_id": f"A-{i}", "patient_id": f"P-{i}"} for i in range(n)
        ]
    }


NO_SHOW_CASES = [
    (
        "booked after visit",
        "appointments.0.booked_at",
        "2025-07-02T09:00:00",
        "appointments.0.booked_at",
        "after appointment_at",
    ),
    (
        "offset time",
        "appointments.1.appointment_at",
        "2025-03-17T09:00:00Z",
        "appointments.1.appointment_at",
        "without a UTC offset",
    ),
    ("not a time", "appointments.0.booked_at", "soon", "appointments.0.booked_at", "ISO 8601"),
    (
        "bad NPI",
        "appointments.0.specialist_id",
        "1234567890",
        "appointments.0.specialist_id",
        "check digit",
    ),
    (
        "duplicate id",
        "appointments.1.appointment_id",
        "A-0",
        "appointments.1.appointment_id",
        "distinct",
    ),
    ("bad payer", "appointments.0.payer_type", "cash", "appointments.0.payer_type", "medicaid"),
    ("bad age", "appointments.0.age", -1, "appointments.0.age", "between 0 and 120"),
    ("bad flag", "appointments.0.text_reminder", "maybe", "appointments.0.text_reminder", "true"),
    (
        "bad specialty",
        "appointments.0.specialty",
        "208D00000Y",
        "appointments.0.specialty",
        "NUCC",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "problem"),
    [c[1:] for c in NO_SHOW_CASES],
    ids=[c[0] for c in NO_SHOW_CASES],
)
def test_no_show_rules_reject_with_the_field_path(
    path: str, value: Any, field: str, problem: str
) -> None:
    # Given two valid appointments with one field broken
    payload = set_path(appointments(2), path, value)
    # When validated, Then that field (with its list index) is named
    found = details(NoShowRiskRequest, payload)
    assert [d["field"] for d in found] == [field]
    assert problem in found[0]["problem"]


def test_payer_type_or_plan_is_required() -> None:
    payload = appointments(1)
    del payload["appointments"][0]["payer_type"]
    del payload["appointments"][0]["insurance_plan_id"]
    assert [d["field"] for d in details(NoShowRiskRequest, payload)] == [
        "appointments.0.payer_type"
    ]


@pytest.mark.parametrize(("n", "fragment"), [(0, "at least 1"), (MAX_APPOINTMENTS + 1, "5000")])
def test_the_appointment_list_is_bounded(n: int, fragment: str) -> None:
    # Given an empty list or one over the limit, Then the list itself is reported
    found = details(NoShowRiskRequest, appointments(n))
    assert [d["field"] for d in found] == ["appointments"]
    assert fragment in found[0]["problem"]


def test_the_largest_allowed_batch_validates() -> None:
    assert len(NoShowRiskRequest.model_validate(appointments(MAX_APPOINTMENTS)).appointments) == (
        MAX_APPOINTMENTS
    )


OUTREACH_CASES = [
    (WorklistRequest, "end", "2025-06-30", "end", "before start"),
    (WorklistRequest, "end", "2025-08-01", "end", "at most 31 days"),
    (WorklistRequest, "capacity", 0, "capacity", "between 1 and 500"),
    (WorklistRequest, "capacity", 501, "capacity", "between 1 and 500"),
    (WorklistRequest, "format", "xlsx", "format", "'csv'"),
    (WorklistRequest, "order", "soonest", "order", "'expected_benefit'"),
    (WorklistRequest, "start", "17/03/2025", "start", "YYYY-MM-DD"),
    (ContactRequest, "note", "x" * 201, "note", "at most 200 characters"),
    (ContactRequest, "channel", "fax", "channel", "'call'"),
    (ContactRequest, "outcome", "maybe", "outcome", "'reached'"),
]


@pytest.mark.parametrize(
    ("model", "path", "value", "field", "problem"),
    OUTREACH_CASES,
    ids=[f"{c[0].__name__}-{c[1]}-{c[2]!s:.10}" for c in OUTREACH_CASES],
)
def test_outreach_rules_reject_with_the_field_path(
    model: type[BaseModel], path: str, value: Any, field: str, problem: str
) -> None:
    found = details(model, set_path(example(model), path, value))
    assert [d["field"] for d in found] == [field]
    assert problem in found[0]["problem"]


def test_a_31_day_worklist_is_allowed() -> None:
    # Given start and end 30 days apart (31 calendar days), Then it validates
    WorklistRequest.model_validate(set_path(example(WorklistRequest), "end", "2025-07-31"))


PHI_CASES = [
    (RecommendRequest, "referral.patient.latitude", 93.7251947),
    (RecommendRequest, "referral.patient.age", 987654),
    (RecommendRequest, "referral.patient.patient_id", "Jane Q Doe 1962-04-01"),
    (RecommendRequest, "referral.reason_code", "SECRET-DIAGNOSIS-XYZ"),
    (RecommendRequest, "referral.specialty", "999ZZZZZZX"),
    (RecommendRequest, "referral.patient.sex", "Unknown-Rare-Value"),
    (NoShowRiskRequest, "appointments.0.booked_at", "2031-07-19T23:59:00"),
    (NoShowRiskRequest, "appointments.0.appointment_at", "2025-03-17T09:00:00+05:45"),
    (ContactRequest, "note", "patient said: lives at 12 Elm St " * 8),
]


@pytest.mark.parametrize(("model", "path", "value"), PHI_CASES, ids=[c[1] for c in PHI_CASES])
def test_errors_never_echo_the_submitted_value(
    model: type[BaseModel], path: str, value: Any
) -> None:
    # Given a request carrying a distinctive, invalid value
    payload = (
        set_path(appointments(1), path, value)
        if model is NoShowRiskRequest
        else set_path(example(model), path, value)
    )
    # When its errors are rendered for the response
    found = details(model, payload)
    # Then the field is named but the value appears nowhere
    assert found
    text = json.dumps(found)
    assert str(value) not in text
    assert str(value)[:12] not in text


def test_an_extra_field_is_named_but_its_value_is_not_echoed() -> None:
    payload = set_path(example(RecommendRequest), "referral.patient.name", "Maria Example-Person")
    found = details(RecommendRequest, payload)
    assert found == [
        {"field": "referral.patient.name", "problem": "is not a field of this request"}
    ]


def test_to_match_request_maps_the_patient_and_preferences() -> None:
    # Given a referral with language and distance preferences but no sex preference
    req = RecommendRequest.model_validate(example(RecommendRequest))
    # When converted
    mr = to_match_request(req, as_of=datetime(2025, 3, 3, 9, 0))
    # Then the patient's facts and the preferences land on the matcher's fields
    p = req.referral.patient
    assert (mr.latitude, mr.longitude) == (p.latitude, p.longitude)
    assert (mr.specialty, mr.reason_code, mr.urgency) == ("207RC0000X", "I50.9", "urgent")
    assert (mr.insurance_plan_id, mr.patient_id) == ("PLN-B-PPO", "PT0024700")
    assert (mr.language, mr.require_language) == ("es", True)
    assert (mr.sex, mr.require_sex) == ("F", False)
    assert mr.max_distance_km == 30.0 and mr.allow_out_of_network is False
    assert mr.as_of == pd.Timestamp("2025-03-03 09:00")
    # And the retrieval request carries the hard filters
    rr = mr.retrieval()
    assert rr.require_language and rr.language == "es" and rr.max_distance_km == 30.0


def test_a_preference_replaces_the_patients_own_value_and_becomes_a_filter() -> None:
    # Given a male patient speaking English who asks for a female, Spanish-speaking specialist
    payload = example(RecommendRequest)
    payload["referral"]["patient"] |= {"sex": "M", "language": "en"}
    payload["referral"]["preferences"] = {
        "sex": "F",
        "language": "es",
        "allow_out_of_network": True,
    }
    mr = to_match_request(RecommendRequest.model_validate(payload))
    # Then both preferences are hard filters on the preferred values
    assert (mr.sex, mr.require_sex, mr.language, mr.require_language) == ("F", True, "es", True)
    assert mr.allow_out_of_network is True and mr.max_distance_km is None and mr.as_of is None


def test_without_preferences_nothing_is_required() -> None:
    payload = example(RecommendRequest)
    del payload["referral"]["preferences"]
    mr = to_match_request(RecommendRequest.model_validate(payload))
    assert not (mr.require_language or mr.require_sex or mr.allow_out_of_network)
    assert (mr.language, mr.sex, mr.max_distance_km) == ("es", "F", None)


def test_codes_are_normalised() -> None:
    payload = example(RecommendRequest)
    payload["referral"] |= {"specialty": " 207rc0000x", "reason_code": "i50.9 "}
    ref = RecommendRequest.model_validate(payload).referral
    assert (ref.specialty, ref.reason_code) == ("207RC0000X", "I50.9")


def test_unknown_but_well_formed_reason_codes_are_accepted_with_a_warning() -> None:
    # Given three well-formed codes: known, unknown in a known category, unknown category
    known = "I50.9"
    same_category = next(f"I50.{s}" for s in ("89", "99", "1") if f"I50.{s}" not in reasons())
    other = next(f"Y{n:02d}.0" for n in range(100) if f"Y{n:02d}" not in focus_labels())

    def warnings_for(code: str) -> list[str]:
        payload = set_path(example(RecommendRequest), "referral.reason_code", code)
        return request_warnings(RecommendRequest.model_validate(payload))

    # Then only the unknown ones warn, saying what focus matching does with them
    assert warnings_for(known) == []
    assert warnings_for(same_category) == [UNKNOWN_REASON_WARNING]
    assert warnings_for(other) == [UNKNOWN_REASON_CATEGORY_WARNING]


def match(rank: int, sid: str, days: float, *, in_network: float = 1.0) -> Match:
    features = {
        "distance_km": 4.567,
        "next_available_days": days,
        "in_network": in_network,
        "accepts_plan": 1.0,
    }
    return Match(rank, sid, 1.5 - rank, features, [f"reason {rank}"], out_of_network=False)


def test_match_response_builds_the_rows_and_warnings() -> None:
    # Given a matcher result with one specialist with a slot and one without, for an unknown plan
    result = MatchResult(
        matches=[match(1, "1234567893", 2.5), match(2, "1111111112", NO_SLOT_DAYS, in_network=0)],
        candidates=12,
        radius_km=25.0,
        removed_by={},
        empty_reason=None,
        unknown_plan=True,
        timings_ms={},
    )
    directory = {
        "1234567893": ("Dr. A Example", "207RC0000X"),
        "1111111112": ("Dr. B Example", "207RC0001X"),
    }
    as_of = datetime(2025, 3, 3, 9, 0)
    # When the response is built
    resp = match_response(
        result,
        directory,
        as_of=as_of,
        model_version="3",
        request_id="req-1",
        warnings=["w"],
    )
    # Then each row carries its facts, dates and reasons, and the unknown plan is warned about
    a, b = resp.specialists
    assert (a.rank, a.name, a.specialty.code, a.specialty.name) == (
        1,
        "Dr. A Example",
        "207RC0000X",
        "Cardiology",
    )
    assert a.next_available == as_of + timedelta(days=2.5) and a.next_available_days == 2.5
    assert b.next_available is None and b.next_available_days is None
    assert a.in_network and not b.in_network and a.accepts_plan and a.distance_km == 4.57
    assert resp.warnings == ["w", UNKNOWN_PLAN_WARNING]
    assert (resp.candidates_considered, resp.radius_km, resp.empty_reason) == (12, 25.0, None)
    # And it serialises with ISO date-times
    body = json.loads(resp.model_dump_json())
    assert body["specialists"][0]["next_available"] == "2025-03-05T21:00:00"


def test_an_empty_result_is_a_normal_answer_with_its_reason() -> None:
    result = MatchResult([], 0, 150.0, {"distance": 3}, "nobody within 150 km", False, {})
    resp = match_response(result, {}, as_of=datetime(2025, 3, 3), model_version="3", request_id="r")
    assert resp.specialists == [] and resp.empty_reason == "nobody within 150 km"
    assert resp.warnings == []


def test_a_specialist_missing_from_the_directory_is_an_error() -> None:
    result = MatchResult([match(1, "1234567893", 1.0)], 1, 15.0, {}, None, False, {})
    with pytest.raises(KeyError, match="not in the directory"):
        match_response(result, {}, as_of=datetime(2025, 3, 3), model_version="1", request_id="r")


def test_appointments_frame_has_the_flat_columns_in_order() -> None:
    # Given a request whose appointments all give every optional input but distance/organization
    req = NoShowRiskRequest.model_validate(appointments(3))
    # When converted
    frame = appointments_frame(req)
    # Then the required columns come first and the given optional ones follow in flat order
    expected = [
        c for c in (*FLAT_REQUIRED, *FLAT_OPTIONAL) if c not in ("distance_km", "organization_id")
    ]
    assert list(frame.columns) == expected
    assert frame["booked_at"].dtype.kind == "M" and frame["appointment_at"].dtype.kind == "M"
    assert frame["age"].dtype == float and frame["text_reminder"].dtype == bool
    assert frame["payer_type"].tolist() == ["medicare"] * 3


def test_appointments_frame_fills_payer_type_from_the_plan_and_leaves_unknowns_out() -> None:
    # Given one appointment with a payer type and one with only a plan id, no reminder flags
    payload = appointments(2)
    for a in payload["appointments"]:
        del a["text_reminder"]
    del payload["appointments"][1]["payer_type"]
    del payload["appointments"][0]["outreach_call"]
    req = NoShowRiskRequest.model_validate(payload)
    # When converted with the plans' payer types
    frame = appointments_frame(req, {"PLN-B-PPO": "medicaid"})
    # Then the plan fills the gap, an absent column is left out and a partial flag is NaN
    assert frame["payer_type"].tolist() == ["medicare", "medicaid"]
    assert "text_reminder" not in frame.columns
    assert frame["outreach_call"].isna().tolist() == [True, False]
    # And without the mapping the payer type is unknown (the model treats it as missing)
    assert appointments_frame(req)["payer_type"].isna().tolist() == [False, True]


def test_appointments_frame_builds_the_same_features_as_the_training_rows(
    small_tables: dict[str, pd.DataFrame],
) -> None:
    # Given the feature spec a model trained on world rows would carry
    flat = flatten_world(small_tables)
    X_world, spec = build_features(flat, None)
    # When API appointments are turned into features with that spec
    req = NoShowRiskRequest.model_validate(appointments(4))
    X_api, _ = build_features(appointments_frame(req), None, spec)
    # Then the matrix has the model's columns and dtypes
    assert list(X_api.columns) == list(X_world.columns)
    assert X_api.dtypes.astype(str).tolist() == X_world.dtypes.astype(str).tolist()
    # And every categorical value of the request is a level the model knows
    for col in spec.categorical:
        assert X_api[col].notna().all(), col
    # And the shared flat columns have the world's dtype kinds
    frame = appointments_frame(req)
    for col in frame.columns:
        assert frame[col].dtype.kind == flat[col].dtype.kind or (
            frame[col].dtype == "str" and flat[col].dtype in ("str", object)
        ), col


def test_risk_rows_and_worklist_csv() -> None:
    # Given the predictor's outputs for three appointments (and the uplift model's: NaN where
    # the benefit of a call is not estimated)
    rows = risk_rows(
        ["A-1", "A-2", "A-3"],
        [0.05, 0.2, 0.5],
        ["low", "medium", "high"],
        [[], ["lead_days"], ["lead_days", "prior_no_shows", "age", "extra"]],
        [float("nan"), None, 0.04123],
    )
    assert [r.expected_benefit for r in rows] == [None, None, 0.04123]
    assert all(r.expected_benefit is None for r in risk_rows(["A"], [0.1], ["low"], [[]]))
    with pytest.raises(ValueError):
        risk_rows(["A"], [0.1], ["low"], [[]], [0.01, 0.02])
    # Then each row gets its tier's action and at most three factors
    assert [r.recommended_action for r in rows] == [
        "standard reminder",
        "extra text reminder",
        "call and offer transport",
    ]
    assert rows[2].top_factors == ["lead_days", "prior_no_shows", "age"]
    # And worklist rows export to CSV with the documented columns
    wl = [
        WorklistRow(**r.model_dump(), appointment_at=datetime(2025, 3, 17, 9), specialist_id=None)
        for r in rows
    ]
    lines = worklist_csv(wl).splitlines()
    assert lines[0].split(",") == list(WORKLIST_CSV_COLUMNS)
    assert lines[0].startswith("appointment_id,appointment_at,specialist_id,risk,expected_benefit,")
    assert lines[3].endswith(
        ",0.5000,0.0412,high,lead_days|prior_no_shows|age,call and offer transport,0,"
    )
    assert lines[1].endswith(",0.0500,,low,,standard reminder,0,")  # no benefit: empty


def test_importing_the_schemas_loads_no_training_code_or_heavy_ml_libraries() -> None:
    # Given a fresh interpreter, When serving.schemas is imported
    code = (
        "import sys, serving.schemas; "
        "bad = {'training', 'synthetic_data', 'mlflow', 'sklearn', 'shap', 'lightgbm'}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Then none of the forbidden packages is loaded
    assert out.stdout.strip() == "[]"


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True)
patients = st.fixed_dictionaries(
    {
        "age": st.integers(0, 120),
        "sex": st.sampled_from(contract.SEXES),
        "language": st.sampled_from(contract.LANGUAGES),
        "latitude": st.floats(-90, 90, allow_nan=False),
        "longitude": st.floats(-180, 180, allow_nan=False),
        "insurance_plan_id": ids,
    },
    optional={"patient_id": ids},
)
preferences = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "max_distance_km": st.floats(0, 150, exclude_min=True, allow_nan=False),
        "language": st.sampled_from(contract.LANGUAGES),
        "sex": st.sampled_from(contract.SEXES),
        "allow_out_of_network": st.booleans(),
    },
)


@settings(max_examples=200, deadline=None)
@given(
    patient=patients,
    prefs=preferences,
    specialty=st.sampled_from(sorted(specialties())),
    reason=st.sampled_from(sorted(reasons())),
    urgency=st.sampled_from(contract.URGENCIES),
    k=st.integers(1, 50),
)
def test_any_valid_patient_round_trips_into_a_match_request(
    patient: dict[str, Any],
    prefs: dict[str, Any] | None,
    specialty: str,
    reason: str,
    urgency: str,
    k: int,
) -> None:
    # Given any valid referral
    referral: dict[str, Any] = {
        "patient": patient,
        "specialty": specialty,
        "reason_code": reason,
        "urgency": urgency,
        "referral_type": "provider",
    }
    if prefs is not None:
        referral["preferences"] = prefs
    # When validated (also through JSON) and converted
    req = RecommendRequest.model_validate({"referral": referral, "k": k})
    assert RecommendRequest.model_validate_json(req.model_dump_json()) == req
    mr = to_match_request(req)
    # Then the matcher request carries the same facts and a valid retrieval request
    assert (mr.latitude, mr.longitude) == (patient["latitude"], patient["longitude"])
    assert mr.insurance_plan_id == patient["insurance_plan_id"]
    assert mr.patient_id == patient.get("patient_id")
    assert mr.language == (prefs or {}).get("language", patient["language"])
    assert mr.sex == (prefs or {}).get("sex", patient["sex"])
    assert mr.require_language == ("language" in (prefs or {}))
    assert mr.retrieval().specialty == specialty
