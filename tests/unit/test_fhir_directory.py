"""FHIR directory import (features.fhir_directory): Plan-Net fixtures -> contract tables.

The fixtures in tests/fixtures/fhir hold the same fictional directory twice: ``bundle.json`` (a
collection Bundle whose references mix urn:uuid, absolute URLs and Type/id) and ``ndjson/`` (the
Bulk Data split by type, Type/id references, with a manifest.json), plus ``malformed.ndjson``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features import zipgeo
from features.directory_import import DirectoryImport
from features.fhir_directory import import_fhir
from features.validation import validate_tables

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
NUCC = "http://nucc.org/provider-taxonomy"
ANA, BEN, CARA = "1234567893", "1987654328", "1765432103"


@pytest.fixture(scope="module")
def bundle() -> DirectoryImport:
    return import_fhir(FIXTURES / "bundle.json")


@pytest.fixture(scope="module")
def split() -> DirectoryImport:
    return import_fhir(FIXTURES / "ndjson")


@pytest.fixture(scope="module")
def malformed() -> DirectoryImport:
    return import_fhir(FIXTURES / "malformed.ndjson")


def _problems(result: DirectoryImport) -> list[str]:
    return [str(p) for p in result.problems]


def _write_bundle(path: Path, entries: list[tuple[str | None, dict[str, Any]]]) -> Path:
    """A transaction Bundle of (fullUrl, resource) entries."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {**({"fullUrl": url} if url else {}), "resource": res, "request": {"method": "POST"}}
            for url, res in entries
        ],
    }
    path.write_text(json.dumps(bundle))
    return path


def _practitioner(npi: str | None, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Practitioner",
        "name": [{"family": "Testperson", "given": ["Alex"]}],
        "gender": "female",
        **extra,
    }
    if npi:
        res["identifier"] = [{"system": NPI_SYSTEM, "value": npi}]
    return res


def _location(lid: str, lat: float, lon: float, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Location",
        "id": lid,
        "address": {
            "line": ["1 Test Way"],
            "city": "Chicago",
            "state": "IL",
            "postalCode": "60611",
        },
        "position": {"latitude": lat, "longitude": lon},
        **extra,
    }


def _role(rid: str | None, practitioner: str, locations: list[str], **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "practitioner": {"reference": practitioner},
        "location": [{"reference": ref} for ref in locations],
        "specialty": [{"coding": [{"system": NUCC, "code": "207RC0000X"}]}],
        **extra,
    }
    if rid:
        res["id"] = rid
    return res


# ---------------------------------------------------------------------------------------------
# The fixture directory.
# ---------------------------------------------------------------------------------------------


def test_counts_imported_and_skipped_per_reason(bundle: DirectoryImport) -> None:
    assert bundle.source == "fhir"
    assert bundle.read == 28  # every Bundle entry
    assert bundle.imported == 4
    assert bundle.skipped == Counter(
        {"no_npi": 1, "sex_not_given": 1, "inactive": 1, "busy_slot": 2, "entered_in_error": 1}
    )
    assert bundle.counts == {"organizations": 2, "plans": 2, "specialists": 4, "availability": 3}
    assert bundle.missing == []  # some role carries every field the mapping reads
    problems = _problems(bundle)
    assert any(p.startswith("PractitionerRole/ROLE-DAN: Practitioner.identifier") for p in problems)
    assert any(p.startswith("PractitionerRole/ROLE-ELI: Practitioner.gender") for p in problems)
    assert any(
        p.startswith("PractitionerRole/ROLE-ANA-OLD: PractitionerRole.active") for p in problems
    )


def test_practitioner_at_two_locations_gives_npi_and_npi_2(bundle: DirectoryImport) -> None:
    spec = bundle.tables["specialists"].set_index("specialist_id")
    assert list(spec.index) == [ANA, f"{ANA}-2", BEN, CARA]
    first, second = spec.loc[ANA], spec.loc[f"{ANA}-2"]
    assert (first["latitude"], first["longitude"]) == (41.8950, -87.6200)
    assert (second["latitude"], second["longitude"]) == (42.0480, -87.6830)
    for row in (first, second):
        assert (row["first_name"], row["last_name"], row["sex"]) == ("Ana", "Fictional", "F")
        assert row["organization_id"] == "ORG-P1"
        assert row["languages"] == "es|en"  # es-MX -> es


def test_networks_plans_accepting_and_specialty(bundle: DirectoryImport) -> None:
    spec = bundle.tables["specialists"].set_index("specialist_id")
    assert spec.loc[ANA, "network_ids"] == "NET-1"
    assert spec.loc[ANA, "accepted_plan_ids"] == "PLN-PPO"
    assert spec.loc[f"{ANA}-2", "accepted_plan_ids"] == "PLN-PPO|PLN-HMO"
    assert spec.loc[BEN, "network_ids"] == "" and spec.loc[BEN, "accepted_plan_ids"] == ""
    # newpatients: on the role (newpt), else its Location (nopt), else its HealthcareService
    # (existptonly), else the neutral true.
    assert spec["accepting_new_patients"].to_dict() == {
        ANA: True,
        f"{ANA}-2": False,
        BEN: False,
        CARA: True,
    }
    # Ben's role has no specialty; his HealthcareService says dermatology.
    assert spec["specialty"].to_dict() == {
        ANA: "207RC0000X",
        f"{ANA}-2": "207RC0000X",
        BEN: "207N00000X",
        CARA: "2084N0400X",
    }
    ana = spec.loc[ANA]
    assert (ana["focus_codes"], ana["rating"], ana["review_count"], ana["weekly_capacity"]) == (
        "I50",
        4.6,
        37,
        20,
    )
    assert pd.isna(spec.loc[BEN, "rating"]) and spec.loc[BEN, "review_count"] == 0
    assert spec.loc[BEN, "languages"] == "en"  # "de" is not a contract language
    assert any("Practitioner.communication: de" in p for p in _problems(bundle))

    plans = bundle.tables["plans"].set_index("insurance_plan_id")
    assert plans.loc["PLN-PPO"].to_dict() == {
        "plan_name": "Lakeview Choice PPO",
        "payer_type": "commercial",
        "plan_type": "PPO",  # Plan-Net InsuranceProductTypeCS "commppo"
        "network_ids": "NET-1",
        "out_of_network_coverage": True,
    }
    assert plans.loc["PLN-HMO", "plan_type"] == "HMO"
    assert not plans.loc["PLN-HMO", "out_of_network_coverage"]


def test_organizations(bundle: DirectoryImport) -> None:
    orgs = bundle.tables["organizations"].set_index("organization_id")
    practice = orgs.loc["ORG-P1"]
    assert practice["system_id"] == "ORG-HS1"  # partOf, by urn:uuid in the Bundle
    assert (practice["metro"], practice["kind"]) == ("Chicago, IL", "specialty_practice")
    assert (practice["address_line"], practice["postal_code"]) == (
        "100 Example Ave, Suite 5",
        "60611",
    )
    # A Location without an organization becomes one; no position: its ZIP's centre (a repair).
    clinic = orgs.loc["LOC-OAKPARK"]
    centre = zipgeo.lookup("60302")
    assert centre is not None
    assert (clinic["metro"], clinic["kind"]) == ("Oak Park, IL", "specialty_practice")
    assert pd.isna(clinic["system_id"])
    assert (clinic["latitude"], clinic["longitude"]) == (centre.latitude, centre.longitude)
    repairs = [p for p in bundle.problems if not p.skipped and p.where == "Location/LOC-OAKPARK"]
    assert [p.field for p in repairs] == ["Location.position"]


def test_free_slots_keep_their_wall_clock_time(bundle: DirectoryImport) -> None:
    slots = bundle.tables["availability"].set_index("slot_id")
    assert list(slots.index) == ["SL-1", "SL-2", "SL-5"]
    assert slots.loc["SL-1", "start"] == pd.Timestamp("2025-03-03 09:00")  # not 15:00 UTC
    assert slots.loc["SL-5", "end"] == pd.Timestamp("2025-07-01 14:30")
    assert slots["specialist_id"].tolist() == [ANA, ANA, BEN]
    assert slots["slot_type"].tolist() == ["routine", "urgent_hold", "routine"]
    assert set(slots["status"]) == {"free"}
    assert slots["appointment_id"].isna().all() and slots["booked_at"].isna().all()
    busy = [p for p in bundle.problems if p.field == "Slot.status" and "busy" in p.message]
    assert [p.where for p in busy] == ["Schedule/SCH-ANA-1", "Schedule/SCH-BEN"]


def test_bundle_and_its_ndjson_split_give_identical_tables(
    bundle: DirectoryImport, split: DirectoryImport
) -> None:
    for name, table in bundle.tables.items():
        pd.testing.assert_frame_equal(table, split.tables[name], obj=name)
    assert (split.read, split.imported, split.skipped) == (
        bundle.read,
        bundle.imported,
        bundle.skipped,
    )  # manifest.json is not counted


def test_result_tables_pass_the_contract(bundle: DirectoryImport, split: DirectoryImport) -> None:
    for result in (bundle, split):
        report = validate_tables(result.dataset())
        assert report.ok, report.lines()


def test_no_person_names_in_problems(bundle: DirectoryImport) -> None:
    text = json.dumps(bundle.report())
    for name in ("Ana", "Fictional", "Placeholder", "Nonpi", "Unlisted", "Contained"):
        assert name not in text


def test_worker_processes_give_the_same_result(split: DirectoryImport) -> None:
    pooled = import_fhir(FIXTURES / "ndjson", workers=2)
    for name, table in split.tables.items():
        pd.testing.assert_frame_equal(table, pooled.tables[name], obj=name)
    assert _problems(pooled) == _problems(split)


# ---------------------------------------------------------------------------------------------
# Malformed input.
# ---------------------------------------------------------------------------------------------


def test_malformed_ndjson_problems_name_line_resource_and_element(
    malformed: DirectoryImport,
) -> None:
    assert malformed.read == 9  # the blank line is not a record
    assert malformed.imported == 0
    assert malformed.skipped == Counter(
        {"not_json": 1, "invalid": 4, "no_practitioner": 1, "not_fhir": 1, "ignored_Patient": 1}
    )
    by_where = {p.where: p for p in malformed.problems}
    assert by_where["malformed.ndjson line 2"].message.startswith("not JSON")
    robot = by_where["Practitioner/prac-robot (malformed.ndjson line 3)"]
    assert robot.field == "Practitioner.gender"
    assert robot.message == "is not one of male, female, other, unknown"
    assert by_where["Practitioner/prac-given (malformed.ndjson line 5)"].field == (
        "Practitioner.name[0].given"
    )
    assert by_where["Slot/SL-BAD (malformed.ndjson line 9)"].field == "Slot.status"
    assert by_where["Location/LOC-NORTH (malformed.ndjson line 10)"].field == (
        "Location.position.latitude"
    )
    assert by_where["malformed.ndjson line 8"].message == "not a FHIR resource (no resourceType)"
    ghost = by_where["PractitionerRole/ROLE-GHOST"]
    assert ghost.field == "PractitionerRole.practitioner"
    for problem in malformed.problems:  # short and readable, not a pydantic dump
        assert len(problem.message) <= 120
        assert "pydantic" not in problem.message and "\n" not in problem.message


def test_json_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "resourceType": "Practitioner",\n  "id": "x",,\n}\n')
    result = import_fhir(path)
    assert result.read == 1 and result.skipped == Counter({"not_json": 1})
    assert str(result.problems[0]).startswith("broken.json line 3: not JSON")


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        import_fhir(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# References, ids and folders.
# ---------------------------------------------------------------------------------------------


def test_urn_uuid_references_resolve_without_ids(tmp_path: Path) -> None:
    """A transaction Bundle whose resources have no ids, referenced only by fullUrl."""
    practitioner, location = (
        "urn:uuid:0e6c1c5a-1111-4111-8111-000000000001",
        ("urn:uuid:0e6c1c5a-1111-4111-8111-000000000002"),
    )
    loc = _location("ignored", 41.9, -87.6)
    del loc["id"]
    path = _write_bundle(
        tmp_path / "tx.json",
        [
            (practitioner, _practitioner(ANA, communication=[{"text": "English"}])),
            (location, loc),
            (None, _role(None, practitioner, [location])),
        ],
    )
    result = import_fhir(path)
    assert result.imported == 1, _problems(result)
    row = result.tables["specialists"].iloc[0]
    assert (row["specialist_id"], row["latitude"], row["languages"]) == (ANA, 41.9, "")
    # The Location had no organization: it is one, keyed by its urn:uuid.
    assert row["organization_id"] == "0e6c1c5a-1111-4111-8111-000000000002"
    assert "languages" not in result.missing  # communication was given (as text only)
    assert validate_tables(result.dataset()).ok


def test_contained_practitioner_and_one_role_at_two_locations(tmp_path: Path) -> None:
    contained = _practitioner(BEN, id="p1", gender="male")
    contained["id"] = "p1"
    path = _write_bundle(
        tmp_path / "b.json",
        [
            (None, _location("L1", 41.1, -87.1)),
            (None, _location("L2", 42.2, -88.2)),
            (None, _role(f"{BEN}", "#p1", ["Location/L1", "Location/L2"], contained=[contained])),
            (None, _role("other", "#p1", ["Location/L2"], contained=[contained])),
        ],
    )
    result = import_fhir(path)
    spec = result.tables["specialists"]
    # The role's id is its practitioner's NPI: kept for its first Location; later rows are
    # numbered on, skipping ids taken.
    assert spec["specialist_id"].tolist() == [BEN, f"{BEN}-2", f"{BEN}-3"]
    assert spec["latitude"].tolist() == [41.1, 42.2, 42.2]
    assert spec["sex"].tolist() == ["M", "M", "M"]


def test_unresolvable_and_inactive_locations_are_skipped(tmp_path: Path) -> None:
    path = _write_bundle(
        tmp_path / "b.json",
        [
            (None, {**_practitioner(ANA), "id": "p"}),
            (None, _location("L-OFF", 41.0, -87.0, status="inactive")),
            (None, _location("L-OK", 41.5, -87.5)),
            (
                None,
                _role(
                    "r", "Practitioner/p", ["Location/L-OFF", "Location/L-GONE", "Location/L-OK"]
                ),
            ),
        ],
    )
    result = import_fhir(path)
    assert result.tables["specialists"]["specialist_id"].tolist() == [ANA]
    assert result.skipped == Counter({"inactive": 1, "no_position": 1})
    fields = {p.field for p in result.problems if p.skipped}
    assert fields == {"PractitionerRole.location[0]", "PractitionerRole.location[1]"}


def test_folder_mixes_json_and_ndjson_recursively(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "practitioner.json").write_text(json.dumps({**_practitioner(ANA), "id": "p"}))
    lines = [
        _location("L", 41.5, -87.5),
        _role("r", "Practitioner/p", ["Location/L"]),
        {"resourceType": "Endpoint", "id": "e"},
    ]
    (tmp_path / "sub" / "rest.ndjson").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (tmp_path / "manifest.json").write_text(
        json.dumps({"transactionTime": "2025-01-01", "output": []})
    )
    result = import_fhir(tmp_path)
    assert (result.read, result.imported) == (4, 1)
    assert result.skipped == Counter({"ignored_Endpoint": 1})
    assert "availability" in result.missing and "plans" in result.missing
