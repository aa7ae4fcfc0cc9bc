"""Validate a dataset folder against the data contract (the `referral-ml validate` command).

Each table is checked by its pandera schema (``features.schemas``), then the tables are checked
against each other: foreign keys, appointment/referral/slot consistency, double booking and
time order. Every problem becomes a ``Violation`` naming the table, column and 0-based row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_
import pyarrow.compute as pc

from features import contract
from features.schemas import (
    CHECK_DESCRIPTIONS,
    ROW_CHECKS,
    SCHEMAS,
    TRUTH_SCHEMAS,
    naive_datetimes,
)

MAX_STORED_PER_CHECK = 50
"""Violations kept per (table, column, check); the counts stay exact."""

MAX_SHOWN_CHARS = 40
TRUTH_FOLDER = "truth"

CountKey = tuple[str, str | None, str]


class DatasetReadError(Exception):
    """A table file exists but cannot be read (corrupt Parquet, undecodable CSV ...)."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (table, column, 0-based row or None) and why, in a sentence."""

    table: str
    column: str | None
    row: int | None
    reason: str
    check: str = ""

    def location(self) -> str:
        """'table.column row N' (or less when the problem is not about one row or column)."""
        where = self.table if self.column is None else f"{self.table}.{self.column}"
        return where if self.row is None else f"{where} row {self.row}"

    def __str__(self) -> str:
        return f"{self.location()}: {self.reason}"


@dataclass
class ValidationReport:
    """The outcome of validating a dataset: stored violations, exact counts and table sizes."""

    violations: list[Violation] = field(default_factory=list)
    counts: dict[CountKey, int] = field(default_factory=dict)
    row_counts: dict[str, int] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when nothing was violated."""
        return not self.counts

    @property
    def total(self) -> int:
        """The true number of violations, including those not stored."""
        return sum(self.counts.values())

    def add(self, violation: Violation) -> None:
        """Record one violation (stored unless its check is already at the cap)."""
        key = (violation.table, violation.column, violation.check)
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + 1
        if seen < MAX_STORED_PER_CHECK:
            self.violations.append(violation)

    def add_rows(
        self,
        table: str,
        column: str | None,
        check: str,
        rows: Iterable[int] | np.ndarray,
        reason: Callable[[int], str],
    ) -> None:
        """Record a violation for each row; only the first rows up to the cap get a sentence."""
        rows = np.asarray(rows if isinstance(rows, np.ndarray) else list(rows), dtype=np.int64)
        if not len(rows):
            return
        key = (table, column, check)
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + len(rows)
        for row in rows[: max(0, MAX_STORED_PER_CHECK - seen)]:
            self.violations.append(Violation(table, column, int(row), reason(int(row)), check))

    def add_mask(
        self,
        table: str,
        column: str | None,
        check: str,
        mask: pd.Series | np.ndarray,
        reason: Callable[[int], str],
    ) -> None:
        """Record a violation for each row where ``mask`` is True."""
        values = mask.to_numpy(dtype=bool, na_value=False) if isinstance(mask, pd.Series) else mask
        self.add_rows(table, column, check, np.flatnonzero(values), reason)

    def merge(self, other: ValidationReport) -> None:
        """Fold another report's violations and counts into this one (the cap still holds)."""
        stored = {key: self.shown_count(key) for key in other.counts}
        for v in other.violations:
            key = (v.table, v.column, v.check)
            if stored[key] < MAX_STORED_PER_CHECK:
                self.violations.append(v)
                stored[key] += 1
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n

    def shown_count(self, key: CountKey) -> int:
        """How many violations of a (table, column, check) are stored."""
        return min(self.counts.get(key, 0), MAX_STORED_PER_CHECK)

    def lines(self) -> list[str]:
        """Every stored violation as 'table.column row N: reason', grouped by table, with totals."""
        out: list[str] = []
        order = {name: i for i, name in enumerate(contract.TABLES)}
        by_table: dict[str, list[Violation]] = {}
        for v in self.violations:
            by_table.setdefault(v.table, []).append(v)
        for table in sorted(by_table, key=lambda t: (order.get(t, len(order)), t)):
            total = sum(n for (t, _, _), n in self.counts.items() if t == table)
            out.append(f"{table}: {total:,} violation{'s' if total != 1 else ''}")
            columns = _column_order(table)
            table_violations = sorted(
                by_table[table],
                key=lambda v: (
                    columns.get(v.column, -1 if v.column is None else len(columns)),
                    v.column or "",
                    v.check,
                    -1 if v.row is None else v.row,
                ),
            )
            previous: CountKey | None = None
            for v in table_violations:
                key = (v.table, v.column, v.check)
                if previous is not None and key != previous:
                    out.extend(self._more_line(previous))
                previous = key
                out.append(f"  {v}")
            if previous is not None:
                out.extend(self._more_line(previous))
        tables = sorted({t for t, _, _ in self.counts}, key=lambda t: order.get(t, len(order)))
        per_table = ", ".join(
            f"{t} {sum(n for (u, _, _), n in self.counts.items() if u == t):,}" for t in tables
        )
        plural = "s" if self.total != 1 else ""
        out.append(f"{self.total:,} violation{plural} in total ({per_table}).")
        return out

    def _more_line(self, key: CountKey) -> list[str]:
        hidden = self.counts.get(key, 0) - self.shown_count(key)
        if hidden <= 0:
            return []
        table, column, check = key
        where = table if column is None else f"{table}.{column}"
        return [f"  ... and {hidden:,} more {where} ({check}) violations not shown"]

    def summary(self) -> str:
        """A one-screen overview: rows per table, date ranges, no-show rate, referral statuses."""
        lines = ["Dataset satisfies the contract." if self.ok else "Dataset has violations."]
        lines.append("")
        lines.append("Rows per table")
        for table in contract.TABLES:
            n = self.row_counts.get(table)
            lines.append(f"  {table:<22}{'missing' if n is None else f'{n:>12,}'}")
        truth = [t for t in self.row_counts if t.startswith("truth.")]
        if truth:
            rows = sum(self.row_counts[t] for t in truth)
            lines.append(f"  {'truth/':<22}{rows:>12,}  ({len(truth)} tables)")
        referrals = self.tables.get("referrals")
        appointments = self.tables.get("appointments")
        lines.append("")
        if referrals is not None and "created_at" in referrals:
            lines.append(f"Referrals created       {_date_range(referrals['created_at'])}")
        if appointments is not None and "appointment_at" in appointments:
            lines.append(f"Appointments at         {_date_range(appointments['appointment_at'])}")
        if appointments is not None and "outcome" in appointments:
            outcome = appointments["outcome"]
            seen = int(outcome.isin(("attended", "no_show")).sum())
            no_show = int(outcome.eq("no_show").sum())
            rate = f"{no_show / seen:.1%}" if seen else "n/a"
            lines.append(
                f"No-show rate            {rate} ({no_show:,} of {seen:,} attended/no-show visits)"
            )
        if referrals is not None and "status" in referrals and len(referrals):
            shares = referrals["status"].value_counts(normalize=True)
            parts = [f"{s} {shares.get(s, 0.0):.1%}" for s in contract.REFERRAL_STATUSES]
            lines.append("Referral status         " + ", ".join(parts[:3]))
            lines.append("                        " + ", ".join(parts[3:]))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------


def load_dataset(directory: Path) -> dict[str, pd.DataFrame]:
    """Read '<table>.parquet' (preferred) or '<table>.csv' for each contract table that exists."""
    return _load(Path(directory), contract.TABLES, SCHEMAS)


def load_truth_tables(directory: Path) -> dict[str, pd.DataFrame]:
    """Read the ground-truth tables present in a dataset's 'truth/' folder (none when absent)."""
    truth = Path(directory) / TRUTH_FOLDER
    return _load(truth, contract.TRUTH_TABLES, TRUTH_SCHEMAS, prefix=f"{TRUTH_FOLDER}/")


def _load(
    directory: Path,
    names: Iterable[str],
    models: Mapping[str, type[pa.DataFrameModel]],
    prefix: str = "",
) -> dict[str, pd.DataFrame]:
    tables: dict[str, pd.DataFrame] = {}
    for table in names:
        parquet, csv = directory / f"{table}.parquet", directory / f"{table}.csv"
        try:
            if parquet.is_file():
                tables[table] = pd.read_parquet(parquet)
            elif csv.is_file():
                tables[table] = read_csv_table(csv, models[table])
        except Exception as exc:  # pyarrow, pandas and codec errors share no base class
            name = (parquet if parquet.is_file() else csv).name
            raise DatasetReadError(f"cannot read {prefix}{name}: {type(exc).__name__}") from exc
    return tables


def read_csv_table(path: Path, model: str | type[pa.DataFrameModel]) -> pd.DataFrame:
    """Read a CSV table as text; empty cells become null except where '' is a valid value."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    schema = (SCHEMAS[model] if isinstance(model, str) else model).to_schema()
    for name, column in schema.columns.items():
        if name not in df.columns:
            continue
        keeps_empty = str(column.dtype).startswith("str") and not column.nullable
        if not keeps_empty:
            df[name] = df[name].where(df[name] != "", np.nan)
    return df


# ---------------------------------------------------------------------------------------------
# Checking.
# ---------------------------------------------------------------------------------------------


def validate_tables(tables: Mapping[str, pd.DataFrame]) -> ValidationReport:
    """Check every contract table with its schema, then the tables against each other."""
    report = ValidationReport()
    loose: dict[str, pd.DataFrame] = {}
    for table in contract.TABLES:
        if table not in tables:
            report.add(
                Violation(
                    table,
                    None,
                    None,
                    f"the table is missing (expected {table}.parquet or {table}.csv)",
                    "missing_table",
                )
            )
            continue
        df = tables[table].reset_index(drop=True)
        report.row_counts[table] = len(df)
        validated = _schema_violations(report, table, df, SCHEMAS[table])
        loose[table] = validated if validated is not None else _loosely_typed(table, df)
    _cross_table_violations(report, loose)
    report.tables = loose
    return report


def validate_truth_tables(tables: Mapping[str, pd.DataFrame]) -> ValidationReport:
    """Check the ground-truth tables (contract.TRUTH_TABLES) that are present; no cross checks."""
    report = ValidationReport()
    for table, model in TRUTH_SCHEMAS.items():
        if table in tables:
            df = tables[table].reset_index(drop=True)
            report.row_counts[f"truth.{table}"] = len(df)
            _schema_violations(report, f"truth.{table}", df, model, loose=False)
    return report


def validate_directory(directory: Path) -> ValidationReport:
    """Validate a dataset folder and its truth/ tables if any (DatasetReadError if unreadable)."""
    report = validate_tables(load_dataset(Path(directory)))
    truth = load_truth_tables(Path(directory))
    if truth:
        truth_report = validate_truth_tables(truth)
        report.merge(truth_report)
        report.row_counts.update(truth_report.row_counts)
    return report


def main_validate(directory: Path) -> int:
    """Print violations, or the summary when clean; return 0 clean, 1 violations, 2 unreadable."""
    directory = Path(directory)
    if not directory.is_dir():
        print(f"error: {directory} is not a folder")
        return 2
    found = [
        t
        for t in contract.TABLES
        if (directory / f"{t}.parquet").is_file() or (directory / f"{t}.csv").is_file()
    ]
    if not found:
        print(f"error: {directory} holds none of the contract's table files (*.parquet / *.csv)")
        return 2
    try:
        report = validate_directory(directory)
    except DatasetReadError as exc:
        print(f"error: {exc}")
        return 2
    if report.ok:
        print(report.summary())
        return 0
    print("\n".join(report.lines()))
    return 1


# ---------------------------------------------------------------------------------------------
# Schema failures -> violations.
# ---------------------------------------------------------------------------------------------

_TYPE_WORDS = {
    "int64": "is not a whole number",
    "bool": "is not true or false",
    "float64": "is not a number",
    "datetime64[ns]": "is not a date-time without time zone (e.g. 2024-03-01 09:30)",
}


def _schema_violations(
    report: ValidationReport,
    table: str,
    df: pd.DataFrame,
    model: type[pa.DataFrameModel],
    *,
    loose: bool = True,
) -> pd.DataFrame | None:
    """Run one pandera model lazily; return the coerced table, or None after recording failures.

    Row-check sentences quote the cells of the loosely typed table (``loose``) or the raw one.
    """
    schema = model.to_schema()
    try:
        return schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        failures = exc.failure_cases
    cells = _loosely_typed(table, df) if loose else df
    failures = failures.assign(
        check_number=failures["check_number"].astype(object),
        index=failures["index"].astype(object),
    )
    columns_ctx = failures[failures["schema_context"] == "Column"]
    frame_ctx = failures[failures["schema_context"] != "Column"]
    is_type = columns_ctx["check"].astype(str).str.match(r"(coerce_dtype|dtype)\(")
    type_failed = set(columns_ctx.loc[is_type, "column"].astype(str))
    for column, group in columns_ctx[is_type].groupby("column", sort=False):
        _type_violations(report, table, schema, str(column), group)
    value_groups = columns_ctx[~is_type].groupby(
        ["column", "check", "check_number"], dropna=False, sort=False
    )
    for (column, check, number), group in value_groups:
        if str(column) in type_failed and group["index"].isna().all():
            continue  # a value check that could not run on the uncoerced column
        _column_violations(report, table, schema, str(column), str(check), number, group)
    for (check, number), group in frame_ctx.groupby(["check", "check_number"], dropna=False):
        _table_violations(report, table, schema, cells, str(check), number, group)
    return None


def _type_violations(
    report: ValidationReport,
    table: str,
    schema: pa.DataFrameSchema,
    column: str,
    failures: pd.DataFrame,
) -> None:
    dtype = str(schema.columns[column].dtype)
    words = _TYPE_WORDS.get(dtype, "is not text")
    rows = failures[failures["index"].notna() & failures["failure_case"].notna()]
    rows = rows.drop_duplicates("index")
    if len(rows):
        values = dict(zip(rows["index"].astype(int), rows["failure_case"], strict=True))
        report.add_rows(
            table,
            column,
            "type",
            sorted(values),
            lambda r: f"{column} {_show(values[r])} {words}",
        )
    elif failures["index"].isna().all() and failures["failure_case"].notna().any():
        report.add(Violation(table, column, None, f"{column} has the wrong type: {words}", "type"))


def _column_violations(
    report: ValidationReport,
    table: str,
    schema: pa.DataFrameSchema,
    column: str,
    check: str,
    number: Any,
    group: pd.DataFrame,
) -> None:
    with_rows = group[group["index"].notna()].drop_duplicates("index")
    if check == "not_nullable":
        key, phrase = "not_null", None
    elif check == "field_uniqueness":
        key, phrase = "unique", "appears in more than one row; it must be unique"
    else:
        checks = schema.columns[column].checks if column in schema.columns else []
        number_ok = number is not None and not _isnan(number) and int(number) < len(checks)
        chk = checks[int(number)] if number_ok else None
        key = chk.name if chk is not None and chk.name else check
        phrase = _describe(chk) if chk is not None else f"fails the check {check}"
    if not len(with_rows):
        report.add(Violation(table, column, None, f"{column} {phrase or 'is invalid'}", key))
        return
    values = dict(zip(with_rows["index"].astype(int), with_rows["failure_case"], strict=True))
    if key == "not_null":
        report.add_rows(
            table, column, key, sorted(values), lambda r: f"{column} is empty but is required"
        )
    else:
        report.add_rows(
            table, column, key, sorted(values), lambda r: f"{column} {_show(values[r])} {phrase}"
        )


def _table_violations(
    report: ValidationReport,
    table: str,
    schema: pa.DataFrameSchema,
    df: pd.DataFrame,
    check: str,
    number: Any,
    group: pd.DataFrame,
) -> None:
    if check == "column_in_schema":
        for name in group["failure_case"].astype(str):
            report.add(
                Violation(
                    table,
                    name,
                    None,
                    f"column '{_clip(name)}' is not part of the contract's {table} table",
                    "unknown_column",
                )
            )
        return
    if check == "column_in_dataframe":
        for name in group["failure_case"].astype(str):
            report.add(
                Violation(table, name, None, f"column '{_clip(name)}' is missing", "missing_column")
            )
        return
    number_ok = number is not None and not _isnan(number) and int(number) < len(schema.checks)
    name = schema.checks[int(number)].name if number_ok else None
    row_check = ROW_CHECKS.get(name or "")
    rows = group["index"].dropna().astype(int).unique()
    if row_check is None or not len(rows):
        report.add(Violation(table, None, None, f"fails the check {_clip(check)}", name or check))
        return
    rows = np.sort(rows)
    fields = [f for f in row_check.fields if f in df.columns]
    cells = df.loc[rows[:MAX_STORED_PER_CHECK], fields]  # only stored rows get a sentence
    report.add_rows(
        table,
        row_check.column,
        str(name),
        rows,
        lambda r: row_check.template.format(**{f: _show(cells.at[r, f]) for f in fields}),
    )


def _describe(check: Any) -> str:
    """What a pandera check allows, as the tail of a sentence ('is not one of a, b')."""
    name = check.name
    stats = check.statistics or {}
    if name in CHECK_DESCRIPTIONS:
        return CHECK_DESCRIPTIONS[name]
    if name == "isin":
        return "is not one of " + ", ".join(str(v) for v in stats.get("allowed_values", ()))
    if name == "in_range":
        return f"is outside the range {stats.get('min_value')}..{stats.get('max_value')}"
    if name == "greater_than_or_equal_to":
        return f"is below the minimum {stats.get('min_value')}"
    if name == "less_than_or_equal_to":
        return f"is above the maximum {stats.get('max_value')}"
    return f"fails the check {name}"


# ---------------------------------------------------------------------------------------------
# Cross-table checks (vectorised; tables are loosely typed so one bad cell does not stop them).
# ---------------------------------------------------------------------------------------------

_FOREIGN_KEYS: tuple[tuple[str, str, str, str], ...] = (
    ("patients", "insurance_plan_id", "plans", "insurance_plan_id"),
    ("referring_providers", "organization_id", "organizations", "organization_id"),
    ("specialists", "organization_id", "organizations", "organization_id"),
    ("availability", "specialist_id", "specialists", "specialist_id"),
    ("availability", "appointment_id", "appointments", "appointment_id"),
    ("referrals", "patient_id", "patients", "patient_id"),
    ("referrals", "referring_provider_id", "referring_providers", "provider_id"),
    ("referrals", "specialist_id", "specialists", "specialist_id"),
    ("appointments", "referral_id", "referrals", "referral_id"),
    ("appointments", "patient_id", "patients", "patient_id"),
    ("appointments", "specialist_id", "specialists", "specialist_id"),
    ("appointments", "slot_id", "availability", "slot_id"),
)


def _loosely_typed(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """The table with text and date-time columns converted; unconvertible cells become null."""
    schema = SCHEMAS[table].to_schema()
    out = {}
    for name in df.columns:
        col = df[name]
        column = schema.columns.get(name)
        dtype = str(column.dtype) if column is not None else ""
        if dtype.startswith("datetime"):
            out[name] = naive_datetimes(col)
        elif dtype.startswith("str") or dtype.startswith("string"):
            out[name] = col if col.dtype == "str" else col.astype("str")
        else:
            out[name] = col
    return pd.DataFrame(out, index=df.index)


def _positions(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """For each value, the row of its first match in ``keys`` (-1 when absent or null); hashed."""
    found = pc.index_in(pa_.array(values, from_pandas=True), value_set=pa_.array(keys.dropna()))
    return pc.fill_null(found, -1).to_numpy().astype(np.int64)


def _lookup(values: pd.Series, parent: pd.DataFrame, key: str, column: str) -> pd.Series:
    """parent[column] of the row whose ``key`` equals each value (null where there is none)."""
    keys = parent[key]
    pos = _positions(values, keys)
    # keys.dropna() shifted the rows; map the positions back to rows of the parent.
    rows = np.flatnonzero(keys.notna().to_numpy())
    found = pos >= 0
    taken = parent[column].iloc[rows[np.where(found, pos, 0)]] if len(rows) else None
    if taken is None:
        return pd.Series(pd.NA, index=values.index, dtype=object)
    out = pd.Series(taken.to_numpy(), index=values.index, dtype=taken.dtype)
    return out.where(found)


def _no_match(values: pd.Series, column: str, parent: str, key: str) -> Callable[[int], str]:
    """The sentence for a foreign key whose value names no row of the parent table."""
    return lambda r: f"{column} {_show(values.iat[r])} does not match any {key} in {parent}"


def _cross_table_violations(report: ValidationReport, t: dict[str, pd.DataFrame]) -> None:
    for child, column, parent, key in _FOREIGN_KEYS:
        if child in t and parent in t and column in t[child] and key in t[parent]:
            values = t[child][column]
            bad = values.notna().to_numpy() & (_positions(values, t[parent][key]) < 0)
            report.add_mask(
                child,
                column,
                "foreign_key",
                bad,
                _no_match(values, column, parent, key),
            )
    _accepted_plans(report, t)
    appointments = t.get("appointments")
    if appointments is None:
        return
    _appointments_vs_referrals(report, appointments, t.get("referrals"))
    _appointments_vs_slots(report, appointments, t.get("availability"))


def _accepted_plans(report: ValidationReport, t: dict[str, pd.DataFrame]) -> None:
    specialists, plans = t.get("specialists"), t.get("plans")
    if specialists is None or plans is None:
        return
    if "accepted_plan_ids" not in specialists or "insurance_plan_id" not in plans:
        return
    parts = specialists["accepted_plan_ids"].str.split(contract.SEP).explode()
    parts = parts[parts.notna() & parts.ne("")].astype("str")
    unknown = parts[_positions(parts, plans["insurance_plan_id"]) < 0]
    if not len(unknown):
        return
    first_unknown = unknown.groupby(level=0).first()
    report.add_rows(
        "specialists",
        "accepted_plan_ids",
        "foreign_key",
        first_unknown.index.to_numpy(),
        lambda r: (
            f"accepted_plan_ids names {_show(first_unknown[r])}, which is not an "
            "insurance_plan_id in plans"
        ),
    )


def _differs(mine: pd.Series, theirs: pd.Series) -> np.ndarray:
    """True where both sides are present and unequal."""
    both = mine.notna().to_numpy() & theirs.notna().to_numpy()
    out = np.zeros(len(mine), dtype=bool)
    out[both] = mine.to_numpy()[both] != theirs.to_numpy()[both]
    return out


def _appointments_vs_referrals(
    report: ValidationReport, appointments: pd.DataFrame, referrals: pd.DataFrame | None
) -> None:
    if referrals is None or "referral_id" not in appointments or "referral_id" not in referrals:
        return
    referral_id = appointments["referral_id"]
    if "patient_id" in appointments and "patient_id" in referrals:
        theirs = _lookup(referral_id, referrals, "referral_id", "patient_id")
        mine = appointments["patient_id"]
        report.add_mask(
            "appointments",
            "patient_id",
            "matches_referral",
            _differs(mine, theirs),
            lambda r: (
                f"patient_id {_show(mine.iat[r])} differs from the patient_id "
                f"{_show(theirs.iat[r])} of its referral {_show(referral_id.iat[r])}"
            ),
        )
    if "booked_at" in appointments and "created_at" in referrals:
        created = _lookup(referral_id, referrals, "referral_id", "created_at")
        booked = appointments["booked_at"]
        bad = (booked < created).to_numpy(dtype=bool, na_value=False)
        report.add_mask(
            "appointments",
            "booked_at",
            "after_referral",
            bad,
            lambda r: (
                f"booked_at {_show(booked.iat[r])} is before its referral "
                f"{_show(referral_id.iat[r])} was created ({_show(created.iat[r])})"
            ),
        )


def _appointments_vs_slots(
    report: ValidationReport, appointments: pd.DataFrame, slots: pd.DataFrame | None
) -> None:
    if "slot_id" not in appointments:
        return
    slot_id = appointments["slot_id"]
    taken = (slot_id.notna() & slot_id.duplicated(keep="first")).to_numpy().copy()
    if taken.any() and slots is not None and "slot_id" in slots:
        taken &= _positions(slot_id, slots["slot_id"]) >= 0  # unknown slots: foreign_key says so
    if taken.any():
        first_holder = _positions(slot_id, slot_id)
        report.add_mask(
            "appointments",
            "slot_id",
            "double_booked",
            taken,
            lambda r: (
                f"slot_id {_show(slot_id.iat[r])} is already booked by row "
                f"{first_holder[r]}; a slot holds one appointment"
            ),
        )
    if slots is None or "slot_id" not in slots:
        return
    if "appointment_at" in appointments and "start" in slots:
        start = _lookup(slot_id, slots, "slot_id", "start")
        at = appointments["appointment_at"]
        report.add_mask(
            "appointments",
            "appointment_at",
            "matches_slot",
            _differs(at, start),
            lambda r: (
                f"appointment_at {_show(at.iat[r])} differs from the start "
                f"{_show(start.iat[r])} of its slot {_show(slot_id.iat[r])}"
            ),
        )
    if "specialist_id" in appointments and "specialist_id" in slots:
        theirs = _lookup(slot_id, slots, "slot_id", "specialist_id")
        mine = appointments["specialist_id"]
        report.add_mask(
            "appointments",
            "specialist_id",
            "matches_slot",
            _differs(mine, theirs),
            lambda r: (
                f"specialist_id {_show(mine.iat[r])} differs from the specialist_id "
                f"{_show(theirs.iat[r])} of its slot {_show(slot_id.iat[r])}"
            ),
        )
    if "appointment_id" in slots and "appointment_id" in appointments:
        held = slots["appointment_id"]
        booked_in = _lookup(held, appointments, "appointment_id", "slot_id")
        own = slots["slot_id"]
        report.add_mask(
            "availability",
            "appointment_id",
            "matches_appointment",
            _differs(booked_in, own),
            lambda r: (
                f"appointment_id {_show(held.iat[r])} is booked in slot {_show(booked_in.iat[r])}, "
                f"not in this slot {_show(own.iat[r])}"
            ),
        )


# ---------------------------------------------------------------------------------------------
# Small helpers.
# ---------------------------------------------------------------------------------------------


def _column_order(table: str) -> dict[str | None, int]:
    return {c: i for i, c in enumerate(contract.TABLES.get(table, ()))}


def _isnan(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _clip(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def _show(value: Any) -> str:
    """A cell as it should appear in a sentence: quoted text, plain numbers, short date-times."""
    if value is None or (not isinstance(value, str) and _isnan(value)):
        return "(empty)"
    if isinstance(value, pd.Timestamp | np.datetime64):
        ts = pd.Timestamp(value)
        if ts.tzinfo is not None:
            return ts.isoformat(sep=" ")
        return ts.strftime("%Y-%m-%d %H:%M") if ts.second == 0 else str(ts)
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, float | np.floating):
        return f"{float(value):g}" if math.isfinite(float(value)) else str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"'{_clip(str(value))}'"


def _date_range(values: pd.Series) -> str:
    values = values.dropna()
    if not len(values):
        return "n/a"
    return f"{values.min():%Y-%m-%d} .. {values.max():%Y-%m-%d}"
