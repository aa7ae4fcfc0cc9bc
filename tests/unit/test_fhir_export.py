"""FHIR export (features.fhir_export): the small world written once, checked against its tables."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from features import contract, fhir_export
from features.fhir_export import (
    BASE_URL,
    EXT,
    NETWORK_REFERENCE_URL,
    NEWPATIENTS_URL,
    NUCC_SYSTEM,
    ExportSummary,
    FhirExportError,
    export_fhir,
    local_instants,
    organization_zone,
)

BUNDLE_SIZE = 2000
RACE_WORDS = ("race", "ethnicity")
_KEY = re.compile(r'"([^"\\]*)":')  # a JSON object key


@pytest.fixture(scope="module")
def exported(
    small_tables: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> ExportSummary:
    """The small world exported without the exporter's own validation (the tests validate)."""
    started = time.perf_counter()
    summary = export_fhir(
        small_tables, tmp_path_factory.mktemp("fhir"), validate=False, bundle_size=BUNDLE_SIZE
    )
    print(f"small world export: {time.perf_counter() - started:.2f} s, {summary.total} resources")
    return summary


@pytest.fixture(scope="module")
def parsed(exported: ExportSummary) -> dict[str, list[dict[str, Any]]]:
    """Every exported resource by type, parsed once."""
    return {
        rtype: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        for rtype, path in exported.ndjson.items()
    }


def _by_id(parsed: dict[str, list[dict[str, Any]]], rtype: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in parsed[rtype]}


def _ext_values(resource: dict[str, Any], name_or_url: str, kind: str) -> list[Any]:
    url = name_or_url if name_or_url.startswith("http") else EXT + name_or_url
    return [e[kind] for e in resource.get("extension", []) if e["url"] == url]


def _wall(instant: str) -> pd.Timestamp:
    return pd.Timestamp(datetime.fromisoformat(instant).replace(tzinfo=None))


def test_every_ndjson_line_validates_with_its_r4b_model(exported: ExportSummary) -> None:
    # Given the exported ndjson files
    from fhir.resources.R4B import get_fhir_model_class

    # When every line is validated with the R4B model of its declared type
    for rtype, path in exported.ndjson.items():
        model = get_fhir_model_class(rtype)
        lines = path.read_text(encoding="utf-8").splitlines()
        # Then each parses, has the file's type, and validates
        for line in lines:
            assert json.loads(line)["resourceType"] == rtype
            model.model_validate_json(line)
        assert len(lines) == exported.counts[rtype]


def test_counts_match_the_tables(
    exported: ExportSummary, small_tables: dict[str, pd.DataFrame]
) -> None:
    t = small_tables
    npis = set(t["specialists"]["specialist_id"].str.split("-").str[0])
    npis |= set(t["referring_providers"]["provider_id"])
    networks = {
        n
        for v in pd.concat([t["plans"]["network_ids"], t["specialists"]["network_ids"]])
        for n in contract.split_multi(v)
    }
    systems = set(t["organizations"]["system_id"].dropna())
    expected = {
        "Appointment": len(t["appointments"]),
        "Slot": len(t["availability"]),
        "PractitionerRole": len(t["specialists"]),
        "Schedule": len(t["specialists"]),
        "Practitioner": len(npis),
        "Patient": len(t["patients"]),
        "Coverage": len(t["patients"]),
        "ServiceRequest": len(t["referrals"]),
        "Location": len(t["organizations"]),
        "InsurancePlan": len(t["plans"]),
        "Organization": len(t["organizations"]) + len(systems) + len(networks),
    }
    assert exported.counts == {r: expected[r] for r in fhir_export.RESOURCE_TYPES}
    manifest = json.loads(exported.manifest.read_text())
    assert manifest["counts"] == exported.counts
    assert manifest["fhirVersionNote"] == "4.3.0 (R4B models; R4 structure)"
    assert {o["type"]: o["count"] for o in manifest["output"]} == exported.counts
    assert all(
        (exported.out / o["url"]).is_file() for o in manifest["output"] + manifest["bundles"]
    )


def test_appointments_map_status_and_keep_wall_clock_times(
    exported: ExportSummary,
    parsed: dict[str, list[dict[str, Any]]],
    small_tables: dict[str, pd.DataFrame],
) -> None:
    appointments = _by_id(parsed, "Appointment")
    expected_status = {"attended": "fulfilled", "no_show": "noshow", "cancelled": "cancelled"}
    seen: Counter[str] = Counter()
    for row in small_tables["appointments"].itertuples(index=False):
        a = appointments[row.appointment_id]
        status = expected_status.get(row.outcome, "booked") if pd.notna(row.outcome) else "booked"
        assert a["status"] == status
        seen[status] += 1
        assert _wall(a["start"]) == row.appointment_at
        assert _wall(a["created"]) == row.booked_at
        assert a["slot"] == [{"reference": f"Slot/{row.slot_id}"}]
        assert a["basedOn"] == [{"reference": f"ServiceRequest/{row.referral_id}"}]
        actors = [p["actor"]["reference"] for p in a["participant"]]
        assert actors == [f"Patient/{row.patient_id}", f"PractitionerRole/{row.specialist_id}"]
        assert _ext_values(a, "text-reminder", "valueBoolean") == [row.text_reminder]
        assert _ext_values(a, "outreach-call", "valueBoolean") == [row.outreach_call]
        code = a["appointmentType"]["coding"][0]["code"]
        assert code == {"new": "ROUTINE", "follow_up": "FOLLOWUP"}[row.visit_kind]
    assert set(seen) == {"fulfilled", "noshow", "cancelled", "booked"}


def test_service_requests_map_referrals(
    exported: ExportSummary,
    parsed: dict[str, list[dict[str, Any]]],
    small_tables: dict[str, pd.DataFrame],
) -> None:
    requests = _by_id(parsed, "ServiceRequest")
    for row in small_tables["referrals"].itertuples(index=False):
        r = requests[row.referral_id]
        assert r["status"] == fhir_export.REFERRAL_STATUS[row.status]
        assert _ext_values(r, "referral-status", "valueCode") == [row.status]
        assert _ext_values(r, "referral-type", "valueCode") == [row.referral_type]
        assert r["priority"] == row.urgency
        assert r["performerType"]["coding"][0] == {
            "system": NUCC_SYSTEM,
            "code": row.specialty,
            "display": r["performerType"]["coding"][0]["display"],
        }
        assert _wall(r["authoredOn"]) == row.created_at
        performer = r.get("performer", [{}])[0].get("reference")
        assert performer == (
            f"PractitionerRole/{row.specialist_id}" if pd.notna(row.specialist_id) else None
        )


def test_practitioner_roles_carry_specialty_networks_plans_and_new_patients(
    exported: ExportSummary,
    parsed: dict[str, list[dict[str, Any]]],
    small_tables: dict[str, pd.DataFrame],
) -> None:
    roles = _by_id(parsed, "PractitionerRole")
    for row in small_tables["specialists"].itertuples(index=False):
        role = roles[row.specialist_id]
        [specialty] = role["specialty"]
        assert [(c["system"], c["code"]) for c in specialty["coding"]] == [
            (NUCC_SYSTEM, row.specialty)
        ]
        networks = [
            v["reference"] for v in _ext_values(role, NETWORK_REFERENCE_URL, "valueReference")
        ]
        assert networks == [f"Organization/{n}" for n in contract.split_multi(row.network_ids)]
        plans = [v["reference"] for v in _ext_values(role, "accepted-plan", "valueReference")]
        assert plans == [f"InsurancePlan/{p}" for p in contract.split_multi(row.accepted_plan_ids)]
        [newpatients] = [e for e in role["extension"] if e["url"] == NEWPATIENTS_URL]
        [accepting] = newpatients["extension"]
        assert accepting["url"] == "acceptingPatients"
        code = accepting["valueCodeableConcept"]["coding"][0]["code"]
        assert code == ("newpt" if row.accepting_new_patients else "nopt")
        rating = _ext_values(role, "rating", "valueDecimal")
        assert rating == ([] if pd.isna(row.rating) else [row.rating])
        assert _ext_values(role, "review-count", "valueInteger") == [row.review_count]
        assert _ext_values(role, "weekly-capacity", "valueInteger") == [row.weekly_capacity]
        assert role["location"] == [{"reference": f"Location/LOC-{row.organization_id}"}]


def test_patients_and_coverage_map_the_table(
    exported: ExportSummary,
    parsed: dict[str, list[dict[str, Any]]],
    small_tables: dict[str, pd.DataFrame],
) -> None:
    patients, coverages = _by_id(parsed, "Patient"), _by_id(parsed, "Coverage")
    for row in small_tables["patients"].itertuples(index=False):
        p = patients[row.patient_id]
        assert p["identifier"] == [
            {"system": "urn:referral-ml:patient-id", "value": row.patient_id}
        ]
        assert p["gender"] == {"F": "female", "M": "male"}[row.sex]
        assert p["birthDate"] == str(row.birth_year)
        assert p["communication"][0]["language"]["coding"][0]["code"] == row.preferred_language
        [geo] = p["address"][0]["extension"]
        assert [e["valueDecimal"] for e in geo["extension"]] == [row.latitude, row.longitude]
        c = coverages[f"COV-{row.patient_id}"]
        assert c["beneficiary"] == {"reference": f"Patient/{row.patient_id}"}
        assert [(k["type"]["coding"][0]["code"], k["value"]) for k in c["class"]] == [
            ("plan", row.insurance_plan_id)
        ]


def test_locations_hold_the_organizations_position_and_address(
    exported: ExportSummary,
    parsed: dict[str, list[dict[str, Any]]],
    small_tables: dict[str, pd.DataFrame],
) -> None:
    locations = _by_id(parsed, "Location")
    organizations = _by_id(parsed, "Organization")
    for row in small_tables["organizations"].itertuples(index=False):
        loc = locations[f"LOC-{row.organization_id}"]
        assert loc["position"] == {"latitude": row.latitude, "longitude": row.longitude}
        assert loc["address"]["postalCode"] == row.postal_code
        assert loc["managingOrganization"] == {"reference": f"Organization/{row.organization_id}"}
        org = organizations[row.organization_id]
        assert org["type"][0]["coding"][0]["code"] == "prvgrp"
        part_of = org.get("partOf", {}).get("reference")
        assert part_of == (f"Organization/{row.system_id}" if pd.notna(row.system_id) else None)
        assert part_of is None or part_of.split("/")[1] in organizations


def test_no_race_or_ethnicity_is_exported(
    exported: ExportSummary, small_tables: dict[str, pd.DataFrame]
) -> None:
    # Given patients whose table carries race_ethnicity (audit only)
    assert small_tables["patients"]["race_ethnicity"].notna().any()
    files = [*exported.ndjson.values(), *(p for ps in exported.bundles.values() for p in ps)]
    for path in files:
        text = path.read_text(encoding="utf-8")
        # Then no key, and no extension or code system, names race or ethnicity
        keys = {k.lower() for k in _KEY.findall(text)}
        assert not [k for k in keys if any(w in k for w in RACE_WORDS)], path.name
        assert "us-core-race" not in text and "us-core-ethnicity" not in text
    # And no Patient holds a race_ethnicity value anywhere
    patients = exported.ndjson["Patient"].read_text(encoding="utf-8")
    assert not [v for v in contract.RACE_ETHNICITIES if f'"{v}"' in patients]


def test_bundles_are_valid_collections_holding_every_resource_once(
    exported: ExportSummary, parsed: dict[str, list[dict[str, Any]]]
) -> None:
    from fhir.resources.R4B.bundle import Bundle

    held: Counter[tuple[str, str]] = Counter()
    for rtype, paths in exported.bundles.items():
        lines = _by_id(parsed, rtype)
        for path in paths:
            bundle = json.loads(path.read_text(encoding="utf-8"))
            assert bundle["type"] == "collection" and bundle["id"] == path.stem
            assert 0 < len(bundle["entry"]) <= BUNDLE_SIZE
            for entry in bundle["entry"]:
                resource = entry["resource"]
                assert entry["fullUrl"] == f"{BASE_URL}/{rtype}/{resource['id']}"
                assert resource == lines[resource["id"]]  # the very resource validated as ndjson
                held[(rtype, resource["id"])] += 1
            # The Bundle model accepts the envelope with its first entries in full
            sample = {**bundle, "entry": bundle["entry"][:20]}
            Bundle.model_validate(sample)
    assert set(held.values()) == {1}
    assert sum(held.values()) == exported.total
    assert len(exported.bundles["Slot"]) == -(-exported.counts["Slot"] // BUNDLE_SIZE)


def test_local_instants_follow_daylight_saving() -> None:
    # Given wall-clock times in Chicago (DST in July, standard time in January), Phoenix and UTC
    times = pd.Series(
        pd.to_datetime(
            [
                "2024-07-15 10:00",
                "2024-01-15 10:00",
                "2024-11-03 01:30",  # repeated hour: the daylight-saving offset
                "2024-03-10 02:30",  # skipped hour: wall-clock kept, offset after the gap
                "2024-07-15 10:00",
                "2024-07-15 10:00",
                None,
            ]
        )
    )
    zones = ["America/Chicago"] * 4 + ["America/Phoenix", "UTC", "America/Chicago"]
    # When they are written as instants
    instants = local_instants(times, zones)
    # Then each keeps its wall-clock text with the zone's offset on that date
    assert instants == [
        "2024-07-15T10:00:00-05:00",
        "2024-01-15T10:00:00-06:00",
        "2024-11-03T01:30:00-05:00",
        "2024-03-10T02:30:00-05:00",
        "2024-07-15T10:00:00-07:00",
        "2024-07-15T10:00:00+00:00",
        None,
    ]


def test_exported_slots_carry_their_practice_offsets(
    exported: ExportSummary,
    parsed: dict[str, list[dict[str, Any]]],
    small_tables: dict[str, pd.DataFrame],
) -> None:
    # Given each slot's practice time zone (by its specialist's organization's ZIP)
    orgs = small_tables["organizations"].set_index("organization_id")
    zone_of_org = {o: organization_zone(r.postal_code, r.state) for o, r in orgs.iterrows()}
    specialists = small_tables["specialists"].set_index("specialist_id")["organization_id"]
    slots = _by_id(parsed, "Slot")
    offsets: Counter[tuple[str, int, str]] = Counter()
    for row in small_tables["availability"].itertuples(index=False):
        zone = zone_of_org[specialists[row.specialist_id]]
        start = slots[row.slot_id]["start"]
        # Then the wall-clock time is the contract's and the offset is zoneinfo's on that date
        assert _wall(start) == row.start
        expected = row.start.to_pydatetime().replace(tzinfo=ZoneInfo(zone)).utcoffset()
        assert datetime.fromisoformat(start).utcoffset() == expected
        offsets[(zone, row.start.month, start[-6:])] += 1
    assert offsets[("America/Chicago", 7, "-05:00")] > 0
    assert offsets[("America/Chicago", 1, "-06:00")] > 0
    assert offsets[("America/New_York", 7, "-04:00")] > 0


def test_organization_zone_falls_back_to_the_state() -> None:
    assert organization_zone("60611", "IL") == "America/Chicago"
    assert organization_zone("99999", "AZ") == "America/Phoenix"  # not in the ZIP table
    assert organization_zone(None, None) == "UTC"


def test_ids_that_cannot_be_fhir_ids_are_refused(
    small_tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    patients = small_tables["patients"].copy()
    patients.loc[patients.index[:3], "patient_id"] = "PT 0001"
    with pytest.raises(FhirExportError, match=r"patients\.patient_id: 3 values"):
        export_fhir({**small_tables, "patients": patients}, tmp_path)


def _few(tables: dict[str, pd.DataFrame], n: int = 150) -> dict[str, pd.DataFrame]:
    """The small world with only n rows of its larger tables (references may dangle)."""
    cut = ("patients", "availability", "referrals", "appointments", "specialists")
    return {name: df.head(n) if name in cut else df for name, df in tables.items()}


def test_validation_checks_every_resource(
    small_tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    summary = export_fhir(_few(small_tables), tmp_path, validate=True, bundle_size=100, workers=0)
    assert summary.validated == summary.total > 0
    assert json.loads(summary.manifest.read_text())["validated"] is True


@pytest.mark.parametrize("workers", [0, 1])
def test_invalid_resources_fail_the_export_without_their_values(
    small_tables: dict[str, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    # Given a builder that writes Patients with a birthDate FHIR does not allow
    original = dict(fhir_export._BUILDERS)

    def broken_patients(tables: Any, zones: Any) -> Iterator[dict[str, Any]]:
        for patient in original["Patient"](tables, zones):
            yield {**patient, "birthDate": "not-a-date-1999"}

    builders = tuple((t, broken_patients if t == "Patient" else b) for t, b in original.items())
    monkeypatch.setattr(fhir_export, "_BUILDERS", builders)
    # When the export validates (in this process, and in a worker process)
    with pytest.raises(FhirExportError) as failed:
        export_fhir(_few(small_tables, 30), tmp_path, workers=workers)
    # Then the error names the resources and the field, never the value
    message = str(failed.value)
    assert message.startswith("30 resources failed FHIR R4B validation")
    assert "Patient/" in message and "birthDate" in message
    assert "not-a-date-1999" not in message


def test_large_tables_are_built_in_chunks_with_the_same_output(
    small_tables: dict[str, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same tables exported whole and in chunks of 7 rows
    tables = _few(small_tables, 40)
    whole = export_fhir(tables, tmp_path / "whole", validate=False)
    monkeypatch.setattr(fhir_export, "CHUNK_ROWS", 7)
    chunked = export_fhir(tables, tmp_path / "chunked", validate=False)
    # Then every file is the same
    assert chunked.counts == whole.counts
    for rtype, path in whole.ndjson.items():
        assert chunked.ndjson[rtype].read_text() == path.read_text()
