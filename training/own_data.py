"""A data scientist's own appointments file -> the flat per-appointment no-show frame.

`referral-ml train no-show --appointments FILE --mapping mapping.yaml` reads one CSV or Parquet
file of appointments (no other tables), renames its columns to the flat columns of
`features.no_show` with a YAML mapping, maps values, parses timestamps and coerces booleans and
numbers. A row that breaks a rule is never dropped silently: it goes to `rejected` with its line
number, every reason and its original values, and `describe_rejections` reports them.

A mapping (all keys optional; without a mapping the file already uses the flat names)::

    columns:      {AppointmentID: appointment_id, No-show: outcome, ...}  # source -> flat
    values:       {outcome: {"Yes": no_show, "No": attended}}          # per flat column
    timestamps:   {appointment_at: {format: ISO8601, date_only: true, timezone: drop}}
    features:     {numeric: [Diabetes], categorical: [Neighbourhood]}   # extra model inputs

Timestamps: a trailing offset (``Z``, ``+02:00``, ``-0300``) is optional on every value. With
``timezone: drop`` the wall-clock time as written is kept and the offset dropped; with an IANA
name (``America/Sao_Paulo``) values that carry an offset are converted to that zone and values
without one are taken as already local there. A ``date_only`` column keeps the date at midnight;
its outcome becomes known at the end of that day (see `load_own_appointments`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from features import contract
from features.no_show import DERIVED, FLAT_OPTIONAL, FLAT_REQUIRED

LABEL_COLUMNS: Final = ("outcome", "outcome_at")
TARGET_COLUMNS: Final = (*FLAT_REQUIRED, *FLAT_OPTIONAL, *LABEL_COLUMNS)
TIMESTAMP_COLUMNS: Final = ("booked_at", "appointment_at", "outcome_at")
ALLOWED_VALUES: Final[dict[str, tuple[str, ...]]] = {
    "sex": contract.SEXES,
    "language": contract.LANGUAGES,
    "payer_type": contract.PAYER_TYPES,
    "urgency": contract.URGENCIES,
    "referral_type": contract.REFERRAL_TYPES,
    "visit_kind": contract.VISIT_KINDS,
    "outcome": contract.OUTCOMES,
}
NUMERIC_COLUMNS: Final = ("age", "distance_km")
BOOLEAN_COLUMNS: Final = ("text_reminder", "outreach_call")
BOOLEAN_TEXT: Final = {
    "true": True,
    "1": True,
    "1.0": True,
    "yes": True,
    "false": False,
    "0": False,
    "0.0": False,
    "no": False,
}
# Cells that mean "no value" (compared case-insensitively, after stripping spaces).
MISSING_TEXT: Final = ("", "na", "n/a", "#n/a", "null", "none", "nan", "<na>")
AGE_RANGE: Final = (0.0, 120.0)
# Names build_features derives itself: an extra feature under one of them would overwrite it.
DERIVED_FEATURES: Final = DERIVED
# Mappings shipped with the package (e.g. vitoria_no_show.yaml for the public Vitória dataset).
MAPPINGS_DIR: Final = Path(__file__).with_name("mappings")

# A trailing UTC offset after a time of day: "...18:38:08Z", "...10:00+02:00", "...10:00 -0300".
_OFFSET = re.compile(
    r"^(?P<body>.*\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?)\s*(?P<tz>[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"
)
_RACE_WORDS: Final = ("race", "ethnic")


class MappingError(ValueError):
    """A mapping that cannot be used; the message names the key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


class TimestampRule(_Strict):
    """How one timestamp column is written in the source file."""

    format: str = "ISO8601"  # "ISO8601" or a strftime format such as "%d/%m/%Y %H:%M"
    date_only: bool = False  # the source holds dates only (a time, if written, is 00:00)
    timezone: str = "drop"  # "drop" (keep wall-clock time) or an IANA zone to convert to

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value != "ISO8601" and "%" not in value:
            raise ValueError(
                f"'{value}' is neither ISO8601 nor a strftime format such as '%d/%m/%Y %H:%M'"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value == "drop":
            return value
        try:
            ZoneInfo(value)
        except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(
                f"'{value}' is neither 'drop' nor an IANA time zone such as 'America/Sao_Paulo'"
            ) from None
        return value

    @model_validator(mode="after")
    def _date_has_no_zone(self) -> TimestampRule:
        if self.date_only and self.timezone != "drop":
            raise ValueError("a date-only column has no time of day to convert; use timezone: drop")
        return self


class ExtraFeatures(_Strict):
    """Extra source columns used as model inputs under their own names."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()


class NoShowMapping(_Strict):
    """How a clinic's own appointments file maps onto the flat no-show columns."""

    columns: dict[str, str] = Field(default_factory=dict)  # source column -> flat column
    values: dict[str, dict[str, str | None]] = Field(default_factory=dict)  # flat col: src -> ours
    timestamps: dict[str, TimestampRule] = Field(default_factory=dict)
    features: ExtraFeatures = Field(default_factory=ExtraFeatures)

    @model_validator(mode="after")
    def _consistent(self) -> NoShowMapping:
        problems = _mapping_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @classmethod
    def from_dict(cls, data: Any, source: str = "mapping") -> NoShowMapping:
        """Validate a parsed mapping; problems raise MappingError (all of them, one per line)."""
        if data is None:
            raise MappingError(f"{source}: the mapping is empty")
        if not isinstance(data, dict):
            raise MappingError(
                f"{source}: the top level must be a mapping with keys {_keys(cls)}, "
                f"not {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _mapping_error(source, _describe_errors(exc)) from None

    def rule(self, column: str) -> TimestampRule:
        """The timestamp rule of a flat timestamp column (the default when not given)."""
        return self.timestamps.get(column, TimestampRule())


def load_mapping(path: Path) -> NoShowMapping:
    """Read and validate a mapping YAML file; any problem raises MappingError."""
    source = f"mapping {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{source}: cannot read it ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MappingError(f"{source}: not valid YAML{where}: {problem}") from None
    return NoShowMapping.from_dict(data, source=source)


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
# Mapping checks and messages
# ---------------------------------------------------------------------------------------------


def _keys(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _is_race_like(name: str) -> bool:
    lowered = name.lower()
    return name in contract.AUDIT_ONLY_COLUMNS or any(w in lowered for w in _RACE_WORDS)


def _mapping_problems(m: NoShowMapping) -> list[str]:
    """Every inconsistency of a mapping, one sentence each naming its key."""
    problems: list[str] = []
    allowed_targets = ", ".join(TARGET_COLUMNS)
    by_target: dict[str, list[str]] = {}
    for src, target in m.columns.items():
        if target not in TARGET_COLUMNS:
            problems.append(
                f"columns.{src}: '{target}' is not a flat column; allowed: {allowed_targets}"
            )
        by_target.setdefault(target, []).append(src)
    for target, srcs in by_target.items():
        if len(srcs) > 1:
            both = " and ".join(srcs) if len(srcs) == 2 else ", ".join(srcs)
            problems.append(f"columns: {both} all map to '{target}'; map one column to each name")
    value_columns = [c for c in TARGET_COLUMNS if c not in TIMESTAMP_COLUMNS]
    for col, table in m.values.items():
        if col not in value_columns:
            problems.append(
                f"values.{col}: values can be mapped only for {', '.join(value_columns)}"
            )
            continue
        for src, ours in table.items():
            if ours is None:
                continue
            if col in ALLOWED_VALUES and ours not in ALLOWED_VALUES[col]:
                problems.append(
                    f"values.{col}.{src}: '{ours}' is not allowed; allowed: "
                    f"{', '.join(ALLOWED_VALUES[col])} (or null for missing)"
                )
            if col in BOOLEAN_COLUMNS and ours.lower() not in BOOLEAN_TEXT:
                problems.append(
                    f"values.{col}.{src}: '{ours}' is not a boolean; allowed: "
                    "true, false, 1, 0, yes, no (quoted)"
                )
    for col in m.timestamps:
        if col not in TIMESTAMP_COLUMNS:
            problems.append(
                f"timestamps.{col}: not a timestamp column; allowed: {', '.join(TIMESTAMP_COLUMNS)}"
            )
    seen: set[str] = set()
    for kind, names in (("numeric", m.features.numeric), ("categorical", m.features.categorical)):
        for name in names:
            key = f"features.{kind}"
            if _is_race_like(name):
                problems.append(
                    f"{key}: '{name}' looks like race/ethnicity, which is kept for audits only "
                    "and can never be a model input"
                )
            elif name in TARGET_COLUMNS:
                problems.append(
                    f"{key}: '{name}' is a flat column name; map it under columns instead"
                )
            elif name in DERIVED_FEATURES:
                problems.append(
                    f"{key}: '{name}' is the name of a feature computed from the flat columns; "
                    "rename the column in the file"
                )
            if name in seen:
                problems.append(f"{key}: '{name}' is listed more than once")
            seen.add(name)
    return problems


def _allowed_keys(parent: list[str]) -> str:
    if not parent:
        return _keys(NoShowMapping)
    if parent[0] == "timestamps" and len(parent) == 2:
        return _keys(TimestampRule)
    if parent == ["features"]:
        return _keys(ExtraFeatures)
    return "none"


def _describe_errors(exc: ValidationError) -> list[str]:
    """Pydantic errors as sentences naming the mapping key (never a raw dump)."""
    out: list[str] = []
    for err in exc.errors():
        raw_loc = err["loc"]
        is_key = "[key]" in raw_loc
        loc = [str(p) for p in raw_loc if p != "[key]"]
        if is_key:
            loc = loc[:-1]
        where = ".".join(loc)
        kind, value = err["type"], err.get("input")
        if kind == "value_error":
            error = err.get("ctx", {}).get("error", err["msg"])
            for line in str(error).splitlines():
                out.append(f"{where}: {line}" if where else line)
            continue
        prefix = f"{where}: " if where else ""
        what = "key" if is_key else "value"
        if kind == "extra_forbidden":
            out.append(f"{where}: unknown key; allowed keys: {_allowed_keys(loc[:-1])}")
        elif kind == "string_type" and isinstance(value, bool):
            out.append(
                f"{prefix}{what} {value} was read by YAML as a boolean (unquoted Yes/No/On/Off "
                'are booleans in YAML); quote it, e.g. "Yes"'
            )
        elif kind == "string_type":
            out.append(f"{prefix}{what} {value!r} should be text")
        elif kind == "model_type":
            out.append(f"{prefix}expected a mapping with keys {_allowed_keys(loc)}, got {value!r}")
        elif kind == "dict_type":
            out.append(f"{prefix}expected a mapping (key: value lines), got {value!r}")
        elif kind in ("tuple_type", "list_type"):
            out.append(f"{prefix}expected a list of column names, got {value!r}")
        elif kind.startswith("bool"):
            out.append(f"{prefix}expected true or false, got {value!r}")
        else:
            out.append(f"{prefix}{err['msg']} (got {value!r})")
    return out


def _mapping_error(source: str, problems: list[str]) -> MappingError:
    if len(problems) == 1:
        return MappingError(f"{source}: {problems[0]}")
    listed = "\n".join(f"  - {p}" for p in problems)
    return MappingError(f"{source} has {len(problems)} problems:\n{listed}")


def _resolve_sources(raw: pd.DataFrame, mapping: NoShowMapping, path: Path) -> dict[str, str]:
    """Flat column -> source column, after checking every named column is in the file."""
    have = list(map(str, raw.columns))
    listing = ", ".join(have)
    problems = [
        f"columns.{src}: the file has no column '{src}'"
        for src in mapping.columns
        if src not in have
    ]
    for kind, names in (
        ("numeric", mapping.features.numeric),
        ("categorical", mapping.features.categorical),
    ):
        problems += [
            f"features.{kind}: the file has no column '{name}'"
            for name in names
            if name not in have
        ]
    sources = {target: src for src, target in mapping.columns.items()}
    for col in have:
        if col in TARGET_COLUMNS and col not in sources:
            sources[col] = col
    for col in FLAT_REQUIRED:
        if col not in sources:
            problems.append(
                f"columns: nothing maps to the required '{col}' (add 'YourColumn: {col}')"
            )
    for key, cols in (("values", mapping.values), ("timestamps", mapping.timestamps)):
        problems += [
            f"{key}.{col}: no column of the file maps to '{col}'"
            for col in cols
            if col not in sources
        ]
    if problems:
        problems.append(f"the file's columns are: {listing}")
        raise _mapping_error(f"{path.name} with this mapping", problems)
    return {col: sources[col] for col in TARGET_COLUMNS if col in sources}


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
