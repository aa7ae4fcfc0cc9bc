"""A data scientist's own appointments file -> the flat per-appointment no-show frame.

`referral-ml train no-show --appointments FILE --mapping mapping.yaml` reads one CSV or Parquet
file of appointments (no other tables), renames its columns to the flat columns of
`features.no_show` with a YAML mapping, maps values, parses timestamps and coerces booleans and
numbers. A row that breaks a rule is never dropped silently: it goes to `rejected` with its line
number, every reason and its original values, and `describe_rejections` reports them.

The mapping format, and how timestamps and time zones are read, is described in
`training.own_mapping`; `load_mapping` and the mapping types are importable from here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from features.no_show import FLAT_OPTIONAL, FLAT_REQUIRED
from training.own_mapping import (
    ALLOWED_VALUES,
    BOOLEAN_COLUMNS,
    BOOLEAN_TEXT,
    MAPPINGS_DIR,
    TIMESTAMP_COLUMNS,
    MappingError,
    NoShowMapping,
    TimestampRule,
    _resolve_sources,
    load_mapping,
)

__all__ = [
    "MAPPINGS_DIR",
    "MappingError",
    "NoShowMapping",
    "OwnAppointments",
    "TimestampRule",
    "describe_rejections",
    "load_mapping",
    "load_own_appointments",
]

NUMERIC_COLUMNS: Final = ("age", "distance_km")
# Cells that mean "no value" (compared case-insensitively, after stripping spaces).
MISSING_TEXT: Final = ("", "na", "n/a", "#n/a", "null", "none", "nan", "<na>")
AGE_RANGE: Final = (0.0, 120.0)

# A trailing UTC offset after a time of day: "...18:38:08Z", "...10:00+02:00", "...10:00 -0300".
_OFFSET = re.compile(
    r"^(?P<body>.*\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?)\s*(?P<tz>[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"
)


@dataclass
class OwnAppointments:
    """Flat rows that passed every rule, the rejected rows with reasons, and the extras."""

    flat: pd.DataFrame
    rejected: pd.DataFrame  # line, reasons ("; "-joined), then the original source columns
    extra_numeric: list[str]
    extra_categorical: list[str]
    total_rows: int
    line_label: str = field(default="line")  # "line" (CSV, header = 1) or "row" (Parquet, 0-based)


def load_own_appointments(path: Path, mapping: NoShowMapping | None = None) -> OwnAppointments:
    """Read an appointments file (.csv read as text, or .parquet) into flat rows and rejections.

    Rows are rejected (with every reason) for: a missing appointment_id, booked_at or
    appointment_at; an unparseable timestamp; a value that is not allowed after mapping, not a
    boolean or not a number; booked_at after appointment_at (by date when appointment_at is
    date-only); outcome_at before booked_at; an age below 0 or above 120; a repeated
    appointment_id (the second and later ones). Rows without an outcome are kept (upcoming).

    outcome_at, when not mapped or empty for a row with an outcome, is appointment_at; for a
    date-only appointment_at (or outcome_at) it is the end of that day (the next midnight), so
    that a same-day booking never sees that visit's outcome as already known.

    A file-level problem (a mapped or extra column missing from the file, no column for a
    required flat column) raises MappingError. Blank CSV lines are not rows.
    """
    mapping = mapping if mapping is not None else NoShowMapping()
    path = Path(path)
    raw, lines, line_label = _read(path)
    n = len(raw)
    sources = _resolve_sources(raw, mapping, path)
    labels = {col: col if src == col else f"{col} ({src})" for col, src in sources.items()}
    reasons = _Reasons(n)
    out: dict[str, Any] = {}

    def text(col: str) -> pd.Series:
        return _mapped(_text(raw[sources[col]]), mapping.values.get(col))

    # Required identifiers and duplicates.
    ids = text("appointment_id")
    reasons.add(ids.isna(), f"{labels['appointment_id']} is missing")
    dup = ids.notna() & ids.duplicated(keep="first")
    if dup.any():
        first = pd.Series(np.arange(n)).groupby(ids.to_numpy(), dropna=True).transform("min")
        first_line = pd.Series(lines[first[dup].to_numpy(dtype=int)], index=first[dup].index)
        reasons.add(
            dup,
            labels["appointment_id"]
            + " '"
            + ids[dup]
            + f"' is a duplicate of {line_label} "
            + first_line.astype(str),
        )
    out["appointment_id"] = ids

    # Timestamps.
    parsed: dict[str, pd.Series] = {}
    for col in TIMESTAMP_COLUMNS:
        if col not in sources:
            continue
        rule = mapping.rule(col)
        original = raw[sources[col]]
        stamps = _parse_timestamps(original, rule)
        given = _text(original).notna()
        if col in FLAT_REQUIRED:
            reasons.add(~given, f"{labels[col]} is missing")
        bad = given & stamps.isna()
        reasons.add(
            bad,
            labels[col]
            + " '"
            + _text(original)[bad]
            + f"' is not a {'date' if rule.date_only else 'date-time'} ({rule.format})",
        )
        parsed[col] = stamps
    booked, appt = parsed["booked_at"], parsed["appointment_at"]
    appt_date_only = mapping.rule("appointment_at").date_only
    late = (booked.dt.normalize() > appt) if appt_date_only else (booked > appt)
    late = late.fillna(False).astype(bool)
    reasons.add(
        late,
        labels["booked_at"]
        + " '"
        + _text(raw[sources["booked_at"]])[late]
        + "' is after "
        + labels["appointment_at"]
        + " '"
        + _text(raw[sources["appointment_at"]])[late]
        + ("' (compared by date)" if appt_date_only else "'"),
    )
    out["booked_at"], out["appointment_at"] = booked, appt

    # Optional flat columns, in the flat order.
    for col in FLAT_OPTIONAL:
        if col not in sources:
            continue
        values = text(col)
        if col in NUMERIC_COLUMNS:
            out[col] = _numbers(values, labels[col], reasons)
            if col == "age":
                lo, hi = AGE_RANGE
                off = (out[col] < lo) | (out[col] > hi)
                reasons.add(
                    off,
                    labels[col] + " " + values[off] + f" is outside {lo:.0f}-{hi:.0f}",
                )
        elif col in BOOLEAN_COLUMNS:
            out[col] = _booleans(values, labels[col], reasons)
        else:
            _check_allowed(values, col, labels[col], mapping, reasons)
            out[col] = values

    # Labels: outcome (missing = upcoming) and when it became known.
    if "outcome" in sources:
        outcome = text("outcome")
        _check_allowed(outcome, "outcome", labels["outcome"], mapping, reasons)
    else:
        outcome = pd.Series(np.nan, index=raw.index, dtype="str")
    known_at = appt + pd.Timedelta(days=1) if appt_date_only else appt
    outcome_at = known_at.where(outcome.notna())
    if "outcome_at" in parsed:
        given_at = parsed["outcome_at"]
        if mapping.rule("outcome_at").date_only:
            given_at = given_at + pd.Timedelta(days=1)
        before = (given_at < booked).fillna(False).astype(bool)
        reasons.add(
            before,
            labels["outcome_at"]
            + " '"
            + _text(raw[sources["outcome_at"]])[before]
            + "' is before "
            + labels["booked_at"]
            + " '"
            + _text(raw[sources["booked_at"]])[before]
            + "'",
        )
        outcome_at = given_at.where(given_at.notna() | outcome.isna(), outcome_at)
    out["outcome"], out["outcome_at"] = outcome, outcome_at

    # Extra model inputs, under their source names.
    for name in mapping.features.numeric:
        out[name] = _numbers(_text(raw[name]), name, reasons)
    for name in mapping.features.categorical:
        out[name] = _text(raw[name])

    rejected_mask = reasons.mask
    keep = ~rejected_mask
    flat = pd.DataFrame(out, index=raw.index).loc[keep].reset_index(drop=True)
    rejected = raw.loc[rejected_mask].copy()
    rejected.insert(0, _free_name("reasons", rejected), reasons.text[rejected_mask])
    rejected.insert(0, _free_name("line", rejected), lines[rejected_mask])
    return OwnAppointments(
        flat=flat,
        rejected=rejected.reset_index(drop=True),
        extra_numeric=list(mapping.features.numeric),
        extra_categorical=list(mapping.features.categorical),
        total_rows=n,
        line_label=line_label,
    )


def describe_rejections(
    result: OwnAppointments, rejected_path: Path | None, examples: int = 5
) -> str:
    """Write every rejected row to rejected_path (CSV) and return a short summary with examples."""
    n, total = len(result.rejected), result.total_rows
    head = f"{n:,} of {total:,} rows rejected"
    if rejected_path is not None:
        rejected_path = Path(rejected_path)
        rejected_path.parent.mkdir(parents=True, exist_ok=True)
        result.rejected.to_csv(rejected_path, index=False)
        head += f" (written to {rejected_path})"
    if n == 0:
        return head + "."
    line_col, reason_col = result.rejected.columns[:2]
    shown = result.rejected.head(max(examples, 0))
    parts = [head + "; first examples:"]
    parts += [
        f"  {result.line_label} {line}: {why}"
        for line, why in zip(shown[line_col], shown[reason_col], strict=True)
    ]
    if n > len(shown):
        parts.append(f"  ... and {n - len(shown):,} more")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Reading and coercion (vectorised)
# ---------------------------------------------------------------------------------------------


def _read(path: Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Source rows (CSV all as text), their line numbers and what the numbers are called."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        raw = pd.read_parquet(path)
        raw.columns = [str(c).strip() for c in raw.columns]
        return raw.reset_index(drop=True), np.arange(len(raw)), "row"
    if not name.endswith((".csv", ".csv.gz", ".tsv")):
        raise ValueError(f"{path}: expected a .csv or .parquet appointments file")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        raw = _read_csv(path, "utf-8-sig")
    except UnicodeDecodeError:  # not UTF-8: latin-1 reads any byte (common in older exports)
        raw = _read_csv(path, "latin-1")
    raw.columns = [str(c).strip() for c in raw.columns]
    lines = np.arange(len(raw)) + 2
    blank = raw.isna().all(axis=1).to_numpy()
    raw = raw.loc[~blank].reset_index(drop=True)
    return raw, lines[~blank], "line"


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    return pd.read_csv(
        path,
        dtype=str,
        sep=_separator(path, encoding),
        skip_blank_lines=False,  # keeps data row i on line i + 2
        keep_default_na=False,  # original text kept for the rejected rows; see MISSING_TEXT
        na_values=[""],
        encoding=encoding,
    )


def _separator(path: Path, encoding: str) -> str:
    """',' unless the header line clearly uses ';' or tabs (common in European exports)."""
    if path.name.lower().endswith(".gz"):
        return ","
    with path.open(encoding=encoding) as handle:
        header = handle.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    return max(counts, key=lambda s: counts[s]) if max(counts.values()) else ","


def _text(series: pd.Series) -> pd.Series:
    """Cells as stripped text (MISSING_TEXT -> missing), integral floats without '.0', true/false."""
    s = series
    if pd.api.types.is_bool_dtype(s.dtype):
        s = s.map({True: "true", False: "false"})
    elif pd.api.types.is_float_dtype(s.dtype):
        v = s.to_numpy(dtype=float, na_value=np.nan)
        whole = np.isfinite(v) & (np.abs(v) < 2.0**53)
        whole[whole] = v[whole] == np.round(v[whole])
        ints = np.where(whole, v, 0.0).astype("int64").astype(str)
        s = pd.Series(np.where(whole, ints, v.astype(str)), index=s.index).where(~np.isnan(v))
    text = s.astype("str").str.strip()
    return text.mask(text.str.lower().isin(MISSING_TEXT))


def _mapped(text: pd.Series, table: dict[str, str | None] | None) -> pd.Series:
    """Apply a values table (source -> ours; null -> missing); unlisted values pass through."""
    if not table:
        return text
    listed = text.isin(list(table))
    return text.map(table).where(listed, text).astype("str")


def _check_allowed(
    values: pd.Series, col: str, label: str, mapping: NoShowMapping, reasons: _Reasons
) -> None:
    allowed = ALLOWED_VALUES.get(col)
    if allowed is None:
        return
    bad = values.notna() & ~values.isin(allowed)
    hint = ", ".join(allowed)
    table = mapping.values.get(col)
    if table:
        hint += f", or a source value mapped under values.{col} ({', '.join(table)})"
    reasons.add(bad, label + " '" + values[bad] + f"' is not allowed; allowed: {hint}")


def _numbers(values: pd.Series, label: str, reasons: _Reasons) -> pd.Series:
    number = pd.to_numeric(values, errors="coerce").astype(float)
    number = number.where(np.isfinite(number))
    bad = values.notna() & number.isna()
    reasons.add(bad, label + " '" + values[bad] + "' is not a number")
    return number


def _booleans(values: pd.Series, label: str, reasons: _Reasons) -> pd.Series:
    flags = values.str.lower().map(BOOLEAN_TEXT)
    bad = values.notna() & flags.isna()
    reasons.add(bad, label + " '" + values[bad] + "' is not a boolean (true/false, 1/0, yes/no)")
    return flags.astype("boolean")


def _parse_timestamps(series: pd.Series, rule: TimestampRule) -> pd.Series:
    """Naive wall-clock timestamps (NaT where missing or unparseable) under a TimestampRule."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        stamps = series
        if isinstance(stamps.dtype, pd.DatetimeTZDtype):
            if rule.timezone != "drop":
                stamps = stamps.dt.tz_convert(rule.timezone)
            stamps = stamps.dt.tz_localize(None)
    else:
        text = _text(series)
        parts = text.str.extract(_OFFSET)
        has_offset = parts["tz"].notna()
        body = parts["body"].where(has_offset, text)
        fmt = rule.format
        if fmt != "ISO8601":
            fmt = re.sub(r"\s*(%z|%Z|Z)$", "", fmt)
        stamps = pd.to_datetime(body, format=fmt, errors="coerce")
        if rule.timezone != "drop" and has_offset.any():
            minutes = _offset_minutes(parts["tz"][has_offset])
            utc = stamps[has_offset] - pd.to_timedelta(minutes, unit="min").to_numpy()
            local = utc.dt.tz_localize("UTC").dt.tz_convert(rule.timezone).dt.tz_localize(None)
            stamps = stamps.copy()
            stamps[has_offset] = local
    if rule.date_only:
        stamps = stamps.dt.normalize()
    return stamps


def _offset_minutes(tz: pd.Series) -> np.ndarray:
    """'Z' / '+02:00' / '-0300' / '+05' -> signed minutes east of UTC."""
    digits = tz.str.replace(r"[^0-9]", "", regex=True).str.pad(4, side="right", fillchar="0")
    hours = pd.to_numeric(digits.str[:2], errors="coerce").fillna(0).to_numpy(dtype=float)
    mins = pd.to_numeric(digits.str[2:4], errors="coerce").fillna(0).to_numpy(dtype=float)
    sign = np.where(tz.str.startswith("-").to_numpy(dtype=bool), -1.0, 1.0)
    return sign * (hours * 60.0 + mins)


def _free_name(name: str, frame: pd.DataFrame) -> str:
    while name in frame.columns:
        name = f"_{name}"
    return name


class _Reasons:
    """Per-row reasons, accumulated rule by rule in order ('; '-joined)."""

    def __init__(self, n: int) -> None:
        self._text = np.full(n, "", dtype=object)

    def add(self, mask: pd.Series | np.ndarray, message: str | pd.Series) -> None:
        m = np.asarray(mask, dtype=bool)
        if not m.any():
            return
        if isinstance(message, pd.Series):
            msg = message.astype(object).to_numpy()
        else:
            msg = np.full(int(m.sum()), message, dtype=object)
        current = self._text[m]
        self._text[m] = np.where(current == "", msg, current + "; " + msg)

    @property
    def mask(self) -> np.ndarray:
        return self._text != ""

    @property
    def text(self) -> np.ndarray:
        return self._text
