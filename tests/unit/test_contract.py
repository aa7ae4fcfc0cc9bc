"""The data contract's validation: schemas, cross-table checks and the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import codes, contract
from features.dtypes import npi_mask, specialist_id_mask
from features.report import MAX_STORED_PER_CHECK, ValidationReport, Violation
from features.schemas import SCHEMAS
from features.truth_schemas import TRUTH_SCHEMAS
from features.validation import (
    DatasetReadError,
    load_dataset,
    main_validate,
    validate_directory,
    validate_tables,
    validate_truth_tables,
)
from tests.unit.contract_fixtures import valid_tables

pytestmark = pytest.mark.unit

Tables = dict[str, pd.DataFrame]


def put(tables: Tables, table: str, column: str, row: int, value: Any) -> None:
    """Set one cell, widening the column to object so any value fits."""
    col = tables[table][column].astype(object)
    col.iat[row] = value
    tables[table][column] = col


def found(report: ValidationReport, table: str, column: str | None, row: int | None) -> Violation:
    """The stored violation at (table, column, row); fails the test with the report otherwise."""
    for v in report.violations:
        if (v.table, v.column, v.row) == (table, column, row):
            return v
    pytest.fail(f"no violation at {table}.{column} row {row}; got:\n" + "\n".join(report.lines()))


@pytest.fixture
def tables() -> Tables:
    return valid_tables()


def test_schemas_cover_the_contract_exactly() -> None:
    assert set(SCHEMAS) == set(contract.TABLES)
    for table, model in SCHEMAS.items():
        assert tuple(model.to_schema().columns) == contract.TABLES[table]
        assert model.to_schema().strict is True
    for table, model in TRUTH_SCHEMAS.items():
        assert tuple(model.to_schema().columns) == contract.TRUTH_TABLES[table]


def test_clean_fixture_has_no_violations(tables: Tables) -> None:
    report = validate_tables(tables)
    assert report.ok, "\n".join(report.lines())
    assert report.violations == [] and report.total == 0
    assert report.row_counts == {t: len(df) for t, df in tables.items()}


def test_clean_summary_fits_on_one_screen(tables: Tables) -> None:
    summary = validate_tables(tables).summary()
    assert len(summary.splitlines()) <= 24
    assert "appointments" in summary and "2024-03-01 .. 2024-03-07" in summary
    assert "No-show rate            50.0% (1 of 2" in summary
    assert "never_scheduled 25.0%" in summary


Mutation = Callable[[Tables], None]


def _set(table: str, column: str, row: int, value: Any) -> Mutation:
    return lambda t: put(t, table, column, row, value)


def _npi_with_bad_check_digit(t: Tables) -> None:
    npi = t["specialists"]["specialist_id"].iat[1]
    put(t, "specialists", "specialist_id", 1, npi[:9] + str((int(npi[9]) + 1) % 10))


def _appointment_before_referral(t: Tables) -> None:
    created = t["referrals"]["created_at"].iat[1]
    put(t, "appointments", "booked_at", 1, created - pd.Timedelta(hours=2))


CORRUPTIONS: dict[str, tuple[Mutation, tuple[str, str, int, str], str | None]] = {
    # name: (mutation, (table, column, row, check), text the reason must contain)
    "wrong type (int)": (
        _set("patients", "birth_year", 2, "nineteen"),
        ("patients", "birth_year", 2, "type"),
        "birth_year 'nineteen' is not a whole number",
    ),
    "wrong type (fraction for int)": (
        _set("specialists", "weekly_capacity", 0, 12.5),
        ("specialists", "weekly_capacity", 0, "type"),
        "12.5 is not a whole number",
    ),
    "wrong type (datetime)": (
        _set("referrals", "created_at", 1, "yesterday"),
        ("referrals", "created_at", 1, "type"),
        "created_at 'yesterday' is not a date-time",
    ),
    "wrong type (bool)": (
        _set("plans", "out_of_network_coverage", 1, "maybe"),
        ("plans", "out_of_network_coverage", 1, "type"),
        "'maybe' is not true or false",
    ),
    "wrong type (float)": (
        _set("organizations", "latitude", 0, "north"),
        ("organizations", "latitude", 0, "type"),
        "latitude 'north' is not a number",
    ),
    "zoned timestamp": (
        _set("availability", "start", 2, "2024-03-20T14:00:00+01:00"),
        ("availability", "start", 2, "type"),
        "without time zone",
    ),
    "out of range (latitude)": (
        _set("patients", "latitude", 3, 95.0),
        ("patients", "latitude", 3, "in_range"),
        "latitude 95 is outside the range -90..90",
    ),
    "out of range (birth year)": (
        _set("patients", "birth_year", 0, 1850),
        ("patients", "birth_year", 0, "in_range"),
        "1850",
    ),
    "out of range (rating)": (
        _set("specialists", "rating", 2, 5.5),
        ("specialists", "rating", 2, "in_range"),
        "rating 5.5 is outside the range 1..5",
    ),
    "negative count": (
        _set("specialists", "review_count", 1, -3),
        ("specialists", "review_count", 1, "greater_than_or_equal_to"),
        "review_count -3 is below the minimum 0",
    ),
    "unknown enum value": (
        _set("plans", "payer_type", 0, "gold"),
        ("plans", "payer_type", 0, "isin"),
        "payer_type 'gold' is not one of commercial, medicare, medicaid, self_pay",
    ),
    "required value missing": (
        _set("appointments", "visit_kind", 0, None),
        ("appointments", "visit_kind", 0, "not_null"),
        "visit_kind is empty",
    ),
    "blank id": (
        _set("patients", "patient_id", 1, " "),
        ("patients", "patient_id", 1, "nonblank"),
        "is empty but a value is required",
    ),
    "bad state": (
        _set("organizations", "state", 1, "Mass."),
        ("organizations", "state", 1, "two_letters"),
        "state 'Mass.' is not a 2-letter state code",
    ),
    "bad postal code": (
        _set("organizations", "postal_code", 2, "2122"),
        ("organizations", "postal_code", 2, "five_digits"),
        "postal_code '2122' is not a 5-digit postal code",
    ),
    "broken foreign key": (
        _set("patients", "insurance_plan_id", 1, "PLAN9"),
        ("patients", "insurance_plan_id", 1, "foreign_key"),
        "insurance_plan_id 'PLAN9' does not match any insurance_plan_id in plans",
    ),
    "broken foreign key (referring provider)": (
        _set("referrals", "referring_provider_id", 2, "1234567893"),
        ("referrals", "referring_provider_id", 2, "foreign_key"),
        "does not match any provider_id in referring_providers",
    ),
    "no referring provider on a provider referral": (
        _set("referrals", "referring_provider_id", 0, None),
        ("referrals", "referring_provider_id", 0, "provider_unless_self"),
        "only a self-referral may have no referring provider (referral_type is 'provider')",
    ),
    "broken foreign key (slot)": (
        _set("appointments", "slot_id", 2, "SLOT99"),
        ("appointments", "slot_id", 2, "foreign_key"),
        "slot_id 'SLOT99' does not match any slot_id in availability",
    ),
    "unknown accepted plan": (
        _set("specialists", "accepted_plan_ids", 0, "PLAN1|PLAN7"),
        ("specialists", "accepted_plan_ids", 0, "foreign_key"),
        "'PLAN7', which is not an insurance_plan_id in plans",
    ),
    "duplicate primary key": (
        _set("patients", "patient_id", 2, "PAT1"),
        ("patients", "patient_id", 2, "unique"),
        "patient_id 'PAT1' appears in more than one row",
    ),
    "bad NPI check digit": (
        _npi_with_bad_check_digit,
        ("specialists", "specialist_id", 1, "valid_specialist_id"),
        "is not a valid specialist id",
    ),
    "location suffix -1": (
        _set("specialists", "specialist_id", 0, "1234567893-1"),
        ("specialists", "specialist_id", 0, "valid_specialist_id"),
        "specialist_id '1234567893-1' is not a valid specialist id",
    ),
    "bad NPI length": (
        _set("referring_providers", "provider_id", 0, "123456789"),
        ("referring_providers", "provider_id", 0, "valid_npi"),
        "provider_id '123456789' is not a valid NPI",
    ),
    "unknown NUCC code": (
        _set("referrals", "specialty", 0, "207Z99999X"),
        ("referrals", "specialty", 0, "nucc_code"),
        "specialty '207Z99999X' is not a code of the NUCC",
    ),
    "unknown NUCC code (specialist)": (
        _set("specialists", "specialty", 2, "Cardiology"),
        ("specialists", "specialty", 2, "nucc_code"),
        "specialty 'Cardiology'",
    ),
    "malformed ICD-10-CM code": (
        _set("referrals", "reason_code", 3, "I5"),
        ("referrals", "reason_code", 3, "icd10_cm"),
        "reason_code 'I5' is not an ICD-10-CM code",
    ),
    "ICD-10-CM code with U": (
        _set("referrals", "reason_code", 1, "U07.1"),
        ("referrals", "reason_code", 1, "icd10_cm"),
        "'U07.1'",
    ),
    "unknown language": (
        _set("specialists", "languages", 0, "en|xx"),
        ("specialists", "languages", 0, "languages"),
        "languages 'en|xx' must be a '|'-joined list of en, es",
    ),
    "focus code is not a category": (
        _set("specialists", "focus_codes", 0, "I50.9"),
        ("specialists", "focus_codes", 0, "focus_codes"),
        "3-character ICD-10 categories",
    ),
    "slot ends before it starts": (
        _set("availability", "end", 3, pd.Timestamp("2024-03-21 08:30")),
        ("availability", "end", 3, "end_after_start"),
        "end 2024-03-21 08:30 is not after start 2024-03-21 09:00",
    ),
    "busy slot without appointment": (
        _set("availability", "status", 4, "busy"),
        ("availability", "appointment_id", 4, "busy_iff_appointment"),
        "a slot is busy exactly when it holds an appointment",
    ),
    "status before creation": (
        _set("referrals", "status_at", 0, pd.Timestamp("2024-02-01 09:00")),
        ("referrals", "status_at", 0, "status_at_after_created"),
        "status_at 2024-02-01 09:00 is before created_at 2024-03-01 09:15",
    ),
    "appointment before its referral": (
        _appointment_before_referral,
        ("appointments", "booked_at", 1, "after_referral"),
        "booked_at 2024-03-04 11:40 is before its referral 'REF2' was created (2024-03-04 13:40)",
    ),
    "booked after the appointment": (
        _set("appointments", "booked_at", 0, pd.Timestamp("2024-03-11 10:00")),
        ("appointments", "booked_at", 0, "booked_before_appointment"),
        "booked_at 2024-03-11 10:00 is after appointment_at 2024-03-11 09:00",
    ),
    "outcome before booking": (
        _set("appointments", "outcome_at", 1, pd.Timestamp("2024-03-04 15:00")),
        ("appointments", "outcome_at", 1, "outcome_after_booking"),
        "outcome_at 2024-03-04 15:00 is before booked_at 2024-03-04 16:00",
    ),
    "slot double-booked": (
        _set("appointments", "slot_id", 2, "SLOT1"),
        ("appointments", "slot_id", 2, "double_booked"),
        "slot_id 'SLOT1' is already booked by row 0",
    ),
    "appointment for another patient than its referral": (
        _set("appointments", "patient_id", 0, "PAT4"),
        ("appointments", "patient_id", 0, "matches_referral"),
        "patient_id 'PAT4' differs from the patient_id 'PAT1' of its referral 'REF1'",
    ),
    "appointment time differs from its slot": (
        _set("appointments", "appointment_at", 2, pd.Timestamp("2024-03-20 15:00")),
        ("appointments", "appointment_at", 2, "matches_slot"),
        "differs from the start 2024-03-20 14:00 of its slot 'SLOT3'",
    ),
    "slot points at an appointment in another slot": (
        lambda t: (
            put(t, "availability", "appointment_id", 3, "APT1"),
            put(t, "availability", "status", 3, "busy"),
        ),
        ("availability", "appointment_id", 3, "matches_appointment"),
        "appointment_id 'APT1' is booked in slot 'SLOT1', not in this slot 'SLOT4'",
    ),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_is_caught_and_named(tables: Tables, name: str) -> None:
    mutate, (table, column, row, check), text = CORRUPTIONS[name]
    mutate(tables)
    report = validate_tables(tables)
    assert not report.ok
    violation = found(report, table, column, row)
    assert violation.check == check
    assert report.counts[(table, column, check)] >= 1
    if text is not None:
        assert text in violation.reason, violation.reason
    assert str(violation).startswith(f"{table}.{column} row {row}: ")


def test_duplicate_primary_key_names_both_rows(tables: Tables) -> None:
    put(tables, "availability", "slot_id", 4, "SLOT1")
    report = validate_tables(tables)
    assert found(report, "availability", "slot_id", 0).check == "unique"
    assert found(report, "availability", "slot_id", 4).check == "unique"


def test_wrong_type_is_reported_once_per_cell(tables: Tables) -> None:
    put(tables, "specialists", "weekly_capacity", 1, "lots")
    report = validate_tables(tables)
    assert report.counts == {("specialists", "weekly_capacity", "type"): 1}


def test_extra_unknown_column_is_a_violation(tables: Tables) -> None:
    tables["plans"]["colour"] = ["red", "green", "blue"]
    report = validate_tables(tables)
    v = found(report, "plans", "colour", None)
    assert v.check == "unknown_column"
    assert str(v) == "plans.colour: column 'colour' is not part of the contract's plans table"


def test_missing_column_is_a_violation(tables: Tables) -> None:
    tables["appointments"] = tables["appointments"].drop(columns=["outreach_call"])
    report = validate_tables(tables)
    assert found(report, "appointments", "outreach_call", None).check == "missing_column"


def test_missing_table_in_the_mapping(tables: Tables) -> None:
    del tables["referring_providers"]
    report = validate_tables(tables)
    v = found(report, "referring_providers", None, None)
    assert v.check == "missing_table"
    assert str(v).startswith("referring_providers: the table is missing")
    # The checks that need the missing table are skipped rather than crashing.
    assert report.counts == {("referring_providers", None, "missing_table"): 1}


def _write(tables: Tables, directory: Path, fmt: str = "parquet") -> None:
    for table, df in tables.items():
        if fmt == "parquet":
            df.to_parquet(directory / f"{table}.parquet", index=False)
        else:
            df.to_csv(directory / f"{table}.csv", index=False)


def test_missing_table_file(tables: Tables, tmp_path: Path) -> None:
    _write({t: df for t, df in tables.items() if t != "plans"}, tmp_path)
    loaded = load_dataset(tmp_path)
    assert set(loaded) == set(contract.TABLES) - {"plans"}
    report = validate_tables(loaded)
    assert found(report, "plans", None, None).check == "missing_table"
    assert "plans.parquet or plans.csv" in found(report, "plans", None, None).reason
    assert main_validate(tmp_path) == 1


def test_parquet_round_trip_is_clean(tables: Tables, tmp_path: Path) -> None:
    _write(tables, tmp_path)
    report = validate_tables(load_dataset(tmp_path))
    assert report.ok, "\n".join(report.lines())


def test_csv_round_trip_is_clean(tables: Tables, tmp_path: Path) -> None:
    _write(tables, tmp_path, fmt="csv")
    loaded = load_dataset(tmp_path)
    # Empty CSV cells: '' where the contract allows it, null elsewhere.
    assert loaded["plans"]["network_ids"].iat[2] == ""
    assert pd.isna(loaded["specialists"]["rating"].iat[1])
    assert pd.isna(loaded["appointments"]["outcome"].iat[2])
    report = validate_tables(loaded)
    assert report.ok, "\n".join(report.lines())


def test_csv_text_is_parsed_by_the_schema(tmp_path: Path, tables: Tables) -> None:
    _write(tables, tmp_path, fmt="csv")
    text = (tmp_path / "plans.csv").read_text().replace("True", "yes", 1)
    (tmp_path / "plans.csv").write_text(text)
    report = validate_tables(load_dataset(tmp_path))
    v = found(report, "plans", "out_of_network_coverage", 0)
    assert v.reason == "out_of_network_coverage 'yes' is not true or false"


def test_parquet_is_preferred_over_csv(tables: Tables, tmp_path: Path) -> None:
    _write(tables, tmp_path)
    (tmp_path / "plans.csv").write_text("not,the,contract\n1,2,3\n")
    assert validate_tables(load_dataset(tmp_path)).ok


def test_unreadable_file_raises_and_exits_2(
    tables: Tables, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tables, tmp_path)
    (tmp_path / "patients.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DatasetReadError, match=r"patients\.parquet"):
        load_dataset(tmp_path)
    assert main_validate(tmp_path) == 2
    assert "cannot read patients.parquet" in capsys.readouterr().out


def test_not_a_folder_exits_2(tmp_path: Path) -> None:
    assert main_validate(tmp_path / "nowhere") == 2
    assert main_validate(tmp_path) == 2  # a folder without any table file


def test_counts_stay_exact_beyond_the_cap() -> None:
    tables = valid_tables()
    n = MAX_STORED_PER_CHECK + 30
    base = tables["patients"]
    patients = pd.concat([base] * (n // len(base) + 1), ignore_index=True).iloc[:n]
    patients["patient_id"] = [f"PAT{i + 1}" for i in range(n)]
    patients["sex"] = "X"
    tables["patients"] = patients
    report = validate_tables(tables)
    key = ("patients", "sex", "isin")
    assert report.counts == {key: n}
    assert report.shown_count(key) == MAX_STORED_PER_CHECK
    assert len([v for v in report.violations if v.column == "sex"]) == MAX_STORED_PER_CHECK
    lines = report.lines()
    assert lines[0] == f"patients: {n} violations"
    assert "  ... and 30 more patients.sex (isin) violations not shown" in lines
    assert lines[-1] == f"{n} violations in total (patients {n})."


def test_reasons_do_not_echo_long_values(tables: Tables) -> None:
    put(tables, "plans", "payer_type", 2, "z" * 5000)
    report = validate_tables(tables)
    reason = found(report, "plans", "payer_type", 2).reason
    assert len(reason) < 200
    assert "zzz..." in reason


def test_npi_mask_matches_scalar_check() -> None:
    rng = np.random.default_rng(3)
    good = [str(n) for n in codes.make_npis(rng, 50)]
    bad = [g[:9] + str((int(g[9]) + 1) % 10) for g in good]
    odd = ["", "123", "abcdefghij", "12345678901", None]
    values = pd.Series(good + bad + odd, dtype=object)
    expected = [v is not None and codes.is_valid_npi(v) for v in values]
    assert npi_mask(values).tolist() == expected
    assert all(expected[:50]) and not any(expected[50:])


def test_specialist_id_mask_matches_scalar_check() -> None:
    rng = np.random.default_rng(4)
    good = [str(n) for n in codes.make_npis(rng, 20)]
    located = [f"{g}-{n}" for g, n in zip(good, range(2, 22), strict=True)]
    bad_npi = [g[:9] + str((int(g[9]) + 1) % 10) + "-2" for g in good[:5]]
    bad_suffix = [f"{good[0]}-1", f"{good[0]}-0", f"{good[0]}-02", f"{good[0]}-", f"{good[0]}-x"]
    values = pd.Series(good + located + bad_npi + bad_suffix + ["", None], dtype=object)
    expected = [v is not None and codes.is_valid_specialist_id(v) for v in values]
    assert specialist_id_mask(values).tolist() == expected
    assert all(expected[:40]) and not any(expected[40:])
    assert codes.npi_of(located[3]) == good[3] and codes.npi_of(good[3]) == good[3]


def test_truth_tables_light_schemas() -> None:
    truth = {
        "appointments": pd.DataFrame(
            {
                "appointment_id": ["APT1", "APT2"],
                "p_no_show_without_outreach": [0.2, 1.3],
                "p_no_show_with_outreach": [0.1, 0.4],
                "outreach_effect": [-0.1, -0.2],
                "extra": [1, 2],  # light schemas allow more columns
            }
        ),
        "specialists": pd.DataFrame({"specialist_id": ["X"], "true_quality": [0.3]}),
    }
    report = validate_truth_tables(truth)
    assert report.counts == {("truth.appointments", "p_no_show_without_outreach", "in_range"): 1}
    assert found(report, "truth.appointments", "p_no_show_without_outreach", 1)


def test_truth_folder_is_validated_when_present(tables: Tables, tmp_path: Path) -> None:
    _write(tables, tmp_path)
    (tmp_path / "truth").mkdir()
    pd.DataFrame(
        {
            "patient_id": ["PAT1", "PAT2"],
            "no_show_propensity": [-0.4, 1.2],
            "transport_barrier": [0.2, 0.9],
            "prefers_same_sex": [False, "often"],
        }
    ).to_csv(tmp_path / "truth" / "patients.csv", index=False)
    assert main_validate(tmp_path) == 1
    report = validate_tables(load_dataset(tmp_path))
    assert report.ok  # the contract tables themselves are fine
    full = validate_directory(tmp_path)
    assert found(full, "truth.patients", "prefers_same_sex", 1).check == "type"
    assert full.row_counts["truth.patients"] == 2
