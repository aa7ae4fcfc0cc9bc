"""Patient history known at a point in time: prior visits, no-shows and cancellations.

Point-in-time rule: for a row whose prediction time is t, only outcomes with outcome_at < t count.
Training (as of booking time or any later prediction time) and serving call the same function.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HISTORY_COLUMNS = (
    "prior_appointments",
    "prior_no_shows",
    "prior_cancellations",
    "days_since_last_no_show",
)
NEVER = 9_999.0  # days_since_last_no_show for a patient with no recorded no-show


def patient_history(
    rows: pd.DataFrame,
    events: pd.DataFrame,
    as_of: str = "as_of",
    key: str = "patient_id",
) -> pd.DataFrame:
    """History counts for each row of `rows` (columns key, as_of) from outcome `events`.

    `events` has columns key, outcome ('attended' | 'no_show' | 'cancelled') and outcome_at.
    Returns a frame aligned with `rows` holding HISTORY_COLUMNS.
    """
    ev = events.loc[events["outcome"].notna() & events["outcome_at"].notna()]
    # Integer codes for the key, shared by events and rows.
    codes, _ = pd.factorize(
        pd.concat([ev[key], rows[key]], ignore_index=True), use_na_sentinel=True
    )
    ev_code, row_code = codes[: len(ev)].astype(np.int64), codes[len(ev) :].astype(np.int64)
    ev_t = _seconds(ev["outcome_at"])
    row_t = _seconds(rows[as_of])
    base = min(ev_t.min() if len(ev_t) else 0, row_t.min() if len(row_t) else 0)
    order = np.lexsort((ev_t, ev_code))
    ev_code, ev_t = ev_code[order], ev_t[order] - base
    # Compare in the column's own (Arrow) storage; converting strings to objects is slow.
    is_ns = (ev["outcome"] == "no_show").to_numpy(dtype=bool)[order]
    is_cx = (ev["outcome"] == "cancelled").to_numpy(dtype=bool)[order]

    # Running counts within each key's run of events (events sorted by key, then time).
    idx = np.arange(len(ev_code))
    start = np.r_[True, ev_code[1:] != ev_code[:-1]] if len(ev_code) else np.zeros(0, bool)
    run_start = np.maximum.accumulate(np.where(start, idx, 0)) if len(idx) else idx
    ns_cum, cx_cum = np.cumsum(is_ns), np.cumsum(is_cx)
    n = idx - run_start + 1
    ns = ns_cum - (ns_cum[run_start] - is_ns[run_start])
    cx = cx_cum - (cx_cum[run_start] - is_cx[run_start])
    last_ns_idx = np.maximum.accumulate(np.where(is_ns, idx, -1)) if len(idx) else idx
    has_ns = last_ns_idx >= run_start

    # For each row, the last event of its key strictly before its time: one binary search.
    shift = np.int64(1) << np.int64(34)
    ev_key = ev_code * shift + ev_t
    row_key = row_code * shift + np.clip(row_t - base, 0, shift - 1)
    pos = np.searchsorted(ev_key, row_key, "left") - 1
    ok = (row_code >= 0) & (pos >= 0)
    ok[ok] &= ev_code[pos[ok]] == row_code[ok]
    p = np.where(ok, pos, 0)
    prior = np.where(ok, n[p], 0) if len(idx) else np.zeros(len(rows), np.int64)
    prior_ns = np.where(ok, ns[p], 0) if len(idx) else np.zeros(len(rows), np.int64)
    prior_cx = np.where(ok, cx[p], 0) if len(idx) else np.zeros(len(rows), np.int64)
    if len(idx):
        seen = ok & has_ns[p]
        last_t = np.where(seen, ev_t[np.maximum(last_ns_idx[p], 0)], 0)
        days = np.where(seen, (row_t - base - last_t) / 86_400.0, NEVER)
    else:
        days = np.full(len(rows), NEVER)
    return pd.DataFrame(
        {
            "prior_appointments": prior.astype(np.int64),
            "prior_no_shows": prior_ns.astype(np.int64),
            "prior_cancellations": prior_cx.astype(np.int64),
            "days_since_last_no_show": days.astype(float),
        },
        index=rows.index,
    )


def _seconds(values: pd.Series) -> np.ndarray:
    """Whole seconds since the epoch of a datetime column."""
    return np.asarray(pd.to_datetime(values).to_numpy(), dtype="datetime64[s]").astype(np.int64)
