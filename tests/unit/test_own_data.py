"""A data scientist's own appointments file: mapping, coercion, rejected rows with reasons."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from features.no_show import FLAT_REQUIRED, build_features, history_events
from training.own_data import (
    MAPPINGS_DIR,
    MappingError,
    NoShowMapping,
    OwnAppointments,
    describe_rejections,
    load_mapping,
    load_own_appointments,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parents[1] / "fixtures"
SAMPLE = FIXTURES / "vitoria_sample.csv"
VITORIA = MAPPINGS_DIR / "vitoria_no_show.yaml"


def _sample_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_vitoria_sample", FIXTURES / "make_vitoria_sample.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _sample_script()
BAD_LINES = {row + 2 for row in SCRIPT.BAD_ROWS}  # header is line 1


@pytest.fixture(scope="module")
def vitoria() -> NoShowMapping:
    return load_mapping(VITORIA)


@pytest.fixture(scope="module")
def sample(vitoria: NoShowMapping) -> OwnAppointments:
    return load_own_appointments(SAMPLE, vitoria)


@pytest.fixture(scope="module")
def raw_sample() -> pd.DataFrame:
    return pd.read_csv(SAMPLE, dtype=str)


def _reasons_on(result: OwnAppointments, line: int) -> str:
    rows = result.rejected[result.rejected["line"] == line]
    assert len(rows) == 1, f"line {line} is not rejected exactly once"
    return str(rows["reasons"].iloc[0])


def _write(tmp_path: Path, text: str, name: str = "own.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# The Vitória sample and its mapping
# ---------------------------------------------------------------------------------------------


def test_checked_in_sample_is_what_the_script_writes() -> None:
    # Given the generator script beside the checked-in CSV
    # When it renders the sample again
    text = SCRIPT.render()
    # Then the bytes are the checked-in file's, so the script documents how it was made
    assert text == SAMPLE.read_text(encoding="utf-8")


def test_vitoria_mapping_loads_the_sample(sample: OwnAppointments) -> None:
    # Given the shipped Vitória mapping and the 200-row sample with 6 deliberately bad rows
    # When the sample is loaded (fixture)
    # Then every row is either kept or rejected, and exactly the bad rows are rejected
    assert sample.total_rows == 200
    assert len(sample.rejected) == len(SCRIPT.BAD_ROWS) == 6
    assert len(sample.flat) == 194
    assert set(sample.rejected["line"]) == BAD_LINES
    assert set(FLAT_REQUIRED) <= set(sample.flat.columns)
    assert sample.flat["appointment_id"].is_unique
    assert pd.api.types.is_datetime64_any_dtype(sample.flat["booked_at"])
    assert sample.flat["text_reminder"].dtype == "boolean"


@pytest.mark.parametrize(
    ("line", "column", "fragment"),
    [
        (22, "age (Age)", "-1 is outside 0-120"),
        (47, "booked_at (ScheduledDay)", "is after appointment_at (AppointmentDay)"),
        (82, "booked_at (ScheduledDay)", "'2016-05-1OT10:00:00Z' is not a date-time"),
        (122, "outcome (No-show)", "'Maybe' is not allowed; allowed: attended, no_show, cancelled"),
        (152, "appointment_id (AppointmentID)", "is a duplicate of line 12"),
        (177, "appointment_at (AppointmentDay)", "'2016-05-32T00:00:00Z' is not a date"),
    ],
)
def test_each_bad_row_is_rejected_with_its_line_and_a_reason_naming_the_column(
    sample: OwnAppointments, line: int, column: str, fragment: str
) -> None:
    # Given the loaded sample
    # When the reasons of one deliberately bad line are read
    reasons = _reasons_on(sample, line)
    # Then a reason names the flat column, its source column and what is wrong
    assert f"{column} " in reasons and fragment in reasons


def test_a_row_with_two_faults_lists_every_reason(sample: OwnAppointments) -> None:
    # Given line 177: Age 121 and an impossible AppointmentDay
    # When its reasons are split
    reasons = _reasons_on(sample, 177).split("; ")
    # Then both are there, not only the first one found
    assert len(reasons) == 2
    assert reasons[0].startswith("appointment_at (AppointmentDay)")
    assert reasons[1] == "age (Age) 121 is outside 0-120"


def test_the_first_of_two_duplicate_ids_is_kept(
    sample: OwnAppointments, raw_sample: pd.DataFrame
) -> None:
    # Given line 152 repeats the AppointmentID of line 12
    repeated = raw_sample["AppointmentID"].iloc[10]
    assert raw_sample["AppointmentID"].iloc[150] == repeated
    # When the sample is loaded
    kept = sample.flat[sample.flat["appointment_id"] == repeated]
    # Then line 12's row is kept once, with line 12's booking time
    assert len(kept) == 1
    assert kept["booked_at"].iloc[0] == pd.Timestamp(raw_sample["ScheduledDay"].iloc[10][:19])


def test_rejected_rows_keep_their_original_values(sample: OwnAppointments) -> None:
    # Given the rejected frame
    rejected = sample.rejected.set_index("line")
    # When the original source columns are read back
    # Then they hold the file's text, untouched by mapping or coercion
    assert list(sample.rejected.columns[:2]) == ["line", "reasons"]
    assert rejected.loc[122, "No-show"] == "Maybe"
    assert rejected.loc[22, "Age"] == "-1"
    assert rejected.loc[82, "ScheduledDay"] == "2016-05-1OT10:00:00Z"


def test_same_day_date_only_rows_are_kept_with_lead_zero(
    sample: OwnAppointments, raw_sample: pd.DataFrame
) -> None:
    # Given rows booked during the day of a date-only visit (data rows 3-5: lines 5-7)
    ids = raw_sample["AppointmentID"].iloc[list(SCRIPT.SAME_DAY_ROWS)].tolist()
    flat = sample.flat.set_index("appointment_id")
    rows = flat.loc[ids]
    assert (rows["booked_at"].dt.hour > 0).all()
    # When features are built at booking time
    X, _ = build_features(sample.flat, history_events(sample.flat))
    X.index = sample.flat["appointment_id"]
    # Then the rows are kept, the visit stays at midnight of its date, lead time is 0 days,
    # and the outcome only counts as known from the end of that day
    assert (rows["appointment_at"] == rows["booked_at"].dt.normalize()).all()
    assert (rows["outcome_at"] == rows["appointment_at"] + pd.Timedelta(days=1)).all()
    assert (X.loc[ids, "lead_days"] == 0).all()
    assert (X.loc[ids, "same_day"] == 1).all()


def test_outcome_maps_yes_to_no_show_and_no_to_attended(
    sample: OwnAppointments, raw_sample: pd.DataFrame
) -> None:
    # Given the file's No-show column (Yes = missed the visit)
    source = raw_sample.drop_duplicates("AppointmentID").set_index("AppointmentID")["No-show"]
    # When the loaded outcomes are compared with it row by row
    outcome = sample.flat.set_index("appointment_id")["outcome"]
    pairs = pd.crosstab(source.reindex(outcome.index), outcome)
    # Then Yes became no_show and No became attended, nothing else
    assert pairs.loc["Yes", "no_show"] > 0 and pairs.loc["No", "attended"] > 0
    assert pairs.loc["Yes"].sum() == pairs.loc["Yes", "no_show"]
    assert pairs.loc["No"].sum() == pairs.loc["No", "attended"]


def test_extras_are_listed_and_kept_under_their_source_names(sample: OwnAppointments) -> None:
    # Given the mapping's extra features
    # When the sample is loaded (fixture)
    # Then they are listed, typed, and reach the model matrix; accented names survive
    assert sample.extra_numeric == [
        "Scholarship",
        "Hipertension",
        "Diabetes",
        "Alcoholism",
        "Handcap",
    ]
    assert sample.extra_categorical == ["Neighbourhood"]
    assert sample.flat["Handcap"].dtype == float and sample.flat["Handcap"].max() >= 1
    assert "SÃO TESTE" in set(sample.flat["Neighbourhood"])
    _, spec = build_features(
        sample.flat,
        history_events(sample.flat),
        extra_numeric=tuple(sample.extra_numeric),
        extra_categorical=tuple(sample.extra_categorical),
    )
    assert {"Scholarship", "Handcap", "Neighbourhood"} <= set(spec.columns)


# ---------------------------------------------------------------------------------------------
# Timestamps, booleans, labels
# ---------------------------------------------------------------------------------------------

MIXED_ZONES = """appointment_id,booked_at,appointment_at
a1,2024-03-01T10:00:00+02:00,2024-03-05
a2,2024-03-01T10:00:00Z,2024-03-05T00:00:00Z
a3,2024-03-01 10:00:00,2024-03-05T00:00:00+02:00
a4,2024-03-01T10:00:00-0300,2024-03-05
a5,2024-07-01T10:00:00Z,2024-07-05
"""


def test_timestamps_with_offsets_z_and_dates_all_parse_keeping_wall_clock(tmp_path: Path) -> None:
    # Given booking times with +02:00, Z, no zone and -0300, and date-only visits
    path = _write(tmp_path, MIXED_ZONES)
    mapping = NoShowMapping.from_dict({"timestamps": {"appointment_at": {"date_only": True}}})
    # When loaded with the default timezone rule (drop)
    result = load_own_appointments(path, mapping)
    # Then all parse, the wall-clock time is kept and dates sit at midnight
    assert result.rejected.empty
    booked = result.flat.set_index("appointment_id")["booked_at"]
    assert (booked.drop("a5") == pd.Timestamp("2024-03-01 10:00")).all()
    assert booked["a5"] == pd.Timestamp("2024-07-01 10:00")
    assert (result.flat["appointment_at"].dt.hour == 0).all()
    assert booked.dt.tz is None


def test_timestamps_convert_to_an_iana_zone_then_drop_it(tmp_path: Path) -> None:
    # Given the same file, and a rule converting booking times to Berlin (UTC+1 winter, +2 summer)
    path = _write(tmp_path, MIXED_ZONES)
    mapping = NoShowMapping.from_dict(
        {
            "timestamps": {
                "booked_at": {"timezone": "Europe/Berlin"},
                "appointment_at": {"date_only": True},
            }
        }
    )
    # When loaded
    booked = load_own_appointments(path, mapping).flat.set_index("appointment_id")["booked_at"]
    # Then values with an offset are converted; a value without one is already local
    assert booked["a1"] == pd.Timestamp("2024-03-01 09:00")  # 08:00 UTC
    assert booked["a2"] == pd.Timestamp("2024-03-01 11:00")  # 10:00 UTC
    assert booked["a3"] == pd.Timestamp("2024-03-01 10:00")  # naive: taken as Berlin time
    assert booked["a4"] == pd.Timestamp("2024-03-01 14:00")  # 13:00 UTC
    assert booked["a5"] == pd.Timestamp("2024-07-01 12:00")  # summer time
    assert booked.dt.tz is None


def test_a_strftime_format_parses_and_outcome_at_defaults_to_the_visit(tmp_path: Path) -> None:
    # Given day-first times, one visit without an outcome (upcoming), one cancelled
    path = _write(
        tmp_path,
        "id;booked;visit;status\n"
        "1;01/03/2024 09:30;05/03/2024 14:30;show\n"
        "2;01/03/2024 09:30;06/03/2024 08:00;\n"
        "3;02/03/2024 11:00;07/03/2024 10:15;cancel\n",
    )
    mapping = NoShowMapping.from_dict(
        {
            "columns": {"id": "appointment_id", "booked": "booked_at", "visit": "appointment_at"}
            | {"status": "outcome"},
            "values": {"outcome": {"show": "attended", "cancel": "cancelled"}},
            "timestamps": {
                "booked_at": {"format": "%d/%m/%Y %H:%M"},
                "appointment_at": {"format": "%d/%m/%Y %H:%M"},
            },
        }
    )
    # When loaded (';'-separated)
    flat = load_own_appointments(path, mapping).flat.set_index("appointment_id")
    # Then day-first dates parse, the upcoming row is kept without an outcome time, and the
    # others' outcome time is the visit time (not date-only, so no end-of-day shift)
    assert flat.loc["1", "appointment_at"] == pd.Timestamp("2024-03-05 14:30")
    assert pd.isna(flat.loc["2", "outcome"]) and pd.isna(flat.loc["2", "outcome_at"])
    assert flat.loc["3", "outcome"] == "cancelled"
    assert (flat.loc[["1", "3"], "outcome_at"] == flat.loc[["1", "3"], "appointment_at"]).all()


def test_booleans_are_coerced_and_anything_else_is_rejected(tmp_path: Path) -> None:
    # Given reminder flags written in several ways, one of them not a boolean
    path = _write(
        tmp_path,
        "appointment_id,booked_at,appointment_at,text_reminder,outreach_call\n"
        "a,2024-03-01,2024-03-02,yes,0\n"
        "b,2024-03-01,2024-03-02,FALSE,1\n"
        "c,2024-03-01,2024-03-02,,true\n"
        "d,2024-03-01,2024-03-02,maybe,No\n",
    )
    # When loaded without a mapping (the file already uses the flat names)
    result = load_own_appointments(path)
    # Then the flags are nullable booleans and the odd one is rejected naming the column
    flags = result.flat.set_index("appointment_id")
    assert flags["text_reminder"].tolist()[:2] == [True, False]
    assert pd.isna(flags.loc["c", "text_reminder"]) and flags.loc["c", "outreach_call"]
    assert _reasons_on(result, 5) == (
        "text_reminder 'maybe' is not a boolean (true/false, 1/0, yes/no)"
    )


def test_na_like_cells_are_missing_and_rejected_rows_keep_the_text(tmp_path: Path) -> None:
    # Given NULL / N/A cells: an upcoming visit, an unknown sex and a missing booking time
    path = _write(
        tmp_path,
        "appointment_id,booked_at,appointment_at,sex,outcome\n"
        "a,2024-03-01,2024-03-02,N/A,NULL\n"
        "b,NULL,2024-03-02,F,attended\n",
    )
    # When loaded
    result = load_own_appointments(path)
    # Then they count as missing (a is kept as upcoming), and b's rejected row shows 'NULL'
    assert result.flat["appointment_id"].tolist() == ["a"]
    assert result.flat[["sex", "outcome", "outcome_at"]].isna().all(axis=None)
    assert result.rejected["booked_at"].tolist() == ["NULL"]
    assert result.rejected["reasons"].tolist() == ["booked_at is missing"]


def test_booked_after_a_timed_visit_and_missing_required_values_are_rejected(
    tmp_path: Path,
) -> None:
    # Given a visit with a time booked an hour after it, and a row without an id or booking time
    path = _write(
        tmp_path,
        "appointment_id,booked_at,appointment_at,age\n"
        "a,2024-03-01 11:00,2024-03-01 10:00,40\n"
        ",,2024-03-01 10:00,abc\n"
        "c,2024-03-01 09:00,2024-03-01 10:00,40\n",
    )
    # When loaded
    result = load_own_appointments(path)
    # Then the late booking is compared by time (not date), and every missing value is named
    assert _reasons_on(result, 2).startswith("booked_at '2024-03-01 11:00' is after appointment_at")
    assert _reasons_on(result, 3) == (
        "appointment_id is missing; booked_at is missing; age 'abc' is not a number"
    )
    assert result.flat["appointment_id"].tolist() == ["c"]


def test_a_mapped_date_only_outcome_time_counts_from_the_end_of_that_day(
    tmp_path: Path,
) -> None:
    # Given outcome dates, one before its booking
    path = _write(
        tmp_path,
        "appointment_id,booked_at,appointment_at,outcome,outcome_at\n"
        "a,2024-03-01 08:00,2024-03-04 10:00,no_show,2024-03-04\n"
        "b,2024-03-05 08:00,2024-03-09 10:00,attended,2024-03-03\n",
    )
    mapping = NoShowMapping.from_dict({"timestamps": {"outcome_at": {"date_only": True}}})
    # When loaded
    result = load_own_appointments(path, mapping)
    # Then a's outcome is known from the next midnight, and b is rejected
    assert result.flat["outcome_at"].tolist() == [pd.Timestamp("2024-03-05")]
    assert "outcome_at '2024-03-03' is before booked_at" in _reasons_on(result, 3)


# ---------------------------------------------------------------------------------------------
# Bad mappings
# ---------------------------------------------------------------------------------------------


def test_an_unknown_target_column_lists_the_allowed_names() -> None:
    # Given a mapping that renames a column to a name we do not have
    data = {"columns": {"Visit": "visit_time"}}
    # When it is validated
    with pytest.raises(MappingError) as info:
        NoShowMapping.from_dict(data)
    # Then the message names the key and lists every allowed flat and label column
    message = str(info.value)
    assert "columns.Visit: 'visit_time' is not a flat column; allowed: appointment_id" in message
    assert "outreach_call" in message and "outcome_at" in message
    assert "pydantic" not in message and "validation error" not in message.lower()


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("categorical", "race_ethnicity"),
        ("categorical", "Race"),
        ("numeric", "patient_ethnicity_code"),
    ],
)
def test_race_or_ethnicity_can_never_be_an_extra_feature(kind: str, name: str) -> None:
    # Given a mapping that asks for race/ethnicity as a model input
    data = {"features": {kind: [name]}}
    # When it is validated
    # Then it is refused, naming the key and the column
    with pytest.raises(
        MappingError, match=rf"features\.{kind}: '{name}' looks like race/ethnicity"
    ):
        NoShowMapping.from_dict(data)


def test_an_extra_feature_cannot_shadow_a_computed_feature() -> None:
    # Given a clinic column named like a feature we compute from the flat columns
    data = {"features": {"numeric": ["lead_days"]}}
    # When it is validated / Then it is refused rather than silently overwriting ours
    with pytest.raises(MappingError, match="'lead_days' is the name of a feature computed"):
        NoShowMapping.from_dict(data)


def test_a_column_missing_from_the_file_is_a_mapping_error(vitoria: NoShowMapping) -> None:
    # Given the Vitória mapping with one renamed source column and one extra the file lacks
    data = vitoria.model_dump()
    data["columns"] = {
        ("AppointmentId" if k == "AppointmentID" else k): v for k, v in data["columns"].items()
    }
    data["features"]["numeric"] = [*data["features"]["numeric"], "Smoker"]
    mapping = NoShowMapping.from_dict(data)
    # When the sample is loaded with it
    with pytest.raises(MappingError) as info:
        load_own_appointments(SAMPLE, mapping)
    # Then every missing column is named, with the file's actual columns
    message = str(info.value)
    assert "columns.AppointmentId: the file has no column 'AppointmentId'" in message
    assert "features.numeric: the file has no column 'Smoker'" in message
    assert "the file's columns are: PatientId, AppointmentID" in message


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "values:\n  outcome:\n    Yes: no_show\n",
            "values.outcome: key True was read by YAML as a boolean",
        ),
        ("colums:\n  a: appointment_id\n", "colums: unknown key; allowed keys: columns, values"),
        (
            "values:\n  outcome:\n    'Y': noshow\n",
            "values.outcome.Y: 'noshow' is not allowed; allowed: attended, no_show, cancelled",
        ),
        (
            "timestamps:\n  booked_at:\n    timezone: Mars/Olympus\n",
            "timestamps.booked_at.timezone: 'Mars/Olympus' is neither 'drop' nor an IANA",
        ),
        (
            "timestamps:\n  appointment_at: {date_only: true, timezone: UTC}\n",
            "timestamps.appointment_at: a date-only column has no time of day to convert",
        ),
        ("columns: [a, b]\n", "columns: expected a mapping"),
        ("columns:\n  a: [b\n", "not valid YAML at line"),
        ("", "the mapping is empty"),
    ],
)
def test_a_bad_mapping_file_names_the_key_and_what_is_allowed(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    # Given a mapping file with one mistake
    path = _write(tmp_path, yaml_text, "mapping.yaml")
    # When it is loaded
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    # Then the message starts with the file and explains the mistake in a sentence
    assert str(info.value).startswith(f"mapping {path}")
    assert expected in str(info.value)


def test_a_missing_mapping_file_is_a_mapping_error(tmp_path: Path) -> None:
    # Given a path with no file
    # When it is loaded / Then the error is a MappingError (a ValueError the CLI reports)
    with pytest.raises(MappingError, match="no such file"):
        load_mapping(tmp_path / "nope.yaml")
    assert issubclass(MappingError, ValueError)


def test_a_file_without_a_required_column_is_a_mapping_error(tmp_path: Path) -> None:
    # Given a file with no booking time and no mapping
    path = _write(tmp_path, "appointment_id,appointment_at\na,2024-03-01\n")
    # When it is loaded / Then the missing flat column is named
    with pytest.raises(MappingError, match="nothing maps to the required 'booked_at'"):
        load_own_appointments(path)


# ---------------------------------------------------------------------------------------------
# Parquet and the rejection report
# ---------------------------------------------------------------------------------------------


def test_parquet_input_gives_the_same_rows_with_0_based_row_numbers(
    tmp_path: Path, vitoria: NoShowMapping, sample: OwnAppointments, raw_sample: pd.DataFrame
) -> None:
    # Given the sample as a Parquet file of text columns
    path = tmp_path / "vitoria.parquet"
    raw_sample.to_parquet(path, index=False)
    # When it is loaded with the same mapping
    result = load_own_appointments(path, vitoria)
    # Then the same rows are kept, and rejected rows carry their 0-based row
    pd.testing.assert_frame_equal(result.flat, sample.flat)
    assert set(result.rejected["line"]) == set(SCRIPT.BAD_ROWS)
    assert "row 20: age (Age) -1 is outside 0-120" in describe_rejections(result, None)


def test_typed_parquet_columns_are_used_as_they_are(tmp_path: Path) -> None:
    # Given a Parquet file with real types: aware datetimes, bools, ints and float ids
    frame = pd.DataFrame(
        {
            "appointment_id": [101.0, 102.0],
            "booked_at": pd.to_datetime(["2024-03-01 10:00", "2024-03-02 10:00"]).tz_localize(
                "America/Sao_Paulo"
            ),
            "appointment_at": pd.to_datetime(["2024-03-04 09:00", "2024-03-05 09:00"]),
            "age": [30, 130],
            "text_reminder": [True, False],
        }
    )
    path = tmp_path / "typed.parquet"
    frame.to_parquet(path, index=False)
    # When loaded without a mapping
    result = load_own_appointments(path)
    # Then ids read as text without '.0', the wall-clock time is kept, and the bad age is named
    assert result.flat["appointment_id"].tolist() == ["101"]
    assert result.flat["booked_at"].iloc[0] == pd.Timestamp("2024-03-01 10:00")
    assert bool(result.flat["text_reminder"].iloc[0]) is True
    assert _reasons_on(result, 1) == "age 130 is outside 0-120"


def test_describe_rejections_writes_every_rejected_row_and_names_lines(
    tmp_path: Path, sample: OwnAppointments
) -> None:
    # Given the sample's 6 rejected rows
    out = tmp_path / "reports" / "rejected.csv"
    # When they are described with 2 examples
    text = describe_rejections(sample, out, examples=2)
    # Then the CSV holds every rejected row (line, reasons, original values) and the text
    # counts them, says where they went and shows the first two lines
    written = pd.read_csv(out, dtype=str)
    assert len(written) == 6
    assert set(written["line"].astype(int)) == BAD_LINES
    assert {"reasons", "AppointmentID", "No-show"} <= set(written.columns)
    lines = text.splitlines()
    assert lines[0] == f"6 of 200 rows rejected (written to {out}); first examples:"
    assert lines[1] == "  line 22: age (Age) -1 is outside 0-120"
    assert lines[2].startswith("  line 47: booked_at (ScheduledDay)")
    assert lines[3] == "  ... and 4 more"


def test_describe_rejections_without_rejections_or_path(tmp_path: Path) -> None:
    # Given a clean file
    path = _write(tmp_path, "appointment_id,booked_at,appointment_at\na,2024-03-01,2024-03-02\n")
    result = load_own_appointments(path)
    # When described without a path
    # Then it says so in one line and writes nothing
    assert describe_rejections(result, None) == "0 of 1 rows rejected."
    assert list(tmp_path.iterdir()) == [path]


def test_an_unknown_file_type_is_refused(tmp_path: Path) -> None:
    # Given an Excel file
    path = _write(tmp_path, "not really", "appointments.xlsx")
    # When it is loaded / Then the error says which types are read
    with pytest.raises(ValueError, match=r"expected a \.csv or \.parquet"):
        load_own_appointments(path)
