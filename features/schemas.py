"""Pandera schemas for the data contract: one ``DataFrameModel`` per table in ``contract.TABLES``.

Every model coerces (so CSV text and Parquet types validate alike) and is strict (a column the
contract does not name is a violation). Checks carry short names; ``features.validation`` turns
failures into sentences. Row-level checks that involve two columns are ``dataframe_check``s and
``ROW_CHECKS`` says which column each one blames. The column types and value masks live in
``features.dtypes``; the ground-truth models in ``features.truth_schemas``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from features import codes, contract
from features.dtypes import (
    NaiveDateTime,
    StrictBool,
    StrictInt,
    multi_value_mask,
    naive_datetimes,
    nonblank_mask,
    npi_mask,
    pattern_parts_mask,
    specialist_id_mask,
)

FOCUS_CATEGORY_PATTERN = re.compile(r"^[A-TV-Z][0-9][0-9A-Z]$")


def _column(df: pd.DataFrame, name: str) -> pd.Series | None:
    """A date-time column converted loosely for row checks; None when absent."""
    return naive_datetimes(df[name]) if name in df.columns else None


def _passes(df: pd.DataFrame, failing: pd.Series | None) -> pd.Series:
    """Turn a 'row fails' mask (None when columns are missing) into a pandera pass mask."""
    if failing is None:
        return pd.Series(True, index=df.index)
    return ~failing.fillna(False).astype(bool)


def _later(df: pd.DataFrame, early: str, late: str, *, strict: bool) -> pd.Series:
    """Row check: ``late`` is after (strict) or not before ``early``; nulls and bad cells pass."""
    a, b = _column(df, early), _column(df, late)
    if a is None or b is None:
        return _passes(df, None)
    failing = (b <= a) if strict else (b < a)
    return _passes(df, failing & a.notna() & b.notna())


@dataclass(frozen=True)
class RowCheck:
    """A two-column rule checked per row: which column it blames and how to say it."""

    column: str
    template: str  # formatted with the row's cells, e.g. "end {end} is not after start {start}"
    fields: tuple[str, ...]


# dataframe_check name -> what it means. Keep in step with the models below.
ROW_CHECKS: dict[str, RowCheck] = {
    "end_after_start": RowCheck("end", "end {end} is not after start {start}", ("start", "end")),
    "busy_iff_appointment": RowCheck(
        "appointment_id",
        "status {status} with appointment_id {appointment_id}: a slot is busy exactly when it "
        "holds an appointment",
        ("status", "appointment_id"),
    ),
    "provider_unless_self": RowCheck(
        "referring_provider_id",
        "referring_provider_id is empty, but only a self-referral may have no referring provider "
        "(referral_type is {referral_type})",
        ("referral_type",),
    ),
    "status_at_after_created": RowCheck(
        "status_at",
        "status_at {status_at} is before created_at {created_at}",
        ("created_at", "status_at"),
    ),
    "booked_before_appointment": RowCheck(
        "booked_at",
        "booked_at {booked_at} is after appointment_at {appointment_at}",
        ("booked_at", "appointment_at"),
    ),
    "outcome_after_booking": RowCheck(
        "outcome_at",
        "outcome_at {outcome_at} is before booked_at {booked_at}",
        ("booked_at", "outcome_at"),
    ),
    "visit_has_time": RowCheck(
        "appointment_at",
        "outcome {outcome} needs an appointment_at, but it is empty",
        ("outcome", "appointment_at"),
    ),
}

# Check name -> what the allowed values are, for the sentences in features.validation.
CHECK_DESCRIPTIONS: dict[str, str] = {
    "valid_npi": "is not a valid NPI (10 digits ending in the Luhn check digit)",
    "valid_specialist_id": (
        "is not a valid specialist id (an NPI: 10 digits ending in the Luhn check digit, "
        "optionally followed by a location suffix -2, -3, ...)"
    ),
    "nucc_code": "is not a code of the NUCC Health Care Provider Taxonomy v12.1",
    "icd10_cm": "is not an ICD-10-CM code (letter, digit, digit-or-letter, optional .suffix)",
    "languages": "must be a '|'-joined list of "
    + ", ".join(contract.LANGUAGES)
    + " (or empty: not listed)",
    "focus_codes": "must be '|'-joined 3-character ICD-10 categories such as I50 (or empty)",
    "nonblank": "is empty but a value is required",
    "two_letters": "is not a 2-letter state code",
    "five_digits": "is not a 5-digit postal code",
}

_LANGUAGES = frozenset(contract.LANGUAGES)


# ---------------------------------------------------------------------------------------------
# The tables.
# ---------------------------------------------------------------------------------------------


class ContractModel(pa.DataFrameModel):
    """Common settings of every contract table: coerce types, and reject unknown columns."""

    class Config:
        coerce = True
        strict = True


class Organizations(ContractModel):
    """Practices and primary-care clinics."""

    organization_id: Series[str] = pa.Field(unique=True)
    name: Series[str]
    kind: Series[str] = pa.Field(isin=contract.ORGANIZATION_KINDS)
    system_id: Series[str] = pa.Field(nullable=True)
    metro: Series[str]
    address_line: Series[str]
    city: Series[str]
    state: Series[str]
    postal_code: Series[str]
    latitude: Series[float] = pa.Field(in_range={"min_value": -90, "max_value": 90})
    longitude: Series[float] = pa.Field(in_range={"min_value": -180, "max_value": 180})

    @pa.check("organization_id", "name", "metro", "address_line", "city", name="nonblank")
    @classmethod
    def _nonblank(cls, values: Series[str]) -> Series[bool]:
        return nonblank_mask(values)

    @pa.check("state", name="two_letters")
    @classmethod
    def _state(cls, values: Series[str]) -> Series[bool]:
        return values.astype("str").str.fullmatch(r"[A-Z]{2}").fillna(False).astype(bool)

    @pa.check("postal_code", name="five_digits")
    @classmethod
    def _postal_code(cls, values: Series[str]) -> Series[bool]:
        return values.astype("str").str.fullmatch(r"[0-9]{5}").fillna(False).astype(bool)

    class Config:
        name = "organizations"


class Plans(ContractModel):
    """Insurance plans; network_ids '' means an open network."""

    insurance_plan_id: Series[str] = pa.Field(unique=True)
    plan_name: Series[str]
    payer_type: Series[str] = pa.Field(isin=contract.PAYER_TYPES)
    plan_type: Series[str] = pa.Field(isin=contract.PLAN_TYPES)
    network_ids: Series[str]
    out_of_network_coverage: Series[StrictBool]

    @pa.check("insurance_plan_id", "plan_name", name="nonblank")
    @classmethod
    def _nonblank(cls, values: Series[str]) -> Series[bool]:
        return nonblank_mask(values)

    class Config:
        name = "plans"


class Patients(ContractModel):
    """Patients; race_ethnicity is for subgroup audits only."""

    patient_id: Series[str] = pa.Field(unique=True)
    birth_year: Series[StrictInt] = pa.Field(in_range={"min_value": 1900, "max_value": 2026})
    sex: Series[str] = pa.Field(isin=contract.SEXES)
    preferred_language: Series[str] = pa.Field(isin=contract.LANGUAGES)
    latitude: Series[float] = pa.Field(in_range={"min_value": -90, "max_value": 90})
    longitude: Series[float] = pa.Field(in_range={"min_value": -180, "max_value": 180})
    insurance_plan_id: Series[str]
    race_ethnicity: Series[str] = pa.Field(isin=contract.RACE_ETHNICITIES, nullable=True)

    @pa.check("patient_id", "insurance_plan_id", name="nonblank")
    @classmethod
    def _nonblank(cls, values: Series[str]) -> Series[bool]:
        return nonblank_mask(values)

    class Config:
        name = "patients"


class ReferringProviders(ContractModel):
    """Primary-care clinicians who send referrals, keyed by NPI."""

    provider_id: Series[str] = pa.Field(unique=True)
    first_name: Series[str]
    last_name: Series[str]
    organization_id: Series[str]

    @pa.check("provider_id", name="valid_npi")
    @classmethod
    def _npi(cls, values: Series[str]) -> Series[bool]:
        return npi_mask(values)

    @pa.check("first_name", "last_name", "organization_id", name="nonblank")
    @classmethod
    def _nonblank(cls, values: Series[str]) -> Series[bool]:
        return nonblank_mask(values)

    class Config:
        name = "referring_providers"


class Specialists(ContractModel):
    """Specialists keyed by NPI, with their NUCC specialty, focus areas, networks and capacity."""

    specialist_id: Series[str] = pa.Field(unique=True)
    first_name: Series[str]
    last_name: Series[str]
    sex: Series[str] = pa.Field(isin=contract.SEXES)
    languages: Series[str]
    specialty: Series[str]
    focus_codes: Series[str]
    organization_id: Series[str]
    network_ids: Series[str]
    accepted_plan_ids: Series[str]
    latitude: Series[float] = pa.Field(in_range={"min_value": -90, "max_value": 90})
    longitude: Series[float] = pa.Field(in_range={"min_value": -180, "max_value": 180})
    accepting_new_patients: Series[StrictBool]
    weekly_capacity: Series[StrictInt] = pa.Field(ge=0)
    rating: Series[float] = pa.Field(in_range={"min_value": 1, "max_value": 5}, nullable=True)
    review_count: Series[StrictInt] = pa.Field(ge=0)

    @pa.check("specialist_id", name="valid_specialist_id")
    @classmethod
    def _npi(cls, values: Series[str]) -> Series[bool]:
        return specialist_id_mask(values)

    @pa.check("first_name", "last_name", "organization_id", name="nonblank")
    @classmethod
    def _nonblank(cls, values: Series[str]) -> Series[bool]:
        return nonblank_mask(values)

    @pa.check("languages", name="languages")
    @classmethod
    def _languages(cls, values: Series[str]) -> Series[bool]:
        return multi_value_mask(values, _LANGUAGES, allow_empty=True)  # '' = not listed

    @pa.check("specialty", name="nucc_code")
    @classmethod
    def _specialty(cls, values: Series[str]) -> Series[bool]:
        return values.isin(codes.nucc_codes())

    @pa.check("focus_codes", name="focus_codes")
    @classmethod
    def _focus_codes(cls, values: Series[str]) -> Series[bool]:
        return pattern_parts_mask(values, FOCUS_CATEGORY_PATTERN)

    class Config:
        name = "specialists"


class Availability(ContractModel):
    """Appointment slots; a slot is busy exactly when it holds an appointment."""

    slot_id: Series[str] = pa.Field(unique=True)
    specialist_id: Series[str]
    start: Series[NaiveDateTime]
    end: Series[NaiveDateTime]
    slot_type: Series[str] = pa.Field(isin=contract.SLOT_TYPES)
    status: Series[str] = pa.Field(isin=contract.SLOT_STATUSES)
    booked_at: Series[NaiveDateTime] = pa.Field(nullable=True)
    appointment_id: Series[str] = pa.Field(nullable=True)

    @pa.check("slot_id", "specialist_id", name="nonblank")
    @classmethod
    def _nonblank(cls, values: Series[str]) -> Series[bool]:
        return nonblank_mask(values)

    @pa.dataframe_check(name="end_after_start")
    @classmethod
    def _end_after_start(cls, df: pd.DataFrame) -> Series[bool]:
        return _later(df, "start", "end", strict=True)

    @pa.dataframe_check(name="busy_iff_appointment")
    @classmethod
    def _busy_iff_appointment(cls, df: pd.DataFrame) -> Series[bool]:
        if "status" not in df.columns or "appointment_id" not in df.columns:
            return _passes(df, None)
        status = df["status"].astype("str")
        known = status.isin(contract.SLOT_STATUSES)
        failing = known & (status.eq("busy") != df["appointment_id"].notna())
        return _passes(df, failing)

    class Config:
        name = "availability"


class Referrals(ContractModel):
    """Referrals from a referring provider for a patient to a specialty."""

    referral_id: Series[str] = pa.Field(unique=True)
    created_at: Series[NaiveDateTime]
    patient_id: Series[str]
    referring_provider_id: Series[str] = pa.Field(nullable=True)  # only for self-referrals
    specialty: Series[str]
    reason_code: Series[str]
    urgency: Series[str] = pa.Field(isin=contract.URGENCIES)
    referral_type: Series[str] = pa.Field(isin=contract.REFERRAL_TYPES)
    specialist_id: Series[str] = pa.Field(nullable=True)
    status: Series[str] = pa.Field(isin=contract.REFERRAL_STATUSES)
    status_at: Series[NaiveDateTime] = pa.Field(nullable=True)

    @pa.check("referral_id", "patient_id", name="nonblank")
    @classmethod
    def _nonblank(cls, values: Series[str]) -> Series[bool]:
        return nonblank_mask(values)

    @pa.check("specialty", name="nucc_code")
    @classmethod
    def _specialty(cls, values: Series[str]) -> Series[bool]:
        return values.isin(codes.nucc_codes())

    @pa.check("reason_code", name="icd10_cm")
    @classmethod
    def _reason_code(cls, values: Series[str]) -> Series[bool]:
        pattern = codes.ICD10_CM_PATTERN.pattern
        return values.astype("str").str.fullmatch(pattern).fillna(False).astype(bool)

    @pa.dataframe_check(name="provider_unless_self")
    @classmethod
    def _provider_unless_self(cls, df: pd.DataFrame) -> Series[bool]:
        if "referring_provider_id" not in df.columns or "referral_type" not in df.columns:
            return _passes(df, None)
        provider = df["referring_provider_id"]
        missing = provider.isna() | provider.astype("str").str.strip().eq("")
        return _passes(df, missing & df["referral_type"].ne("self"))

    @pa.dataframe_check(name="status_at_after_created")
    @classmethod
    def _status_at(cls, df: pd.DataFrame) -> Series[bool]:
        return _later(df, "created_at", "status_at", strict=False)

    class Config:
        name = "referrals"


class Appointments(ContractModel):
    """Booked visits; outcome null means the visit is still upcoming."""

    appointment_id: Series[str] = pa.Field(unique=True)
    referral_id: Series[str]
    patient_id: Series[str]
    specialist_id: Series[str]
    slot_id: Series[str]
    visit_kind: Series[str] = pa.Field(isin=contract.VISIT_KINDS)
    booked_at: Series[NaiveDateTime]
    appointment_at: Series[NaiveDateTime]
    text_reminder: Series[StrictBool]
    outreach_call: Series[StrictBool]
    outcome: Series[str] = pa.Field(isin=contract.OUTCOMES, nullable=True)
    outcome_at: Series[NaiveDateTime] = pa.Field(nullable=True)

    @pa.check(
        "appointment_id", "referral_id", "patient_id", "specialist_id", "slot_id", name="nonblank"
    )
    @classmethod
    def _nonblank(cls, values: Series[str]) -> Series[bool]:
        return nonblank_mask(values)

    @pa.dataframe_check(name="booked_before_appointment")
    @classmethod
    def _booked_before_appointment(cls, df: pd.DataFrame) -> Series[bool]:
        return _later(df, "booked_at", "appointment_at", strict=False)

    @pa.dataframe_check(name="outcome_after_booking")
    @classmethod
    def _outcome_after_booking(cls, df: pd.DataFrame) -> Series[bool]:
        return _later(df, "booked_at", "outcome_at", strict=False)

    @pa.dataframe_check(name="visit_has_time")
    @classmethod
    def _visit_has_time(cls, df: pd.DataFrame) -> Series[bool]:
        if "outcome" not in df.columns or "appointment_at" not in df.columns:
            return _passes(df, None)
        visited = df["outcome"].isin(("attended", "no_show"))
        return _passes(df, visited & df["appointment_at"].isna())

    class Config:
        name = "appointments"


SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    "organizations": Organizations,
    "plans": Plans,
    "patients": Patients,
    "referring_providers": ReferringProviders,
    "specialists": Specialists,
    "availability": Availability,
    "referrals": Referrals,
    "appointments": Appointments,
}


def schema_for(table: str) -> pa.DataFrameSchema:
    """The pandera DataFrameSchema of a contract table (cached by pandera)."""
    return SCHEMAS[table].to_schema()
