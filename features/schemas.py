"""Pandera schemas for the data contract: one ``DataFrameModel`` per table in ``contract.TABLES``.

Every model coerces (so CSV text and Parquet types validate alike) and is strict (a column the
contract does not name is a violation). Checks carry short names; ``features.validation`` turns
failures into sentences. Row-level checks that involve two columns are ``dataframe_check``s and
``ROW_CHECKS`` says which column each one blames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera import dtypes, errors
from pandera.engines import numpy_engine, pandas_engine
from pandera.engines import utils as engine_utils
from pandera.typing import Series

from features import codes, contract

# ---------------------------------------------------------------------------------------------
# Strict data types: pandas' own casts turn "yes" into True and 1980.5 into 1980 silently.
# ---------------------------------------------------------------------------------------------

_TRUE_TEXT = frozenset({"true", "1"})
_FALSE_TEXT = frozenset({"false", "0"})


def _to_bool(value: Any) -> bool:
    """One cell as a bool; raises TypeError for anything that is not clearly true or false."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_TEXT:
            return True
        if text in _FALSE_TEXT:
            return False
    elif isinstance(value, int | float | np.integer | np.floating) and value in (0, 1):
        return bool(value)
    raise TypeError("not a boolean")


def _to_int(value: Any) -> int:
    """One cell as an int; raises TypeError for bools, fractions, non-numbers and nulls."""
    if isinstance(value, bool | np.bool_):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            value = float(value.strip()) if value.strip() else float("nan")
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    raise TypeError("not an integer")


@pandas_engine.Engine.register_dtype
@dtypes.immutable
class StrictBool(numpy_engine.Bool):
    """numpy bool that only accepts booleans, 0/1 and the texts true/false/1/0 (any case)."""

    def coerce(self, data_container: Any) -> Any:
        """Cast to bool, raising if any cell is not clearly true or false."""
        if pd.api.types.is_bool_dtype(data_container.dtype) and not data_container.isna().any():
            return data_container.astype(bool)
        return data_container.map(_to_bool).astype(bool)

    def coerce_value(self, value: Any) -> Any:
        """Cast one cell (used by pandera to find the failure cases)."""
        return _to_bool(value)

    def try_coerce(self, data_container: Any) -> Any:
        """Cast, or raise a ParserError that lists the cells that are not booleans."""
        try:
            return self.coerce(data_container)
        except Exception as exc:
            raise errors.ParserError(
                "Could not coerce to bool",
                failure_cases=engine_utils.numpy_pandas_coerce_failure_cases(data_container, self),
            ) from exc

    def check(self, pandera_dtype: Any, data_container: Any = None) -> Any:
        """A bool column satisfies this type."""
        try:
            return pandas_engine.Engine.dtype(pandera_dtype).type == np.dtype(bool)
        except TypeError:
            return False

    def __str__(self) -> str:
        return "bool"


@pandas_engine.Engine.register_dtype
@dtypes.immutable
class StrictInt(numpy_engine.Int64):
    """int64 that refuses fractions, booleans and text that is not a whole number."""

    def coerce(self, data_container: Any) -> Any:
        """Cast to int64, raising if any cell is not a whole number."""
        dtype = data_container.dtype
        if pd.api.types.is_bool_dtype(dtype):
            raise TypeError("booleans are not integers")
        if pd.api.types.is_integer_dtype(dtype) and not data_container.isna().any():
            return data_container.astype("int64")
        if pd.api.types.is_float_dtype(dtype):
            values = data_container.to_numpy(dtype=float, na_value=np.nan)
            if not (np.isfinite(values).all() and (values == np.round(values)).all()):
                raise TypeError("not whole numbers")
            return data_container.astype("int64")
        return data_container.map(_to_int).astype("int64")

    def coerce_value(self, value: Any) -> Any:
        """Cast one cell (used by pandera to find the failure cases)."""
        return _to_int(value)

    def try_coerce(self, data_container: Any) -> Any:
        """Cast, or raise a ParserError that lists the cells that are not whole numbers."""
        try:
            return self.coerce(data_container)
        except Exception as exc:
            raise errors.ParserError(
                "Could not coerce to int64",
                failure_cases=engine_utils.numpy_pandas_coerce_failure_cases(data_container, self),
            ) from exc

    def check(self, pandera_dtype: Any, data_container: Any = None) -> Any:
        """An int64 column satisfies this type."""
        try:
            return pandas_engine.Engine.dtype(pandera_dtype).type == np.dtype("int64")
        except TypeError:
            return False

    def __str__(self) -> str:
        return "int64"


_UTC_OFFSET = r"(?:Z|[+-][0-9]{2}:?[0-9]{2})\s*$"


def _to_naive_timestamp(value: Any) -> pd.Timestamp:
    """One cell as a naive Timestamp; raises for numbers, time-zone-aware values and bad text."""
    if isinstance(value, bool | int | float | np.number) and not pd.isna(value):
        raise TypeError("a number is not a date-time")
    if isinstance(value, str) and re.search(_UTC_OFFSET, value.strip()):
        raise TypeError("has a time zone")
    stamp = pd.Timestamp(value)
    if stamp is not pd.NaT and stamp.tzinfo is not None:
        raise TypeError("has a time zone")
    return stamp


@pandas_engine.Engine.register_dtype
@dtypes.immutable(init=True)
class NaiveDateTime(pandas_engine.DateTime):
    """datetime64 without time zone; refuses zoned values instead of converting them to UTC.

    Pandera's own coercion turns '09:00+02:00' into 07:00 silently; the contract's timestamps are
    clinic-local wall-clock times, so a zone is a violation rather than something to convert.
    """

    def coerce(self, data_container: Any) -> Any:
        """Cast to naive datetime64 (keeping its unit), raising on zones, numbers and bad text."""
        dtype = data_container.dtype
        if isinstance(dtype, pd.DatetimeTZDtype):
            raise TypeError("time-zone-aware values")
        if pd.api.types.is_datetime64_dtype(dtype):
            return data_container
        if data_container.isna().all():
            return pd.Series(pd.NaT, index=data_container.index, dtype="datetime64[ns]")
        if pd.api.types.is_numeric_dtype(dtype):
            raise TypeError("numbers are not date-times")
        if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
            try:  # fast path; text with offsets parses to a zoned dtype or raises when mixed
                parsed = pd.to_datetime(data_container, format="ISO8601")
            except (TypeError, ValueError, OverflowError):
                parsed = None
            if parsed is not None and pd.api.types.is_datetime64_dtype(parsed.dtype):
                return parsed
            if parsed is not None:
                raise TypeError("time-zone-aware text")
        parsed = pd.to_datetime(data_container.map(_to_naive_timestamp))
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            raise TypeError("time-zone-aware values")
        return parsed

    def check(self, pandera_dtype: Any, data_container: Any = None) -> Any:
        """Any naive datetime64 column (ns, us, ms or s) satisfies this type."""
        try:
            native = pandas_engine.Engine.dtype(pandera_dtype).type
        except TypeError:
            return False
        return isinstance(native, np.dtype) and native.kind == "M"

    def coerce_value(self, value: Any) -> Any:
        """Cast one cell (used by pandera to find the failure cases)."""
        return _to_naive_timestamp(value)

    def __str__(self) -> str:
        return "datetime64[ns]"


# ---------------------------------------------------------------------------------------------
# Vectorised value checks shared by the models.
# ---------------------------------------------------------------------------------------------

FOCUS_CATEGORY_PATTERN = re.compile(r"^[A-TV-Z][0-9][0-9A-Z]$")
_NPI_PREFIX_DIGITS = np.array([int(c) for c in codes.NPI_PREFIX], dtype=np.int64)


def npi_mask(values: pd.Series) -> pd.Series:
    """Vectorised codes.is_valid_npi: True for 10-digit NPIs with the right Luhn check digit."""
    text = values.astype("str")
    ok = text.str.fullmatch(r"[0-9]{10}").fillna(False).astype(bool).to_numpy()
    result = np.zeros(len(text), dtype=bool)
    if ok.any():
        joined = "".join(text.to_numpy(dtype=object)[ok]).encode("ascii")
        digits = np.frombuffer(joined, dtype=np.uint8).reshape(-1, 10).astype(np.int64) - 48
        payload = np.hstack([np.tile(_NPI_PREFIX_DIGITS, (len(digits), 1)), digits[:, :9]])
        from_right = payload[:, ::-1]
        doubled = from_right[:, 0::2] * 2
        doubled = np.where(doubled > 9, doubled - 9, doubled)
        total = doubled.sum(axis=1) + from_right[:, 1::2].sum(axis=1)
        result[ok] = (10 - total % 10) % 10 == digits[:, 9]
    return pd.Series(result, index=values.index)


def multi_value_mask(values: pd.Series, allowed: frozenset[str], *, allow_empty: bool) -> pd.Series:
    """True where a '|'-joined cell is empty (if allowed) or every part is in ``allowed``."""
    text = values.astype("str")
    parts = text.str.split(contract.SEP).explode()
    part_ok = parts.isin(allowed)
    result = part_ok.groupby(level=0, sort=False).all().reindex(text.index, fill_value=False)
    empty = text.eq("").fillna(False).astype(bool)
    result = result.astype(bool) & ~empty
    if allow_empty:
        result |= empty
    return result | values.isna()


def pattern_parts_mask(values: pd.Series, pattern: re.Pattern[str]) -> pd.Series:
    """True where a '|'-joined cell is empty or every part matches ``pattern``."""
    text = values.astype("str")
    parts = text.str.split(contract.SEP).explode()
    part_ok = parts.str.fullmatch(pattern.pattern).fillna(False).astype(bool)
    result = part_ok.groupby(level=0, sort=False).all().reindex(text.index, fill_value=False)
    return result.astype(bool) | text.eq("").fillna(False).astype(bool) | values.isna()


def nonblank_mask(values: pd.Series) -> pd.Series:
    """True where a text cell has at least one non-space character (nulls pass)."""
    text = values.astype("str")
    return text.str.strip().ne("").fillna(True).astype(bool) | values.isna()


def naive_datetimes(values: pd.Series) -> pd.Series:
    """A column as naive datetime64, loosely: unparseable cells become NaT, zones are dropped."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    for fmt in ("ISO8601", "mixed"):  # the fast parser first; the per-cell one only if needed
        try:
            parsed = pd.to_datetime(values, errors="coerce", format=fmt)
        except (TypeError, ValueError, OverflowError):
            continue
        if not (parsed.isna() & values.notna()).any():
            break
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.dt.tz_localize(None)
    if not pd.api.types.is_datetime64_dtype(parsed.dtype):
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    return parsed


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
    "nucc_code": "is not a code of the NUCC Health Care Provider Taxonomy v12.1",
    "icd10_cm": "is not an ICD-10-CM code (letter, digit, digit-or-letter, optional .suffix)",
    "languages": "must be a non-empty '|'-joined list of " + ", ".join(contract.LANGUAGES),
    "focus_codes": "must be '|'-joined 3-character ICD-10 categories such as I50 (or empty)",
    "nonblank": "is empty but a value is required",
    "two_letters": "is not a 2-letter state code",
    "five_digits": "is not a 5-digit postal code",
}

_LANGUAGES = frozenset(contract.LANGUAGES)


# ---------------------------------------------------------------------------------------------
# The tables.
# ---------------------------------------------------------------------------------------------


class Organizations(pa.DataFrameModel):
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
        coerce = True
        strict = True


class Plans(pa.DataFrameModel):
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
        coerce = True
        strict = True


class Patients(pa.DataFrameModel):
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
        coerce = True
        strict = True


class ReferringProviders(pa.DataFrameModel):
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
        coerce = True
        strict = True


class Specialists(pa.DataFrameModel):
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

    @pa.check("specialist_id", name="valid_npi")
    @classmethod
    def _npi(cls, values: Series[str]) -> Series[bool]:
        return npi_mask(values)

    @pa.check("first_name", "last_name", "organization_id", name="nonblank")
    @classmethod
    def _nonblank(cls, values: Series[str]) -> Series[bool]:
        return nonblank_mask(values)

    @pa.check("languages", name="languages")
    @classmethod
    def _languages(cls, values: Series[str]) -> Series[bool]:
        return multi_value_mask(values, _LANGUAGES, allow_empty=False)

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
        coerce = True
        strict = True


class Availability(pa.DataFrameModel):
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
        coerce = True
        strict = True


class Referrals(pa.DataFrameModel):
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
        coerce = True
        strict = True


class Appointments(pa.DataFrameModel):
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
        coerce = True
        strict = True


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

# ---------------------------------------------------------------------------------------------
# Ground-truth tables written next to the dataset for evaluation (light: extra columns allowed).
# ---------------------------------------------------------------------------------------------

_PROBABILITY = {"min_value": 0, "max_value": 1}


class PatientTruth(pa.DataFrameModel):
    """Latent patient traits."""

    patient_id: Series[str] = pa.Field(unique=True)
    no_show_propensity: Series[float]  # a latent score (log-odds scale), not a probability
    transport_barrier: Series[float] = pa.Field(in_range=_PROBABILITY)
    prefers_same_sex: Series[StrictBool]

    class Config:
        name = "truth.patients"
        coerce = True


class SpecialistTruth(pa.DataFrameModel):
    """Latent specialist quality."""

    specialist_id: Series[str] = pa.Field(unique=True)
    true_quality: Series[float]

    class Config:
        name = "truth.specialists"
        coerce = True


class AppointmentTruth(pa.DataFrameModel):
    """True no-show probabilities with and without outreach."""

    appointment_id: Series[str] = pa.Field(unique=True)
    p_no_show_without_outreach: Series[float] = pa.Field(in_range=_PROBABILITY)
    p_no_show_with_outreach: Series[float] = pa.Field(in_range=_PROBABILITY)
    outreach_effect: Series[float] = pa.Field(in_range={"min_value": -1, "max_value": 1})

    class Config:
        name = "truth.appointments"
        coerce = True


class MatchUtilityTruth(pa.DataFrameModel):
    """Per (referral, candidate specialist) utility and its parts; match flags are 0..1."""

    referral_id: Series[str]
    specialist_id: Series[str]
    utility: Series[float]
    focus_match: Series[float] = pa.Field(in_range=_PROBABILITY)
    true_quality: Series[float]
    distance_km: Series[float] = pa.Field(ge=0)
    wait_days: Series[float] = pa.Field(ge=0)
    in_network: Series[float] = pa.Field(in_range=_PROBABILITY)
    accepts_plan: Series[float] = pa.Field(in_range=_PROBABILITY)
    language_match: Series[float] = pa.Field(in_range=_PROBABILITY)
    sex_match: Series[float] = pa.Field(in_range=_PROBABILITY, nullable=True)
    continuity: Series[float] = pa.Field(in_range=_PROBABILITY)
    chosen: Series[StrictBool]

    class Config:
        name = "truth.match_utility"
        coerce = True


TRUTH_SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    "patients": PatientTruth,
    "specialists": SpecialistTruth,
    "appointments": AppointmentTruth,
    "match_utility": MatchUtilityTruth,
}


def schema_for(table: str) -> pa.DataFrameSchema:
    """The pandera DataFrameSchema of a contract table (cached by pandera)."""
    return SCHEMAS[table].to_schema()
