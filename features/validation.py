"""Validate a dataset folder against the data contract (the `referral-ml validate` command).

Each table is checked by its pandera schema (``features.schemas``), then the tables are checked
against each other (``features.crosscheck``): foreign keys, appointment/referral/slot
consistency, double booking and time order. Every problem becomes a ``Violation``
(``features.report``) naming the table, column and 0-based row; this module turns pandera's
failure cases into those violations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from features import contract
from features.crosscheck import cross_table_violations
from features.dtypes import naive_datetimes
from features.report import (
    MAX_STORED_PER_CHECK,
    ValidationReport,
    Violation,
    clip_text,
    is_nan,
    show_value,
)
from features.schemas import CHECK_DESCRIPTIONS, ROW_CHECKS, SCHEMAS
from features.truth_schemas import TRUTH_SCHEMAS

TRUTH_FOLDER = "truth"


class DatasetReadError(Exception):
    """A table file exists but cannot be read (corrupt Parquet, undecodable CSV ...)."""


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
    cross_table_violations(report, loose)
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
            lambda r: f"{column} {show_value(values[r])} {words}",
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
        number_ok = number is not None and not is_nan(number) and int(number) < len(checks)
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
            table,
            column,
            key,
            sorted(values),
            lambda r: f"{column} {show_value(values[r])} {phrase}",
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
                    f"column '{clip_text(name)}' is not part of the contract's {table} table",
                    "unknown_column",
                )
            )
        return
    if check == "column_in_dataframe":
        for name in group["failure_case"].astype(str):
            report.add(
                Violation(
                    table, name, None, f"column '{clip_text(name)}' is missing", "missing_column"
                )
            )
        return
    number_ok = number is not None and not is_nan(number) and int(number) < len(schema.checks)
    name = schema.checks[int(number)].name if number_ok else None
    row_check = ROW_CHECKS.get(name or "")
    rows = group["index"].dropna().astype(int).unique()
    if row_check is None or not len(rows):
        report.add(
            Violation(table, None, None, f"fails the check {clip_text(check)}", name or check)
        )
        return
    rows = np.sort(rows)
    fields = [f for f in row_check.fields if f in df.columns]
    cells = df.loc[rows[:MAX_STORED_PER_CHECK], fields]  # only stored rows get a sentence
    report.add_rows(
        table,
        row_check.column,
        str(name),
        rows,
        lambda r: row_check.template.format(**{f: show_value(cells.at[r, f]) for f in fields}),
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
