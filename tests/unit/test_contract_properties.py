"""Property-based checks: any single corrupted cell is reported at its table, column and row."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import codes, contract
from features.dtypes import npi_mask
from features.schemas import SCHEMAS
from features.validation import validate_tables
from tests.unit.contract_fixtures import valid_tables

pytestmark = pytest.mark.unit

BASE = valid_tables()

# Columns whose type pandas could get wrong: numbers, booleans and timestamps (text columns
# accept any text, so "wrong type" only makes sense for these).
TYPED_COLUMNS = [
    (table, column)
    for table, model in SCHEMAS.items()
    for column, spec in model.to_schema().columns.items()
    if not str(spec.dtype).startswith("str")
]

# Every foreign key (child table, child column); the value drawn never names a real row.
FOREIGN_KEYS = [
    ("patients", "insurance_plan_id"),
    ("referring_providers", "organization_id"),
    ("specialists", "organization_id"),
    ("specialists", "accepted_plan_ids"),
    ("availability", "specialist_id"),
    ("availability", "appointment_id"),
    ("referrals", "patient_id"),
    ("referrals", "referring_provider_id"),
    ("referrals", "specialist_id"),
    ("appointments", "referral_id"),
    ("appointments", "patient_id"),
    ("appointments", "specialist_id"),
    ("appointments", "slot_id"),
]

# (table, column) -> values outside the allowed range and the check that must fire.
OUT_OF_RANGE: dict[tuple[str, str], tuple[st.SearchStrategy[Any], str]] = {
    ("patients", "birth_year"): (
        st.one_of(st.integers(max_value=1899), st.integers(min_value=2027)),
        "in_range",
    ),
    ("patients", "latitude"): (
        st.one_of(st.floats(max_value=-90.001), st.floats(min_value=90.001)),
        "in_range",
    ),
    ("organizations", "longitude"): (
        st.one_of(st.floats(max_value=-180.001), st.floats(min_value=180.001)),
        "in_range",
    ),
    ("specialists", "latitude"): (st.floats(min_value=90.001, max_value=1e6), "in_range"),
    ("specialists", "rating"): (
        st.one_of(st.floats(max_value=0.999), st.floats(min_value=5.001)),
        "in_range",
    ),
    ("specialists", "weekly_capacity"): (st.integers(max_value=-1), "greater_than_or_equal_to"),
    ("specialists", "review_count"): (st.integers(max_value=-1), "greater_than_or_equal_to"),
}

# Text no parser accepts as a number, a boolean or a date-time.
JUNK = st.text(alphabet="abcxyz?#", min_size=1, max_size=12).map(lambda s: "?" + s)
UNKNOWN_ID = st.text(alphabet="QWXZ", min_size=1, max_size=8).map(lambda s: "NOPE-" + s)


@st.composite
def corruptions(draw: st.DrawFn) -> tuple[str, str, int, Any, str]:
    """(table, column, row, bad value, expected check) for one corrupted cell."""
    kind = draw(st.sampled_from(["wrong_type", "broken_fk", "out_of_range"]))
    if kind == "wrong_type":
        table, column = draw(st.sampled_from(TYPED_COLUMNS))
        value, check = draw(JUNK), "type"
    elif kind == "broken_fk":
        table, column = draw(st.sampled_from(FOREIGN_KEYS))
        value, check = draw(UNKNOWN_ID), "foreign_key"
    else:
        table, column = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        values, check = OUT_OF_RANGE[(table, column)]
        value = draw(values.filter(lambda v: not pd.isna(v)))
    row = draw(st.integers(min_value=0, max_value=len(BASE[table]) - 1))
    return table, column, row, value, check


@settings(max_examples=40, deadline=None)
@given(corruptions())
def test_single_corruption_is_named(corruption: tuple[str, str, int, Any, str]) -> None:
    table, column, row, value, check = corruption
    tables = {name: df.copy() for name, df in BASE.items()}
    col = tables[table][column].astype(object)
    col.iat[row] = value
    tables[table][column] = col
    report = validate_tables(tables)
    named = [(v.table, v.column, v.row, v.check) for v in report.violations]
    assert (table, column, row, check) in named, "\n".join(report.lines())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet="0123456789", min_size=10, max_size=10),
            st.text(alphabet="0123456789", max_size=12),
            st.text(max_size=12),
            st.text(alphabet="0123456789\u0660\u0661\u0662\u0663", min_size=10, max_size=10),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_vectorised_npi_check_agrees_with_codes(values: list[str]) -> None:
    got = npi_mask(pd.Series(values, dtype=object)).tolist()
    assert got == [codes.is_valid_npi(v) for v in values]


def test_tables_and_corruption_catalogue_cover_the_contract() -> None:
    assert set(BASE) == set(contract.TABLES)
    assert all(column in contract.TABLES[table] for table, column in FOREIGN_KEYS)
    assert all(column in contract.TABLES[table] for table, column in OUT_OF_RANGE)
