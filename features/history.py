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
    ev = events.loc[
        events["outcome"].notna() & events["outcome_at"].notna(), [key, "outcome", "outcome_at"]
    ]
    ev = ev.sort_values([key, "outcome_at"], kind="stable")
    outcome = ev["outcome"].to_numpy()
    grouped = ev.groupby(key, sort=False)
    ev = ev.assign(
        _n=grouped.cumcount() + 1,
        _ns=pd.Series(outcome == "no_show", index=ev.index).groupby(ev[key]).cumsum(),
        _cx=pd.Series(outcome == "cancelled", index=ev.index).groupby(ev[key]).cumsum(),
        _last_ns=ev["outcome_at"].where(outcome == "no_show"),
    )
    ev["_last_ns"] = ev.groupby(key)["_last_ns"].ffill()
    ev = ev.rename(columns={"outcome_at": "_t"}).drop(columns="outcome")

    left = pd.DataFrame(
        {key: rows[key].to_numpy(), "_t": rows[as_of].to_numpy(), "_pos": np.arange(len(rows))}
    )
    left = left.sort_values("_t", kind="stable")
    ev = ev.sort_values("_t", kind="stable")
    # Cast both sides to one resolution so merge_asof accepts them.
    left["_t"] = left["_t"].astype("datetime64[s]")
    ev["_t"] = ev["_t"].astype("datetime64[s]")
    merged = pd.merge_asof(
        left, ev, on="_t", by=key, direction="backward", allow_exact_matches=False
    )
    merged = merged.sort_values("_pos")
    days = (merged["_t"] - merged["_last_ns"]).dt.total_seconds().to_numpy() / 86_400.0
    return pd.DataFrame(
        {
            "prior_appointments": merged["_n"].fillna(0).to_numpy(dtype=np.int64),
            "prior_no_shows": merged["_ns"].fillna(0).to_numpy(dtype=np.int64),
            "prior_cancellations": merged["_cx"].fillna(0).to_numpy(dtype=np.int64),
            "days_since_last_no_show": np.where(np.isnan(days), NEVER, days),
        },
        index=rows.index,
    )
