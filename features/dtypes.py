"""Strict pandera data types and the vectorised value checks the schemas share.

``StrictBool``, ``StrictInt`` and ``NaiveDateTime`` register themselves with pandera's pandas
engine on import; ``features.schemas`` uses them as column types. The masks return one bool per
row (True = the cell passes) and are what the models' ``pa.check``s call.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from pandera import dtypes, errors
from pandera.engines import numpy_engine, pandas_engine
from pandera.engines import utils as engine_utils

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


def specialist_id_mask(values: pd.Series) -> pd.Series:
    """Vectorised codes.is_valid_specialist_id: an NPI, optionally with a location suffix."""
    text = values.astype("str")
    parts = text.str.extract(codes.LOCATION_ID_PATTERN.pattern)
    npi_ok = npi_mask(parts[0].where(parts[0].notna(), ""))
    return pd.Series(npi_ok.to_numpy() & parts[0].notna().to_numpy(), index=values.index)


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
