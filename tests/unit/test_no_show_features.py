"""No-show features: point-in-time history, no audit-only inputs, online equals offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import AUDIT_ONLY_COLUMNS, TABLES
from features.no_show import build_features, flatten_world, history_events, prediction_time

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def flat(small_world: Path) -> pd.DataFrame:
    tables = {name: pd.read_parquet(small_world / f"{name}.parquet") for name in TABLES}
    return flatten_world(tables)


def test_audit_only_columns_never_reach_the_model(flat: pd.DataFrame) -> None:
    # Given flat rows that carry race/ethnicity for audits
    assert "race_ethnicity" in flat.columns
    # When features are built
    X, spec = build_features(flat, history_events(flat))
    # Then no audit-only column is a model input, and asking for one is refused
    assert not (AUDIT_ONLY_COLUMNS & set(X.columns)) and not (
        AUDIT_ONLY_COLUMNS & set(spec.columns)
    )
    with pytest.raises(ValueError, match="audit-only"):
        build_features(flat, history_events(flat), extra_categorical=("race_ethnicity",))


def test_race_does_not_change_any_feature(flat: pd.DataFrame) -> None:
    shuffled = flat.assign(
        race_ethnicity=np.random.default_rng(0).permutation(flat["race_ethnicity"].to_numpy())
    )
    a, _ = build_features(flat, history_events(flat))
    b, _ = build_features(shuffled, history_events(shuffled))
    pd.testing.assert_frame_equal(a, b)


def test_history_does_not_see_outcomes_after_the_prediction_time(flat: pd.DataFrame) -> None:
    # Given the features of every appointment
    events = history_events(flat)
    X, spec = build_features(flat, events)
    # When every outcome after each row's prediction time is rewritten as a no-show
    # (simulated by adding a no-show event one minute after booking for every patient)
    leak = pd.DataFrame(
        {
            "patient_id": flat["patient_id"],
            "specialist_id": flat["specialist_id"],
            "organization_id": flat["organization_id"],
            "outcome": "no_show",
            "outcome_at": pd.to_datetime(flat["booked_at"]) + pd.Timedelta(minutes=1),
        }
    )
    # Then a row's features only change through events strictly before its own booking time
    X2, _ = build_features(flat, pd.concat([events, leak], ignore_index=True), spec)
    first = flat.groupby("patient_id")["booked_at"].transform("min") == flat["booked_at"]
    history_cols = [
        "prior_appointments",
        "prior_no_shows",
        "prior_no_show_rate",
        "days_since_last_no_show",
    ]
    pd.testing.assert_frame_equal(X.loc[first, history_cols], X2.loc[first, history_cols])
    assert (X2["prior_no_shows"] >= X["prior_no_shows"]).all()


def test_a_later_prediction_time_sees_outcomes_that_happened_meanwhile() -> None:
    # Given a visit booked 30 days ahead, and a no-show of the same patient 10 days after booking
    flat = pd.DataFrame(
        {
            "appointment_id": ["A2"],
            "patient_id": ["P"],
            "booked_at": pd.to_datetime(["2024-03-01 09:00"]),
            "appointment_at": pd.to_datetime(["2024-03-31 09:00"]),
        }
    )
    events = pd.DataFrame(
        {
            "patient_id": ["P"],
            "outcome": ["no_show"],
            "outcome_at": pd.to_datetime(["2024-03-11 09:00"]),
        }
    )
    at_booking, _ = build_features(flat, events)
    three_days_before, _ = build_features(flat, events, offset_days=3)
    assert prediction_time(flat, 3).iloc[0] == pd.Timestamp("2024-03-28 09:00")
    assert at_booking["prior_no_shows"].iloc[0] == 0
    assert three_days_before["prior_no_shows"].iloc[0] == 1
    # The prediction time never precedes booking.
    assert prediction_time(flat, 90).iloc[0] == flat["booked_at"].iloc[0]


def test_online_row_equals_offline_row(flat: pd.DataFrame) -> None:
    # Given the batch (offline) features and the spec they produced
    events = history_events(flat)
    X, spec = build_features(flat, events)
    # When single rows are rebuilt one at a time with the spec (as the service will)
    for i in np.random.default_rng(1).choice(len(flat), 25, replace=False):
        one, _ = build_features(flat.iloc[[i]], events, spec)
        # Then each equals its offline row exactly
        pd.testing.assert_frame_equal(one, X.iloc[[i]])


def test_missing_inputs_become_unknown_not_errors(flat: pd.DataFrame) -> None:
    _, spec = build_features(flat, history_events(flat))
    bare = flat[["appointment_id", "booked_at", "appointment_at"]].head(5)
    X, _ = build_features(bare, None, spec)
    assert list(X.columns) == spec.columns
    assert X["distance_km"].isna().all() and (X["prior_no_shows"] == 0).all()


def test_derived_feature_names_are_exactly_the_computed_ones(flat: pd.DataFrame) -> None:
    from features.no_show import CATEGORICAL, DERIVED, FLAT_OPTIONAL

    X, _ = build_features(flat, history_events(flat))
    computed = {c for c in X.columns if c not in FLAT_OPTIONAL and c not in CATEGORICAL}
    assert computed == set(DERIVED)


def test_flatten_world_joins_as_a_lookup_by_id_does(small_world: Path) -> None:
    # Given the contract's tables, one appointment pointing at a patient and a specialist that
    # no table holds
    tables = {name: pd.read_parquet(small_world / f"{name}.parquet") for name in TABLES}
    ap = tables["appointments"].copy()
    ap.loc[3, "patient_id"] = "PT-NOWHERE"
    ap.loc[5, "specialist_id"] = "0000000000"
    tables["appointments"] = ap
    # When they are flattened
    flat = flatten_world(tables)
    # Then every joined column holds what looking each id up in its table gives
    pt = tables["patients"].set_index("patient_id")
    sp = tables["specialists"].set_index("specialist_id")
    rf = tables["referrals"].set_index("referral_id")
    pl = tables["plans"].set_index("insurance_plan_id")
    want = {
        "patient_id": ap["patient_id"],
        "sex": ap["patient_id"].map(pt["sex"]),
        "language": ap["patient_id"].map(pt["preferred_language"]),
        "payer_type": ap["patient_id"].map(pt["insurance_plan_id"]).map(pl["payer_type"]),
        "race_ethnicity": ap["patient_id"].map(pt["race_ethnicity"]),
        "specialist_id": ap["specialist_id"],
        "specialty": ap["specialist_id"].map(sp["specialty"]),
        "organization_id": ap["specialist_id"].map(sp["organization_id"]),
        "urgency": ap["referral_id"].map(rf["urgency"]),
        "referral_type": ap["referral_id"].map(rf["referral_type"]),
    }
    for column, values in want.items():
        got = flat[column]
        assert isinstance(got.dtype, pd.CategoricalDtype), column
        assert got.isna().tolist() == values.isna().tolist(), column
        assert (got.astype(object)[got.notna()] == values[got.notna()].astype(object)).all()
    age = ap["appointment_at"].pipe(pd.to_datetime).dt.year - ap["patient_id"].map(pt["birth_year"])
    np.testing.assert_array_equal(flat["age"].to_numpy(), age.to_numpy(dtype=float))
    # An unknown id keeps its value; what it would join is missing
    assert flat.loc[3, "patient_id"] == "PT-NOWHERE" and pd.isna(flat.loc[3, "sex"])
    assert np.isnan(flat.loc[3, "age"]) and np.isnan(flat.loc[3, "distance_km"])
    assert flat.loc[5, "specialist_id"] == "0000000000" and pd.isna(flat.loc[5, "specialty"])
    # And the categories are the tables' values, whatever subset of appointments is flattened
    # (each Dask partition gets the same dtypes)
    part = flatten_world({**tables, "appointments": ap.iloc[100:160]})
    for column in ("sex", "specialty", "urgency", "organization_id"):
        assert (
            part[column].dtype
            == flatten_world({**tables, "appointments": ap.iloc[:40]})[column].dtype
        )


def test_truth_by_row_is_the_truth_of_each_flat_row(small_world: Path) -> None:
    import dataclasses

    from training.no_show import load_world, train_no_show

    # Given a world with ground truth, loaded
    data = load_world(small_world)
    assert data.truth is not None and data.truth_by_row is not None
    # Then each flat row's true probability is the one its appointment id looks up
    np.testing.assert_array_equal(
        data.truth_by_row, data.flat["appointment_id"].map(data.truth).to_numpy(dtype=float)
    )
    # And training reads the same ceiling from it as from looking each test row up
    by_row = train_no_show(data)
    by_id = train_no_show(dataclasses.replace(data, truth_by_row=None))
    assert by_row.metrics["oracle"] == by_id.metrics["oracle"]
    np.testing.assert_array_equal(
        by_row.test["true_probability"].to_numpy(), by_id.test["true_probability"].to_numpy()
    )
