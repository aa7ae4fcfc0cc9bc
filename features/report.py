"""What validation found: ``Violation`` (one broken rule) and ``ValidationReport`` (all of them).

The report caps the violations it stores per (table, column, check) but keeps exact counts, and
prints them (``lines``) or a clean dataset's overview (``summary``). ``show_value`` is how a cell
is quoted in a violation's sentence; the schema and cross-table checks both use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features import contract

MAX_STORED_PER_CHECK = 50
"""Violations kept per (table, column, check); the counts stay exact."""

MAX_SHOWN_CHARS = 40

CountKey = tuple[str, str | None, str]


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
# Cells in sentences, and small helpers.
# ---------------------------------------------------------------------------------------------


def _column_order(table: str) -> dict[str | None, int]:
    return {c: i for i, c in enumerate(contract.TABLES.get(table, ()))}


def is_nan(value: Any) -> bool:
    """True for a null cell (None, NaN, NaT, pd.NA); False for anything pd.isna cannot judge."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def clip_text(text: str) -> str:
    """The text, cut to MAX_SHOWN_CHARS with '...' when longer."""
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def show_value(value: Any) -> str:
    """A cell as it should appear in a sentence: quoted text, plain numbers, short date-times."""
    if value is None or (not isinstance(value, str) and is_nan(value)):
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
    return f"'{clip_text(str(value))}'"


def _date_range(values: pd.Series) -> str:
    values = values.dropna()
    if not len(values):
        return "n/a"
    return f"{values.min():%Y-%m-%d} .. {values.max():%Y-%m-%d}"
