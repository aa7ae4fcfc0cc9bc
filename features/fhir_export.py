"""Write a referral-ml dataset (the contract tables) as FHIR R4 resources, per docs/fhir.md.

docs/fhir.md is the mapping, and the directory importer reads the same document back:
Practitioner (one per NPI) and PractitionerRole (one per specialists row, id = specialist_id)
with the Plan-Net ``newpatients`` and ``network-reference`` extensions and referral-ml's own;
Organization for practices (``prvgrp``), their health systems (``partOf``) and networks
(``ntwk``); Location ``LOC-<organization_id>``; InsurancePlan; Patient and Coverage; Schedule
(one per role) and Slot; ServiceRequest; Appointment. The audit-only column
``race_ethnicity`` is never read.

Output under ``out``: ``ndjson/<Type>.ndjson`` (FHIR Bulk Data style, one resource a line),
``bundles/<Type>-<NNNN>.json`` (Bundles of type ``collection`` with at most ``bundle_size``
entries, ``fullUrl`` = ``http://referral-ml.org/fhir/<Type>/<id>``) and ``manifest.json``.

Design:
- Resources are plain dicts built from whole columns (``tolist()``, no per-row pandas access)
  and serialised once with compact ``json`` separators; the same text becomes the ndjson line
  and the Bundle entry.
- Times: contract times are naive clinic-local wall-clock times. Each is written as that
  wall-clock text plus the UTC offset its clinic's time zone has on that date, computed per
  zone with ``tz_localize``. The zone is the organization's ZIP's (``features.zipgeo``); a ZIP
  the table lacks takes its state's most common zone; no organization: UTC. Slots and
  appointments use the specialist's organization, referrals too, or, without a specialist,
  the referring provider's. Ambiguous times (the repeated autumn hour) take the
  daylight-saving offset, non-existent ones (the skipped spring hour) the offset after the
  gap; the wall-clock text itself is never changed, so an importer that reads "wall-clock in
  the offset it carries" gets the contract value back exactly.
- Validation (``validate=True``, the default) checks every resource with the
  ``fhir.resources`` R4B model of its type, on the very line written. It dominates the run
  time (0.1-3 ms a resource, by type: see ``validate_lines``), so large exports on machines
  with spare cores validate Bundle-sized chunks in worker processes while the main process
  builds and writes. Failures are collected and raised together as ``FhirExportError``,
  naming resource and field but never the value (no patient data in messages).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from features import codes, contract, fhir_codes, zipgeo
from features.fhir_codes import (
    ACCEPTING_PATIENTS_CS,
    BASE_URL,
    GEOLOCATION_URL,
    ICD10_CM_SYSTEM,
    NETWORK_REFERENCE_URL,
    NEWPATIENTS_URL,
    NPI_SYSTEM,
    NUCC_SYSTEM,
    ORG_TYPE_CS,
    PATIENT_ID_SYSTEM,
)

Resource = dict[str, Any]
Tables = Mapping[str, pd.DataFrame]

FHIR_VERSION: Final = "4.3.0"
FHIR_VERSION_NOTE: Final = "4.3.0 (R4B models; R4 structure)"
EXT: Final = fhir_codes.EXTENSION_BASE
BCP47: Final = fhir_codes.BCP47_SYSTEM
SNOMED: Final = fhir_codes.SNOMED_SYSTEM
APPOINTMENT_TYPE_CS: Final = fhir_codes.V2_0276_SYSTEM
COVERAGE_CLASS_CS: Final = fhir_codes.COVERAGE_CLASS_SYSTEM
# referral-ml's own code systems (docs/fhir.md: urn:referral-ml:<name>).
ORGANIZATION_TYPE_CS: Final = "urn:referral-ml:organization-type"  # health_system
PLAN_TYPE_CS: Final = "urn:referral-ml:plan-type"  # contract.PLAN_TYPES
PAYER_TYPE_CS: Final = "urn:referral-ml:payer-type"  # contract.PAYER_TYPES

# Output order: referenced resources first.
RESOURCE_TYPES: Final = (
    "Organization",
    "Location",
    "InsurancePlan",
    "Practitioner",
    "PractitionerRole",
    "Schedule",
    "Slot",
    "Patient",
    "Coverage",
    "ServiceRequest",
    "Appointment",
)
REFERRAL_STATUS: Final = {
    "sent": "active",
    "scheduled": "active",
    "completed": "completed",
    "cancelled": "revoked",
    "leaked": "revoked",
    "never_scheduled": "revoked",
}
APPOINTMENT_STATUS: Final = {"attended": "fulfilled", "no_show": "noshow", "cancelled": "cancelled"}
APPOINTMENT_TYPE: Final = {"new": "ROUTINE", "follow_up": "FOLLOWUP"}
GENDER: Final = {"F": "female", "M": "male"}
UTC_ZONE: Final = "UTC"
FALLBACK_VISIT_MINUTES: Final = 30  # Appointment.end when its slot is not in availability
_FHIR_ID: Final = re.compile(r"^[A-Za-z0-9\-.]{1,60}$")  # FHIR allows 64; room for LOC-/SCH-/COV-
_PARALLEL_FROM: Final = 20_000  # rows; below this a worker's start-up costs more than it saves
_MAX_SHOWN: Final = 20
CHUNK_ROWS: Final = 100_000  # rows of a large table turned into resources at a time
_CHUNKED: Final = {
    "Slot": "availability",
    "Patient": "patients",
    "Coverage": "patients",
    "ServiceRequest": "referrals",
    "Appointment": "appointments",
}
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class FhirExportError(ValueError):
    """The tables cannot be written as valid FHIR (bad ids, or resources failing validation)."""


@dataclass(frozen=True)
class ExportSummary:
    """What one export wrote: resources per type, time taken and files."""

    out: Path
    counts: dict[str, int]  # every type in RESOURCE_TYPES, 0 when none was written
    seconds: float
    manifest: Path
    ndjson: dict[str, Path]
    bundles: dict[str, list[Path]]
    bytes_written: int  # ndjson plus Bundles
    validated: int  # resources checked against the R4B models (0 with validate=False)

    @property
    def total(self) -> int:
        """Resources written (each once; the Bundles repeat them)."""
        return sum(self.counts.values())


# ---------------------------------------------------------------------------------------------
# The entry point.
# ---------------------------------------------------------------------------------------------


def export_fhir(
    tables: Tables,
    out: Path,
    *,
    validate: bool = True,
    bundle_size: int = 5000,
    workers: int | None = None,
    source: str | Path | None = None,
) -> ExportSummary:
    """Write the contract tables as FHIR R4 ndjson, Bundles and a manifest under `out`.

    `workers`: validating processes (None: chosen from the CPU count and the size; 0: in this
    process). Worker processes are spawned, so a calling script needs the usual
    ``if __name__ == "__main__":`` guard. `source` is recorded in the manifest."""
    if bundle_size < 1:
        raise ValueError("bundle_size must be at least 1")
    started = time.perf_counter()
    tables = {name: tables[name] if name in tables else _empty(name) for name in contract.TABLES}
    check_ids(tables)
    out = Path(out)
    ndjson_dir, bundle_dir = out / "ndjson", out / "bundles"
    _clear_previous(ndjson_dir, bundle_dir)
    zones = _Zones.of(tables)
    rows = sum(len(df) for df in tables.values())
    validator = _Validator(validate, _worker_count(workers, validate, rows))
    writers = {
        t: _TypeWriter(t, ndjson_dir, bundle_dir, bundle_size, validator) for t in RESOURCE_TYPES
    }
    try:
        for rtype, build in _BUILDERS:
            writers[rtype].add_all(_in_chunks(build, rtype, tables, zones))
    finally:
        for writer in writers.values():
            writer.close()
        failures = validator.finish()
    if failures:
        raise FhirExportError(_failure_message(failures))
    summary = _summary(out, writers, validator.validated, time.perf_counter() - started)
    _write_manifest(summary, tables, source, validate)
    return summary


def _in_chunks(build: Builder, rtype: str, tables: Tables, zones: _Zones) -> Iterator[Resource]:
    """Run a builder over CHUNK_ROWS rows of its table at a time, bounding memory on big tables."""
    table = _CHUNKED.get(rtype)
    if table is None or len(tables[table]) <= CHUNK_ROWS:
        yield from build(tables, zones)
        return
    for start in range(0, len(tables[table]), CHUNK_ROWS):
        part = tables[table].iloc[start : start + CHUNK_ROWS]
        yield from build({**tables, table: part}, zones)


def _worker_count(workers: int | None, validate: bool, rows: int) -> int:
    """0 = validate in this process. Auto: leave one core to the writer, and stay in-process on
    one or two cores, where a worker competes with the writer for the same core."""
    if not validate:
        return 0
    if workers is not None:
        return max(workers, 0)
    cpus = os.cpu_count() or 1
    return min(cpus - 1, 8) if cpus >= 4 and rows >= _PARALLEL_FROM else 0


def _clear_previous(*folders: Path) -> None:
    """Delete files an earlier export left (our names only), so the manifest lists every file."""
    ours = re.compile(rf"^(?:{'|'.join(RESOURCE_TYPES)})(?:\.ndjson|-[0-9]{{4,}}\.json)$")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for path in folder.iterdir():
            if path.is_file() and ours.match(path.name):
                path.unlink()


_ID_COLUMNS: Final = {
    "organizations": ("organization_id", "system_id"),
    "plans": ("insurance_plan_id", "network_ids"),
    "patients": ("patient_id",),
    "referring_providers": ("provider_id",),
    "specialists": ("specialist_id", "network_ids", "accepted_plan_ids"),
    "availability": ("slot_id",),
    "referrals": ("referral_id",),
    "appointments": ("appointment_id",),
}


def check_ids(tables: Tables) -> None:
    """Raise FhirExportError naming each id column with values that cannot be FHIR ids."""
    problems = []
    for table, names in _ID_COLUMNS.items():
        for name in names:
            if name not in tables[table].columns:
                continue
            values = (v for v in _values(tables[table][name]) if v is not None)
            bad = sum(1 for v in values for p in contract.split_multi(v) if not _FHIR_ID.match(p))
            if bad:
                problems.append(f"{table}.{name}: {bad} values")
    if problems:
        raise FhirExportError(
            "ids must be 1-60 letters, digits, '-' or '.' to become FHIR ids: "
            + "; ".join(problems)
        )


def _empty(name: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in contract.TABLES[name]})


def _values(series: pd.Series) -> list[Any]:
    """A column as Python values (str, int, float, bool), nulls as None."""
    return series.astype(object).where(series.notna(), None).tolist()


def _rows(df: pd.DataFrame, *names: str) -> Iterator[tuple[Any, ...]]:
    """The named columns row by row, as Python values with nulls as None."""
    return zip(*(_values(df[n]) for n in names), strict=True)


# ---------------------------------------------------------------------------------------------
# Time zones and instants.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Zones:
    """IANA time zone by specialist and by referring provider (that of their organization)."""

    specialist: dict[str, str]
    provider: dict[str, str]

    @classmethod
    def of(cls, tables: Tables) -> _Zones:
        orgs = tables["organizations"]
        by_org = {
            org: organization_zone(postal, state)
            for org, postal, state in _rows(orgs, "organization_id", "postal_code", "state")
        }

        def by_key(df: pd.DataFrame, key: str) -> dict[str, str]:
            pairs = _rows(df, key, "organization_id")
            return {k: by_org.get(o, UTC_ZONE) for k, o in pairs if k is not None}

        return cls(
            by_key(tables["specialists"], "specialist_id"),
            by_key(tables["referring_providers"], "provider_id"),
        )

    def of_specialists(self, ids: pd.Series) -> list[str]:
        return [self.specialist.get(i, UTC_ZONE) for i in _values(ids)]

    def of_referrals(self, referrals: pd.DataFrame) -> list[str]:
        """The specialist's organization's zone, else the referring provider's, else UTC."""
        pairs = _rows(referrals, "specialist_id", "referring_provider_id")
        return [self.specialist.get(s) or self.provider.get(p) or UTC_ZONE for s, p in pairs]


def organization_zone(postal_code: str | None, state: str | None) -> str:
    """A practice's IANA time zone: its ZIP's (or its ZIP prefix's, or its state's most common,
    for a ZIP the table lacks: `zipgeo.timezone`), else UTC."""
    return zipgeo.timezone(postal_code, state) or UTC_ZONE


def local_instants(times: pd.Series, zones: Iterable[str]) -> list[str | None]:
    """FHIR instants for naive wall-clock `times`, each with its zone's UTC offset on that date.

    `zones` holds one IANA name per time. The wall-clock text is kept as given (whole seconds,
    or microseconds when some time has a fraction); nulls give None."""
    values = pd.to_datetime(pd.Series(times)).reset_index(drop=True)
    if values.dt.tz is not None:
        raise FhirExportError("contract times must be naive clinic-local times, not tz-aware")
    zone_of = np.asarray(list(zones), dtype=object)
    offsets = np.zeros(len(values), dtype=np.int64)  # minutes east of UTC
    for zone in pd.unique(zone_of):
        if zone == UTC_ZONE:
            continue
        mask = zone_of == zone
        part = values[mask]
        local = part.dt.tz_localize(
            str(zone), ambiguous=np.ones(len(part), dtype=bool), nonexistent="shift_forward"
        )
        shift = local.dt.tz_localize(None) - local.dt.tz_convert(UTC_ZONE).dt.tz_localize(None)
        offsets[mask] = (shift.dt.total_seconds() // 60).fillna(0).astype(np.int64).to_numpy()
    whole = bool((values.dropna().dt.microsecond == 0).all())
    wall = np.datetime_as_string(
        values.to_numpy().astype("datetime64[s]" if whole else "datetime64[us]")
    )
    suffix = {m: _offset_text(m) for m in set(offsets.tolist())}
    return [
        None if w == "NaT" else w + suffix[m]
        for w, m in zip(wall.tolist(), offsets.tolist(), strict=True)
    ]


def _offset_text(minutes: int) -> str:
    hours, mins = divmod(abs(minutes), 60)
    return f"{'+' if minutes >= 0 else '-'}{hours:02d}:{mins:02d}"


# ---------------------------------------------------------------------------------------------
# Element builders.
# ---------------------------------------------------------------------------------------------


def _ref(rtype: str, rid: str) -> dict[str, str]:
    return {"reference": f"{rtype}/{rid}"}


def _concept(system: str, code: str, display: str | None = None) -> Resource:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _nucc(code: str) -> Resource:
    return _concept(NUCC_SYSTEM, code, codes.nucc_names().get(code))


def _ext(name: str, kind: str, value: Any) -> Resource | None:
    """A referral-ml extension (None when the value is null)."""
    return None if value is None else {"url": EXT + name, kind: value}


def _newpatients(accepting: bool) -> Resource:
    code, display = ("newpt", "Accepting") if accepting else ("nopt", "Not Accepting")
    sub = {
        "url": "acceptingPatients",
        "valueCodeableConcept": _concept(ACCEPTING_PATIENTS_CS, code, display),
    }
    return {"url": NEWPATIENTS_URL, "extension": [sub]}


def _address(line: str | None, city: str | None, state: str | None, postal: str | None) -> Resource:
    return _compact(
        {
            "use": "work",
            "type": "physical",
            "line": [line] if line else None,
            "city": city or None,
            "state": state or None,
            "postalCode": postal or None,
            "country": "US",
        }
    )


def _compact(resource: Resource) -> Resource:
    """Drop keys whose value is None or an empty list (FHIR forbids empty elements)."""
    return {k: v for k, v in resource.items() if v is not None and v != []}


def _extensions(*items: Resource | None) -> list[Resource]:
    return [e for e in items if e is not None]


def _npi(specialist_id: str) -> str:
    """The NPI of a specialist id ('1234567893-2' -> '1234567893')."""
    return specialist_id.split("-", 1)[0]


# ---------------------------------------------------------------------------------------------
# Resource builders: one generator per resource type.
# ---------------------------------------------------------------------------------------------

Builder = Callable[[Tables, _Zones], Iterator[Resource]]


def _organizations(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    orgs = tables["organizations"]
    columns = contract.TABLES["organizations"][:9]  # organization_id ... postal_code
    for org_id, name, kind, system_id, metro, line, city, state, postal in _rows(orgs, *columns):
        yield _compact(
            {
                "resourceType": "Organization",
                "id": org_id,
                "extension": _extensions(
                    _ext("metro", "valueString", metro),
                    _ext("organization-kind", "valueCode", kind),
                ),
                "active": True,
                "type": [_concept(ORG_TYPE_CS, "prvgrp", "Provider Group")],
                "name": name,
                "address": [_address(line, city, state, postal)],
                "partOf": _ref("Organization", system_id) if system_id else None,
            }
        )
    # A health system is not a Plan-Net provider group (no Location, no patients): typed with
    # referral-ml's own code so that an importer does not take it for a practice.
    system_type = [_concept(ORGANIZATION_TYPE_CS, "health_system", "Health system")]
    for system_id in sorted({s for s in _values(orgs["system_id"]) if s}):
        yield _named_organization(system_id, system_type)
    network_type = [_concept(ORG_TYPE_CS, "ntwk", "Network")]
    for network_id in _network_ids(tables):
        yield _named_organization(network_id, network_type)


def _named_organization(org_id: str, org_type: list[Resource]) -> Resource:
    # The contract names neither systems nor networks: the id is the name.
    return {
        "resourceType": "Organization",
        "id": org_id,
        "active": True,
        "type": org_type,
        "name": org_id,
    }


def _network_ids(tables: Tables) -> list[str]:
    found: set[str] = set()
    for table in ("plans", "specialists"):
        for value in _values(tables[table]["network_ids"]):
            found.update(contract.split_multi(value))
    return sorted(found)


def _locations(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    columns = ("organization_id", "name", "address_line", "city", "state", "postal_code")
    rows = _rows(tables["organizations"], *columns, "latitude", "longitude")
    for org_id, name, line, city, state, postal, latitude, longitude in rows:
        yield {
            "resourceType": "Location",
            "id": f"LOC-{org_id}",
            "status": "active",
            "name": name,
            "address": _address(line, city, state, postal),
            "position": {"latitude": float(latitude), "longitude": float(longitude)},
            "managingOrganization": _ref("Organization", org_id),
        }


def _insurance_plans(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    for plan_id, name, payer_type, plan_type, networks, out_of_network in _rows(
        tables["plans"], *contract.TABLES["plans"]
    ):
        yield _compact(
            {
                "resourceType": "InsurancePlan",
                "id": plan_id,
                "extension": _extensions(
                    _ext("payer-type", "valueCode", payer_type),
                    _ext("out-of-network-coverage", "valueBoolean", out_of_network),
                ),
                "status": "active",
                "type": [_concept(PLAN_TYPE_CS, plan_type)] if plan_type else None,
                "name": name,
                "network": [_ref("Organization", n) for n in contract.split_multi(networks)],
            }
        )


def _practitioners(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    """One per NPI: a specialist's first row wins, then referring providers not yet seen."""
    seen: set[str] = set()
    columns = ("specialist_id", "first_name", "last_name", "sex", "languages")
    for sid, first, last, sex, languages in _rows(tables["specialists"], *columns):
        npi = _npi(sid)
        if npi not in seen:
            seen.add(npi)
            yield _practitioner(npi, first, last, sex, contract.split_multi(languages))
    for npi, first, last in _rows(
        tables["referring_providers"], "provider_id", "first_name", "last_name"
    ):
        if npi not in seen:
            seen.add(npi)
            yield _practitioner(npi, first, last, None, [])


def _practitioner(
    npi: str, first: str | None, last: str | None, sex: str | None, languages: list[str]
) -> Resource:
    name = _compact(
        {"use": "official", "family": last or None, "given": [first] if first else None}
    )
    return _compact(
        {
            "resourceType": "Practitioner",
            "id": npi,
            "identifier": [{"system": NPI_SYSTEM, "value": npi}],
            "active": True,
            "name": [name],
            "gender": GENDER.get(sex or ""),
            "communication": [_concept(BCP47, lang) for lang in languages],
        }
    )


_ROLE_COLUMNS: Final = (
    "specialist_id",
    "specialty",
    "focus_codes",
    "organization_id",
    "network_ids",
    "accepted_plan_ids",
    "accepting_new_patients",
    "weekly_capacity",
    "rating",
    "review_count",
)


def _practitioner_roles(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    labels = codes.focus_labels()
    for (
        sid,
        specialty,
        focus,
        org_id,
        networks,
        plans,
        accepting,
        capacity,
        rating,
        reviews,
    ) in _rows(tables["specialists"], *_ROLE_COLUMNS):
        networks_ = [
            {"url": NETWORK_REFERENCE_URL, "valueReference": _ref("Organization", n)}
            for n in contract.split_multi(networks)
        ]
        plans_ = [
            _ext("accepted-plan", "valueReference", _ref("InsurancePlan", p))
            for p in contract.split_multi(plans)
        ]
        focus_ = [
            _ext(
                "focus-condition",
                "valueCodeableConcept",
                _concept(ICD10_CM_SYSTEM, c, labels.get(c)),
            )
            for c in contract.split_multi(focus)
        ]
        yield _compact(
            {
                "resourceType": "PractitionerRole",
                "id": sid,
                "extension": _extensions(
                    _newpatients(bool(accepting)),
                    *networks_,
                    *plans_,
                    *focus_,
                    _ext("rating", "valueDecimal", rating),  # null rating: no extension
                    _ext("review-count", "valueInteger", reviews),
                    _ext("weekly-capacity", "valueInteger", capacity),
                ),
                "identifier": [{"system": NPI_SYSTEM, "value": _npi(sid)}],
                "active": True,
                "practitioner": _ref("Practitioner", _npi(sid)),
                "organization": _ref("Organization", org_id) if org_id else None,
                "location": [_ref("Location", f"LOC-{org_id}")] if org_id else None,
                "specialty": [_nucc(specialty)] if specialty else None,
            }
        )


def _schedules(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    for sid, specialty in _rows(tables["specialists"], "specialist_id", "specialty"):
        yield _compact(
            {
                "resourceType": "Schedule",
                "id": f"SCH-{sid}",
                "active": True,
                "specialty": [_nucc(specialty)] if specialty else None,
                "actor": [_ref("PractitionerRole", sid)],
            }
        )


def _slots(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    slots = tables["availability"]
    zone = zones.of_specialists(slots["specialist_id"])
    times = (local_instants(slots[c], zone) for c in ("start", "end", "booked_at"))
    rows = zip(_rows(slots, "slot_id", "specialist_id", "slot_type", "status"), *times, strict=True)
    for (slot_id, sid, slot_type, status), start, end, booked_at in rows:
        yield {
            "resourceType": "Slot",
            "id": slot_id,
            "extension": _extensions(
                _ext("slot-type", "valueCode", slot_type),
                _ext("booked-at", "valueDateTime", booked_at),
            ),
            "schedule": _ref("Schedule", f"SCH-{sid}"),
            "status": status,
            "start": start,
            "end": end,
        }


_PATIENT_COLUMNS: Final = (
    "patient_id",
    "birth_year",
    "sex",
    "preferred_language",
    "latitude",
    "longitude",
)


def _patients(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    # Only the columns named here are read: race_ethnicity (audit only) never is.
    for pid, birth_year, sex, language, latitude, longitude in _rows(
        tables["patients"], *_PATIENT_COLUMNS
    ):
        geolocation = {
            "url": GEOLOCATION_URL,
            "extension": [
                {"url": "latitude", "valueDecimal": float(latitude)},
                {"url": "longitude", "valueDecimal": float(longitude)},
            ],
        }
        yield _compact(
            {
                "resourceType": "Patient",
                "id": pid,
                # The contract id also as an identifier: it survives a server assigning its own ids.
                "identifier": [{"system": PATIENT_ID_SYSTEM, "value": pid}],
                "gender": GENDER.get(sex or ""),
                "birthDate": f"{int(birth_year):04d}",
                "address": [{"extension": [geolocation], "use": "home", "country": "US"}],
                "communication": (
                    [{"language": _concept(BCP47, language), "preferred": True}]
                    if language
                    else None
                ),
            }
        )


def _coverages(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    plan_of = {
        plan_id: (name, payer_type)
        for plan_id, name, payer_type in _rows(
            tables["plans"], "insurance_plan_id", "plan_name", "payer_type"
        )
    }
    for pid, plan_id in _rows(tables["patients"], "patient_id", "insurance_plan_id"):
        if plan_id is None:
            continue
        name, payer_type = plan_of.get(plan_id, (None, None))
        # R4 requires a payor and the contract has no payers: a self-pay patient is their own
        # payor; otherwise the plan's name stands for its payer (a display-only reference).
        payor = _ref("Patient", pid) if payer_type == "self_pay" else {"display": name or plan_id}
        plan_class = _compact(
            {"type": _concept(COVERAGE_CLASS_CS, "plan"), "value": plan_id, "name": name}
        )
        yield _compact(
            {
                "resourceType": "Coverage",
                "id": f"COV-{pid}",
                "status": "active",
                "type": _concept(PAYER_TYPE_CS, payer_type) if payer_type else None,
                "beneficiary": _ref("Patient", pid),
                "payor": [payor],
                "class": [plan_class],
            }
        )


_REFERRAL_COLUMNS: Final = (
    "referral_id",
    "patient_id",
    "referring_provider_id",
    "specialty",
    "reason_code",
    "urgency",
    "referral_type",
    "specialist_id",
    "status",
)


def _service_requests(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    refs = tables["referrals"]
    zone = zones.of_referrals(refs)
    times = (local_instants(refs[c], zone) for c in ("created_at", "status_at"))
    rows = zip(_rows(refs, *_REFERRAL_COLUMNS), *times, strict=True)
    reasons = codes.reasons()
    for (rid, pid, pcp, specialty, reason, urgency, rtype, sid, status), created, status_at in rows:
        label = reasons[reason].label if reason in reasons else None
        yield _compact(
            {
                "resourceType": "ServiceRequest",
                "id": rid,
                "extension": _extensions(
                    _ext("referral-status", "valueCode", status),
                    _ext("referral-type", "valueCode", rtype),
                    _ext("status-at", "valueDateTime", status_at),
                ),
                "status": REFERRAL_STATUS.get(status, "unknown"),
                "intent": "order",
                "category": [_concept(SNOMED, "3457005", "Patient referral")],
                "priority": urgency,
                "subject": _ref("Patient", pid),
                "authoredOn": created,
                "requester": _ref("Practitioner", pcp) if pcp else None,
                "performerType": _nucc(specialty) if specialty else None,
                "performer": [_ref("PractitionerRole", sid)] if sid else None,
                "reasonCode": [_concept(ICD10_CM_SYSTEM, reason, label)] if reason else None,
            }
        )


_APPOINTMENT_COLUMNS: Final = (
    "appointment_id",
    "referral_id",
    "patient_id",
    "specialist_id",
    "slot_id",
    "visit_kind",
    "outcome",
    "text_reminder",
    "outreach_call",
)


def _appointment_ends(tables: Tables) -> pd.Series:
    """Each appointment's slot end; FALLBACK_VISIT_MINUTES after the start when its slot is absent."""
    appts, slots = tables["appointments"], tables["availability"]
    slot_end = pd.Series(pd.to_datetime(slots["end"]).to_numpy(), index=_values(slots["slot_id"]))
    end = pd.Series(_values(appts["slot_id"])).map(slot_end)
    start = pd.Series(pd.to_datetime(appts["appointment_at"]).to_numpy())
    return end.fillna(start + pd.Timedelta(minutes=FALLBACK_VISIT_MINUTES))


def _appointments(tables: Tables, zones: _Zones) -> Iterator[Resource]:
    appts = tables["appointments"]
    zone = zones.of_specialists(appts["specialist_id"])
    columns = ("appointment_at", "booked_at", "outcome_at")
    times = [local_instants(appts[c], zone) for c in columns] + [
        local_instants(_appointment_ends(tables), zone)
    ]
    rows = zip(_rows(appts, *_APPOINTMENT_COLUMNS), *times, strict=True)
    for (
        aid,
        rid,
        pid,
        sid,
        slot_id,
        kind,
        outcome,
        text,
        call,
    ), start, booked, outcome_at, end in rows:
        kind_code = APPOINTMENT_TYPE.get(kind)
        yield _compact(
            {
                "resourceType": "Appointment",
                "id": aid,
                "extension": _extensions(
                    _ext("booked-at", "valueDateTime", booked),
                    _ext("text-reminder", "valueBoolean", text),
                    _ext("outreach-call", "valueBoolean", call),
                    _ext("outcome-at", "valueDateTime", outcome_at),
                ),
                "status": APPOINTMENT_STATUS.get(outcome, "booked"),
                "appointmentType": _concept(APPOINTMENT_TYPE_CS, kind_code) if kind_code else None,
                "start": start,
                "end": end if start else None,
                "created": booked,
                "slot": [_ref("Slot", slot_id)] if slot_id else None,
                "basedOn": [_ref("ServiceRequest", rid)] if rid else None,
                "participant": [
                    {"actor": _ref("Patient", pid), "status": "accepted"},
                    {"actor": _ref("PractitionerRole", sid), "status": "accepted"},
                ],
            }
        )


_BUILDERS: Final[tuple[tuple[str, Builder], ...]] = (
    ("Organization", _organizations),
    ("Location", _locations),
    ("InsurancePlan", _insurance_plans),
    ("Practitioner", _practitioners),
    ("PractitionerRole", _practitioner_roles),
    ("Schedule", _schedules),
    ("Slot", _slots),
    ("Patient", _patients),
    ("Coverage", _coverages),
    ("ServiceRequest", _service_requests),
    ("Appointment", _appointments),
)


# ---------------------------------------------------------------------------------------------
# Writing and validating.
# ---------------------------------------------------------------------------------------------


class _TypeWriter:
    """One resource type's ndjson file and Bundles; hands each Bundle's lines to validation."""

    def __init__(
        self, rtype: str, ndjson_dir: Path, bundle_dir: Path, size: int, validator: _Validator
    ) -> None:
        self.rtype, self.size, self.validator = rtype, size, validator
        self.ndjson = ndjson_dir / f"{rtype}.ndjson"
        self.bundle_dir = bundle_dir
        self.bundles: list[Path] = []
        self.count = 0
        self._file = self.ndjson.open("w", encoding="utf-8")
        self._ids: list[str] = []
        self._lines: list[str] = []

    def add_all(self, resources: Iterable[Resource]) -> None:
        for resource in resources:
            line = _ENCODER.encode(resource)
            self._file.write(line + "\n")
            self._ids.append(resource["id"])
            self._lines.append(line)
            if len(self._lines) >= self.size:
                self._flush()

    def close(self) -> None:
        self._flush()
        self._file.close()
        if self.count == 0:
            self.ndjson.unlink()  # Bulk Data style: no file for a type without resources

    def _flush(self) -> None:
        if not self._lines:
            return
        bundle_id = f"{self.rtype}-{len(self.bundles) + 1:04d}"
        prefix = f"{BASE_URL}/{self.rtype}/"
        entries = ",".join(
            f'{{"fullUrl":"{prefix}{rid}","resource":{line}}}'
            for rid, line in zip(self._ids, self._lines, strict=True)
        )
        path = self.bundle_dir / f"{bundle_id}.json"
        path.write_text(
            f'{{"resourceType":"Bundle","id":"{bundle_id}","type":"collection","entry":[{entries}]}}',
            encoding="utf-8",
        )
        self.bundles.append(path)
        self.count += len(self._lines)
        self.validator.submit(self.rtype, self._lines, bundle_id, prefix + self._ids[0])
        self._ids, self._lines = [], []


def validate_lines(rtype: str, lines: list[str]) -> list[str]:
    """Validate ndjson lines of one resource type with its R4B model; a message per failure.

    Messages name the resource and the failing fields, never the values. Measured CPU time a
    resource (medium world, one core): Schedule 0.09 ms, Slot 0.14, Location 0.17,
    Practitioner 0.2, Coverage 0.23, Organization 0.3, Patient 0.43, ServiceRequest 0.54,
    Appointment 0.59, PractitionerRole 2.5 (about 40 extensions each)."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    model = get_fhir_model_class(rtype)
    failures = []
    for line in lines:
        try:
            model.model_validate_json(line)
        except ValidationError as exc:
            rid = json.loads(line).get("id", "?")
            where = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
            )
            failures.append(f"{rtype}/{rid}: {where}")
        except Exception as exc:  # fhir_core raises KeyError/TypeError on some malformed input
            failures.append(f"{rtype}/{json.loads(line).get('id', '?')}: {type(exc).__name__}")
    return failures


def _validate_envelope(bundle_id: str, first_url: str) -> list[str]:
    """The Bundle around already-validated resources (every fullUrl has the first's form)."""
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    envelope = {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "collection",
        "entry": [{"fullUrl": first_url}],
    }
    try:
        Bundle.model_validate(envelope)
    except ValidationError as exc:
        return [f"Bundle/{bundle_id}: {e['msg']}" for e in exc.errors()[:5]]
    return []


@dataclass
class _Validator:
    """Validates in this process (workers=0) or in spawned workers with a bounded queue."""

    enabled: bool
    workers: int
    validated: int = 0
    failures: list[str] = field(default_factory=list)
    _pool: ProcessPoolExecutor | None = None
    _pending: deque[Future[list[str]]] = field(default_factory=deque)

    def submit(self, rtype: str, lines: list[str], bundle_id: str, first_url: str) -> None:
        if not self.enabled:
            return
        self.validated += len(lines)
        self.failures += _validate_envelope(bundle_id, first_url)
        if self.workers == 0:
            self.failures += validate_lines(rtype, lines)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        self._pending.append(self._pool.submit(validate_lines, rtype, lines))
        while len(self._pending) > 2 * self.workers:  # bounded memory: wait for the oldest
            self.failures += self._pending.popleft().result()

    def finish(self) -> list[str]:
        try:
            while self._pending:
                self.failures += self._pending.popleft().result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None
        return self.failures


def _failure_message(failures: list[str]) -> str:
    shown = "\n".join(f"  {f}" for f in failures[:_MAX_SHOWN])
    more = f"\n  ... and {len(failures) - _MAX_SHOWN} more" if len(failures) > _MAX_SHOWN else ""
    return f"{len(failures)} resources failed FHIR R4B validation:\n{shown}{more}"


# ---------------------------------------------------------------------------------------------
# Summary and manifest.
# ---------------------------------------------------------------------------------------------


def _summary(
    out: Path, writers: Mapping[str, _TypeWriter], validated: int, seconds: float
) -> ExportSummary:
    written = {t: w for t, w in writers.items() if w.count}
    ndjson = {t: w.ndjson for t, w in written.items()}
    bundles = {t: list(w.bundles) for t, w in written.items()}
    files = [*ndjson.values(), *(p for paths in bundles.values() for p in paths)]
    return ExportSummary(
        out=out,
        counts={t: writers[t].count for t in RESOURCE_TYPES},
        seconds=seconds,
        manifest=out / "manifest.json",
        ndjson=ndjson,
        bundles=bundles,
        bytes_written=sum(p.stat().st_size for p in files),
        validated=validated,
    )


def _write_manifest(
    summary: ExportSummary, tables: Tables, source: str | Path | None, validate: bool
) -> None:
    """A Bulk Data style manifest ('output' lists the ndjson files), plus the Bundles."""

    def rel(path: Path) -> str:
        return path.relative_to(summary.out).as_posix()

    manifest = {
        "transactionTime": datetime.now(UTC).isoformat(timespec="seconds"),
        "request": "referral-ml export-fhir",
        "requiresAccessToken": False,
        "fhirVersion": FHIR_VERSION,
        "fhirVersionNote": FHIR_VERSION_NOTE,
        "mapping": "docs/fhir.md",
        "source": None if source is None else str(source),
        "sourceRows": {name: len(df) for name, df in tables.items()},
        "counts": summary.counts,
        "validated": validate,
        "timeZones": "contract wall-clock times with the UTC offset of the practice's ZIP time "
        "zone on that date; referrals with neither specialist nor referring provider: UTC",
        "output": [
            {"type": t, "url": rel(p), "count": summary.counts[t]}
            for t, p in summary.ndjson.items()
        ],
        "bundles": [
            {"type": t, "url": rel(p)} for t, paths in summary.bundles.items() for p in paths
        ],
        "error": [],
    }
    summary.manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
