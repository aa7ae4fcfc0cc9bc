"""Behavioural expectations of the trained no-show model (directional and invariance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.no_show import NoShowTraining, load_world, train_no_show

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def trained(model_world: Path) -> NoShowTraining:
    return train_no_show(load_world(model_world))


def _risk(trained: NoShowTraining, X: pd.DataFrame) -> np.ndarray:
    return trained.predictor.predict_matrix(X)


def test_more_prior_no_shows_never_lowers_risk(trained: NoShowTraining) -> None:
    # Given patients with at least two attended prior visits
    X = trained.sample_features.copy()
    visits = X["prior_appointments"] - X["prior_cancellations"]
    X = X[visits - X["prior_no_shows"] >= 2]
    assert len(X) > 50
    # When two of those visits had been no-shows instead (same visits, more misses)
    more = X.assign(
        prior_no_shows=X["prior_no_shows"] + 2,
        prior_no_show_rate=X["prior_no_show_rate"] + 2 / (visits[X.index] + 5),
    )
    before, after = _risk(trained, X), _risk(trained, more)
    # Then no one's risk goes down, and on average it goes up
    assert (after >= before - 1e-12).all()
    assert after.mean() > before.mean() + 0.02


def test_longer_lead_never_lowers_risk(trained: NoShowTraining) -> None:
    X = trained.sample_features.copy()
    later = X.assign(lead_days=X["lead_days"] + 21, same_day=0.0)
    assert (_risk(trained, later) >= _risk(trained, X.assign(same_day=0.0)) - 1e-12).all()


def test_an_outreach_call_never_raises_risk(trained: NoShowTraining) -> None:
    X = trained.sample_features.copy()
    called, not_called = X.assign(outreach_call=1.0), X.assign(outreach_call=0.0)
    assert (_risk(trained, called) <= _risk(trained, not_called) + 1e-12).all()


def test_renaming_a_patient_everywhere_changes_nothing(
    model_world: Path, trained: NoShowTraining
) -> None:
    data = load_world(model_world)
    flat = data.flat
    renamed = flat.assign(patient_id=flat["patient_id"].map(lambda p: f"X-{p[::-1]}"))
    from features.no_show import history_events

    a = trained.predictor.predict(flat.head(300), history_events(flat))
    b = trained.predictor.predict(renamed.head(300), history_events(renamed))
    np.testing.assert_allclose(a, b)


def test_risk_is_calibrated_on_the_test_window(trained: NoShowTraining) -> None:
    test = trained.test
    assert abs(test["score_model"].mean() - test["label"].mean()) < 0.03
