"""Point-in-time features: history and availability never see the future."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.availability import NO_SLOT_DAYS, NextAvailableIndex
from features.history import NEVER, patient_history

pytestmark = pytest.mark.unit


def _events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["A", "A", "A", "B"],
            "outcome": ["no_show", "attended", "no_show", "cancelled"],
            "outcome_at": pd.to_datetime(
                ["2024-01-10 09:00", "2024-02-10 09:00", "2024-03-10 09:00", "2024-01-05 10:00"]
            ),
        }
    )


def test_history_counts_only_outcomes_before_the_prediction_time() -> None:
    # Given patient A with a no-show on Jan 10, a visit on Feb 10 and a no-show on Mar 10
    rows = pd.DataFrame(
        {
            "patient_id": ["A", "A", "A", "B", "C"],
            "as_of": pd.to_datetime(
                [
                    "2024-01-10 09:00",
                    "2024-02-11 00:00",
                    "2024-06-01 00:00",
                    "2024-01-06 00:00",
                    "2024-06-01 00:00",
                ]
            ),
        }
    )
    # When history is computed as of each row's time
    h = patient_history(rows, _events())
    # Then an outcome at exactly the prediction time is not yet known (strictly before)
    assert h["prior_appointments"].tolist() == [0, 2, 3, 1, 0]
    assert h["prior_no_shows"].tolist() == [0, 1, 2, 0, 0]
    assert h["prior_cancellations"].tolist() == [0, 0, 0, 1, 0]
    assert h["days_since_last_no_show"].iloc[1] == pytest.approx(31.625)
    assert h["days_since_last_no_show"].iloc[3] == NEVER


def test_history_ignores_a_future_no_show_that_would_leak() -> None:
    # Given a no-show recorded after the prediction time
    rows = pd.DataFrame({"patient_id": ["A"], "as_of": pd.to_datetime(["2024-03-01"])})
    base = patient_history(rows, _events())
    future = pd.concat(
        [
            _events(),
            pd.DataFrame(
                {
                    "patient_id": ["A"],
                    "outcome": ["no_show"],
                    "outcome_at": pd.to_datetime(["2024-03-02"]),
                }
            ),
        ]
    )
    # Then adding it changes nothing
    pd.testing.assert_frame_equal(base, patient_history(rows, future))


def _brute_force(av: pd.DataFrame, spec: str, t: pd.Timestamp) -> float:
    s = av[
        (av["specialist_id"] == spec)
        & (av["start"] >= t)
        & (av["booked_at"].isna() | (av["booked_at"] > t))
    ]
    return (
        NO_SLOT_DAYS
        if s.empty
        else min((s["start"].min() - t).total_seconds() / 86400, NO_SLOT_DAYS)
    )


def test_next_available_matches_brute_force() -> None:
    # Given random slots, some booked at random times before they start
    rng = np.random.default_rng(5)
    n = 400
    start = pd.Timestamp("2024-01-01") + pd.to_timedelta(
        rng.integers(0, 90 * 24 * 60, n), unit="min"
    )
    booked = start - pd.to_timedelta(rng.integers(0, 30 * 24 * 60, n), unit="min")
    booked = booked.where(rng.random(n) < 0.6)
    av = pd.DataFrame(
        {"specialist_id": rng.choice(["S1", "S2", "S3"], n), "start": start, "booked_at": booked}
    )
    index = NextAvailableIndex(av)
    queries = pd.Timestamp("2023-12-25") + pd.to_timedelta(
        rng.integers(0, 100 * 24 * 60, 300), unit="min"
    )
    specs = rng.choice(["S1", "S2", "S3", "UNKNOWN"], 300)
    # When next availability is asked for many (specialist, time) pairs at once
    got = index.days_until_free(specs, queries)
    # Then every answer equals the slow, obviously point-in-time computation
    want = [
        _brute_force(av, s, t) if s != "UNKNOWN" else NO_SLOT_DAYS
        for s, t in zip(specs, queries, strict=True)
    ]
    np.testing.assert_allclose(got, want, atol=1 / 1440)


def test_a_slot_booked_later_still_counts_as_free_earlier() -> None:
    av = pd.DataFrame(
        {
            "specialist_id": ["S1", "S1"],
            "start": pd.to_datetime(["2024-01-10 09:00", "2024-01-20 09:00"]),
            "booked_at": pd.to_datetime(["2024-01-05 00:00", None]),
        }
    )
    index = NextAvailableIndex(av)
    before, after = index.days_until_free(
        np.array(["S1", "S1"]), pd.to_datetime(["2024-01-04 09:00", "2024-01-06 09:00"])
    )
    assert before == pytest.approx(6.0)
    assert after == pytest.approx(14.0)


def test_history_matches_brute_force_on_random_data() -> None:
    # Given random outcome events for a few patients (ties in time included)
    rng = np.random.default_rng(11)
    n = 600
    t = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 60, n) * 1440, unit="min")
    events = pd.DataFrame(
        {
            "patient_id": rng.choice(["A", "B", "C", "D"], n),
            "outcome": rng.choice(["attended", "no_show", "cancelled"], n, p=[0.6, 0.25, 0.15]),
            "outcome_at": t,
        }
    )
    rows = pd.DataFrame(
        {
            "patient_id": rng.choice(["A", "B", "C", "D", "E"], 200),
            "as_of": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 62, 200) * 1440, unit="min"),
        }
    )
    # When history is computed vectorised
    got = patient_history(rows, events)
    # Then every row equals the obvious computation over events strictly before its time
    for i, r in rows.iterrows():
        known = events[
            (events["patient_id"] == r["patient_id"]) & (events["outcome_at"] < r["as_of"])
        ]
        ns = known[known["outcome"] == "no_show"]
        assert got.loc[i, "prior_appointments"] == len(known)
        assert got.loc[i, "prior_no_shows"] == len(ns)
        assert got.loc[i, "prior_cancellations"] == (known["outcome"] == "cancelled").sum()
        want = (r["as_of"] - ns["outcome_at"].max()).total_seconds() / 86400 if len(ns) else NEVER
        assert got.loc[i, "days_since_last_no_show"] == pytest.approx(want)
