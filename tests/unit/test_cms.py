"""The CMS Doctors and Clinicians importer (features.cms) on the made-up sample files."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from features import codes, zipgeo
from features.cms import (
    COLUMN_ALIASES,
    MISSING_FIELDS,
    REQUIRED_COLUMNS,
    SPECIALTY_TABLE,
    import_cms,
    specialty_key,
    specialty_map,
)
from features.directory_import import NEUTRAL, DirectoryImport
from features.validation import validate_tables

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parents[1] / "fixtures"
SAMPLE_CSV = FIXTURES / "cms_sample.csv"
VARIANT_CSV = FIXTURES / "cms_sample_header_variant.csv"
TABLE_CSV = Path(__file__).parents[2] / "features" / "codesets" / SPECIALTY_TABLE

# CMS specialty names the mapping table must cover (the physician and specialist ones the
# matcher's specialties come from, plus common primary-care and non-physician ones).
MUST_MAP = (
    "CARDIOVASCULAR DISEASE (CARDIOLOGY)",
    "ORTHOPEDIC SURGERY",
    "DERMATOLOGY",
    "NEUROLOGY",
    "GASTROENTEROLOGY",
    "PULMONARY DISEASE",
    "ENDOCRINOLOGY",
    "NEPHROLOGY",
    "RHEUMATOLOGY",
    "HEMATOLOGY/ONCOLOGY",
    "MEDICAL ONCOLOGY",
    "UROLOGY",
    "OPHTHALMOLOGY",
    "OTOLARYNGOLOGY",
    "PSYCHIATRY",
    "OBSTETRICS/GYNECOLOGY",
    "ALLERGY/IMMUNOLOGY",
    "CARDIAC ELECTROPHYSIOLOGY",
    "INTERVENTIONAL CARDIOLOGY",
    "PHYSICAL MEDICINE AND REHABILITATION",
    "INFECTIOUS DISEASE",
    "GERIATRIC MEDICINE",
    "SLEEP MEDICINE",
    "PAIN MANAGEMENT",
    "INTERVENTIONAL PAIN MANAGEMENT",
    "VASCULAR SURGERY",
    "GENERAL SURGERY",
    "NEUROSURGERY",
    "PODIATRY",
    "PLASTIC AND RECONSTRUCTIVE SURGERY",
    "HAND SURGERY",
    "SPORTS MEDICINE",
    "THORACIC SURGERY",
    "COLORECTAL SURGERY (PROCTOLOGY)",
    "GYNECOLOGICAL ONCOLOGY",
    "RADIATION ONCOLOGY",
    "PEDIATRIC MEDICINE",
    "FAMILY PRACTICE",
    "INTERNAL MEDICINE",
    "NURSE PRACTITIONER",
    "PHYSICIAN ASSISTANT",
    "CLINICAL PSYCHOLOGIST",
    "OPTOMETRY",
    "AUDIOLOGIST",
)
# Where the table must agree with the matcher's own specialties (features/codesets/specialties.csv).
MATCHER_CODES = {
    "CARDIOVASCULAR DISEASE (CARDIOLOGY)": "207RC0000X",
    "CARDIAC ELECTROPHYSIOLOGY": "207RC0001X",
    "INTERVENTIONAL CARDIOLOGY": "207RI0011X",
    "ORTHOPEDIC SURGERY": "207X00000X",
    "DERMATOLOGY": "207N00000X",
    "NEUROLOGY": "2084N0400X",
    "PULMONARY DISEASE": "207RP1001X",
    "HEMATOLOGY/ONCOLOGY": "207RH0003X",
    "OBSTETRICS/GYNECOLOGY": "207V00000X",
    "NEUROSURGERY": "207T00000X",
}


def _sample_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_cms_sample", FIXTURES / "make_cms_sample.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


SCRIPT = _sample_script()
SAMPLE = SCRIPT.build()


@pytest.fixture(scope="module")
def result() -> DirectoryImport:
    return import_cms(SAMPLE_CSV)


def _specialists(result: DirectoryImport) -> pd.DataFrame:
    return result.tables["specialists"].set_index("specialist_id")


def _problems_on(result: DirectoryImport, line: int) -> list:
    return [p for p in result.problems if p.where == f"line {line}"]


def _write(tmp_path: Path, text: str, name: str = "cms.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# The sample files
# ---------------------------------------------------------------------------------------------


def test_checked_in_samples_are_what_the_script_writes() -> None:
    # Given the generator script beside the checked-in CSVs
    # When it renders them again
    # Then they are byte for byte the checked-in files, so the script documents how they were made
    assert SAMPLE_CSV.read_text(encoding="utf-8") == SCRIPT.render(SAMPLE.rows)
    variant = SCRIPT.render_variant(SAMPLE.rows[: SCRIPT.VARIANT_ROWS])
    assert VARIANT_CSV.read_text(encoding="utf-8") == variant


def test_sample_npis_are_valid_and_never_issued_ones() -> None:
    npis = {row["NPI"] for row in SAMPLE.rows}
    bad_npi_lines = [line for line, (reason, _) in SAMPLE.bad.items() if reason == "invalid_npi"]
    for row_number, row in enumerate(SAMPLE.rows, start=2):
        assert row["NPI"].startswith("9")  # no NPI has been issued with a first digit 9
        assert codes.is_valid_npi(row["NPI"]) is (row_number not in bad_npi_lines)
    assert len(npis) > 25


# ---------------------------------------------------------------------------------------------
# Counts and problems
# ---------------------------------------------------------------------------------------------


def test_counts_match_what_the_sample_holds(result: DirectoryImport) -> None:
    # Given 40 rows: 4 bad ones and 6 repeating a clinician's address
    expected_skips = {reason: 0 for reason, _ in SAMPLE.bad.values()}
    for reason, _ in SAMPLE.bad.values():
        expected_skips[reason] += 1
    expected_skips["duplicate_address"] = len(SAMPLE.duplicates)
    # When the sample is imported
    # Then every row is read, and is either a specialists row or counted under one reason
    assert result.read == len(SAMPLE.rows) == 40
    assert dict(result.skipped) == expected_skips
    assert result.imported == len(SAMPLE.rows) - len(SAMPLE.bad) - len(SAMPLE.duplicates) == 30
    assert result.read == result.imported + sum(result.skipped.values())
    assert result.counts == {"organizations": 30, "plans": 0, "specialists": 30, "availability": 0}


def test_each_bad_row_is_one_skip_problem_naming_its_line_and_field(
    result: DirectoryImport,
) -> None:
    for line, (_reason, field) in SAMPLE.bad.items():
        problems = _problems_on(result, line)
        assert len(problems) == 1, f"line {line}"
        assert problems[0].field == field and problems[0].skipped, str(problems[0])
        assert str(problems[0]).startswith(f"line {line}: {field}: ")
    assert sum(p.skipped for p in result.problems) == len(SAMPLE.bad)
    assert [p.where for p in result.problems] == sorted(
        (p.where for p in result.problems), key=lambda w: int(w.split()[1])
    )


def test_problems_quote_no_names(result: DirectoryImport) -> None:
    names = {row[c] for row in SAMPLE.rows for c in ("frst_nm", "lst_nm", "adr_ln_1") if row[c]}
    text = " ".join(str(p) for p in result.problems)
    assert not [name for name in names if name in text]


def test_repeated_address_rows_are_merged_not_reported(result: DirectoryImport) -> None:
    # Given rows repeating a clinician at the same address (one per hospital affiliation or group)
    specialists = result.tables["specialists"]
    for line, npi in SAMPLE.duplicates.items():
        # Then they give no problem, and the clinician has one row per distinct address
        assert _problems_on(result, line) == []
        addresses = {r["adrs_id"] for r in SAMPLE.rows if r["NPI"] == npi}
        mine = specialists[specialists["specialist_id"].map(codes.npi_of) == npi]
        assert len(mine) == len(addresses)


def test_the_first_row_of_an_address_decides_its_group(result: DirectoryImport) -> None:
    # Given a clinician whose address is repeated under a second group later in the file
    regrouped = []
    for line in SAMPLE.duplicates:
        row = SAMPLE.rows[line - 2]
        first = next(
            r for r in SAMPLE.rows if (r["NPI"], r["adrs_id"]) == (row["NPI"], row["adrs_id"])
        )
        if first["org_pac_id"] != row["org_pac_id"]:
            regrouped.append((row["NPI"], first["org_pac_id"]))
    assert len(regrouped) == 1
    ((npi, first_group),) = regrouped
    # Then its one row belongs to the first row's group
    assert _specialists(result).loc[npi, "organization_id"].startswith(f"PAC{first_group}-")


# ---------------------------------------------------------------------------------------------
# Locations and coordinates
# ---------------------------------------------------------------------------------------------


def test_a_clinician_at_two_addresses_gets_two_rows(result: DirectoryImport) -> None:
    specialists = _specialists(result)
    npi = SAMPLE.two_address
    ids = [i for i in specialists.index if codes.npi_of(i) == npi]
    assert ids == [npi, f"{npi}-2"]
    first, second = specialists.loc[npi], specialists.loc[f"{npi}-2"]
    boston, cambridge = zipgeo.lookup("02115"), zipgeo.lookup("02139")
    assert boston is not None and cambridge is not None
    assert (first["latitude"], first["longitude"]) == (boston.latitude, boston.longitude)
    assert (second["latitude"], second["longitude"]) == (cambridge.latitude, cambridge.longitude)
    assert first["organization_id"] != second["organization_id"]
    assert first[["first_name", "last_name", "sex", "specialty"]].equals(
        second[["first_name", "last_name", "sex", "specialty"]]
    )


def test_zip_plus_4_and_lost_leading_zeros_geocode_to_their_zip(result: DirectoryImport) -> None:
    specialists = _specialists(result)
    organizations = result.tables["organizations"].set_index("organization_id")
    assert set(SAMPLE.zip_cases.values()) == {"77030", "02116", "02139"}
    for npi, zip5 in SAMPLE.zip_cases.items():
        info = zipgeo.lookup(zip5)
        assert info is not None
        row = specialists.loc[npi]
        assert (row["latitude"], row["longitude"]) == (info.latitude, info.longitude)
        assert organizations.loc[row["organization_id"], "postal_code"] == zip5


# ---------------------------------------------------------------------------------------------
# Specialties
# ---------------------------------------------------------------------------------------------


def test_specialty_names_match_ignoring_case_and_spacing(result: DirectoryImport) -> None:
    specialists = _specialists(result)
    otolaryngologist = next(r["NPI"] for r in SAMPLE.rows if r["pri_spec"] == "Otolaryngology ")
    assert specialists.loc[otolaryngologist, "specialty"] == "207Y00000X"
    assert specialty_key("  cardiovascular   disease (cardiology) ") == (
        "CARDIOVASCULAR DISEASE (CARDIOLOGY)"
    )


def test_an_unmapped_primary_specialty_falls_back_to_a_secondary_one(
    result: DirectoryImport,
) -> None:
    line, code = SAMPLE.secondary
    row = SAMPLE.rows[line - 2]
    assert _specialists(result).loc[row["NPI"], "specialty"] == code
    (problem,) = _problems_on(result, line)
    assert problem.field == "pri_spec" and not problem.skipped
    assert "sec_spec_1" in problem.message


def test_mapping_table_codes_are_nucc_codes_without_duplicate_names() -> None:
    with TABLE_CSV.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["cms_specialty", "nucc_code", "note"]
    keys = [specialty_key(r["cms_specialty"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert all(r["cms_specialty"] == specialty_key(r["cms_specialty"]) for r in rows)
    assert {r["nucc_code"] for r in rows} <= codes.nucc_codes()
    assert len(rows) >= 80


def test_mapping_table_covers_the_listed_names_and_agrees_with_the_matcher() -> None:
    mapping = specialty_map()
    assert [name for name in MUST_MAP if name not in mapping] == []
    for name, code in MATCHER_CODES.items():
        assert mapping[name] == code
        assert code in codes.specialties()


def test_every_imported_specialty_is_a_nucc_code(result: DirectoryImport) -> None:
    assert set(result.tables["specialists"]["specialty"]) <= codes.nucc_codes()


# ---------------------------------------------------------------------------------------------
# Organizations, neutral values and the contract
# ---------------------------------------------------------------------------------------------


def test_organizations_are_one_per_group_and_address(result: DirectoryImport) -> None:
    organizations = result.tables["organizations"]
    specialists = result.tables["specialists"]
    assert organizations["organization_id"].is_unique
    assert set(specialists["organization_id"]) == set(organizations["organization_id"])
    assert set(organizations["kind"]) == {"specialty_practice"}
    assert organizations["system_id"].isna().all()
    assert organizations["metro"].str.fullmatch(r"[A-Z][a-z]+, [A-Z]{2}").all()
    by_id = organizations.set_index("organization_id")
    own = _specialists(result).loc[SAMPLE.no_group, "organization_id"]
    assert own == f"NPI{SAMPLE.no_group}-1"
    assert by_id.loc[own, "name"].endswith(" practice")
    group_ids = organizations["organization_id"][organizations["organization_id"].str[:3] == "PAC"]
    assert group_ids.str.fullmatch(r"PAC[0-9]{10}-[1-9][0-9]*").all()


def test_repairs_take_state_and_city_from_the_zip(result: DirectoryImport) -> None:
    organizations = result.tables["organizations"].set_index("organization_id")
    for line, field in SAMPLE.repairs.items():
        (problem,) = _problems_on(result, line)
        assert problem.field == field and not problem.skipped
        row = SAMPLE.rows[line - 2]
        info = zipgeo.lookup(row["zip"])
        assert info is not None
        organization = organizations.loc[_specialists(result).loc[row["NPI"], "organization_id"]]
        assert (organization["city"].upper(), organization["state"]) == (
            info.city.upper(),
            info.state,
        )


def test_fields_the_file_lacks_get_the_neutral_values(result: DirectoryImport) -> None:
    specialists = result.tables["specialists"]
    for column, value in NEUTRAL.items():
        if value is None:
            assert specialists[column].isna().all()
        else:
            assert (specialists[column] == value).all(), column
    assert result.missing == list(MISSING_FIELDS)
    assert result.tables["plans"].empty and result.tables["availability"].empty
    assert result.source == "cms"


def test_imported_tables_pass_the_contract(result: DirectoryImport) -> None:
    report = validate_tables(result.dataset())
    assert report.ok, report.lines()[:10]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def test_header_variants_import_like_the_canonical_header(tmp_path: Path) -> None:
    # Given the variant file's rows written again with the canonical header
    canonical = _write(tmp_path, SCRIPT.render(SAMPLE.rows[: SCRIPT.VARIANT_ROWS]))
    # When both are imported
    a, b = import_cms(canonical), import_cms(VARIANT_CSV)
    # Then they give the same tables, counts and problems
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    assert (a.read, a.imported, a.skipped) == (b.read, b.imported, b.skipped)
    assert a.problems == b.problems
    assert a.imported > 0


def test_chunks_give_the_same_result_as_one_read(result: DirectoryImport) -> None:
    # Given chunks of 7 rows, so repeated addresses fall into different chunks
    small = import_cms(SAMPLE_CSV, chunksize=7)
    for name in result.tables:
        pd.testing.assert_frame_equal(small.tables[name], result.tables[name])
    assert small.skipped == result.skipped
    assert small.problems == result.problems


def test_missing_required_columns_are_named(tmp_path: Path) -> None:
    header = [c for c in SCRIPT.HEADER if c not in ("gndr", "zip")]
    path = _write(tmp_path, ",".join(header) + "\n")
    with pytest.raises(ValueError, match=r"missing required column\(s\) gndr, zip"):
        import_cms(path)
    assert set(REQUIRED_COLUMNS) <= set(COLUMN_ALIASES)


def test_two_columns_for_one_field_are_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, ",".join([*SCRIPT.HEADER, "Provider Last Name"]) + "\n")
    with pytest.raises(ValueError, match="both give lst_nm"):
        import_cms(path)


def test_ids_and_zips_stay_text_and_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    # Given the first clinician's row, a blank line, then the no-leading-zero ZIP row
    lines = SCRIPT.render(SAMPLE.rows).splitlines()
    zip_line = next(
        n for n, r in enumerate(SAMPLE.rows, start=2) if r["zip"] == "2116"
    )  # file line of the "2116" row
    path = _write(tmp_path, "\n".join([lines[0], lines[1], "", lines[zip_line - 1]]) + "\n")
    got = import_cms(path)
    # Then the blank line 3 is counted, and the ZIP keeps its restored leading zero
    assert got.read == 3 and got.imported == 2
    assert dict(got.skipped) == {"blank_line": 1}
    assert [(p.where, p.skipped) for p in got.problems] == [("line 3", True)]
    assert set(got.tables["organizations"]["postal_code"]) == {"02115", "02116"}


def test_a_file_with_only_bad_rows_imports_nothing(tmp_path: Path) -> None:
    bad_lines = sorted(SAMPLE.bad)
    lines = SCRIPT.render(SAMPLE.rows).splitlines()
    path = _write(tmp_path, "\n".join([lines[0], *(lines[n - 1] for n in bad_lines)]) + "\n")
    got = import_cms(path)
    assert (got.read, got.imported) == (4, 0)
    assert dict(got.skipped) == {SAMPLE.bad[n][0]: 1 for n in bad_lines}
    assert [p.where for p in got.problems] == ["line 2", "line 3", "line 4", "line 5"]
    assert got.counts["specialists"] == 0 and validate_tables(got.dataset()).ok
