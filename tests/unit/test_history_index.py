"""The prebuilt history index: the same counts as the one-shot history and as brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import TABLES
from features.history import NEVER, HistoryIndex, patient_history
from features.no_show import (
    FeatureHistory,
    as_text,
    build_features,
    flatten_world,
    history_events,
)

pytestmark = pytest.mark.unit

T0 = pd.Timestamp("2024-01-01")


def _random_events(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Events with ties in time (6-hour grid), missing keys, outcomes and outcome times."""
    keys = np.array(["A", "B", "C", "D", None], dtype=object)
    outcomes = np.array(["attended", "no_show", "cancelled", None], dtype=object)
    events = pd.DataFrame(
        {
            "patient_id": pd.Series(rng.choice(keys, n), dtype="str"),
            "outcome": pd.Series(rng.choice(outcomes, n), dtype="str"),
            "outcome_at": T0 + pd.to_timedelta(rng.integers(0, 40, n) * 6 * 3600, unit="s"),
        }
    )
    events.loc[rng.random(n) < 0.1, "outcome_at"] = pd.NaT
    return events


def _random_rows(rng: np.random.Generator, m: int) -> pd.DataFrame:
    """Rows with unknown ("E") and missing keys, some before every event, some at an event's
    exact time, in shuffled order on a non-default index."""
    keys = np.array(["A", "B", "C", "D", "E", None], dtype=object)
    steps = rng.integers(-20, 60, m) * 6 * 3600 + rng.integers(0, 2, m)  # on or just after
    return pd.DataFrame(
        {
            "patient_id": pd.Series(rng.choice(keys, m), dtype="str"),
            "as_of": T0 + pd.to_timedelta(steps, unit="s"),
        },
        index=rng.permutation(m) + 100,
    )


def _brute_force(rows: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """The obvious point-in-time computation, row by row."""
    ev = events.dropna(subset=["patient_id", "outcome", "outcome_at"])
    out = []
    for key, t in zip(rows["patient_id"], rows["as_of"], strict=True):
        before = (
            ev[(ev["patient_id"] == key) & (ev["outcome_at"] < t)]
            if isinstance(key, str)
            else ev.iloc[:0]
        )
        no_shows = before[before["outcome"] == "no_show"]
        days = (
            (t - no_shows["outcome_at"].max()).total_seconds() / 86_400 if len(no_shows) else NEVER
        )
        out.append(
            (len(before), len(no_shows), int((before["outcome"] == "cancelled").sum()), days)
        )
    return pd.DataFrame(
        out,
        index=rows.index,
        columns=[
            "prior_appointments",
            "prior_no_shows",
            "prior_cancellations",
            "days_since_last_no_show",
        ],
    ).astype(
        {
            "prior_appointments": np.int64,
            "prior_no_shows": np.int64,
            "prior_cancellations": np.int64,
            "days_since_last_no_show": float,
        }
    )


@pytest.mark.parametrize("seed", range(8))
def test_a_prebuilt_index_gives_patient_history_exactly(seed: int) -> None:
    # Given random events and an index built from them once
    rng = np.random.default_rng(seed)
    events = _random_events(rng, int(rng.integers(0, 250)))
    index = HistoryIndex.build(events)
    # When batches of rows are looked up against it, one after the other (batches larger and
    # smaller than the index's key count take different paths to the key codes)
    for size in (rng.integers(0, 120), rng.integers(0, 4), rng.integers(0, 120), 1):
        rows = _random_rows(rng, int(size))
        got = index.frame(rows["patient_id"], rows["as_of"], index=rows.index)
        # Then each batch gets exactly what the one-shot history and brute force give
        pd.testing.assert_frame_equal(got, patient_history(rows, events), check_exact=True)
        want = _brute_force(rows, events)
        pd.testing.assert_frame_equal(
            got[want.columns[:3]], want[want.columns[:3]], check_exact=True
        )
        np.testing.assert_allclose(
            got["days_since_last_no_show"], want["days_since_last_no_show"], rtol=0, atol=1e-9
        )


def test_an_index_restricted_to_visits_ignores_cancellations() -> None:
    rng = np.random.default_rng(11)
    events = _random_events(rng, 200)
    rows = _random_rows(rng, 80)
    visits = events[events["outcome"].isin(["attended", "no_show"])]
    got = HistoryIndex.build(events, outcomes=("attended", "no_show")).frame(
        rows["patient_id"], rows["as_of"], index=rows.index
    )
    pd.testing.assert_frame_equal(got, patient_history(rows, visits), check_exact=True)
    assert (got["prior_cancellations"] == 0).all()


def test_an_empty_index_gives_no_history() -> None:
    rows = _random_rows(np.random.default_rng(3), 10)
    h = HistoryIndex.build(_random_events(np.random.default_rng(3), 0)).frame(
        rows["patient_id"], rows["as_of"], index=rows.index
    )
    assert (h["prior_appointments"] == 0).all() and (h["days_since_last_no_show"] == NEVER).all()


@pytest.fixture(scope="module")
def flat(small_world: Path) -> pd.DataFrame:
    tables = {name: pd.read_parquet(small_world / f"{name}.parquet") for name in TABLES}
    return flatten_world(tables)


def test_build_features_from_an_indexed_history_equals_the_events_frame(
    flat: pd.DataFrame,
) -> None:
    # Given the training spec and the outcome history, once as a frame and once indexed
    events = history_events(flat)
    _, spec = build_features(flat, events)
    history = FeatureHistory.from_events(events)
    # When any subset of rows is scored either way (with and without some key columns)
    rows = flat.sample(500, random_state=0)
    for subset in (rows, rows.drop(columns=["organization_id"]), rows.drop(columns=["patient_id"])):
        # Then the features are bit-identical
        a, _ = build_features(subset, events, spec)
        b, _ = build_features(subset, history, spec)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    none, _ = build_features(rows, None, spec)
    pd.testing.assert_frame_equal(
        none, build_features(rows, FeatureHistory.from_events(None), spec)[0], check_exact=True
    )


def test_features_built_in_threads_equal_those_built_one_after_another(
    flat: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the small world's features built with the history work in threads (as a million
    # training rows are) and one step after another (as a request's rows are)
    import features.no_show as no_show

    events = history_events(flat)
    monkeypatch.setattr(no_show, "CONCURRENT_ROWS", 0)
    threaded, spec = build_features(flat, events)
    threaded_index = FeatureHistory.from_events(events)
    monkeypatch.setattr(no_show, "CONCURRENT_ROWS", 10**12)
    serial, serial_spec = build_features(flat, events)
    # Then the matrices, specs and indexes are the same
    pd.testing.assert_frame_equal(threaded, serial, check_exact=True)
    assert spec == serial_spec
    assert set(threaded_index.entities) == {"specialist_id", "organization_id"}
    assert threaded_index.patients is not None
    rows = flat.sample(300, random_state=1)
    pd.testing.assert_frame_equal(
        build_features(rows, threaded_index, spec)[0],
        build_features(rows, events, spec)[0],
        check_exact=True,
    )


def test_categorical_keys_give_the_features_text_keys_give(flat: pd.DataFrame) -> None:
    # Given the world's flat rows (flatten_world's ids and levels are categoricals) and the
    # same rows with every such column as plain text
    assert isinstance(flat["patient_id"].dtype, pd.CategoricalDtype)
    text = as_text(flat)
    assert not any(isinstance(t, pd.CategoricalDtype) for t in text.dtypes)
    # When the training matrix is built from each (history indexed from each as well)
    a, spec_a = build_features(flat, history_events(flat))
    b, spec_b = build_features(text, history_events(text))
    # Then matrix and spec are the same
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert spec_a == spec_b
    # And mixing them (categorical rows against a text history, and the reverse; rows whose
    # categories are not the history's own) changes nothing either
    rows = flat.sample(400, random_state=2)
    rows_text = as_text(rows)
    for r, events in ((rows, history_events(text)), (rows_text, history_events(flat))):
        pd.testing.assert_frame_equal(
            build_features(r, events, spec_a)[0],
            build_features(rows_text, history_events(text), spec_a)[0],
            check_exact=True,
        )
    other = rows.assign(patient_id=pd.Categorical(rows["patient_id"].astype(object)))
    pd.testing.assert_frame_equal(
        build_features(other, history_events(flat), spec_a)[0],
        build_features(rows, history_events(flat), spec_a)[0],
        check_exact=True,
    )
