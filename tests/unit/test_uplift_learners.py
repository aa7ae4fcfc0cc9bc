"""The outreach uplift model: learners, policy evaluation and the bundle (training.uplift,
features.uplift), on simulated trials whose true effects are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.no_show import build_features
from features.uplift import EffectTerms, UpliftPredictor, benefit_from_shift
from training.no_show import NoShowData, train_no_show
from training.uplift import (
    auuc,
    bootstrap_days,
    daily_capacity,
    fit_logit_interaction,
    policy_picks,
    pseudo_outcomes,
    qini_curves,
    train_uplift,
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def simulated_trial(
    n: int, seed: int, call_share: float = 0.3, confounded: bool = False
) -> tuple[pd.DataFrame, pd.Series]:
    """Flat appointment rows of a randomised outreach trial. The no-show risk without a call is
    the same for both coverages (it depends on lead time and age only); a call helps Medicaid
    patients a lot (log-odds -1.2) and commercial patients not at all. `confounded`: staff call
    patients over 60 far more often (45% vs 5%) instead of at random. Returns the rows and the
    true effect p(no call) - p(call) by appointment_id."""
    rng = np.random.default_rng(seed)
    booked = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.uniform(0, 300, n), unit="D")
    lead = rng.uniform(2.5, 40, n)
    appt = (booked + pd.to_timedelta(lead, unit="D")).floor("h") + pd.Timedelta(hours=9)
    age = rng.uniform(20, 80, n)
    medicaid = rng.random(n) < 0.5
    base = -2.0 + 0.035 * lead + 0.01 * (age - 50)
    tau = np.where(medicaid, 1.2, 0.0)
    called = rng.random(n) < (np.where(age > 60, 0.45, 0.05) if confounded else call_share)
    p0, p1 = _sigmoid(base), _sigmoid(base - tau)
    no_show = rng.random(n) < np.where(called, p1, p0)
    ids = [f"AP{i:07d}" for i in range(n)]
    flat = pd.DataFrame(
        {
            "appointment_id": ids,
            "booked_at": booked.floor("min"),
            "appointment_at": appt,
            "age": age,
            "payer_type": np.where(medicaid, "medicaid", "commercial"),
            "language": "en",
            "outreach_call": called,
            "text_reminder": False,
            "outcome": np.where(no_show, "no_show", "attended"),
            "outcome_at": appt,
        }
    )
    return flat, pd.Series(p0 - p1, index=ids)


@pytest.fixture(scope="module")
def trial_models() -> tuple[NoShowData, object, object]:
    flat, effect = simulated_trial(24_000, seed=3)
    data = NoShowData(flat=flat, source="simulated trial", truth_effect=effect)
    risk_model = train_no_show(data).predictor
    trained = train_uplift(data, risk_model, call_share=0.1)
    return data, risk_model, trained


def test_equal_risk_patients_are_ordered_by_their_effect(trial_models: tuple) -> None:
    """Behaviour: of two patients with the same risk, the one a call helps (Medicaid here)
    ranks above the one it does not help, on average over a fresh batch."""
    _, risk_model, trained = trial_models
    fresh, effect = simulated_trial(4_000, seed=11)
    fresh = fresh.assign(outreach_call=False)
    model = trained.predictor
    X = model.features(fresh, None)
    risk = risk_model.predict(fresh, None)
    benefit = model.expected_benefit(X, risk)
    helped = fresh["payer_type"].eq("medicaid").to_numpy()
    assert effect[~helped].abs().max() == 0  # truly zero effect for the others
    # Pair each helped row with the unhelped row of the nearest risk.
    r_u_sorted = np.sort(risk[~helped])
    b_u_sorted = benefit[~helped][np.argsort(risk[~helped])]
    at = np.clip(np.searchsorted(r_u_sorted, risk[helped]), 1, len(r_u_sorted) - 1)
    nearer = np.abs(r_u_sorted[at - 1] - risk[helped]) < np.abs(r_u_sorted[at] - risk[helped])
    at = at - nearer
    b_h, b_u = benefit[helped], b_u_sorted[at]
    close = np.abs(r_u_sorted[at] - risk[helped]) < 0.005
    assert close.mean() > 0.8
    assert np.mean(b_u[close] > b_h[close]) < 0.1
    assert b_h[close].mean() > 3 * b_u[close].mean()


def test_uplift_ranking_beats_risk_ranking_where_risk_says_nothing(trial_models: tuple) -> None:
    """Risk is the same for both coverages here, so ranking by risk prevents about what a random
    choice does, and ranking by the learned benefit prevents more (true effects)."""
    _, _, trained = trial_models
    table = trained.policies.set_index("policy")
    assert table.loc["uplift", "true_low"] > table.loc["risk", "true_high"]
    assert table.loc["uplift", "true_per_100"] > table.loc["random", "true_per_100"] + 3
    assert table.loc["oracle", "true_per_100"] >= table.loc["uplift", "true_per_100"]
    coef = dict(zip(trained.predictor.terms.names, trained.predictor.terms.coef, strict=True))
    assert coef["payer_type = medicaid"] < -0.3  # the call lowers Medicaid no-shows most


def test_estimated_propensity_follows_who_staff_called() -> None:
    """Observational calls (older patients called far more often): --propensity estimated
    learns that, and the learned benefit still orders Medicaid patients first."""
    flat, effect = simulated_trial(16_000, seed=8, confounded=True)
    data = NoShowData(flat=flat, source="observational", truth_effect=effect)
    risk_model = train_no_show(data).predictor
    trained = train_uplift(data, risk_model, propensity="estimated", learner="t-learner")
    test = trained.test
    older = test["age"].to_numpy() > 60
    e = test["propensity"].to_numpy()
    assert e[older].mean() > 0.3 and e[~older].mean() < 0.15
    medicaid = test["payer_type"].eq("medicaid").to_numpy()
    benefit = test["benefit_logit-interaction"].to_numpy()
    assert np.nanmean(benefit[medicaid]) > 3 * np.nanmean(benefit[~medicaid])


def test_logit_interaction_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    n = 60_000
    z = rng.normal(size=n)
    Z = np.column_stack([np.ones(n), z])
    offset = rng.normal(-1.0, 0.8, n)
    treated = rng.random(n) < 0.5
    true = np.array([-0.5, -0.4])
    y = rng.random(n) < _sigmoid(offset + treated * (Z @ true))
    coef = fit_logit_interaction(Z, offset, y.astype(int), treated, ridge=0.0)
    assert np.allclose(coef, true, atol=0.06)


def test_pseudo_outcomes_average_to_the_true_effect_even_with_a_wrong_outcome_model() -> None:
    """Doubly robust: with the right propensity, a useless outcome model still gives an
    unbiased average."""
    rng = np.random.default_rng(1)
    n = 200_000
    p0 = rng.uniform(0.1, 0.5, n)
    p1 = p0 * 0.7
    e = 0.2
    treated = rng.random(n) < e
    y = (rng.random(n) < np.where(treated, p1, p0)).astype(int)
    wrong = np.full(n, 0.3)
    psi = pseudo_outcomes(y, treated, wrong, wrong, np.full(n, e))
    assert abs(psi.mean() - (p0 - p1).mean()) < 0.01


def test_policy_picks_take_each_days_highest_scores_and_never_nan() -> None:
    day = np.array(["2025-01-01"] * 4 + ["2025-01-02"] * 3, dtype="datetime64[D]")
    score = np.array([0.1, 0.9, np.nan, 0.5, 0.2, 0.3, np.nan])
    picked = policy_picks(score, day, capacity=2)
    assert picked.tolist() == [False, True, False, True, True, True, False]
    assert daily_capacity(day, 0.5) == 2  # 7 rows over 2 days, half of 3.5


def test_true_qini_curves_end_at_the_average_effect_and_the_oracle_is_highest() -> None:
    rng = np.random.default_rng(2)
    n = 5_000
    effect = rng.uniform(0, 0.1, n)
    y = (rng.random(n) < 0.2).astype(int)
    treated = rng.random(n) < 0.3
    scores = {"oracle": effect, "noise": rng.random(n), "half": effect + rng.normal(0, 0.03, n)}
    q = qini_curves(scores, y, treated, effect)
    for name in scores:
        assert q[f"true_{name}"].iloc[-1] == pytest.approx(effect.mean())
        assert q[f"true_{name}"].iloc[0] == 0
        assert (q["true_oracle"] >= q[f"true_{name}"] - 1e-12).all()
    frac = q["fraction"].to_numpy()
    areas = {k: auuc(q[f"true_{k}"].to_numpy(), frac) for k in scores}
    assert areas["oracle"] > areas["half"] > areas["noise"]


def test_day_bootstrap_intervals_surround_the_estimate_and_repeat_with_the_seed() -> None:
    rng = np.random.default_rng(4)
    day = np.repeat(np.arange(60).astype("datetime64[D]"), 50)
    value = rng.normal(0.05, 0.2, len(day))
    picks = {"all": np.ones(len(day), bool)}
    a = bootstrap_days(day, {"v": value}, picks, seed=1)["all:v"]
    b = bootstrap_days(day, {"v": value}, picks, seed=1)["all:v"]
    assert np.array_equal(a, b)
    lo, hi = np.percentile(a, [2.5, 97.5])
    assert lo < 100 * value.mean() < hi
    assert hi - lo < 4 * 100 * 0.2 / np.sqrt(len(day)) * 2


def test_bundle_round_trip_bounds_and_eligibility(tmp_path: Path) -> None:
    flat, _ = simulated_trial(600, seed=5)
    flat.loc[:9, "booked_at"] = flat.loc[:9, "appointment_at"] - pd.Timedelta(hours=20)
    flat.loc[10:19, "outreach_call"] = True
    flat.loc[20:, "outreach_call"] = False
    X, spec = build_features(flat, None)
    terms = EffectTerms(
        numeric=["age"],
        center=[50.0],
        scale=[15.0],
        fill=[50.0],
        indicators=[("payer_type", "medicaid")],
        thresholds=[("age", 75.0)],
        coef=[-0.3, -0.1, -1.0, -0.2],
    )
    model = UpliftPredictor("logit-interaction", spec, terms, metadata={"name": "outreach-uplift"})
    loaded = UpliftPredictor.load(model.save(tmp_path / "b"))
    risk = np.linspace(0.05, 0.6, len(flat))
    benefit = loaded.expected_benefit(X, risk)
    assert np.isnan(benefit[:20]).all()  # booked < 2 days ahead, or already called
    ok = benefit[20:]
    assert (ok >= 0).all() and (ok <= risk[20:]).all()
    medicaid = flat["payer_type"].eq("medicaid").to_numpy()[20:]
    shift = terms.logit_shift(X)[20:]
    assert np.allclose(ok, benefit_from_shift(risk[20:], shift))
    assert ok[medicaid].mean() > ok[~medicaid].mean()
    assert loaded.same_features(spec)
    (tmp_path / "b" / "uplift.json").write_text(json.dumps({"kind": "logit-interaction"}))
    with pytest.raises(ValueError, match=r"uplift bundle in .*b"):
        UpliftPredictor.load(tmp_path / "b")
    with pytest.raises(ValueError, match="needs the models mu0, mu1"):
        UpliftPredictor("t-learner", spec)
