"""Import the CMS "Doctors and Clinicians" national downloadable file as directory tables.

``import_cms(path)`` reads the CSV (``DAC_NationalDownloadableFile.csv``, one row per clinician,
practice address, group and, in older releases, hospital affiliation) and returns a
``features.directory_import.DirectoryImport`` with ``organizations`` and ``specialists`` rows; the
file has no plans, networks or schedules, so ``plans`` and ``availability`` stay empty.

Design:

- **Header.** Column names differ between releases ("lst_nm", " lst_nm ", "Provider Last Name";
  "cty", "City/Town"; "zip", "ZIP Code"; "org_nm", "Facility Name"). A header cell is compared
  with the spellings in ``COLUMN_ALIASES`` after dropping case and every character that is not a
  letter or digit (so spaces, underscores and slashes do not matter). Unknown columns are ignored;
  a missing ``REQUIRED_COLUMNS`` entry raises ``ValueError`` naming it. Problems name fields by
  their canonical names (the keys of ``COLUMN_ALIASES``), whatever the file called them.
- **Reading.** Everything is read as text (``dtype=str``, ``keep_default_na=False``), so NPIs and
  ZIPs keep their digits, in chunks of ``CHUNK_ROWS`` rows with only the needed columns. Each
  chunk is checked with vectorised string operations; only the rows it keeps (a few narrow
  columns) are held until the end. The header is line 1 and data row ``i`` (0-based) is line
  ``i + 2``: this assumes no quoted field spans lines. Blank lines are
  kept as rows, so the numbers stay right, and skipped as ``blank_line``. A malformed line
  (too many fields) stops the import with pandas' ``ParserError`` (a ``ValueError``) naming it.
- **Per row**, in this order (the first failure is the row's one skip reason):
  ``blank_line``; ``invalid_npi`` (not 10 digits with the Luhn check digit);
  ``name_not_given`` (first or last name empty); ``sex_not_given`` (``gndr`` is not M or F: the
  contract's ``sex`` is F/M and has no "unknown", and guessing would feed the same-sex
  preference a made-up value, so such rows are left out); ``specialty_not_mapped`` (see below);
  ``zip_not_found`` (``features.zipgeo`` does not know the ZIP; 5 or 9 digits, lost leading
  zeros restored); ``address_not_given`` (``adr_ln_1`` empty).
- **Specialty.** ``pri_spec`` is looked up (case-insensitive, whitespace collapsed) in
  ``features/codesets/cms_specialties.csv`` (CMS specialty name -> NUCC code, with notes). When it
  is not there, the first of ``sec_spec_1`` .. ``sec_spec_4`` that is becomes the specialty and
  a repair ``Problem`` says so. Names left out on purpose, for want of an honest NUCC v12.1 code:
  PERIPHERAL VASCULAR DISEASE, HEMATOPOIETIC CELL TRANSPLANTATION AND CELLULAR THERAPY,
  UNDEFINED PHYSICIAN TYPE (SPECIFY), and any name not in the table.
- **Locations.** A clinician's rows are grouped by address: ``adrs_id`` when given, else the
  upper-cased, whitespace-collapsed ``adr_ln_1`` plus the 5-digit ZIP. Each distinct address of
  an NPI becomes one specialists row; in file order the first keeps the NPI as
  ``specialist_id`` and later ones are ``NPI-2``, ``NPI-3`` ... Later rows repeating an NPI and
  address (the file repeats a clinician per group or hospital affiliation) are merged into the
  first: counted under ``skipped["duplicate_address"]``, not listed as problems. The first row
  decides the location's group.
- **Organizations.** One per (``org_pac_id``, address): ``PAC<org_pac_id>-<n>``, ``n`` numbering
  that group's addresses in file order; a clinician without a group gets an individual practice
  ``NPI<npi>-<n>`` (``n`` = the location's number). Name = ``org_nm`` (or "<first> <last>
  practice" for an individual practice, "Group practice PAC <id>" for a group without a name),
  kind ``specialty_practice``, no system, metro "<City>, <ST>", address ``adr_ln_1`` (+ ", "
  ``adr_ln_2``), postal code the 5-digit ZIP, coordinates the ZIP centroid. An empty city is
  taken from the ZIP table, as is a state that is not two letters (both as repairs).
- **Coordinates** are ZIP centroids (the file has no geocodes): distances are approximate.
- **Names** are kept as the file writes them (upper case in CMS releases).
- **Neutral values** (``directory_import.NEUTRAL``) for what the file does not carry:
  ``MISSING_FIELDS``.

Problems quote NPIs, ZIPs, specialty and gender codes, never names or addresses.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from features import contract, zipgeo
from features.directory_import import NEUTRAL, DirectoryImport, frame
from features.dtypes import npi_mask

SOURCE: Final = "cms"
SPECIALTY_TABLE: Final = "cms_specialties.csv"
CHUNK_ROWS: Final = 200_000
FIRST_DATA_LINE: Final = 2  # the header is line 1
SECONDARY_SPECIALTIES: Final = ("sec_spec_1", "sec_spec_2", "sec_spec_3", "sec_spec_4")

# Canonical column name -> the header spellings accepted for it (compared after ``header_key``,
# so "Provider Last Name", " provider_last_name " and "PROVIDER LAST NAME" are one spelling).
# The first spelling is the older releases' (and the names problems use); "Provider Last Name",
# "Provider First Name", "Facility Name", "City/Town", "State" and "ZIP Code" are the newer
# releases' (their API spells them provider_last_name, facility_name, citytown, zip_code ...);
# the plain ones (last_name, gender, city ...) are for hand-made extracts.
COLUMN_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "NPI": ("NPI",),
    "lst_nm": ("lst_nm", "Provider Last Name", "last_name"),
    "frst_nm": ("frst_nm", "Provider First Name", "first_name"),
    "gndr": ("gndr", "gender"),
    "pri_spec": ("pri_spec", "primary_specialty"),
    "sec_spec_1": ("sec_spec_1",),
    "sec_spec_2": ("sec_spec_2",),
    "sec_spec_3": ("sec_spec_3",),
    "sec_spec_4": ("sec_spec_4",),
    "org_nm": ("org_nm", "Facility Name", "org_name"),
    "org_pac_id": ("org_pac_id",),
    "adr_ln_1": ("adr_ln_1", "address_line_1"),
    "adr_ln_2": ("adr_ln_2", "address_line_2"),
    "cty": ("cty", "City/Town", "city"),
    "st": ("st", "State"),
    "zip": ("zip", "ZIP Code", "zip_cd"),
    "adrs_id": ("adrs_id", "address_id"),
}
REQUIRED_COLUMNS: Final = (
    "NPI",
    "lst_nm",
    "frst_nm",
    "gndr",
    "pri_spec",
    "adr_ln_1",
    "cty",
    "st",
    "zip",
)

# Directory fields the CMS file does not carry; they get directory_import.NEUTRAL values.
MISSING_FIELDS: Final = (
    "rating",
    "review_count",
    "availability",
    "networks",
    "accepted_plans",
    "languages",
    "focus_codes",
    "accepting_new_patients",
    "weekly_capacity",
)

_NOT_ALNUM: Final = re.compile(r"[^0-9a-z]+")
_STATE: Final = r"[A-Z]{2}"


# ---------------------------------------------------------------------------------------------
# Header and specialty table.
# ---------------------------------------------------------------------------------------------


def header_key(name: str) -> str:
    """A header cell compared loosely: lower case, letters and digits only (" Lst_Nm " -> "lstnm")."""
    return _NOT_ALNUM.sub("", name.lower())


_ALIAS_KEYS: Final[dict[str, str]] = {
    header_key(spelling): canonical
    for canonical, spellings in COLUMN_ALIASES.items()
    for spelling in spellings
}


def resolve_columns(header: Iterable[str]) -> dict[str, str]:
    """Map the file's header cells to canonical names; ValueError if a required one is missing."""
    found: dict[str, str] = {}
    for raw in header:
        canonical = _ALIAS_KEYS.get(header_key(str(raw)))
        if canonical is None:
            continue
        if canonical in found.values():
            other = next(k for k, v in found.items() if v == canonical)
            raise ValueError(f"columns {other.strip()!r} and {raw.strip()!r} both give {canonical}")
        found[raw] = canonical
    missing = [c for c in REQUIRED_COLUMNS if c not in found.values()]
    if missing:
        accepted = "; ".join(f"{c}: {' / '.join(COLUMN_ALIASES[c])}" for c in missing)
        raise ValueError(
            f"not a CMS Doctors and Clinicians file: missing required column(s) "
            f"{', '.join(missing)} (accepted names: {accepted})"
        )
    return found


def squeezed(text: str) -> str:
    """Upper case with whitespace runs collapsed: how specialty names and addresses compare."""
    return " ".join(text.split()).upper()


def specialty_key(name: str) -> str:
    """A CMS specialty name as looked up in the table."""
    return squeezed(name)


def _specialty_rows() -> list[dict[str, str]]:
    text = resources.files("features.codesets").joinpath(SPECIALTY_TABLE).read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def specialty_map() -> dict[str, str]:
    """CMS specialty name (as ``specialty_key`` gives it) -> NUCC code, from cms_specialties.csv."""
    out: dict[str, str] = {}
    for row in _specialty_rows():
        key = specialty_key(row["cms_specialty"])
        if key in out:
            raise ValueError(f"{SPECIALTY_TABLE}: {key!r} is listed twice")
        out[key] = row["nucc_code"].strip()
    return out


# ---------------------------------------------------------------------------------------------
# One chunk: checks and the columns kept.
# ---------------------------------------------------------------------------------------------


def _by_unique(values: pd.Series, fn: Callable[[str], str | None]) -> pd.Series:
    """fn applied once per distinct value (a chunk repeats its specialties and addresses)."""
    return values.map({value: fn(value) for value in values.unique()})


def _code_of(name: str) -> str | None:
    return specialty_map().get(specialty_key(name))


def _specialties(chunk: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row: the NUCC code (NaN if none maps) and the column it came from ("" if none)."""
    code = _by_unique(chunk["pri_spec"], _code_of)
    source = pd.Series(np.where(code.notna(), "pri_spec", ""), index=chunk.index, dtype=object)
    for column in SECONDARY_SPECIALTIES:
        if column not in chunk.columns:
            continue
        todo = code.isna()
        if not todo.any():
            break
        sec = _by_unique(chunk.loc[todo, column], _code_of)
        hit = sec.dropna()
        code.loc[hit.index] = hit
        source.loc[hit.index] = column
    return code, source


def _zips(values: pd.Series) -> pd.DataFrame:
    """Per row: zip5, latitude, longitude, city and state from the ZIP table (NaN when unknown)."""
    table: dict[str, tuple[str, float, float, str, str]] = {}
    for raw in values.unique():
        info = zipgeo.lookup(raw)
        if info is not None:
            table[str(raw)] = (info.zip5, info.latitude, info.longitude, info.city, info.state)
    known = pd.DataFrame.from_dict(
        table, orient="index", columns=["zip5", "latitude", "longitude", "zip_city", "zip_state"]
    )
    parts = known.reindex(values.to_numpy())
    parts.index = values.index
    return parts


def _reasons(chunk: pd.DataFrame, code: pd.Series, geo: pd.DataFrame) -> np.ndarray:
    """Per row: the skip reason ("" when the row is kept), the first check that fails."""
    used = [c for c in chunk.columns if c != "line"]
    blank = (chunk[used] == "").all(axis=1)
    conditions = [
        blank,
        ~npi_mask(chunk["NPI"]),
        chunk["frst_nm"].eq("") | chunk["lst_nm"].eq(""),
        ~chunk["gndr"].str.upper().isin(contract.SEXES),
        code.isna(),
        geo["zip5"].isna(),
        chunk["adr_ln_1"].eq(""),
    ]
    choices = [
        "blank_line",
        "invalid_npi",
        "name_not_given",
        "sex_not_given",
        "specialty_not_mapped",
        "zip_not_found",
        "address_not_given",
    ]
    return np.select([c.to_numpy(dtype=bool) for c in conditions], choices, default="")


def _skip_message(reason: str, row: pd.Series) -> tuple[str, str]:
    """(field, message) for a skipped row; quotes codes, never names or addresses."""
    if reason == "blank_line":
        return "", "blank line"
    if reason == "invalid_npi":
        return (
            "NPI",
            f"{row['NPI']!r} is not a valid NPI (10 digits ending in the Luhn check digit)",
        )
    if reason == "name_not_given":
        which = "frst_nm" if row["frst_nm"] == "" else "lst_nm"
        return which, "the name is empty"
    if reason == "sex_not_given":
        shown = repr(row["gndr"]) if row["gndr"] else "empty"
        return "gndr", f"gender is {shown}, not M or F (the contract's sex has no unknown value)"
    if reason == "specialty_not_mapped":
        shown = repr(row["pri_spec"]) if row["pri_spec"] else "empty"
        return (
            "pri_spec",
            f"specialty {shown} (nor any sec_spec_1..4) has no NUCC code in {SPECIALTY_TABLE}",
        )
    if reason == "zip_not_found":
        return "zip", f"ZIP {row['zip']!r} is not a known 5- or 9-digit US ZIP code"
    return "adr_ln_1", "the address is empty"


def _record_skips(result: DirectoryImport, chunk: pd.DataFrame, reasons: np.ndarray) -> None:
    bad = np.flatnonzero(reasons != "")
    if not len(bad):
        return
    rows = chunk.iloc[bad][["line", "NPI", "frst_nm", "lst_nm", "gndr", "pri_spec", "zip"]]
    for reason, (_, row) in zip(reasons[bad], rows.iterrows(), strict=True):
        field, message = _skip_message(str(reason), row)
        result.skip(f"line {row['line']}", field, message, str(reason))


def _kept(
    chunk: pd.DataFrame, code: pd.Series, source: pd.Series, geo: pd.DataFrame
) -> pd.DataFrame:
    """The narrow frame of accepted rows: what the tables and repair problems need."""
    state = chunk["st"].str.upper()
    bad_state = ~state.str.fullmatch(_STATE).fillna(False).astype(bool)
    no_city = chunk["cty"].eq("")
    line_2 = chunk["adr_ln_2"]
    address = chunk["adr_ln_1"].where(line_2.eq(""), chunk["adr_ln_1"] + ", " + line_2)
    location = chunk["adrs_id"].copy()
    no_id = location.eq("")
    if no_id.any():
        text = _by_unique(chunk.loc[no_id, "adr_ln_1"], squeezed)
        location.loc[no_id] = text + "|" + geo.loc[no_id, "zip5"].astype("str")
    return pd.DataFrame(
        {
            "line": chunk["line"],
            "npi": chunk["NPI"],
            "location": location,
            "first_name": chunk["frst_nm"],
            "last_name": chunk["lst_nm"],
            "sex": chunk["gndr"].str.upper(),
            "specialty": code.astype("str"),
            "specialty_from": source.astype("str"),
            "pri_spec": chunk["pri_spec"],
            "org_pac_id": chunk["org_pac_id"],
            "org_nm": chunk["org_nm"],
            "address_line": address,
            "city": chunk["cty"].where(~no_city, geo["zip_city"]),
            "state": state.where(~bad_state, geo["zip_state"]),
            "state_from_zip": bad_state,
            "raw_state": chunk["st"],
            "city_from_zip": no_city,
            "postal_code": geo["zip5"],
            "latitude": geo["latitude"].astype("float64"),
            "longitude": geo["longitude"].astype("float64"),
        }
    )


def _read_chunk(result: DirectoryImport, chunk: pd.DataFrame) -> pd.DataFrame:
    """Check one chunk, record its skipped rows, return its accepted rows (duplicates merged)."""
    code, source = _specialties(chunk)
    geo = _zips(chunk["zip"])
    reasons = _reasons(chunk, code, geo)
    _record_skips(result, chunk, reasons)
    keep = reasons == ""
    kept = _kept(chunk[keep], code[keep], source[keep], geo[keep])
    return _merge_duplicates(result, kept)


def _merge_duplicates(result: DirectoryImport, kept: pd.DataFrame) -> pd.DataFrame:
    """Drop later rows repeating an (NPI, address), counting them as duplicate_address."""
    repeated = kept.duplicated(["npi", "location"], keep="first")
    n = int(repeated.sum())
    if n:
        result.skipped["duplicate_address"] += n
    return kept[~repeated]


# ---------------------------------------------------------------------------------------------
# The tables.
# ---------------------------------------------------------------------------------------------


def _organization_ids(rows: pd.DataFrame, location_number: pd.Series) -> pd.Series:
    """PAC<org_pac_id>-<n> per (group, address); NPI<npi>-<n> for an individual practice."""
    group = rows["org_pac_id"].ne("")
    firsts = rows.loc[group, ["org_pac_id", "location"]].drop_duplicates()
    firsts = firsts.assign(n=firsts.groupby("org_pac_id", sort=False).cumcount() + 1)
    numbered = rows[["org_pac_id", "location"]].merge(
        firsts, how="left", on=["org_pac_id", "location"]
    )
    group_n = pd.Series(numbered["n"].to_numpy(), index=rows.index)
    group_id = "PAC" + rows["org_pac_id"] + "-" + group_n.fillna(0).astype("int64").astype("str")
    own_id = "NPI" + rows["npi"] + "-" + location_number.astype("str")
    return group_id.where(group, own_id)


def _organizations(rows: pd.DataFrame) -> pd.DataFrame:
    """One organizations row per organization_id, from its first location row."""
    first = rows.drop_duplicates("organization_id")
    own_name = first["first_name"] + " " + first["last_name"] + " practice"
    group_name = "Group practice PAC " + first["org_pac_id"]
    fallback = own_name.where(first["org_pac_id"].eq(""), group_name)
    columns: dict[str, object] = {
        "organization_id": first["organization_id"],
        "name": first["org_nm"].where(first["org_nm"].ne(""), fallback),
        "kind": "specialty_practice",
        "system_id": None,
        "metro": first["city"].str.title() + ", " + first["state"],
        "address_line": first["address_line"],
        "city": first["city"],
        "state": first["state"],
        "postal_code": first["postal_code"],
        "latitude": first["latitude"],
        "longitude": first["longitude"],
    }
    return frame("organizations", columns, first.index)


def _specialists(rows: pd.DataFrame) -> pd.DataFrame:
    columns: dict[str, object] = {
        "specialist_id": rows["specialist_id"],
        "first_name": rows["first_name"],
        "last_name": rows["last_name"],
        "sex": rows["sex"],
        "specialty": rows["specialty"],
        "organization_id": rows["organization_id"],
        "latitude": rows["latitude"],
        "longitude": rows["longitude"],
        **NEUTRAL,
    }
    return frame("specialists", columns, rows.index)


def _record_repairs(result: DirectoryImport, rows: pd.DataFrame) -> None:
    """Repair problems for the rows that became specialists (merged duplicates say nothing)."""
    secondary = rows[rows["specialty_from"].ne("pri_spec")]
    for row in secondary.itertuples(index=False):
        shown = repr(row.pri_spec) if row.pri_spec else "empty"
        result.repair(
            f"line {row.line}",
            "pri_spec",
            f"specialty {shown} has no NUCC code in {SPECIALTY_TABLE}; used "
            f"{row.specialty_from} ({row.specialty})",
        )
    for row in rows[rows["state_from_zip"]].itertuples(index=False):
        what = f"{row.raw_state!r} is not a 2-letter code" if row.raw_state else "is empty"
        result.repair(f"line {row.line}", "st", f"state {what}; used the ZIP's state {row.state}")
    for row in rows[rows["city_from_zip"]].itertuples(index=False):
        result.repair(f"line {row.line}", "cty", "the city is empty; used the ZIP's city")


def _line_of(where: str) -> int:
    return int(where.split()[-1])


# ---------------------------------------------------------------------------------------------
# Reading the file.
# ---------------------------------------------------------------------------------------------


def _chunks(path: Path, columns: dict[str, str], chunksize: int) -> Iterable[pd.DataFrame]:
    """The file's data rows in chunks, as stripped text with canonical column names and "line"."""
    reader = pd.read_csv(
        path,
        dtype=str,
        keep_default_na=False,
        na_values=[],
        usecols=list(columns),
        skip_blank_lines=False,
        chunksize=chunksize,
        encoding="utf-8",
        encoding_errors="replace",
    )
    line = FIRST_DATA_LINE
    with reader:
        for raw in reader:
            chunk = raw.rename(columns=columns).fillna("")
            for name in COLUMN_ALIASES:
                if name not in chunk.columns:
                    chunk[name] = ""
                else:
                    chunk[name] = chunk[name].astype("str").str.strip()
            chunk = chunk.reset_index(drop=True)
            chunk["line"] = np.arange(line, line + len(chunk))
            line += len(chunk)
            yield chunk


def _header(path: Path) -> list[str]:
    head = pd.read_csv(path, dtype=str, nrows=0, encoding="utf-8", encoding_errors="replace")
    return [str(c) for c in head.columns]


def _number_locations(rows: pd.DataFrame) -> pd.DataFrame:
    """Add specialist_id (NPI, NPI-2, ... in file order) and organization_id to the kept rows."""
    rows = rows.reset_index(drop=True)
    location_number = rows.groupby("npi", sort=False).cumcount() + 1
    rows["specialist_id"] = rows["npi"].where(
        location_number.eq(1), rows["npi"] + "-" + location_number.astype("str")
    )
    rows["organization_id"] = _organization_ids(rows, location_number)
    return rows


def import_cms(path: Path, *, chunksize: int = CHUNK_ROWS) -> DirectoryImport:
    """Read a CMS Doctors and Clinicians CSV into directory tables (see the module docstring).

    Raises ValueError when a required column is missing (or the CSV is malformed)."""
    path = Path(path)
    columns = resolve_columns(_header(path))
    log = DirectoryImport(source=SOURCE, path=str(path), tables={})  # counts and problems
    parts: list[pd.DataFrame] = []
    for chunk in _chunks(path, columns, chunksize):
        log.read += len(chunk)
        parts.append(_read_chunk(log, chunk))
    tables: dict[str, pd.DataFrame] = {}
    kept = [part for part in parts if not part.empty]
    if kept:
        rows = _number_locations(_merge_duplicates(log, pd.concat(kept, ignore_index=True)))
        _record_repairs(log, rows)
        tables = {"organizations": _organizations(rows), "specialists": _specialists(rows)}
    log.problems.sort(key=lambda p: _line_of(p.where))  # skips by chunk, repairs at the end
    return DirectoryImport(
        source=SOURCE,
        path=str(path),
        tables=tables,
        read=log.read,
        imported=len(tables["specialists"]) if tables else 0,
        skipped=log.skipped,
        problems=log.problems,
        missing=list(MISSING_FIELDS),
    )
