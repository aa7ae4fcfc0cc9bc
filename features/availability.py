"""Point-in-time availability: when is a specialist's next free slot, as known at a given time.

A slot is free at time t when it starts at or after t and was not yet booked at t (booked_at is
missing or later than t). The answer for (specialist, t) is therefore the earliest start among the
specialist's slots whose key = min(start, booked_at) is >= t: a suffix minimum over slots sorted
by (specialist, key), looked up with one binary search. Built once per availability snapshot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NO_SLOT_DAYS = 120.0
_SHIFT = np.int64(1) << np.int64(36)  # minutes field of the composite (specialist, time) key


class NextAvailableIndex:
    """Answers 'days until the next free slot' for many (specialist, time) pairs at once."""

    def __init__(self, availability: pd.DataFrame) -> None:
        """Index the slots of an availability table (columns specialist_id, start, booked_at)."""
        codes, self._specialists = pd.factorize(availability["specialist_id"], sort=True)
        start = epoch_minutes(availability["start"])
        booked = epoch_minutes(availability["booked_at"])
        key = np.where(booked < 0, start, np.minimum(start, booked))
        self._base = int(key.min()) if len(key) else 0
        composite = codes.astype(np.int64) * _SHIFT + (key - self._base)
        order = np.argsort(composite, kind="stable")
        self._composite = composite[order]
        spec_sorted = codes[order]
        start_sorted = start[order]
        # Suffix minimum of start within each specialist's run (runs are contiguous).
        suffix = pd.Series(start_sorted[::-1]).groupby(spec_sorted[::-1]).cummin().to_numpy()
        self._suffix_min = suffix[::-1]
        self._run_end = np.searchsorted(spec_sorted, np.arange(len(self._specialists)), "right")

    def codes(self, specialist_ids: np.ndarray | pd.Series) -> np.ndarray:
        """Internal codes of specialist ids (-1 for a specialist without slots)."""
        return np.asarray(self._specialists.get_indexer(np.asarray(specialist_ids)))

    def days_until_free(
        self, specialist_ids: np.ndarray | pd.Series, as_of: np.ndarray | pd.Series
    ) -> np.ndarray:
        """Days from as_of to the next slot free at as_of (NO_SLOT_DAYS when none is known)."""
        return self.days_until_free_by_code(self.codes(specialist_ids), as_of)

    def days_until_free_by_code(
        self, codes: np.ndarray, as_of: np.ndarray | pd.Series
    ) -> np.ndarray:
        """As days_until_free, for specialists given by `codes` (faster for many rows)."""
        raw = np.asarray(as_of)
        # A datetime64 array (the serving path's) is read as it is: a Series around it cost
        # more than the lookup itself.
        t = epoch_minutes(raw if raw.dtype.kind == "M" else pd.Series(raw))
        out = np.full(len(codes), NO_SLOT_DAYS)
        known = codes >= 0
        if not known.any() or len(self._composite) == 0:
            return out
        c = codes[known].astype(np.int64)
        offset = np.clip(t[known] - self._base, 0, _SHIFT - 1)
        pos = np.searchsorted(self._composite, c * _SHIFT + offset, "left")
        has = pos < self._run_end[c]
        days = np.full(len(c), NO_SLOT_DAYS)
        days[has] = (self._suffix_min[pos[has]] - t[known][has]) / 1440.0
        out[known] = np.minimum(days, NO_SLOT_DAYS)
        return out


def epoch_minutes(values: pd.Series | np.ndarray) -> np.ndarray:
    """Whole minutes since the epoch (-1 for a missing time) of a datetime column or array."""
    raw = values if isinstance(values, np.ndarray) else values.to_numpy()
    arr = np.asarray(raw, dtype="datetime64[m]")
    return np.where(np.isnat(arr), -1, arr.astype(np.int64))
