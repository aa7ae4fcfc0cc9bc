"""Outreach uplift: who does a call help? Training and evaluation of `outreach-uplift`.

The world records an outreach call given at random to a share of the appointments booked at
least two days ahead (`min_lead_days`), and, in `truth/`, each appointment's true effect of a
call. Only the randomised population is used: booked >= min_lead_days ahead, attended or missed.

Learners (the same no-show features; outreach_call is the treatment, never an input):
- **logit-interaction** (default): LightGBM models the no-show log-odds without a call
  (cross-fitted on the control arm); a call shifts them by `g(x) = z(x) . coef`, a ridge-
  penalised logistic fit over a few interpretable terms (coverage, language, distance, age,
  lead time, the patient's record) with the LightGBM log-odds as offset. Few parameters, so
  the 12% treated arm is enough to estimate them.
- **t-learner**: two LightGBM no-show models, one per arm; benefit mu0 - mu1.
- **dr-learner**: LightGBM regression of doubly robust pseudo-outcomes (cross-fitted mu0, mu1
  and the propensity).

Propensity: "randomised" (the treated share, constant: the world's calls are a randomised
trial) or "estimated" (a cross-fitted logistic model of the call on the features, clipped to
[0.05, 0.95]) for observational data, where calls went to whom staff chose. With "estimated"
every learner weights rows by the inverse propensity (treated 1/e, control 1/(1-e)), which
removes confounding by the features only (no hidden reasons for calling: an assumption).

Evaluation on the test window (the last 20% of visits, as the no-show model's):
- policies, each calling at most `capacity` patients a day, highest score first: uplift (the
  chosen learner), the other learners, risk (today's worklist: the no-show model's risk without
  a call), random, and the oracle (true effect; synthetic worlds only);
- no-shows prevented per 100 calls, **true** (mean true effect of those called x 100, from
  truth/) and **estimated from outcomes** (mean doubly robust pseudo-outcome of those called,
  which needs no truth), with 95% intervals from a bootstrap over test days;
- Qini curves (estimated from the randomised outcomes, and true) and their areas (AUUC), and the
  calibration of the predicted benefit by decile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.no_show import NoShowFeatureSpec, build_features, history_events
from features.predictor import NoShowPredictor
from features.uplift import (
    DEFAULT_MIN_LEAD_DAYS,
    LEARNERS,
    TREATMENT,
    EffectTerms,
    UpliftPredictor,
)
from training.no_show import LGB_PARAMS, NoShowData, labelled_rows, split_bounds

log = logging.getLogger(__name__)

PROPENSITY: Final = ("randomised", "estimated")
DEFAULT_LEARNER: Final = "logit-interaction"
DEFAULT_CALL_SHARE: Final = 0.10  # daily capacity: 10% of an average day's eligible visits
FOLDS: Final = 3
BOOTSTRAP: Final = 1000
PROPENSITY_CLIP: Final = (0.05, 0.95)
RIDGE: Final = 5.0  # on standardised terms, against ~10^4 called rows
MIN_LEVEL_CALLED: Final = 150  # an indicator needs this many called fit rows at its level
TERM_NUMERIC: Final = (
    "age",
    "distance_km",
    "lead_days",
    "prior_appointments",
    "prior_no_show_rate",
)
TERM_CATEGORICAL: Final = ("payer_type", "language")
TERM_THRESHOLDS: Final = (("age", 65.0), ("age", 75.0))
# The no-show model's LightGBM settings, slower and smaller: each arm has a fraction of the rows.
OUTCOME_PARAMS: Final[dict[str, Any]] = {**LGB_PARAMS, "learning_rate": 0.05, "num_leaves": 15}
TAU_PARAMS: Final[dict[str, Any]] = {
    **OUTCOME_PARAMS,
    "objective": "regression",
    "learning_rate": 0.02,
    "num_leaves": 7,
    "min_data_in_leaf": 1000,
}
MAX_ROUNDS, PATIENCE = 3000, 50
POLICIES: Final = ("oracle", "uplift", "risk", "random")


@dataclass
class UpliftFrame:
    """The randomised population in visit order: features, outcome, call, folds, risk."""

    rows: pd.DataFrame  # flat rows (appointment_id, appointment_at, ...)
    X: pd.DataFrame  # no-show model matrix, outreach_call set to 0 (scored as "if not called")
    y: np.ndarray  # 1 = no-show
    treated: np.ndarray  # bool: the call was made
    test: np.ndarray  # bool: in the test window
    day: np.ndarray  # visit day (datetime64[D])
    spec: NoShowFeatureSpec
    risk: np.ndarray  # the no-show model's risk without a call
    true_effect: np.ndarray | None  # truth/: p(no-show | no call) - p(no-show | call)
    windows: dict[str, str]

    @property
    def inputs(self) -> pd.DataFrame:
        """The matrix without the treatment column (what the LightGBM learners see)."""
        return self.X.drop(columns=[TREATMENT], errors="ignore")


@dataclass
class UpliftTraining:
    """A trained uplift model and everything its run logs."""

    predictor: UpliftPredictor
    learner: str
    propensity: str
    metrics: dict[str, Any]
    policies: pd.DataFrame  # one row per policy: prevented per 100 calls, true and estimated
    qini: pd.DataFrame  # fraction targeted -> curves
    calibration: pd.DataFrame  # benefit deciles: predicted, estimated, true
    test: pd.DataFrame  # test rows: flat columns, label, call, risk, scores, pseudo-outcome
    events: pd.DataFrame  # outcome history the gates rebuild features from
    capacity: int
    learners: dict[str, UpliftPredictor] = field(default_factory=dict)


# --------------------------------------------------------------------------------- data


def uplift_frame(
    data: NoShowData,
    risk_model: NoShowPredictor,
    *,
    test_from: pd.Timestamp | None = None,
    min_lead_days: float = DEFAULT_MIN_LEAD_DAYS,
) -> tuple[UpliftFrame, pd.DataFrame]:
    """The randomised population of `data` and the outcome events (for history features)."""
    if TREATMENT not in data.flat.columns or data.flat[TREATMENT].isna().all():
        raise ValueError(
            f"training an uplift model needs the '{TREATMENT}' column (was the call made?)"
        )
    events = history_events(data.flat)
    labelled = labelled_rows(data.flat)
    if labelled[TREATMENT].isna().any():
        line = int(np.flatnonzero(labelled[TREATMENT].isna().to_numpy())[0])
        raise ValueError(
            f"'{TREATMENT}' is missing for appointment "
            f"{labelled['appointment_id'].iloc[line]!s}: every labelled row needs it"
        )
    lead = (
        pd.to_datetime(labelled["appointment_at"]) - pd.to_datetime(labelled["booked_at"])
    ).dt.total_seconds().to_numpy() / 86_400.0
    keep = lead >= min_lead_days
    rows = labelled[keep].reset_index(drop=True)
    treated = rows[TREATMENT].astype(bool).to_numpy()
    if treated.sum() < 50 or (~treated).sum() < 50:
        raise ValueError(
            f"too few called ({treated.sum()}) or uncalled ({(~treated).sum()}) appointments "
            f"booked >= {min_lead_days:g} days ahead to estimate the effect of a call"
        )
    no_call = rows.assign(**{TREATMENT: False})
    X, spec = build_features(
        no_call,
        events,
        extra_numeric=tuple(data.extra_numeric),
        extra_categorical=tuple(data.extra_categorical),
    )
    _q_valid, _, test_start = split_bounds(rows["appointment_at"], test_from)
    at = pd.to_datetime(rows["appointment_at"])
    test = (at >= test_start).to_numpy()
    risk = risk_model.predict(no_call, events)
    truth = None
    if data.truth_effect is not None:
        truth = rows["appointment_id"].map(data.truth_effect).to_numpy(dtype=float)
    windows = {
        "fit": f"{at[~test].min():%Y-%m-%d} .. {at[~test].max():%Y-%m-%d}",
        "test": f"{at[test].min():%Y-%m-%d} .. {at[test].max():%Y-%m-%d}",
    }
    frame = UpliftFrame(
        rows=rows,
        X=X,
        y=(rows["outcome"] == "no_show").to_numpy(dtype=int),
        treated=treated,
        test=test,
        day=at.dt.normalize().to_numpy().astype("datetime64[D]"),
        spec=spec,
        risk=np.asarray(risk, dtype=float),
        true_effect=truth,
        windows=windows,
    )
    return frame, events


# --------------------------------------------------------------------------------- learners


def _fit_gbm(
    X: pd.DataFrame,
    target: np.ndarray,
    fit: np.ndarray,
    params: dict[str, Any],
    seed: int,
    weight: np.ndarray | None = None,
) -> lgb.Booster:
    """LightGBM on the `fit` rows, early stopping on a random 15% of them."""
    rng = np.random.default_rng(seed)
    inner = rng.random(len(X)) < 0.15
    tr, va = fit & ~inner, fit & inner
    cat = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    w = (lambda m: None) if weight is None else (lambda m: weight[m])
    dtrain = lgb.Dataset(X[tr], target[tr], weight=w(tr), categorical_feature=cat or "auto")
    dvalid = lgb.Dataset(X[va], target[va], weight=w(va), reference=dtrain)
    return lgb.train(
        dict(params, seed=seed),
        dtrain,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(PATIENCE, verbose=False)],
    )


def _trimmed(booster: lgb.Booster) -> lgb.Booster:
    best = booster.best_iteration
    if best <= 0:
        return booster
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


@dataclass
class _Nuisance:
    """Cross-fitted outcome models and propensity on the fit rows, final models for the rest."""

    mu0: np.ndarray  # P(no-show | x, no call): out of fold on fit rows, final model elsewhere
    mu1: np.ndarray
    raw0: np.ndarray  # log-odds of mu0
    e: np.ndarray  # propensity of a call
    m0: lgb.Booster
    m1: lgb.Booster


def _propensity(frame: UpliftFrame, fit: np.ndarray, how: str, folds: np.ndarray) -> np.ndarray:
    if how == "randomised":
        return np.full(len(frame.y), frame.treated[fit].mean())
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X = frame.inputs
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in X.columns if c not in categorical]
    Xo = X.copy()
    for c in categorical:
        Xo[c] = Xo[c].astype(object).where(Xo[c].notna(), "missing")

    def model() -> Any:
        pre = ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                ("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=20), categorical),
            ]
        )
        return make_pipeline(pre, LogisticRegression(max_iter=500))

    e = np.full(len(X), np.nan)
    t = frame.treated.astype(int)
    for k in range(FOLDS):
        train, held = fit & (folds != k), fit & (folds == k)
        e[held] = model().fit(Xo[train], t[train]).predict_proba(Xo[held])[:, 1]
    rest = ~fit
    if rest.any():
        e[rest] = model().fit(Xo[fit], t[fit]).predict_proba(Xo[rest])[:, 1]
    return np.clip(e, *PROPENSITY_CLIP)


def _nuisance(frame: UpliftFrame, fit: np.ndarray, propensity: str, seed: int) -> _Nuisance:
    rng = np.random.default_rng(seed)
    folds = np.where(fit, rng.integers(0, FOLDS, len(fit)), -1)
    e = _propensity(frame, fit, propensity, folds)
    weight = None
    if propensity == "estimated":
        weight = np.where(frame.treated, 1.0 / e, 1.0 / (1.0 - e))
    X, y, t = frame.inputs, frame.y, frame.treated
    mu0, mu1, raw0 = (np.full(len(y), np.nan) for _ in range(3))
    for k in range(FOLDS):
        train, held = fit & (folds != k), fit & (folds == k)
        b0 = _fit_gbm(X, y, train & ~t, OUTCOME_PARAMS, seed + k, weight)
        b1 = _fit_gbm(X, y, train & t, OUTCOME_PARAMS, seed + 10 + k, weight)
        raw0[held] = b0.predict(X[held], raw_score=True, num_iteration=b0.best_iteration)
        mu1[held] = b1.predict(X[held], num_iteration=b1.best_iteration)
    m0 = _trimmed(_fit_gbm(X, y, fit & ~t, OUTCOME_PARAMS, seed + 100, weight))
    m1 = _trimmed(_fit_gbm(X, y, fit & t, OUTCOME_PARAMS, seed + 101, weight))
    rest = ~fit
    raw0[rest] = m0.predict(X[rest], raw_score=True)
    mu1[rest] = m1.predict(X[rest])
    mu0 = 1.0 / (1.0 + np.exp(-raw0))
    return _Nuisance(mu0, mu1, raw0, e, m0, m1)


def pseudo_outcomes(
    y: np.ndarray, treated: np.ndarray, mu0: np.ndarray, mu1: np.ndarray, e: np.ndarray
) -> np.ndarray:
    """Doubly robust pseudo-outcomes of the benefit (no-shows prevented by a call): unbiased for
    each row's mu0 - mu1 when either the outcome models or the propensity are right; their mean
    over any set of rows estimates the average benefit of calling that set."""
    y = y.astype(float)
    return (
        mu0
        - mu1
        + np.where(treated, 0.0, (y - mu0) / (1.0 - e))
        - np.where(treated, (y - mu1) / e, 0.0)
    )


def effect_terms_layout(X: pd.DataFrame, fit: np.ndarray, treated: np.ndarray) -> EffectTerms:
    """Which terms z(x) the logit-interaction learner fits, with their scaling (coef unset):
    the numeric TERM_NUMERIC present, one indicator per level (but the most common) of the
    TERM_CATEGORICAL present with at least MIN_LEVEL_CALLED called fit rows (only the called rows
    inform an effect term), and the age thresholds."""
    numeric = [c for c in TERM_NUMERIC if c in X and X.loc[fit, c].notna().any()]
    center, scale, fill = [], [], []
    for c in numeric:
        v = X.loc[fit, c].to_numpy(dtype=float)
        med = float(np.nanmedian(v))
        v = np.where(np.isnan(v), med, v)
        center.append(float(v.mean()))
        scale.append(float(v.std()) or 1.0)
        fill.append(med)
    indicators: list[tuple[str, str]] = []
    for c in TERM_CATEGORICAL:
        if c not in X:
            continue
        counts = X.loc[fit & treated, c].astype("string").value_counts()
        levels = [str(v) for v, n in counts.items() if n >= MIN_LEVEL_CALLED]
        indicators += [(c, v) for v in levels[1:]]  # the most common level is the reference
    thresholds = [(c, v) for c, v in TERM_THRESHOLDS if c in numeric]
    size = 1 + len(numeric) + len(indicators) + len(thresholds)
    return EffectTerms(numeric, center, scale, fill, indicators, thresholds, [0.0] * size)


def fit_logit_interaction(
    Z: np.ndarray,
    offset: np.ndarray,
    y: np.ndarray,
    treated: np.ndarray,
    weight: np.ndarray | None = None,
    ridge: float = RIDGE,
) -> np.ndarray:
    """Coefficients of `logit P(no-show) = offset + treated * (Z @ coef)` by Newton's method,
    with a ridge penalty on all but the constant (Z's first column). Only the treated rows
    inform coef: the offset already fits the untreated ones."""
    rows = treated.astype(bool)
    Zt, off, yt = Z[rows], offset[rows], y[rows].astype(float)
    w = np.ones(len(yt)) if weight is None else weight[rows]
    penalty = np.full(Z.shape[1], ridge)
    penalty[0] = 0.0
    coef = np.zeros(Z.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(off + Zt @ coef)))
        grad = Zt.T @ (w * (yt - p)) - penalty * coef
        hess = (
            (Zt * (w * p * (1 - p))[:, None]).T @ Zt + np.diag(penalty) + 1e-9 * np.eye(len(coef))
        )
        step = np.linalg.solve(hess, grad)
        coef += step
        if np.max(np.abs(step)) < 1e-9:
            break
    return coef


def fit_learner(
    learner: str,
    frame: UpliftFrame,
    fit: np.ndarray,
    nuisance: _Nuisance,
    *,
    propensity: str,
    seed: int,
    min_lead_days: float,
) -> UpliftPredictor:
    """One learner fitted on the `fit` rows, as a servable bundle."""
    if learner not in LEARNERS:
        raise ValueError(f"unknown learner {learner!r}: one of {', '.join(LEARNERS)}")
    weight = None
    if propensity == "estimated":
        weight = np.where(frame.treated, 1.0 / nuisance.e, 1.0 / (1.0 - nuisance.e))
    meta = {"learner": learner, "propensity": propensity}
    if learner == "logit-interaction":
        terms = effect_terms_layout(frame.X, fit, frame.treated)
        Z = terms.design(frame.X)
        coef = fit_logit_interaction(
            Z[fit],
            nuisance.raw0[fit],
            frame.y[fit],
            frame.treated[fit],
            None if weight is None else weight[fit],
        )
        terms.coef = [float(c) for c in coef]
        return UpliftPredictor(learner, frame.spec, terms, {}, min_lead_days, meta)
    if learner == "t-learner":
        boosters = {"mu0": nuisance.m0, "mu1": nuisance.m1}
        return UpliftPredictor(learner, frame.spec, None, boosters, min_lead_days, meta)
    psi = pseudo_outcomes(frame.y, frame.treated, nuisance.mu0, nuisance.mu1, nuisance.e)
    tau = _trimmed(_fit_gbm(frame.inputs, psi, fit, TAU_PARAMS, seed + 200))
    return UpliftPredictor(learner, frame.spec, None, {"tau": tau}, min_lead_days, meta)


# --------------------------------------------------------------------------------- evaluation


def daily_capacity(day: np.ndarray, share: float) -> int:
    """Calls a day: `share` of an average day's eligible visits, at least one."""
    days = len(np.unique(day))
    return max(1, round(share * len(day) / max(days, 1)))


def policy_picks(score: np.ndarray, day: np.ndarray, capacity: int) -> np.ndarray:
    """Bool mask: each day's `capacity` highest scores (NaN never picked; ties by row order)."""
    s = np.where(np.isnan(score), -np.inf, score)
    order = np.lexsort((np.arange(len(s)), -s, day))
    d = day[order]
    start = np.r_[True, d[1:] != d[:-1]]
    run = np.maximum.accumulate(np.where(start, np.arange(len(d)), 0))
    rank = np.arange(len(d)) - run
    picked = np.zeros(len(s), bool)
    picked[order] = (rank < capacity) & np.isfinite(s[order])
    return picked


def bootstrap_days(
    day: np.ndarray, values: dict[str, np.ndarray], picks: dict[str, np.ndarray], seed: int
) -> dict[str, np.ndarray]:
    """Per 100 calls, for B bootstrap resamples of the test days: {name: (B,) array}, for
    `values[v]` summed over `picks[p]` as 'p:v'."""
    days, inverse = np.unique(day, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(days), np.full(len(days), 1 / len(days)), size=BOOTSTRAP)
    out = {}
    for p, mask in picks.items():
        calls = np.bincount(inverse[mask], minlength=len(days)).astype(float)
        n = counts @ calls
        for v, val in values.items():
            total = np.bincount(inverse[mask], weights=val[mask], minlength=len(days))
            out[f"{p}:{v}"] = 100 * (counts @ total) / np.maximum(n, 1)
    return out


def _interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def policy_table(
    scores: dict[str, np.ndarray],
    day: np.ndarray,
    capacity: int,
    psi: np.ndarray,
    true_effect: np.ndarray | None,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """No-shows prevented per 100 calls for each policy (score), with 95% bootstrap intervals
    over days; 'random' is the expected value of a random pick (the mean over all rows)."""
    picks = {name: policy_picks(s, day, capacity) for name, s in scores.items()}
    picks["random"] = np.ones(len(day), bool)  # every row, equally likely: the mean
    values = {"estimated": psi}
    if true_effect is not None:
        values["true"] = true_effect
    boot = bootstrap_days(day, values, picks, seed)
    rows = []
    for name, mask in picks.items():
        row: dict[str, Any] = {"policy": name, "calls": int(mask.sum())}
        for v, val in values.items():
            row[f"{v}_per_100"] = float(100 * val[mask].mean())
            row[f"{v}_low"], row[f"{v}_high"] = _interval(boot[f"{name}:{v}"])
        rows.append(row)
    return pd.DataFrame(rows), boot


def qini_curves(
    scores: dict[str, np.ndarray],
    y: np.ndarray,
    treated: np.ndarray,
    true_effect: np.ndarray | None,
    points: int = 101,
) -> pd.DataFrame:
    """Cumulative no-shows prevented per appointment of the test population when the top
    fraction by each score is called: `estimated_<name>` from the randomised outcomes
    ((control no-show rate - treated no-show rate) in the top fraction x its size / n),
    `true_<name>` from the true effects. Fraction 0 -> 0; random is the straight line."""
    n = len(y)
    frac = np.linspace(0, 1, points)
    k = np.maximum(np.round(frac * n).astype(int), 0)
    out: dict[str, np.ndarray] = {"fraction": frac}
    for name, s in scores.items():
        order = np.argsort(-np.where(np.isnan(s), -np.inf, s), kind="stable")
        t, yy = treated[order].astype(float), y[order].astype(float)
        nt, nc = np.r_[0, np.cumsum(t)], np.r_[0, np.cumsum(1 - t)]
        yt, yc = np.r_[0, np.cumsum(yy * t)], np.r_[0, np.cumsum(yy * (1 - t))]
        with np.errstate(invalid="ignore", divide="ignore"):
            lift = np.where((nt > 0) & (nc > 0), yc / np.maximum(nc, 1) - yt / np.maximum(nt, 1), 0)
        out[f"estimated_{name}"] = lift[k] * k / n
        if true_effect is not None:
            out[f"true_{name}"] = np.r_[0, np.cumsum(true_effect[order])][k] / n
    return pd.DataFrame(out)


def auuc(curve: np.ndarray, fraction: np.ndarray) -> float:
    """Area under an uplift curve (trapezoids over the fraction targeted)."""
    return float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(fraction)))


def benefit_calibration(
    predicted: np.ndarray, psi: np.ndarray, true_effect: np.ndarray | None, bins: int = 10
) -> pd.DataFrame:
    """By decile of predicted benefit: mean predicted, estimated (DR) and true benefit."""
    ok = ~np.isnan(predicted)
    ranks = pd.Series(predicted[ok]).rank(method="first").to_numpy()
    decile = np.ceil(ranks / ok.sum() * bins).astype(int).clip(1, bins)
    frame = pd.DataFrame({"decile": decile, "predicted": predicted[ok], "estimated": psi[ok]})
    if true_effect is not None:
        frame["true"] = true_effect[ok]
    agg = frame.groupby("decile").agg(["mean", "size"])
    out = pd.DataFrame(
        {
            "decile": agg.index,
            "rows": agg[("predicted", "size")].to_numpy(),
            "predicted": agg[("predicted", "mean")].to_numpy(),
            "estimated": agg[("estimated", "mean")].to_numpy(),
        }
    )
    if true_effect is not None:
        out["true"] = agg[("true", "mean")].to_numpy()
    return out


# --------------------------------------------------------------------------------- the job


def train_uplift(
    data: NoShowData,
    risk_model: NoShowPredictor,
    *,
    learner: str = DEFAULT_LEARNER,
    propensity: str = "randomised",
    call_share: float = DEFAULT_CALL_SHARE,
    test_from: pd.Timestamp | None = None,
    seed: int = 7,
    min_lead_days: float = DEFAULT_MIN_LEAD_DAYS,
) -> UpliftTraining:
    """Fit every learner on the fit window, evaluate all against risk, random and the oracle
    on the test window; `learner` is the one kept (the bundle to register)."""
    if learner not in LEARNERS:
        raise ValueError(f"--learner must be one of {', '.join(LEARNERS)}, not {learner!r}")
    if propensity not in PROPENSITY:
        raise ValueError(f"--propensity must be one of {', '.join(PROPENSITY)}, not {propensity!r}")
    if not 0 < call_share <= 1:
        raise ValueError("--call-share must be in (0, 1]")
    frame, events = uplift_frame(data, risk_model, test_from=test_from, min_lead_days=min_lead_days)
    fit = ~frame.test
    nuisance = _nuisance(frame, fit, propensity, seed)
    learners = {
        name: fit_learner(
            name,
            frame,
            fit,
            nuisance,
            propensity=propensity,
            seed=seed,
            min_lead_days=min_lead_days,
        )
        for name in LEARNERS
    }
    test = frame.test
    Xt = frame.X[test]
    risk_t = frame.risk[test]
    benefit = {name: m.expected_benefit(Xt, risk_t) for name, m in learners.items()}
    # Test pseudo-outcomes from the final outcome models (fitted before the test window).
    psi = pseudo_outcomes(
        frame.y[test], frame.treated[test], nuisance.mu0[test], nuisance.mu1[test], nuisance.e[test]
    )
    truth = None if frame.true_effect is None else frame.true_effect[test]
    day = frame.day[test]
    capacity = daily_capacity(day, call_share)
    scores = {"uplift": benefit[learner], "risk": risk_t}
    scores.update({f"uplift ({name})": b for name, b in benefit.items() if name != learner})
    if truth is not None:
        scores = {"oracle": truth, **scores}
    policies, boot = policy_table(scores, day, capacity, psi, truth, seed)
    curve_scores = {"uplift": benefit[learner], "risk": risk_t}
    if truth is not None:
        curve_scores["oracle"] = truth
    qini = qini_curves(curve_scores, frame.y[test], frame.treated[test], truth)
    frac = qini["fraction"].to_numpy()
    metrics = _metrics(policies, boot, qini, frac, benefit[learner], psi, truth, frame, capacity)
    calibration = benefit_calibration(benefit[learner], psi, truth)
    test_rows = frame.rows[test].reset_index(drop=True).copy()
    test_rows["label"] = frame.y[test]
    test_rows["risk_no_call"] = risk_t
    test_rows["pseudo_outcome"] = psi
    test_rows["propensity"] = nuisance.e[test]
    for name, b in benefit.items():
        test_rows[f"benefit_{name}"] = b
    if truth is not None:
        test_rows["true_effect"] = truth
    model = learners[learner]
    model.metadata.update(
        {
            "capacity_per_day": capacity,
            "call_share": call_share,
            "windows": frame.windows,
            "risk_model": risk_model.metadata.get("version") or risk_model.metadata.get("run_id"),
        }
    )
    return UpliftTraining(
        predictor=model,
        learner=learner,
        propensity=propensity,
        metrics=metrics,
        policies=policies,
        qini=qini,
        calibration=calibration,
        test=test_rows,
        events=events,
        capacity=capacity,
        learners=learners,
    )


def _metrics(
    policies: pd.DataFrame,
    boot: dict[str, np.ndarray],
    qini: pd.DataFrame,
    frac: np.ndarray,
    benefit: np.ndarray,
    psi: np.ndarray,
    truth: np.ndarray | None,
    frame: UpliftFrame,
    capacity: int,
) -> dict[str, Any]:
    by = policies.set_index("policy")
    test = frame.test
    out: dict[str, Any] = {
        "rows": {
            "eligible": len(frame.y),
            "called": int(frame.treated.sum()),
            "test": int(test.sum()),
            "test_called": int(frame.treated[test].sum()),
        },
        "capacity_per_day": capacity,
        "policies": {
            p: {k: v for k, v in row.items() if isinstance(v, int | float)}
            for p, row in by.to_dict("index").items()
        },
    }
    diffs = {}
    for other in ("risk", "random"):
        for v in ("estimated", "true"):
            key_u, key_o = f"uplift:{v}", f"{other}:{v}"
            if key_u in boot and key_o in boot:
                d = boot[key_u] - boot[key_o]
                lo, hi = _interval(d)
                point = by.loc["uplift", f"{v}_per_100"] - by.loc[other, f"{v}_per_100"]
                diffs[f"uplift_minus_{other}_{v}"] = {"value": float(point), "low": lo, "high": hi}
    out["differences"] = diffs
    out["auuc"] = {c: auuc(qini[c].to_numpy(), frac) for c in qini.columns if c != "fraction"}
    ok = ~np.isnan(benefit)
    out["average_benefit"] = {
        "predicted": float(np.mean(benefit[ok])),
        "estimated": float(np.mean(psi)),
        "estimated_se": float(np.std(psi) / np.sqrt(len(psi))),
        **({"true": float(np.mean(truth))} if truth is not None else {}),
    }
    if truth is not None:
        from scipy.stats import spearmanr

        out["rank_correlation_with_true_effect"] = {
            "uplift": float(spearmanr(benefit[ok], truth[ok])[0]),
            "risk": float(spearmanr(frame.risk[test], truth)[0]),
        }
    return out
