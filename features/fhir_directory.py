"""Import a FHIR R4 provider directory (Da Vinci PDex Plan-Net conventions) as contract tables.

``import_fhir(path)`` reads a Bundle JSON file (any Bundle type, entries with or without
``fullUrl``), a single resource JSON file, an ``.ndjson`` file (FHIR Bulk Data: one resource a
line) or a folder holding any mix of those (``*.json`` and ``*.ndjson``, recursively, in sorted
path order; a ``manifest.json`` that is not a FHIR resource is ignored), and returns a
``features.directory_import.DirectoryImport`` with ``source="fhir"``. docs/fhir.md is the mapping.

Design, in three stages:

1. Reading. JSON is parsed here, not by the FHIR library, so a syntax error is reported as
   "<file> line N: not JSON". Every ndjson line, Bundle entry (nested Bundles are opened) and
   single-resource file is one record and counts in ``read``. Types the directory does not use
   (Patient, Endpoint, Appointment ...) are counted as ``skipped["ignored_<Type>"]`` without a
   problem; they are not errors.
2. Validation. Each resource of a used type (``USED_TYPES``) is validated on its own with its
   ``fhir.resources.R4B`` model (a Bundle is never validated whole: one bad entry must not sink
   the rest). fhir.resources declares but does not enforce the required code bindings
   (``gender``, ``Slot.status`` ...); they are checked here from the models' ``enum_values``. A
   failure skips the resource (reason ``invalid``) with one short problem naming the resource
   (``Practitioner/abc (file.ndjson line 7)``) and the first failing element
   (``Practitioner.name[0].given``).
   Validation is the slow part, nearly all of it inside fhir.resources' own validators (about
   0.18 ms a Slot, 2 ms a PractitionerRole with a dozen extensions), and Slots are the bulk of a
   directory (411k for 3,000 specialists). So records flow through a pipeline in batches: ndjson
   lines stay bytes until examined; examining parses a line and validates a Slot at once,
   keeping a small tuple (never the model). From ``POOL_FROM_BYTES`` of input, batches are
   examined by worker processes (spawned: a calling script needs the usual
   ``if __name__ == "__main__"`` guard) while the main process validates the other resources of
   earlier batches, whose models the build needs.
3. Building. References are resolved as ``Type/id``, absolute URLs ending in ``/Type/id`` (a
   ``/_history/n`` suffix allowed), ``urn:uuid:`` / any Bundle ``fullUrl``, and ``#id`` for
   resources contained in the referring resource. Then plans, specialists (one row per active
   PractitionerRole and Location), their organizations and the free slots are built.

Rules where docs/fhir.md is silent (each defaulted field is a "repair" problem; each left-out
record a "skip" problem with its reason):

- A row needs: an active PractitionerRole (``inactive``), a resolvable Practitioner
  (``no_practitioner``) that is not ``active: false`` (``inactive``), a valid NPI in
  Practitioner.identifier (``no_npi``), a NUCC code of the code set (``no_specialty``),
  gender female/male (``sex_not_given``: the contract's sex is F or M, so other/unknown cannot be
  imported), name[0] with a family and a given name (``no_name``; first_name = given[0]), and per
  Location: resolvable and not inactive/suspended (``no_position`` / ``inactive``), a position or
  a known ZIP (``no_position``), and an organization address with a street line, city, 2-letter
  state and 5-digit ZIP (``no_address``; a missing city or state is filled from the ZIP).
- specialist_id: the role's id when it is the practitioner's own NPI or that NPI plus ``-<n>``
  (n >= 2), for the role's first Location; otherwise derived in reading order: the NPI, then
  ``NPI-2``, ``NPI-3`` ..., skipping ids already taken.
- Organization: the role's Organization, else the Location's managingOrganization (an
  Organization typed ``ntwk`` or ``payer`` is not a practice), else the Location itself
  (organization_id = Location id, kind ``specialty_practice``). An organization's address and
  position come from the first of its rows' Locations with a complete address, else from
  Organization.address (position = ZIP centre). metro defaults to "<city>, <state>", kind to
  ``specialty_practice``, system_id is partOf's id.
- accepting_new_patients: ``newpt`` in any newpatients extension means True (a per-network
  ``fromNetwork`` is not modelled), another AcceptingPatients code False; read on the role, then
  its Location, then its HealthcareServices; absent: True (NEUTRAL).
- network_ids: the referenced Organization's id (an unresolved ``Organization/<id>`` keeps the
  id); accepted_plan_ids: only InsurancePlans that were imported. Languages outside
  ``contract.LANGUAGES``, or given without a BCP-47 code, are left out (a repair problem).
- plans: every valid InsurancePlan whatever its status; plan_name = name, else alias[0], else
  the id; plan_type from InsurancePlan.type codes: HMO/PPO/EPO/POS/FFS (any case), or a Plan-Net
  InsuranceProductTypeCS code ending in one (``commhmo``, ``medippo``), else NONE; payer_type
  ``commercial`` and out_of_network_coverage False when the extension is absent; network_ids from
  InsurancePlan.network and InsurancePlan.plan.network (none: the contract reads an open network).
- availability: free Slots only. The contract ties a busy slot to a row of the appointments
  table, which a directory import does not produce, so busy/busy-unavailable/busy-tentative
  Slots are counted under ``busy_slot`` and entered-in-error ones under ``entered_in_error``
  (one problem per Schedule and reason, not per Slot). Times keep the wall-clock time of the
  offset they carry. A Schedule maps to the row of its PractitionerRole actor (narrowed by a
  Location actor when the role has several), else of its Practitioner actor; Slots of an
  unknown Schedule, of an inactive one or of one without an imported row, and Slots whose end is
  not after their start, are skipped (``slot_without_schedule``, ``slot_without_specialist``,
  ``slot_bad_times``).
- ``missing``: the NEUTRAL fields no imported row's resources carried, plus ``payer_type`` /
  ``out_of_network_coverage`` (no plan carried the extension), ``plans`` (no InsurancePlan) and
  ``availability`` (no Slot).
- The first resource with a given Type/id wins; later copies are skipped as ``duplicate``.

No person data is logged; problems quote ids, codes and ZIPs, never names.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any, Final, NamedTuple

from pydantic import BaseModel, ValidationError

from features import codes, contract, fhir_codes, zipgeo
from features.directory_import import NEUTRAL, DirectoryImport, Problem, frame
from features.fhir_codes import BCP47_SYSTEM, NPI_SYSTEM, NUCC_SYSTEM

ICD10_SYSTEM: Final = fhir_codes.ICD10_CM_SYSTEM
EXT_NEWPATIENTS: Final = fhir_codes.NEWPATIENTS_URL
EXT_NETWORK: Final = fhir_codes.NETWORK_REFERENCE_URL
REFERRAL_ML: Final = fhir_codes.EXTENSION_BASE
EXT_ACCEPTED_PLAN: Final = REFERRAL_ML + "accepted-plan"
EXT_FOCUS: Final = REFERRAL_ML + "focus-condition"
EXT_RATING: Final = REFERRAL_ML + "rating"
EXT_REVIEWS: Final = REFERRAL_ML + "review-count"
EXT_CAPACITY: Final = REFERRAL_ML + "weekly-capacity"
EXT_METRO: Final = REFERRAL_ML + "metro"
EXT_KIND: Final = REFERRAL_ML + "organization-kind"
EXT_PAYER_TYPE: Final = REFERRAL_ML + "payer-type"
EXT_OUT_OF_NETWORK: Final = REFERRAL_ML + "out-of-network-coverage"
EXT_SLOT_TYPE: Final = REFERRAL_ML + "slot-type"
EXT_BOOKED_AT: Final = REFERRAL_ML + "booked-at"

USED_TYPES: Final = frozenset(
    {
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "HealthcareService",
        "InsurancePlan",
        "Schedule",
        "Slot",
    }
)
POOL_FROM_BYTES: Final = 8_000_000  # input size from which records go to worker processes
MAX_WORKERS: Final = 8
_BATCH: Final = 2_000  # records per batch

_SEX: Final = {"female": "F", "male": "M"}
_ACCEPTING: Final = {"newpt": True, "nopt": False, "existptonly": False, "existptfam": False}
_NOT_PRACTICES: Final = frozenset({"ntwk", "payer"})
_BUSY: Final = frozenset({"busy", "busy-unavailable", "busy-tentative"})
_REFERENCE: Final = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
)
_ELEMENT: Final = re.compile(r"_?[A-Za-z][A-Za-z0-9_]*")
_STATE: Final = re.compile(r"[A-Z]{2}")
_FOCUS: Final = re.compile(r"[A-TV-Z][0-9][0-9A-Z]")
_LANGUAGES: Final = frozenset(contract.LANGUAGES)


def import_fhir(path: Path, *, workers: int | None = None) -> DirectoryImport:
    """Import a FHIR directory (file or folder) into the directory's contract tables.

    ``workers``: processes that examine the records; None = one per CPU (at most
    ``MAX_WORKERS``) when the input has ``POOL_FROM_BYTES`` or more, else none; 1 = none.
    Raises FileNotFoundError when `path` does not exist.
    """
    path = Path(path)
    log = DirectoryImport(source="fhir", path=str(path), tables={})
    reader = _Reader(log, workers)
    reader.read_path(path)
    tables, imported, missing = _Builder(reader.index, log).build(reader.slots)
    return DirectoryImport(
        source="fhir",
        path=str(path),
        tables=tables,
        read=reader.read,
        imported=imported,
        skipped=log.skipped,
        problems=log.problems,
        missing=missing,
    )


# ---------------------------------------------------------------------------------------------
# Reading: files -> records (one ndjson line, Bundle entry or single-resource file each).
# ---------------------------------------------------------------------------------------------


class _Record(NamedTuple):
    where: str  # "file.ndjson line 7", "bundle.json entry[3]", "file.json"
    raw: Any  # the parsed JSON value; bytes for an ndjson line not parsed yet
    full_url: str | None  # Bundle.entry.fullUrl
    error: tuple[str, str] | None = None  # (reason, message) when the record is unreadable


def _files(path: Path) -> list[tuple[Path, str]]:
    """The files to read, each with the label problems use (relative to a folder)."""
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".json", ".ndjson")
        )
        return [(p, p.relative_to(path).as_posix()) for p in found]
    if path.is_file():
        return [(path, path.name)]
    raise FileNotFoundError(f"{path} does not exist")


def _records(file: Path, label: str) -> Iterator[_Record]:
    if file.suffix.lower() == ".ndjson":
        yield from _ndjson_lines(file, label)
    else:
        yield from _json_records(file, label)


def _ndjson_lines(file: Path, label: str) -> Iterator[_Record]:
    """One record per non-blank line, left as bytes: lines are parsed where they are validated."""
    with file.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield _Record(f"{label} line {number}", line, None)


def _not_json(exc: ValueError) -> tuple[str, str]:
    if isinstance(exc, UnicodeDecodeError):
        return "not_json", "not JSON (not UTF-8 text)"
    if isinstance(exc, json.JSONDecodeError):
        return "not_json", f"not JSON ({exc.msg.removesuffix(' at')}, column {exc.colno})"
    return "not_json", f"not JSON ({type(exc).__name__})"


def _json_records(file: Path, label: str) -> Iterator[_Record]:
    try:
        raw = json.loads(file.read_bytes())
    except ValueError as exc:
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        yield _Record(f"{label} line {line}" if line else label, None, None, _not_json(exc))
        return
    is_resource = isinstance(raw, dict) and "resourceType" in raw
    if file.name == "manifest.json" and not is_resource:
        return  # a Bulk Data export manifest
    if is_resource and raw["resourceType"] == "Bundle":
        yield from _bundle_entries(raw, label)
    else:
        yield _Record(label, raw, None)


def _bundle_entries(bundle: dict[str, Any], where: str) -> Iterator[_Record]:
    """A Bundle's entries as records (nested Bundles opened); the Bundle itself is not one."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        yield _Record(where, None, None, ("not_fhir", "Bundle.entry is not a list"))
        return
    for i, entry in enumerate(entries):
        spot = f"{where} entry[{i}]"
        if not isinstance(entry, dict):
            yield _Record(spot, None, None, ("not_fhir", "Bundle entry is not an object"))
            continue
        resource = entry.get("resource")
        if resource is None:
            continue  # a request- or response-only entry carries no resource
        full_url = entry.get("fullUrl")
        full_url = full_url if isinstance(full_url, str) and full_url else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
            yield from _bundle_entries(resource, spot)
        else:
            yield _Record(spot, resource, full_url)


# ---------------------------------------------------------------------------------------------
# Validation: fhir.resources R4B models plus the required code bindings they do not enforce.
# ---------------------------------------------------------------------------------------------


class Invalid(NamedTuple):
    """Why a resource failed validation: the first failing element and a short message."""

    element: str  # "Practitioner.name[0].given"
    message: str


@cache
def _model_class(resource_type: str) -> type[BaseModel]:
    """The R4B model class (ValueError for an unknown type); imported on first use (~0.5 s)."""
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


class _Fields(NamedTuple):
    alias: dict[str, str]  # field name -> JSON name
    position: dict[str, int]  # field name -> definition order
    codes: dict[str, tuple[str, ...]]  # field name -> allowed codes of its required binding


@cache
def _fields(cls: type[BaseModel]) -> _Fields:
    """What ``_bad_code`` needs of a model class (fhir.resources lists the codes of a required
    binding as the field's ``enum_values``)."""
    alias: dict[str, str] = {}
    allowed: dict[str, tuple[str, ...]] = {}
    for name, info in cls.model_fields.items():
        alias[name] = info.alias or name
        extra = info.json_schema_extra
        values = extra.get("enum_values") if isinstance(extra, dict) else None
        if isinstance(values, list):
            allowed[name] = tuple(str(v) for v in values)
    return _Fields(alias, {name: i for i, name in enumerate(alias)}, allowed)


def check_resource(raw: dict[str, Any]) -> Any:
    """The validated fhir.resources R4B model of a resource dict, or an ``Invalid``."""
    resource_type = str(raw["resourceType"])
    unknown = _unknown_contained(resource_type, raw.get("contained"))
    if unknown is not None:
        return unknown
    try:
        model = _model_class(resource_type).model_validate(raw)
    except ValidationError as exc:
        return _first_error(resource_type, exc)
    except Exception as exc:  # fhir_core raises KeyError/TypeError on some malformed input
        return Invalid(resource_type, f"cannot be read ({type(exc).__name__})")
    return _bad_code(model, resource_type) or model


def _unknown_contained(resource_type: str, contained: Any) -> Invalid | None:
    """fhir_core fails with a KeyError on a contained resource of an unknown type: say so."""
    if not isinstance(contained, list):
        return None
    for i, item in enumerate(contained):
        kind = item.get("resourceType") if isinstance(item, dict) else None
        if isinstance(kind, str):
            try:
                _model_class(kind)
            except ValueError:
                return Invalid(f"{resource_type}.contained[{i}].resourceType", "unknown type")
    return None


def _first_error(resource_type: str, exc: ValidationError) -> Invalid:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:
        return Invalid(resource_type, "is not valid")
    first = errors[0]
    return Invalid(_element_path(resource_type, first["loc"]), _short(first["msg"]))


def _element_path(resource_type: str, loc: Iterable[int | str]) -> str:
    """pydantic's error location as a FHIR element path: Practitioner.name[0].given."""
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "resource_type":
            out += ".resourceType"
        elif _ELEMENT.fullmatch(part):
            out += f".{part}"
    return out


def _short(message: str) -> str:
    text = " ".join(message.split())
    text = re.sub(r"^Value error, ", "", text)
    text = re.sub(r"\[[^\]]{40,}\]", "[...]", text)
    text = text.replace("``", "")
    return text if len(text) <= 120 else text[:117] + "..."


def _bad_code(model: BaseModel, path: str) -> Invalid | None:
    """The first code outside its required value set (``Slot.status``: "is not one of ...")."""
    found = _find_bad_code(model)
    if found is None:
        return None
    element, allowed = found
    return Invalid(path + element, "is not one of " + ", ".join(allowed))


def _find_bad_code(model: BaseModel) -> tuple[str, tuple[str, ...]] | None:
    """(".element[i].path", allowed codes) of the first bad code, walking only the elements
    present, in definition order (so the answer does not depend on set order)."""
    fields = _fields(type(model))
    present = model.model_fields_set
    for name in sorted(present, key=fields.position.__getitem__) if len(present) > 1 else present:
        value = getattr(model, name, None)
        if value is None:
            continue
        many = isinstance(value, list)
        items = value if many else [value]
        allowed = fields.codes.get(name)
        if allowed is not None:
            if any(item not in allowed for item in items):
                return f".{fields.alias[name]}", allowed
            continue
        for i, item in enumerate(items):
            if isinstance(item, BaseModel) and (found := _find_bad_code(item)) is not None:
                return f".{fields.alias[name]}{f'[{i}]' if many else ''}{found[0]}", found[1]
    return None


# ---------------------------------------------------------------------------------------------
# Examining records, in this process or in worker processes: parse an ndjson line, sort out
# what is not a resource of a used type, and validate Slots, reducing each to a small tuple.
# ---------------------------------------------------------------------------------------------


class _Error(NamedTuple):
    where: str
    reason: str
    message: str


class _Ignored(NamedTuple):
    kind: str


class _Raw(NamedTuple):
    """A resource of a used type other than Slot, validated by the main process."""

    where: str  # "Practitioner/abc (file.ndjson line 7)"
    name: str  # "Practitioner/abc"
    kind: str
    rid: str | None  # the id, or the uuid of a urn:uuid fullUrl
    raw: dict[str, Any]
    full_url: str | None


class _SlotFacts(NamedTuple):
    name: str  # "Slot/abc", or where it was read when it has no id
    slot_id: str | None
    schedule: str | None  # the Schedule reference
    status: str
    start: datetime
    end: datetime
    slot_type: str | None  # the slot-type extension's code
    booked_at: datetime | None


class _BadSlot(NamedTuple):
    where: str
    invalid: Invalid


_Outcome = _Error | _Ignored | _Raw | _SlotFacts | _BadSlot


def _examine_batch(batch: list[_Record]) -> list[_Outcome]:
    """The outcome of each record of a batch, in order (the function worker processes run)."""
    return [outcome for record in batch for outcome in _examine(record)]


def _examine(record: _Record) -> Iterator[_Outcome]:
    if isinstance(record.raw, bytes):
        try:
            raw = json.loads(record.raw)
        except ValueError as exc:
            yield _Error(record.where, *_not_json(exc))
            return
        if isinstance(raw, dict) and raw.get("resourceType") == "Bundle":
            for entry in _bundle_entries(raw, record.where):
                yield from _examine(entry)
            return
        record = record._replace(raw=raw)
    if record.error is not None:
        yield _Error(record.where, *record.error)
        return
    raw = record.raw
    kind = raw.get("resourceType") if isinstance(raw, dict) else None
    if not isinstance(kind, str):
        yield _Error(record.where, "not_fhir", "not a FHIR resource (no resourceType)")
        return
    if kind not in USED_TYPES:
        yield _Ignored(kind)
        return
    rid = raw.get("id")
    rid = rid if isinstance(rid, str) and rid else None
    if rid is None and record.full_url and record.full_url.startswith("urn:uuid:"):
        rid = record.full_url.removeprefix("urn:uuid:")
    name = f"{kind}/{rid}" if rid else record.where
    where = f"{name} ({record.where})" if rid else record.where
    if kind == "Slot":
        yield _slot(where, name, raw)
    else:
        yield _Raw(where, name, kind, rid, raw, record.full_url)


def _wall_clock(value: Any) -> datetime | None:
    """A FHIR instant/dateTime as naive wall-clock time in the offset it carries."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return None


def _slot(where: str, name: str, raw: dict[str, Any]) -> _SlotFacts | _BadSlot:
    """Validate a Slot and keep only what the availability table needs."""
    model = check_resource(raw)
    if isinstance(model, Invalid):
        return _BadSlot(where, model)
    slot_type = _first_ext(model, EXT_SLOT_TYPE)
    booked = _first_ext(model, EXT_BOOKED_AT)
    return _SlotFacts(
        name=name,
        slot_id=model.id,
        schedule=model.schedule.reference,
        status=model.status,
        start=model.start.replace(tzinfo=None),
        end=model.end.replace(tzinfo=None),
        slot_type=None if slot_type is None else (slot_type.valueCode or ""),
        booked_at=None if booked is None else _wall_clock(booked.valueDateTime),
    )


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Pipeline:
    """Examines records in batches and hands each outcome to `apply`, in input order.

    Small inputs are examined here; from ``POOL_FROM_BYTES`` of input on, batches go to a pool
    of worker processes, at most two per worker in flight, and the main process applies the
    outcomes of earlier batches (validating non-Slot resources) while the workers go on."""

    def __init__(self, workers: int | None, apply: Callable[[_Outcome], None]) -> None:
        self._workers = workers
        self._apply = apply
        self._batch: list[_Record] = []
        self._pending: deque[Future[list[_Outcome]]] = deque()
        self._pool: ProcessPoolExecutor | None = None
        self._size = 1

    def start(self, input_bytes: int) -> None:
        """Decide, from the size of the input, whether worker processes are worth starting."""
        size = self._workers if self._workers is not None else min(_cpus(), MAX_WORKERS)
        if size > 1 and (self._workers is not None or input_bytes >= POOL_FROM_BYTES):
            # spawn, not fork: the caller may be a threaded server.
            context = multiprocessing.get_context("spawn")
            self._pool, self._size = ProcessPoolExecutor(size, mp_context=context), size

    def add(self, record: _Record) -> None:
        self._batch.append(record)
        if len(self._batch) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self._pool is None:
            self._apply_all(_examine_batch(batch))
            return
        self._pending.append(self._pool.submit(_examine_batch, batch))
        while len(self._pending) > 2 * self._size:
            self._apply_all(self._pending.popleft().result())

    def _apply_all(self, outcomes: list[_Outcome]) -> None:
        for outcome in outcomes:
            self._apply(outcome)

    def finish(self) -> None:
        """Examine what is left and apply every outstanding outcome."""
        self._flush()
        while self._pending:
            self._apply_all(self._pending.popleft().result())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# ---------------------------------------------------------------------------------------------
# The index of validated resources, and reference resolution.
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Res:
    """One validated resource (fhir.resources model) and how problems name it."""

    type: str
    id: str | None
    name: str  # "PractitionerRole/abc"; "<container>#id" when contained
    model: Any
    contained: dict[str, _Res] = field(default_factory=dict)


class _Index:
    """Validated resources by Type/id and by Bundle fullUrl, and in reading order per type."""

    def __init__(self) -> None:
        self._by_key: dict[str, _Res] = {}
        self._by_type: dict[str, list[_Res]] = {}

    def add(self, res: _Res, full_url: str | None) -> bool:
        """Index a resource; False when its Type/id (or fullUrl) was already read."""
        keys = [k for k in (f"{res.type}/{res.id}" if res.id else None, full_url) if k]
        if any(k in self._by_key for k in keys):
            return False
        for key in keys:
            self._by_key[key] = res
        self._by_type.setdefault(res.type, []).append(res)
        return True

    def of(self, resource_type: str) -> list[_Res]:
        return self._by_type.get(resource_type, [])

    def resolve(self, reference: Any, want: str, context: _Res | None = None) -> _Res | None:
        """The resource a Reference (model) points to, if it is of type `want` and was read."""
        text = getattr(reference, "reference", None)
        return self.resolve_text(text, want, context) if isinstance(text, str) else None

    def resolve_text(self, text: str, want: str, context: _Res | None = None) -> _Res | None:
        text = text.strip()
        if text.startswith("#"):
            found = context.contained.get(text[1:]) if context is not None else None
        else:
            found = self._by_key.get(text)
            if found is None:
                match = _REFERENCE.search(text)
                found = self._by_key.get(f"{match[1]}/{match[2]}") if match else None
        return found if found is not None and found.type == want else None


def _reference_id(reference: Any, want: str) -> str | None:
    """The id in a ``want/<id>`` reference text (for targets that were not read)."""
    text = getattr(reference, "reference", None)
    match = _REFERENCE.search(text.strip()) if isinstance(text, str) else None
    return match[2] if match and match[1] == want else None


class _Reader:
    """Reads the files through the pipeline and fills the index with validated resources."""

    def __init__(self, log: DirectoryImport, workers: int | None) -> None:
        self.log = log
        self.index = _Index()
        self.slots: list[_SlotFacts] = []
        self.read = 0
        self._pipeline = _Pipeline(workers, self._apply)

    def read_path(self, path: Path) -> None:
        files = _files(path)
        try:
            self._pipeline.start(sum(file.stat().st_size for file, _ in files))
            for file, label in files:
                for record in _records(file, label):
                    self._pipeline.add(record)
            self._pipeline.finish()
        finally:
            self._pipeline.close()

    def _apply(self, outcome: _Outcome) -> None:
        self.read += 1
        if isinstance(outcome, _Error):
            self.log.skip(outcome.where, "", outcome.message, outcome.reason)
        elif isinstance(outcome, _Ignored):
            self.log.skipped[f"ignored_{outcome.kind}"] += 1
        elif isinstance(outcome, _Raw):
            self._index(outcome)
        elif isinstance(outcome, _BadSlot):
            self.log.skip(
                outcome.where, outcome.invalid.element, outcome.invalid.message, "invalid"
            )
        else:
            self.slots.append(outcome)

    def _index(self, found: _Raw) -> None:
        model = check_resource(found.raw)
        if isinstance(model, Invalid):
            self.log.skip(found.where, model.element, model.message, "invalid")
            return
        res = _Res(found.kind, model.id or found.rid, found.name, model)
        for item in getattr(model, "contained", None) or []:
            if item.id:
                name = f"{found.name}#{item.id}"
                res.contained[item.id] = _Res(item.get_resource_type(), item.id, name, item)
        if not self.index.add(res, found.full_url):
            why = "appears more than once; the first one is used"
            self.log.skip(found.where, "", why, "duplicate")


# ---------------------------------------------------------------------------------------------
# Small readers of fhir.resources models.
# ---------------------------------------------------------------------------------------------


def _exts(model: Any, url: str) -> list[Any]:
    return [e for e in (getattr(model, "extension", None) or []) if e.url == url]


def _first_ext(model: Any, url: str) -> Any:
    found = _exts(model, url)
    return found[0] if found else None


def _codes(concepts: Any, systems: tuple[str | None, ...] | None = None) -> list[str]:
    """The codes of CodeableConcept(s), optionally only from the given coding systems."""
    items = concepts if isinstance(concepts, list) else [concepts] if concepts else []
    out = []
    for concept in items:
        for coding in concept.coding or []:
            if coding.code and (systems is None or coding.system in systems):
                out.append(coding.code.strip())
    return out


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _npi(practitioner: Any) -> tuple[str | None, bool]:
    """(the first valid NPI, whether any us-npi identifier was present)."""
    present = False
    for ident in practitioner.identifier or []:
        if ident.system == NPI_SYSTEM and ident.value:
            present = True
            if codes.is_valid_npi(ident.value.strip()):
                return ident.value.strip(), True
    return None, present


def _person_name(practitioner: Any) -> tuple[str, str] | None:
    names = practitioner.name or []
    if not names:
        return None
    given = next((g.strip() for g in names[0].given or [] if g and g.strip()), "")
    family = (names[0].family or "").strip()
    return (given, family) if given and family else None


def _newpatients(model: Any) -> bool | None:
    """The newpatients extension's answer: True if any says newpt, else False if any says."""
    found = [
        _ACCEPTING[code]
        for ext in _exts(model, EXT_NEWPATIENTS)
        for sub in ext.extension or []
        if sub.url == "acceptingPatients"
        for code in _codes(sub.valueCodeableConcept)
        if code in _ACCEPTING
    ]
    return any(found) if found else None


def _plan_type(concepts: Any) -> str:
    for code in _codes(concepts):
        upper = code.upper()
        if upper in contract.PLAN_TYPES:
            return upper
        for kind in ("HMO", "PPO", "EPO", "POS"):
            if upper.endswith(kind) and code.islower():
                return kind
    return "NONE"


# ---------------------------------------------------------------------------------------------
# Building the tables.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Row:
    """One specialists row in the making: a PractitionerRole at one of its Locations."""

    role: _Res
    practitioner: _Res
    npi: str
    explicit_id: str | None
    location: _Res
    organization: _Res | None  # None: the Location is the organization
    organization_id: str
    point: tuple[float, float]
    values: dict[str, Any]
    specialist_id: str = ""


@dataclass(frozen=True)
class _Address:
    line: str
    city: str
    state: str
    postal_code: str


class _Builder:
    """Turns the index of validated resources into the directory's contract tables."""

    def __init__(self, index: _Index, log: DirectoryImport) -> None:
        self.index = index
        self.log = log
        self.carried: set[str] = set()
        self.plan_ids: set[str] = set()
        self._points: dict[str, tuple[float, float] | None] = {}
        self._repaired: set[tuple[str, str, str]] = set()

    def _repair(self, where: str, field_name: str, message: str) -> None:
        """Record a repair once (a role at two Locations would otherwise say it twice)."""
        if (where, field_name, message) not in self._repaired:
            self._repaired.add((where, field_name, message))
            self.log.repair(where, field_name, message)

    def build(self, slots: list[_SlotFacts]) -> tuple[dict[str, Any], int, list[str]]:
        plans = self._plans()
        rows = [row for role in self.index.of("PractitionerRole") for row in self._role_rows(role)]
        organizations, rows = self._organizations(rows)
        _assign_ids(rows)
        availability = self._availability(slots, rows)
        specialists = [
            {"specialist_id": r.specialist_id, "organization_id": r.organization_id, **r.values}
            for r in rows
        ]
        tables = {
            "organizations": frame("organizations", organizations),
            "plans": frame("plans", plans),
            "specialists": frame("specialists", specialists),
            "availability": frame("availability", availability),
        }
        missing = [k for k in NEUTRAL if k not in self.carried]
        if plans:
            missing += [
                k for k in ("payer_type", "out_of_network_coverage") if k not in self.carried
            ]
        else:
            missing.append("plans")
        if not slots:
            missing.append("availability")
        return tables, len(specialists), missing

    # -- plans ---------------------------------------------------------------------------------

    def _plans(self) -> list[dict[str, Any]]:
        rows = []
        for plan in self.index.of("InsurancePlan"):
            m = plan.model
            if not plan.id:
                self.log.skip(plan.name, "InsurancePlan.id", "has no id", "plan_without_id")
                continue
            name = (m.name or "").strip() or next((a for a in m.alias or [] if a.strip()), "")
            if not name:
                name = plan.id
                self._repair(plan.name, "InsurancePlan.name", "absent; the id is used")
            rows.append(
                {
                    "insurance_plan_id": plan.id,
                    "plan_name": name,
                    "payer_type": self._payer_type(plan),
                    "plan_type": _plan_type(m.type),
                    "network_ids": contract.SEP.join(self._plan_networks(plan)),
                    "out_of_network_coverage": self._out_of_network(plan),
                }
            )
            self.plan_ids.add(plan.id)
        return rows

    def _payer_type(self, plan: _Res) -> str:
        ext = _first_ext(plan.model, EXT_PAYER_TYPE)
        if ext is None:
            return "commercial"
        self.carried.add("payer_type")
        if ext.valueCode in contract.PAYER_TYPES:
            return str(ext.valueCode)
        self._repair(
            plan.name, "InsurancePlan.extension:payer-type", "unknown code; commercial used"
        )
        return "commercial"

    def _out_of_network(self, plan: _Res) -> bool:
        ext = _first_ext(plan.model, EXT_OUT_OF_NETWORK)
        if ext is None:
            return False
        self.carried.add("out_of_network_coverage")
        if isinstance(ext.valueBoolean, bool):
            return ext.valueBoolean
        self._repair(
            plan.name,
            "InsurancePlan.extension:out-of-network-coverage",
            "no valueBoolean; false used",
        )
        return False

    def _plan_networks(self, plan: _Res) -> list[str]:
        refs = list(plan.model.network or [])
        for sub in plan.model.plan or []:
            refs.extend(sub.network or [])
        return _unique(self._network_id(plan, ref, "InsurancePlan.network") for ref in refs)

    def _network_id(self, context: _Res, reference: Any, field_name: str) -> str:
        found = self.index.resolve(reference, "Organization", context)
        if found is not None and found.id:
            return found.id
        rid = _reference_id(reference, "Organization")
        if rid is None:
            self._repair(context.name, field_name, "network reference does not resolve; left out")
            return ""
        return rid

    # -- specialists ---------------------------------------------------------------------------

    def _role_rows(self, role: _Res) -> list[_Row]:
        m = role.model
        skip = self.log.skip
        if m.active is False:
            skip(role.name, "PractitionerRole.active", "the role is inactive", "inactive")
            return []
        practitioner = self.index.resolve(m.practitioner, "Practitioner", role)
        if practitioner is None:
            why = "the Practitioner it references was not found" if m.practitioner else "absent"
            skip(role.name, "PractitionerRole.practitioner", why, "no_practitioner")
            return []
        p = practitioner.model
        if p.active is False:
            skip(role.name, "Practitioner.active", "the practitioner is inactive", "inactive")
            return []
        npi, had_npi = _npi(p)
        if npi is None:
            why = (
                "the NPI fails its check digit"
                if had_npi
                else f"no identifier with system {NPI_SYSTEM}"
            )
            skip(role.name, "Practitioner.identifier", why, "no_npi")
            return []
        specialty = self._specialty(role)
        if specialty is None:
            why = "no NUCC taxonomy code the code set knows (nor on its HealthcareService)"
            skip(role.name, "PractitionerRole.specialty", why, "no_specialty")
            return []
        sex = _SEX.get(p.gender or "")
        if sex is None:
            why = "not female or male; the contract's sex is F or M"
            skip(role.name, "Practitioner.gender", why, "sex_not_given")
            return []
        names = _person_name(p)
        if names is None:
            skip(
                role.name, "Practitioner.name", "name[0] needs a family and a given name", "no_name"
            )
            return []
        if not m.location:
            skip(
                role.name, "PractitionerRole.location", "the role lists no Location", "no_position"
            )
            return []
        common = {
            "first_name": names[0],
            "last_name": names[1],
            "sex": sex,
            "languages": self._languages(role, practitioner),
            "specialty": specialty,
            **self._role_extensions(role),
        }
        match = codes.LOCATION_ID_PATTERN.match(role.id or "")
        explicit = role.id if match and match[1] == npi else None
        rows = []
        for i, reference in enumerate(m.location):
            row = self._row(role, practitioner, npi, reference, f"PractitionerRole.location[{i}]")
            if row is not None:
                row.values = {**common, **row.values}
                row.explicit_id, explicit = explicit, None
                rows.append(row)
        return rows

    def _row(
        self, role: _Res, practitioner: _Res, npi: str, reference: Any, field_name: str
    ) -> _Row | None:
        location = self.index.resolve(reference, "Location", role)
        if location is None:
            self.log.skip(
                role.name, field_name, "the Location it references was not found", "no_position"
            )
            return None
        if location.model.status in ("inactive", "suspended"):
            self.log.skip(
                role.name, field_name, f"{location.name} is {location.model.status}", "inactive"
            )
            return None
        point = self._point(location)
        if point is None:
            why = f"{location.name} has no position and no known ZIP code"
            self.log.skip(role.name, field_name, why, "no_position")
            return None
        organization = self._practice(role, location)
        accepting = self._accepting(role, location)
        return _Row(
            role=role,
            practitioner=practitioner,
            npi=npi,
            explicit_id=None,
            location=location,
            organization=organization,
            organization_id=(organization.id if organization else location.id) or location.name,
            point=point,
            values={
                "latitude": point[0],
                "longitude": point[1],
                "accepting_new_patients": NEUTRAL["accepting_new_patients"]
                if accepting is None
                else accepting,
            },
        )

    def _specialty(self, role: _Res) -> str | None:
        known = codes.nucc_codes()
        sources = [role.model.specialty] + [
            service.model.specialty
            for ref in role.model.healthcareService or []
            if (service := self.index.resolve(ref, "HealthcareService", role)) is not None
        ]
        for concepts in sources:
            for code in _codes(concepts, (NUCC_SYSTEM,)):
                if code in known:
                    return code
        return None

    def _languages(self, role: _Res, practitioner: _Res) -> str:
        """BCP-47 primary subtags that are contract languages ("es-MX" -> "es"), '|'-joined."""
        communication = practitioner.model.communication or []
        if not communication:
            return str(NEUTRAL["languages"])
        self.carried.add("languages")
        found = _codes(communication, (BCP47_SYSTEM, None))
        if not found:
            why = f"no {BCP47_SYSTEM} code; languages left empty (not listed)"
            self._repair(role.name, "Practitioner.communication", why)
        primary = _unique(re.split(r"[-_]", code, maxsplit=1)[0].lower() for code in found)
        kept = [code for code in primary if code in _LANGUAGES]
        if len(kept) < len(primary):
            left = ", ".join(code for code in primary if code not in _LANGUAGES)
            self._repair(
                role.name,
                "Practitioner.communication",
                f"{left}: not a contract language; left out",
            )
        return contract.SEP.join(kept)

    def _role_extensions(self, role: _Res) -> dict[str, Any]:
        """network_ids, accepted_plan_ids, focus_codes, rating, review_count, weekly_capacity."""
        m = role.model
        networks = [
            self._network_id(
                role, ext.valueReference, "PractitionerRole.extension:network-reference"
            )
            for ext in _exts(m, EXT_NETWORK)
        ]
        plans = []
        for ext in _exts(m, EXT_ACCEPTED_PLAN):
            plan = self.index.resolve(ext.valueReference, "InsurancePlan", role)
            if plan is not None and plan.id in self.plan_ids:
                plans.append(plan.id)
            else:
                why = "the InsurancePlan it references was not imported; left out"
                self._repair(role.name, "PractitionerRole.extension:accepted-plan", why)
        focus = []
        for ext in _exts(m, EXT_FOCUS):
            for code in _codes(ext.valueCodeableConcept, (ICD10_SYSTEM, None)):
                category = codes.icd10_category(code.upper())
                if codes.is_icd10_cm(code.upper()) and _FOCUS.fullmatch(category):
                    focus.append(category)
                else:
                    why = f"{code} is not an ICD-10-CM code; left out"
                    self._repair(role.name, "PractitionerRole.extension:focus-condition", why)
        for key, present in (
            ("network_ids", _exts(m, EXT_NETWORK)),
            ("accepted_plan_ids", _exts(m, EXT_ACCEPTED_PLAN)),
            ("focus_codes", _exts(m, EXT_FOCUS)),
        ):
            if present:
                self.carried.add(key)
        return {
            "network_ids": contract.SEP.join(_unique(networks)),
            "accepted_plan_ids": contract.SEP.join(_unique(plans)),
            "focus_codes": contract.SEP.join(_unique(focus)),
            "rating": self._number(role, EXT_RATING, "rating", 1, 5),
            "review_count": self._number(role, EXT_REVIEWS, "review_count", 0, None),
            "weekly_capacity": self._number(role, EXT_CAPACITY, "weekly_capacity", 0, None),
        }

    def _number(self, role: _Res, url: str, key: str, low: float, high: float | None) -> Any:
        """A rating (valueDecimal) or count (valueInteger) extension; NEUTRAL when absent/bad."""
        ext = _first_ext(role.model, url)
        if ext is None:
            return NEUTRAL[key]
        self.carried.add(key)
        raw = ext.valueDecimal if key == "rating" else ext.valueInteger
        value = None if raw is None else (float(raw) if key == "rating" else int(raw))
        if value is None or value < low or (high is not None and value > high):
            neutral = "null" if NEUTRAL[key] is None else NEUTRAL[key]
            why = f"absent or out of range; {neutral} used"
            self._repair(role.name, f"PractitionerRole.extension:{url.rsplit('/', 1)[-1]}", why)
            return NEUTRAL[key]
        return value

    def _accepting(self, role: _Res, location: _Res) -> bool | None:
        services = [
            service
            for ref in role.model.healthcareService or []
            if (service := self.index.resolve(ref, "HealthcareService", role)) is not None
        ]
        for source in (role, location, *services):
            answer = _newpatients(source.model)
            if answer is not None:
                self.carried.add("accepting_new_patients")
                return answer
        return None

    def _point(self, location: _Res) -> tuple[float, float] | None:
        """Location.position, else the centre of its ZIP (a repair), once per Location."""
        if location.name in self._points:
            return self._points[location.name]
        point = None
        position = location.model.position
        if position is not None:
            lat, lon = float(position.latitude), float(position.longitude)
            if -90 <= lat <= 90 and -180 <= lon <= 180:
                point = (lat, lon)
        if point is None:
            address = location.model.address
            info = zipgeo.lookup(address.postalCode) if address is not None else None
            if info is not None:
                point = (info.latitude, info.longitude)
                why = f"absent or out of range; the centre of ZIP {info.zip5} is used"
                self._repair(location.name, "Location.position", why)
        self._points[location.name] = point
        return point

    # -- organizations -------------------------------------------------------------------------

    def _practice(self, role: _Res, location: _Res) -> _Res | None:
        """The role's Organization, else the Location's managing one; None: neither is a practice."""
        for reference, context, field_name in (
            (role.model.organization, role, "PractitionerRole.organization"),
            (location.model.managingOrganization, location, "Location.managingOrganization"),
        ):
            if reference is None:
                continue
            organization = self.index.resolve(reference, "Organization", context)
            if organization is None:
                self._repair(
                    context.name, field_name, "the Organization it references was not found"
                )
            elif not set(_codes(organization.model.type)) & _NOT_PRACTICES and organization.id:
                return organization
        return None

    def _organizations(self, rows: list[_Row]) -> tuple[list[dict[str, Any]], list[_Row]]:
        """One organizations row per organization_id; rows whose organization has no address go."""
        groups: dict[str, list[_Row]] = {}
        for row in rows:
            groups.setdefault(row.organization_id, []).append(row)
        out: list[dict[str, Any]] = []
        kept: set[int] = set()
        for organization_id, group in groups.items():
            made = self._organization(organization_id, group)
            if made is None:
                for row in group:
                    why = "its organization has no street line, city, state and 5-digit ZIP"
                    self.log.skip(row.role.name, "Location.address", why, "no_address")
                continue
            out.append(made)
            kept.update(id(row) for row in group)
        return out, [row for row in rows if id(row) in kept]

    def _organization(self, organization_id: str, group: list[_Row]) -> dict[str, Any] | None:
        found: tuple[_Address, tuple[float, float]] | None = None
        for row in group:
            address = self._address(
                row.location.model.address, row.location.name, "Location.address"
            )
            if address is not None:
                found = (address, row.point)
                break
        organization = group[0].organization
        if found is None and organization is not None:
            for address_model in organization.model.address or []:
                address = self._address(address_model, organization.name, "Organization.address")
                info = zipgeo.lookup(address.postal_code) if address else None
                if address is not None and info is not None:
                    found = (address, (info.latitude, info.longitude))
                    break
        if found is None:
            return None
        address, (lat, lon) = found
        if organization is None:
            location = group[0].location
            name = (location.model.name or "").strip() or organization_id
            kind, system_id, metro = "specialty_practice", None, None
        else:
            m = organization.model
            name = (m.name or "").strip() or next((a for a in m.alias or [] if a.strip()), "")
            name = name or organization_id
            kind = self._kind(organization)
            system_id = None
            if m.partOf is not None:
                parent = self.index.resolve(m.partOf, "Organization", organization)
                system_id = (
                    parent.id if parent is not None else _reference_id(m.partOf, "Organization")
                )
            metro_ext = _first_ext(m, EXT_METRO)
            metro = (metro_ext.valueString or "").strip() if metro_ext is not None else None
        return {
            "organization_id": organization_id,
            "name": name,
            "kind": kind,
            "system_id": system_id,
            "metro": metro or f"{address.city}, {address.state}",
            "address_line": address.line,
            "city": address.city,
            "state": address.state,
            "postal_code": address.postal_code,
            "latitude": lat,
            "longitude": lon,
        }

    def _kind(self, organization: _Res) -> str:
        ext = _first_ext(organization.model, EXT_KIND)
        if ext is None:
            return "specialty_practice"
        if ext.valueCode in contract.ORGANIZATION_KINDS:
            return str(ext.valueCode)
        self._repair(
            organization.name,
            "Organization.extension:organization-kind",
            "unknown code; specialty_practice used",
        )
        return "specialty_practice"

    def _address(self, address: Any, where: str, field_name: str) -> _Address | None:
        """A complete address (street line, city, state, 5-digit ZIP); city/state from the ZIP."""
        if address is None:
            return None
        lines = [line.strip() for line in address.line or [] if line and line.strip()]
        zip5 = zipgeo.normalise(address.postalCode)
        if not lines or zip5 is None:
            return None
        info = zipgeo.lookup(zip5)
        city = (address.city or "").strip()
        state = (address.state or "").strip().upper()
        if not city and info is not None and info.city:
            city = info.city
            self._repair(where, f"{field_name}.city", f"absent; taken from ZIP {zip5}")
        if not _STATE.fullmatch(state) and info is not None and info.state:
            state = info.state
            self._repair(
                where, f"{field_name}.state", f"not a 2-letter code; taken from ZIP {zip5}"
            )
        if not city or not _STATE.fullmatch(state):
            return None
        return _Address(", ".join(lines), city, state, zip5)

    # -- availability --------------------------------------------------------------------------

    def _availability(self, slots: list[_SlotFacts], rows: list[_Row]) -> list[dict[str, Any]]:
        by_schedule: dict[str, str | None] = {}
        # (schedule, element, reason, message) -> slots; reason "" for a repair
        tally: Counter[tuple[str, str, str, str]] = Counter()
        seen: set[str] = set()
        schedules: dict[str, _Res | None] = {}  # reference text -> Schedule
        by_role: dict[int, list[_Row]] = {}
        by_person: dict[int, list[_Row]] = {}
        for row in rows:
            by_role.setdefault(id(row.role), []).append(row)
            by_person.setdefault(id(row.practitioner), []).append(row)
        out = []
        for slot in slots:
            if not slot.slot_id:
                self.log.skip(slot.name, "Slot.id", "has no id", "invalid")
                continue
            if slot.slot_id in seen:
                self.log.skip(
                    slot.name, "", "appears more than once; the first one is used", "duplicate"
                )
                continue
            seen.add(slot.slot_id)
            ref = slot.schedule or ""
            if ref not in schedules:
                schedules[ref] = self.index.resolve_text(ref, "Schedule")
            schedule = schedules[ref]
            if schedule is not None:
                group = schedule.name
                if group not in by_schedule:
                    by_schedule[group] = self._schedule_specialist(schedule, by_role, by_person)
            else:
                group = f"Slot.schedule {slot.schedule}" if slot.schedule else "Slot.schedule"
            skip = _slot_skip(slot, schedule, by_schedule.get(group))
            if skip is not None:
                tally[(group, *skip)] += 1
                continue
            slot_type = slot.slot_type or "routine"
            if slot_type not in contract.SLOT_TYPES:
                tally[(group, "Slot.extension:slot-type", "", "unknown code; routine used")] += 1
                slot_type = "routine"
            if slot.booked_at is not None:
                why = "booked-at on a free Slot; ignored"
                tally[(group, "Slot.extension:booked-at", "", why)] += 1
            out.append(
                {
                    "slot_id": slot.slot_id,
                    "specialist_id": by_schedule[group],
                    "start": slot.start,
                    "end": slot.end,
                    "slot_type": slot_type,
                    "status": "free",
                    "booked_at": None,
                    "appointment_id": None,
                }
            )
        for (group, element, reason, message), n in tally.items():
            problem = Problem(group, element, f"{n} Slot(s): {message}", skipped=bool(reason))
            self.log.problems.append(problem)
            if reason:
                self.log.skipped[reason] += n
        return out

    def _schedule_specialist(
        self, schedule: _Res, by_role: dict[int, list[_Row]], by_person: dict[int, list[_Row]]
    ) -> str | None:
        """The row a Schedule's actors point to: role (or practitioner), narrowed by Location."""
        if schedule.model.active is False:
            return None
        actors = schedule.model.actor or []

        def targets(kind: str) -> list[_Res]:
            found = (self.index.resolve(a, kind, schedule) for a in actors)
            return [r for r in found if r is not None]

        roles, locations = targets("PractitionerRole"), targets("Location")
        if roles:
            candidates = [row for role in roles for row in by_role.get(id(role), [])]
        else:
            people = targets("Practitioner")
            candidates = [row for p in people for row in by_person.get(id(p), [])]
        at_location = [r for r in candidates if any(r.location is loc for loc in locations)]
        chosen = at_location or candidates
        return chosen[0].specialist_id if chosen else None


def _slot_skip(
    slot: _SlotFacts, schedule: _Res | None, specialist_id: str | None
) -> tuple[str, str, str] | None:
    """(element, reason, message) when a Slot is not imported."""
    if slot.status == "entered-in-error":
        return "Slot.status", "entered_in_error", "entered-in-error"
    if slot.status in _BUSY:
        why = f"{slot.status}: a busy slot must hold an appointment; a directory import has none"
        return "Slot.status", "busy_slot", why
    if schedule is None:
        return "Slot.schedule", "slot_without_schedule", "the Schedule it references was not found"
    if specialist_id is None:
        why = "its Schedule is inactive or names no imported PractitionerRole"
        return "Slot.schedule", "slot_without_specialist", why
    if slot.end <= slot.start:
        return "Slot.end", "slot_bad_times", "end is not after start"
    return None


def _assign_ids(rows: list[_Row]) -> None:
    """Explicit ids first; the others get the NPI, then NPI-2, NPI-3 ..., skipping taken ids."""
    taken = {row.explicit_id for row in rows if row.explicit_id}
    next_n: dict[str, int] = {}
    for row in rows:
        if row.explicit_id:
            row.specialist_id = row.explicit_id
            continue
        n = next_n.get(row.npi, 1)
        while (candidate := row.npi if n == 1 else f"{row.npi}-{n}") in taken:
            n += 1
        next_n[row.npi] = n + 1
        taken.add(candidate)
        row.specialist_id = candidate
