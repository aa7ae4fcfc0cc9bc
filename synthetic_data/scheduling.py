"""Specialists' calendars as FHIR-Slot-shaped rows, and booking without double-booking.

Each specialist offers `weekly_capacity` routine slots a week (mornings 8:00-11:30, afternoons
13:00-16:30) and some hold back one urgent slot a week at noon, bookable only in the last two
days. Booking takes the earliest free slot at or after a time; a union-find "next free slot"
structure makes every booking near O(1), so the sequential booking loop stays fast at 1M rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ROUTINE, HOLD = 0, 1
SLOT_MINUTES = 30
ROUTINE_MINUTES = np.array(
    [8 * 60 + 30 * i for i in range(8)] + [13 * 60 + 30 * i for i in range(8)]
)
HOLD_WINDOW = np.timedelta64(2, "D")
_SENTINEL = np.iinfo(np.int64).max // 4


@dataclass(frozen=True)
class _WeeklyLayout:
    """Each specialist's weekly slot times, drawn once and repeated every week."""

    n_specialists: int
    routine_specialist: np.ndarray
    routine_offset: np.ndarray  # timedelta from Monday 00:00
    hold_specialist: np.ndarray
    hold_offset: np.ndarray


class SlotBook:
    """All slots of the world, grouped in blocks per (specialist, slot type), with a booking state."""

    def __init__(
        self,
        rng: np.random.Generator,
        weekly_capacity: np.ndarray,
        start: np.datetime64,
        end: np.datetime64,
        hold_share: float = 0.4,
    ) -> None:
        """Lay out every specialist's routine and urgent-hold slots between start and end."""
        n_spec = len(weekly_capacity)
        cap = np.minimum(weekly_capacity, 80)
        # Distinct weekly positions per specialist: weekday x 16 times of day.
        spec_of, position = [], []
        for s in range(n_spec):
            pos = rng.choice(80, size=cap[s], replace=False)
            spec_of.append(np.full(cap[s], s))
            position.append(pos)
        spec_t = np.concatenate(spec_of)
        pos_t = np.concatenate(position)
        offsets = (pos_t // 16).astype("timedelta64[D]") + ROUTINE_MINUTES[pos_t % 16].astype(
            "timedelta64[m]"
        )
        has_hold = rng.random(n_spec) < hold_share
        hold_spec = np.flatnonzero(has_hold)
        hold_offsets = rng.integers(0, 5, len(hold_spec)).astype("timedelta64[D]") + np.timedelta64(
            12 * 60, "m"
        )
        self._week = _WeeklyLayout(n_spec, spec_t, offsets, hold_spec, hold_offsets)
        self._ids: np.ndarray | None = None
        self._lay_out(start, end)

    def _lay_out(self, start: np.datetime64, end: np.datetime64) -> None:
        """Repeat the weekly layout over [start, end) and start with every slot free."""
        w = self._week
        monday = start - np.timedelta64((pd.Timestamp(start).day_of_week), "D")
        n_weeks = int((end - monday) / np.timedelta64(7, "D")) + 1
        week_starts = monday + np.arange(n_weeks) * np.timedelta64(7, "D")
        spec = np.concatenate(
            [
                np.repeat(w.routine_specialist[None, :], n_weeks, 0).ravel(),
                np.repeat(w.hold_specialist[None, :], n_weeks, 0).ravel(),
            ]
        )
        starts = np.concatenate(
            [
                (week_starts[:, None] + w.routine_offset[None, :]).ravel(),
                (week_starts[:, None] + w.hold_offset[None, :]).ravel(),
            ]
        ).astype("datetime64[m]")
        kind = np.concatenate(
            [
                np.zeros(len(w.routine_specialist) * n_weeks, np.int8),
                np.ones(len(w.hold_specialist) * n_weeks, np.int8),
            ]
        )
        keep = (starts >= start) & (starts < end)
        spec, starts, kind = spec[keep], starts[keep], kind[keep]
        order = np.lexsort((starts, kind, spec))
        self.specialist = spec[order]
        self.start = starts[order]
        self.kind = kind[order]
        self.n_slots = len(self.specialist)
        self.end = end

        # Search keys: block id (specialist, kind) then minutes since `start`; one sentinel per block.
        block = self.specialist.astype(np.int64) * 2 + self.kind
        minutes = ((self.start - start) / np.timedelta64(1, "m")).astype(np.int64)
        blocks = np.arange(w.n_specialists * 2, dtype=np.int64)
        self._slot_keys = block * (1 << 32) + minutes  # ascending: slots are in block order
        self._keys = np.concatenate([self._slot_keys, blocks * (1 << 32) + (1 << 31)])
        self._slot_of_key = np.concatenate([np.arange(self.n_slots), np.full(len(blocks), -1)])
        key_order = np.argsort(self._keys, kind="stable")
        self._keys = self._keys[key_order]
        self._slot_of_key = self._slot_of_key[key_order]
        self._origin = start
        self._next: list[int] = list(range(len(self._keys)))
        self.booked_at = np.full(self.n_slots, np.datetime64("NaT"), dtype="datetime64[m]")
        self.owner = np.full(self.n_slots, -1, dtype=np.int64)

    def extended(self, end: np.datetime64) -> tuple[SlotBook, np.ndarray]:
        """The same calendars continued to `end`, with this book's bookings, and the index of
        each of this book's slots in the new one. Old slots keep their ids; new slots get ids
        numbered on after the last old one."""
        if end < self.end:
            raise ValueError("a book can only be extended to a later end")
        new = SlotBook.__new__(SlotBook)
        new._week = self._week
        new._lay_out(self._origin, end)
        old_to_new = np.searchsorted(new._slot_keys, self._slot_keys)
        if self.n_slots and not np.array_equal(new._slot_keys[old_to_new], self._slot_keys):
            raise AssertionError("the extended calendars do not contain the old slots")
        new.booked_at[old_to_new] = self.booked_at
        new.owner[old_to_new] = self.owner
        key_of_slot = np.empty(new.n_slots, dtype=np.int64)
        has_slot = new._slot_of_key >= 0
        key_of_slot[new._slot_of_key[has_slot]] = np.flatnonzero(has_slot)
        for position in key_of_slot[new.owner >= 0].tolist():
            new._next[position] = position + 1  # as book() leaves a taken slot
        is_new = np.ones(new.n_slots, dtype=bool)
        is_new[old_to_new] = False
        ids = np.empty(new.n_slots, dtype=object)
        ids[old_to_new] = self.slot_ids()
        ids[is_new] = [f"SL{i:09d}" for i in range(self.n_slots + 1, new.n_slots + 1)]
        new._ids = ids
        return new, old_to_new

    def slot_ids(self) -> np.ndarray:
        """The id of every slot."""
        if self._ids is not None:
            return self._ids
        return np.array([f"SL{i:09d}" for i in range(1, self.n_slots + 1)], dtype=object)

    def position_at(self, specialist: int, kind: int, minute: int) -> int:
        """The search position of one specialist's first slot of a kind at/after a minute."""
        key = (specialist * 2 + kind) * (1 << 32) + min(max(minute, 0), (1 << 31) - 1)
        return int(np.searchsorted(self._keys, key, "left"))

    def positions(self, specialist: np.ndarray, kind: int, earliest: np.ndarray) -> np.ndarray:
        """Search positions: the first slot of each specialist's block starting at/after earliest."""
        minutes = np.ceil((earliest - self._origin) / np.timedelta64(1, "m")).astype(np.int64)
        minutes = np.clip(minutes, 0, (1 << 31) - 1)
        keys = (specialist.astype(np.int64) * 2 + kind) * (1 << 32) + minutes
        return np.searchsorted(self._keys, keys, "left")

    def find(self, position: int) -> int:
        """The first free key position at or after `position` within its block (path-halving)."""
        nxt = self._next
        while nxt[position] != position:
            nxt[position] = nxt[nxt[position]]
            position = nxt[position]
        return position

    def free_before(self, position: int, floor: int) -> int:
        """The last free key position before `position`, down to `floor` (a free position of
        the same block)."""
        nxt = self._next
        position -= 1
        while position > floor and nxt[position] != position:
            position -= 1
        return max(position, floor)

    def slot_at(self, position: int) -> int:
        """Slot index of a key position (-1 for a block's sentinel: no slot left)."""
        return int(self._slot_of_key[position])

    def book(self, position: int, booked_at: np.datetime64, owner: int) -> None:
        """Mark the slot at a free key position as taken by `owner` at `booked_at`."""
        slot = self._slot_of_key[position]
        self._next[position] = position + 1
        self.booked_at[slot] = booked_at
        self.owner[slot] = owner

    def frame(
        self, appointment_ids: np.ndarray, specialist_ids: np.ndarray, as_of: np.datetime64
    ) -> pd.DataFrame:
        """The availability table as of `as_of`: bookings made later are not shown."""
        owner = np.where(self.booked_at <= as_of, self.owner, -1)
        busy = owner >= 0
        appt = appointment_ids[np.maximum(owner, 0)].astype(object)
        appt[~busy] = None
        return pd.DataFrame(
            {
                "slot_id": (
                    [f"SL{i:09d}" for i in range(1, self.n_slots + 1)]
                    if self._ids is None
                    else self._ids.tolist()
                ),
                "specialist_id": specialist_ids[self.specialist],
                "start": self.start.astype("datetime64[s]"),
                "end": (self.start + np.timedelta64(SLOT_MINUTES, "m")).astype("datetime64[s]"),
                "slot_type": np.where(self.kind == HOLD, "urgent_hold", "routine"),
                "status": np.where(busy, "busy", "free"),
                "booked_at": np.where(busy, self.booked_at, np.datetime64("NaT")).astype(
                    "datetime64[s]"
                ),
                "appointment_id": pd.array(appt, dtype="string"),
            }
        )
