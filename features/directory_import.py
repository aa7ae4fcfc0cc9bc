"""What a directory import produces: contract tables plus an honest account of what was read.

Both importers (``features.fhir_directory`` for FHIR R4 Plan-Net resources and
``features.cms`` for the CMS "Doctors and Clinicians" file) return a ``DirectoryImport``:

- ``tables``: the directory's contract tables (``organizations``, ``plans``, ``specialists``,
  ``availability``) with the contract's columns, in contract order;
- ``read`` / ``imported`` / ``skipped``: how many source records were read, how many became
  specialist rows, and per reason how many were left out;
- ``problems``: one ``Problem`` per record left out or field repaired, naming the line (CSV,
  ndjson) or the resource (``PractitionerRole/abc``) and the field, so nothing is dropped
  silently;
- ``missing``: the directory fields the source does not carry (``rating``, ``availability``,
  ``networks``, ...), for which documented neutral values were written (``NEUTRAL``).

``write_dataset`` writes the tables as a dataset folder (every contract table; the ones a
directory has no rows for are written empty, so ``referral-ml validate`` and ``store load``
accept the folder) and ``import_report.json`` beside them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pandas as pd

from features import contract

DIRECTORY_TABLES: Final = ("organizations", "plans", "specialists", "availability")
REPORT_FILE: Final = "import_report.json"

# Neutral values written for directory fields a source does not carry. The ranker and the
# reasons treat them as "not listed": no reviews (rating null, 0 reviews), no published schedule
# (no availability rows: the reasons say "availability not listed"), no network claim (empty
# network_ids/accepted_plan_ids; with no plans at all the reasons say network status is unknown),
# languages not listed (empty), no focus claims (empty focus_codes), capacity not listed (0).
NEUTRAL: Final[dict[str, Any]] = {
    "languages": "",
    "focus_codes": "",
    "network_ids": "",
    "accepted_plan_ids": "",
    "accepting_new_patients": True,
    "weekly_capacity": 0,
    "rating": None,
    "review_count": 0,
}


@dataclass(frozen=True)
class Problem:
    """One record left out, or one field repaired, with where it was found."""

    where: str  # "line 12" (CSV, ndjson) or "PractitionerRole/abc" (FHIR)
    field: str  # the source field ("pri_spec", "PractitionerRole.specialty"), or "" for a record
    message: str
    skipped: bool = True  # False: the record was imported with this field repaired or defaulted

    def __str__(self) -> str:
        what = f"{self.field}: " if self.field else ""
        action = "skipped" if self.skipped else "imported"
        return f"{self.where}: {what}{self.message} ({action})"


@dataclass
class DirectoryImport:
    """The result of one import: tables, counts and problems."""

    source: str  # "fhir" or "cms"
    path: str
    tables: dict[str, pd.DataFrame]
    read: int = 0
    imported: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in DIRECTORY_TABLES:
            if name not in self.tables:
                self.tables[name] = empty_table(name)
        self.tables = {name: self.tables[name] for name in DIRECTORY_TABLES}
        self.counts = {name: len(df) for name, df in self.tables.items()}

    def skip(self, where: str, field_name: str, message: str, reason: str) -> None:
        """Record a record left out under `reason` (a short key counted in `skipped`)."""
        self.skipped[reason] += 1
        self.problems.append(Problem(where, field_name, message, skipped=True))

    def repair(self, where: str, field_name: str, message: str) -> None:
        """Record a field defaulted or repaired on a record that was imported."""
        self.problems.append(Problem(where, field_name, message, skipped=False))

    def report(self) -> dict[str, Any]:
        """A JSON-ready summary (at most 1,000 problems listed; `problems_total` counts all)."""
        return {
            "source": self.source,
            "path": self.path,
            "read": self.read,
            "imported": self.imported,
            "skipped": dict(sorted(self.skipped.items())),
            "tables": self.counts,
            "missing_fields": list(self.missing),
            "neutral_values": {k: NEUTRAL[k] for k in NEUTRAL},
            "problems_total": len(self.problems),
            "problems": [str(p) for p in self.problems[:1000]],
        }

    def dataset(self) -> dict[str, pd.DataFrame]:
        """Every contract table: the directory's, and empty ones for the rest."""
        out = {name: empty_table(name) for name in contract.TABLES}
        out.update(self.tables)
        return out

    def write_dataset(self, directory: Path) -> Path:
        """Write every contract table as Parquet plus import_report.json into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, df in self.dataset().items():
            df.to_parquet(directory / f"{name}.parquet", index=False)
        (directory / REPORT_FILE).write_text(json.dumps(self.report(), indent=2, default=str))
        return directory


_DTYPES: Final[dict[str, str]] = {
    "latitude": "float64",
    "longitude": "float64",
    "rating": "float64",
    "weekly_capacity": "int64",
    "review_count": "int64",
    "birth_year": "int64",
    "accepting_new_patients": "bool",
    "out_of_network_coverage": "bool",
    "text_reminder": "bool",
    "outreach_call": "bool",
}
_TIMES: Final = frozenset(
    {"start", "end", "booked_at", "created_at", "status_at", "appointment_at", "outcome_at"}
)


def column_dtype(column: str) -> str:
    """The pandas dtype a contract column has in the Parquet files the generator writes."""
    if column in _TIMES:
        return "datetime64[us]"
    return _DTYPES.get(column, "str")


def empty_table(name: str) -> pd.DataFrame:
    """A contract table with no rows and the generator's dtypes."""
    return pd.DataFrame(
        {c: pd.Series([], dtype=column_dtype(c)) for c in contract.TABLES[name]}  # type: ignore[call-overload]
    )


def frame(
    name: str,
    data: list[dict[str, Any]] | Mapping[str, Any],
    index: pd.Index | None = None,
) -> pd.DataFrame:
    """A contract table from row dicts or from columns (missing ones are null), in contract
    order with the generator's dtypes. Columns are the fast way for a large file: building row
    dicts for a national file would cost more than the whole import."""
    if isinstance(data, list) and not data:
        return empty_table(name)
    df = pd.DataFrame(data, index=index).reindex(columns=list(contract.TABLES[name]))
    for c in df.columns:
        dtype = column_dtype(c)
        if dtype == "str":
            df[c] = df[c].astype("str").where(df[c].notna(), None)
        else:
            df[c] = df[c].astype(dtype)
    return df.reset_index(drop=True)
