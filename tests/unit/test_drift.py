"""features.drift: decile references, PSI, the chi-square test and the drift report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from features.drift import (
    FLOOR,
    CategoricalReference,
    FeatureReference,
    NumericReference,
    chi_square_p,
    drift_report,
    psi,
    psi_of,
)

pytestmark = pytest.mark.unit

LANGUAGES = ["en", "es", "zh", "vi"]


def _matrix(n: int, seed: int, lead_scale: float = 1.0) -> pd.DataFrame:
    """A model matrix like the no-show one: skewed lead times, ages with gaps, a 0/1 flag and
    two categoricals (the categorical dtype of `build_features`)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n).astype(float)
    age[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "lead_days": rng.gamma(1.5, 8.0, n) * lead_scale,
            "age": age,
            "same_day": (rng.random(n) < 0.1).astype(float),
            "sex": pd.Categorical(rng.choice(["F", "M"], n), categories=["F", "M"]),
            "language": pd.Categorical(
                rng.choice(LANGUAGES, n, p=[0.7, 0.2, 0.06, 0.04]), categories=LANGUAGES
            ),
        }
    )


@pytest.fixture(scope="module")
def reference() -> FeatureReference:
    return FeatureReference.from_matrix(_matrix(20_000, seed=1), ["sex", "language"])


def test_numeric_bins_are_the_training_deciles_with_open_outer_edges() -> None:
    # Given uniform values on [0, 1)
    x = np.random.default_rng(0).random(100_000)
    ref = FeatureReference.from_matrix(pd.DataFrame({"x": x}), [])
    r = ref.features["x"]
    # Then the nine cuts are the deciles, and each of the ten bins holds a tenth of the rows
    assert isinstance(r, NumericReference)
    np.testing.assert_allclose(r.cuts, np.arange(1, 10) / 10, atol=5e-3)
    assert set(r.cuts) <= set(x)  # cut at training values
    np.testing.assert_allclose(r.shares, 0.1, atol=1e-3)
    assert r.missing == 0.0 and ref.rows == 100_000
    # And values beyond the training range land in the outer bins, NaN in "missing"
    counts = r.counts(pd.Series([-5.0, 0.5, 7.0, np.nan, np.inf]))
    assert counts[0] == 1 and counts[-2] == 2 and counts[-1] == 1 and counts.sum() == 5
    assert r.labels()[0].startswith("<= ") and r.labels()[-2].startswith("> ")


def test_a_discrete_column_keeps_unique_edges_and_a_cut_value_closes_its_bin() -> None:
    # Given a 0/1 flag with 10% ones: most deciles are 0, so the cuts collapse to unique ones
    flag = pd.Series(np.r_[np.zeros(900), np.ones(100)])
    r = FeatureReference.from_matrix(pd.DataFrame({"same_day": flag}), []).features["same_day"]
    assert isinstance(r, NumericReference)
    assert r.cuts == (0.0,)
    # Then the zeros and the ones are two separate buckets with their training shares
    assert r.shares == (pytest.approx(0.9), pytest.approx(0.1))
    assert r.labels() == ["<= 0", "> 0", "missing"]


def test_psi_is_near_zero_for_the_same_distribution(reference: FeatureReference) -> None:
    # Given a fresh sample from the training distribution
    report = drift_report(reference, _matrix(10_000, seed=2))
    # Then every feature is stable, with PSI near its noise floor (buckets / rows)
    for name, f in report["features"].items():
        assert f["psi"] < 0.01, name
        assert f["status"] == "stable", name
    assert report["summary"]["status"] == "stable"
    assert report["summary"]["counts"] == {"stable": 5, "moderate": 0, "significant": 0}
    assert report["summary"]["drifted"] == []


def test_longer_lead_times_are_significant_drift_of_that_feature_only(
    reference: FeatureReference,
) -> None:
    # Given recent rows whose lead times are 1.6 times the training ones
    report = drift_report(reference, _matrix(10_000, seed=2, lead_scale=1.6))
    lead = report["features"]["lead_days"]
    # Then lead_days is significant drift, worst of all, and the other inputs stay stable
    assert lead["psi"] > 0.2 and lead["status"] == "significant"
    assert report["summary"]["worst_feature"] == "lead_days"
    assert report["summary"]["worst_psi"] == lead["psi"]
    assert report["summary"]["drifted"] == ["lead_days"]
    assert report["summary"]["counts"] == {"stable": 4, "moderate": 0, "significant": 1}
    assert report["summary"]["status"] == "significant"
    # And the shares behind it are there for plots: recent mass moved to the top bins
    assert len(lead["buckets"]) == len(lead["reference_shares"]) == len(lead["recent_shares"])
    assert sum(lead["recent_shares"][-3:-1]) > sum(lead["reference_shares"][-3:-1]) + 0.1
    assert lead["rows"] == 10_000 == report["summary"]["window_rows"]
    assert report["summary"]["reference_rows"] == 20_000


def test_chi_square_p_is_small_under_a_shift_and_not_without(
    reference: FeatureReference,
) -> None:
    same = drift_report(reference, _matrix(10_000, seed=3))["features"]["lead_days"]
    shifted = drift_report(reference, _matrix(10_000, seed=3, lead_scale=1.6))
    assert same["p_value"] > 1e-3
    assert shifted["features"]["lead_days"]["p_value"] < 1e-12
    # A single bucket gives no test
    assert chi_square_p(np.array([10, 0]), np.array([1.0, 0.0])) is None


def test_an_unseen_level_is_other_and_missing_values_are_missing(
    reference: FeatureReference,
) -> None:
    # Given recent rows where a tenth speak a language training never saw and a tenth of the
    # ages and sexes are missing
    X = _matrix(5_000, seed=4)
    language = X["language"].astype(str).to_numpy(dtype=object)
    language[:500] = "ko"
    X["language"] = language
    X.loc[X.index[500:1000], "age"] = np.nan
    X["sex"] = X["sex"].astype(object)
    X.loc[X.index[1000:1500], "sex"] = None
    report = drift_report(reference, X)
    lang, age, sex = (report["features"][c] for c in ("language", "age", "sex"))
    # Then "ko" is counted in "other", the gaps in "missing"
    assert lang["buckets"][-2:] == ["other", "missing"]
    assert lang["recent_shares"][-2] == pytest.approx(0.1)
    assert lang["reference_shares"][-2] == 0.0
    assert age["buckets"][-1] == "missing"
    assert age["recent_shares"][-1] == pytest.approx(0.1 + 0.9 * 0.05, abs=0.02)
    assert age["reference_shares"][-1] == pytest.approx(0.05, abs=0.01)
    assert sex["recent_shares"][-1] == pytest.approx(0.1)
    # And an unseen level that takes a tenth of the rows is not stable
    assert lang["status"] != "stable" and lang["p_value"] < 1e-12


def test_psi_follows_its_formula_with_a_floor_on_empty_buckets() -> None:
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi_of(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    # An empty bucket is floored, so the index stays finite
    floored = (0.5 - 1.0) * math.log(0.5) + (0.5 - FLOOR) * math.log(0.5 / FLOOR)
    assert psi_of(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(floored)


def test_psi_matches_the_report(reference: FeatureReference) -> None:
    X = _matrix(3_000, seed=5, lead_scale=1.3)
    report = drift_report(reference, X)
    values = psi(reference, X)
    assert set(values) == set(reference.columns) == set(report["features"])
    for name, v in values.items():
        assert report["features"][name]["psi"] == pytest.approx(v)


def test_the_reference_round_trips_through_json(reference: FeatureReference) -> None:
    text = json.dumps(reference.to_dict(), allow_nan=False)  # strict JSON: no inf, no NaN
    again = FeatureReference.from_dict(json.loads(text))
    assert again == reference
    assert again.columns == ["lead_days", "age", "same_day", "sex", "language"]
    assert again.categorical == ["sex", "language"]
    assert isinstance(again.features["language"], CategoricalReference)
    assert again.features["language"].levels == tuple(sorted(LANGUAGES))
    X = _matrix(2_000, seed=6, lead_scale=1.6)
    assert psi(again, X) == psi(reference, X)
    with pytest.raises(ValueError, match="feature-reference"):
        FeatureReference.from_dict({"kind": "something else"})


def test_thresholds_are_configurable(reference: FeatureReference) -> None:
    X = _matrix(10_000, seed=7, lead_scale=1.6)
    lead_psi = drift_report(reference, X)["features"]["lead_days"]["psi"]
    # Raising both thresholds above the index makes the same shift stable ...
    loose = drift_report(reference, X, thresholds=(lead_psi + 0.1, lead_psi + 0.2))
    assert loose["features"]["lead_days"]["status"] == "stable"
    assert loose["summary"]["thresholds"] == [lead_psi + 0.1, lead_psi + 0.2]
    # ... and putting them either side of it makes it moderate
    between = drift_report(reference, X, thresholds=(lead_psi / 2, lead_psi * 2))
    assert between["features"]["lead_days"]["status"] == "moderate"
    for bad in [(0.2, 0.1), (0.1,), (0.0, 0.1), (0.1, float("nan"))]:
        with pytest.raises(ValueError, match="thresholds"):
            drift_report(reference, X, thresholds=bad)


def test_too_few_recent_rows_or_a_missing_column_are_refused(
    reference: FeatureReference,
) -> None:
    with pytest.raises(ValueError, match="has 99 rows; a drift report needs at least 500"):
        drift_report(reference, _matrix(99, seed=8))
    assert drift_report(reference, _matrix(99, seed=8), min_rows=50)["summary"]["window_rows"] == 99
    with pytest.raises(ValueError, match=r"lacks reference columns \['age'\]"):
        drift_report(reference, _matrix(1_000, seed=8).drop(columns=["age"]))


def test_race_can_never_be_part_of_a_reference() -> None:
    X = _matrix(100, seed=9).assign(race_ethnicity="other")
    with pytest.raises(ValueError, match="audit-only"):
        FeatureReference.from_matrix(X, ["sex", "language", "race_ethnicity"])
    doc = FeatureReference.from_matrix(_matrix(100, seed=9), ["sex", "language"]).to_dict()
    doc["features"]["race_ethnicity"] = doc["features"]["sex"]
    with pytest.raises(ValueError, match="audit-only"):
        FeatureReference.from_dict(doc)


def test_a_large_matrix_is_summarised_from_a_seeded_sample() -> None:
    X = _matrix(5_000, seed=10)
    a = FeatureReference.from_matrix(X, ["sex", "language"], max_rows=1_000, seed=3)
    b = FeatureReference.from_matrix(X, ["sex", "language"], max_rows=1_000, seed=3)
    assert a == b and a.rows == 1_000
    assert FeatureReference.from_matrix(X, ["sex", "language"], max_rows=None).rows == 5_000
