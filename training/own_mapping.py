"""The YAML mapping from a clinic's own appointments file onto the flat no-show columns.

`training.own_data` reads the file with it; this module defines the mapping, validates it and
turns every problem into a `MappingError` whose message names the key and what is allowed.

A mapping (all keys optional; without a mapping the file already uses the flat names)::

    columns:      {AppointmentID: appointment_id, No-show: outcome, ...}  # source -> flat
    values:       {outcome: {"Yes": no_show, "No": attended}}          # per flat column
    timestamps:   {appointment_at: {format: ISO8601, date_only: true, timezone: drop}}
    features:     {numeric: [Diabetes], categorical: [Neighbourhood]}   # extra model inputs

Timestamps: a trailing offset (``Z``, ``+02:00``, ``-0300``) is optional on every value. With
``timezone: drop`` the wall-clock time as written is kept and the offset dropped; with an IANA
name (``America/Sao_Paulo``) values that carry an offset are converted to that zone and values
without one are taken as already local there. A ``date_only`` column keeps the date at midnight;
its outcome becomes known at the end of that day (see `training.own_data.load_own_appointments`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

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
# Names build_features derives itself: an extra feature under one of them would overwrite it.
DERIVED_FEATURES: Final = DERIVED
# Mappings shipped with the package (e.g. vitoria_no_show.yaml for the public Vitória dataset).
MAPPINGS_DIR: Final = Path(__file__).with_name("mappings")
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
