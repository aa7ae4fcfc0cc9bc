"""Train and evaluate the no-show model: time-based split, LightGBM, calibration, baselines, ceiling."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features.contract import TABLES
from features.drift import FeatureReference
from features.no_show import (
    MONOTONE,
    NoShowFeatureSpec,
    build_features,
    flatten_world,
    history_events,
)
from features.predictor import DEFAULT_TIERS, NoShowPredictor
from training.metrics import binary_metrics, logistic_1d, subgroup_table
from training.promotion import subgroup_columns

LABELLED = ("attended", "no_show")
BASELINE_ROWS = 50_000  # the logistic-regression baseline's training sample (at most)
# Test rows explained with TreeSHAP for the model card's summary plot: 1,000 points per
# feature show the shape of each feature's effect as clearly as 2,000 did, at half the cost.
SHAP_ROWS = 1_000
LGB_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 5.0,
    "cat_smooth": 20.0,
    "num_threads": 2,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}
MAX_ROUNDS, EARLY_STOPPING_ROUNDS = 3000, 100


@dataclass
class NoShowData:
    """Flat appointment rows (all of them: labelled, cancelled and upcoming) and their origin."""

    flat: pd.DataFrame
    source: str  # "synthetic world" or the own file's name
    truth: pd.Series | None = None  # true no-show probability by appointment_id (synthetic only)
    # The same for each row of `flat` in its order (NaN: none), so that training takes its rows'
    # values by position instead of looking a million ids up again (set by `load_world`).
    truth_by_row: np.ndarray | None = None
    # p(no-show | no call) - p(no-show | call) by appointment_id (synthetic only)
    truth_effect: pd.Series | None = None
    extra_numeric: list[str] = field(default_factory=list)
    extra_categorical: list[str] = field(default_factory=list)


@dataclass
class NoShowTraining:
    """Everything a training run produced, for logging, gating and reports."""

    predictor: NoShowPredictor
    metrics: dict[str, Any]
    subgroups: pd.DataFrame
    test: pd.DataFrame  # flat test rows with label, model risk, baseline scores and truth
    contributions: pd.DataFrame  # TreeSHAP contributions for a sample of test rows
    sample_features: pd.DataFrame
    windows: dict[str, str]


def load_world(directory: Path, appointments: pd.DataFrame | None = None) -> NoShowData:
    """Flat rows and (when present) the true probabilities of a generated or contract dataset.
    `appointments` replaces the folder's appointments table (e.g. read from FHIR Appointment
    ndjson by `features.fhir_inbound`)."""
    tables = {
        name: pd.read_parquet(directory / f"{name}.parquet")
        for name in TABLES
        if not (name == "appointments" and appointments is not None)
    }
    if appointments is not None:
        tables["appointments"] = appointments
    flat = flatten_world(tables)
    truth_path = directory / "truth" / "appointments.parquet"
    truth = effect = by_row = None
    if truth_path.exists():
        truth_table = pd.read_parquet(truth_path)
        truth = true_probability(flat, truth_table)
        at = truth.index.get_indexer(flat["appointment_id"])  # the hash table built above
        by_row = np.where(at >= 0, truth.to_numpy()[np.maximum(at, 0)], np.nan)
        if "outreach_effect" in truth_table:
            effect = truth_table.set_index("appointment_id")["outreach_effect"]
    return NoShowData(
        flat=flat,
        source=f"synthetic world {directory}",
        truth=truth,
        truth_effect=effect,
        truth_by_row=by_row,
    )


def true_probability(flat: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """True no-show probability by appointment_id (from truth/appointments.parquet): with or
    without outreach, as each of `flat`'s appointments was or was not called."""
    t = truth.set_index("appointment_id")
    # Each flat row's truth row, from one hash table of the truth's ids. The returned series
    # keeps that index (and with it the table), so evaluation's lookups by id reuse it.
    at = t.index.get_indexer(flat["appointment_id"])
    found = at >= 0
    called = np.zeros(len(t), dtype=bool)
    called[at[found]] = flat["outreach_call"].to_numpy(dtype=bool)[found]
    true_p = np.where(called, t["p_no_show_with_outreach"], t["p_no_show_without_outreach"])
    return pd.Series(true_p, index=t.index)


def split_bounds(
    appointment_at: pd.Series, test_from: pd.Timestamp | None
) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]:
    """Where the valid, calib and test windows of `time_split` begin."""
    t = pd.to_datetime(appointment_at)
    if test_from is None:
        test_from = t.quantile(0.8).normalize()
    before = t[t < test_from]
    if len(before) < 100 or (t >= test_from).sum() < 100:
        raise ValueError(f"--test-from {test_from.date()} leaves too few rows before or after it")
    return before.quantile(0.75), before.quantile(0.875), test_from


def time_split(appointment_at: pd.Series, test_from: pd.Timestamp | None) -> tuple[np.ndarray, ...]:
    """Masks train / valid (early stopping) / calib (calibration) / test, in time order."""
    t = pd.to_datetime(appointment_at)
    q_valid, q_calib, test_from = split_bounds(t, test_from)
    train = (t < q_valid).to_numpy()
    valid = ((t >= q_valid) & (t < q_calib)).to_numpy()
    calib = ((t >= q_calib) & (t < test_from)).to_numpy()
    test = (t >= test_from).to_numpy()
    return train, valid, calib, test


def _window(t: pd.Series, mask: np.ndarray) -> str:
    s = pd.to_datetime(t[mask])
    return f"{s.min():%Y-%m-%d} .. {s.max():%Y-%m-%d}"


def window_texts(appointment_at: pd.Series, masks: tuple[np.ndarray, ...]) -> dict[str, str]:
    """'first .. last' visit date of the train / valid / calibration / test windows."""
    names = ("train", "valid", "calibration", "test")
    return {name: _window(appointment_at, m) for name, m in zip(names, masks, strict=True)}


def fit_calibration(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling of raw log-odds on a held-out fold: p = sigmoid(a * raw + b)."""
    return logistic_1d(raw, y)


def _monotone(columns: list[str]) -> list[int]:
    return [MONOTONE.get(c, 0) for c in columns]


def baseline_sample(rows: np.ndarray, seed: int) -> np.ndarray:
    """The training rows the logistic baseline is fitted on: all of them, or BASELINE_ROWS
    drawn at random (seeded) from more (the Dask engine draws the same sample)."""
    if len(rows) <= BASELINE_ROWS:
        return rows
    return rows[np.sort(np.random.default_rng(seed).choice(len(rows), BASELINE_ROWS, False))]


def _logistic_inputs(
    X: pd.DataFrame,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    spec: NoShowFeatureSpec,
    seed: int,
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, list[str], list[str]]:
    """What the logistic baseline reads, copied out of `X`: its fit sample (at most
    BASELINE_ROWS of the `train` rows, drawn at random) and the test rows. It is a baseline of
    a few dozen coefficients (~70 with the one-hot levels), which 50k rows pin down as well as
    a million do: on a million appointments the full fit took longer than the LightGBM model
    itself, and 100k rows still ~4 s. Own copies, so that it can be fitted in another thread."""
    rows = baseline_sample(np.flatnonzero(train), seed)
    categorical = list(spec.categorical)
    fit = _category_codes(X.iloc[rows], categorical).copy()
    scored = _category_codes(_rows(X, test), categorical).copy()
    return fit, y[rows].copy(), scored, list(spec.numeric), categorical


def _logistic_scores(
    fit: pd.DataFrame,
    y_fit: np.ndarray,
    scored: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
) -> np.ndarray:
    """Logistic regression on the same features (imputed, scaled, one-hot), fitted on `fit`:
    its no-show probability for the rows of `scored`."""
    pre = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                numeric,
            ),
            ("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=20), categorical),
        ]
    )
    # Newton steps with a Cholesky solve: the exact optimum of this convex fit, from a few
    # dozen coefficients and many rows, in half lbfgs's time (which stopped short of it).
    model = make_pipeline(pre, LogisticRegression(max_iter=1000, C=1.0, solver="newton-cholesky"))
    model.fit(fit, y_fit)
    return np.asarray(model.predict_proba(scored)[:, 1], dtype=float)


def _category_codes(X: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    """Categoricals as their integer codes (-1: missing) for the one-hot encoder: the same
    indicator columns as the level names give (every matrix shares the spec's levels), without
    turning hundreds of thousands of values into Python strings and hashing them one by one."""
    return X.assign(**{c: X[c].cat.codes.to_numpy() for c in categorical})


def _rule_cells(X: pd.DataFrame) -> np.ndarray:
    """The 'prior no-show + lead time' rule: 2 x 4 cells (any prior no-show x lead bucket)."""
    lead = X["lead_days"].to_numpy()
    bucket = np.select([X["same_day"].to_numpy() > 0, lead <= 7, lead <= 20], [0, 1, 2], 3)
    return (X["prior_no_shows"].to_numpy() > 0) * 4 + bucket


def train_no_show(
    data: NoShowData,
    *,
    test_from: pd.Timestamp | None = None,
    offset_days: float | None = None,
    seed: int = 7,
    tiers: dict[str, float] | None = None,
) -> NoShowTraining:
    """Fit on the earliest appointments, stop early on the next, calibrate on the next, test on the last."""
    flat = data.flat
    events = history_events(flat)
    order = labelled_order(flat)
    labelled = labelled_rows(flat, order)
    y = (labelled["outcome"] == "no_show").to_numpy(dtype=int)
    X, spec = build_features(
        labelled,
        events,
        offset_days=offset_days,
        extra_numeric=tuple(data.extra_numeric),
        extra_categorical=tuple(data.extra_categorical),
    )
    train, valid, calib, test = time_split(labelled["appointment_at"], test_from)

    params = lgb_params(spec, seed)
    dtrain = lgb.Dataset(
        _rows(X, train), y[train], categorical_feature=list(spec.categorical) or "auto"
    )
    dvalid = lgb.Dataset(_rows(X, valid), y[valid], reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    return evaluate_no_show(
        labelled,
        X,
        y,
        (train, valid, calib, test),
        booster,
        spec,
        truth=data.truth if data.truth_by_row is None else data.truth_by_row[order],
        source=data.source,
        seed=seed,
        tiers=tiers,
    )


def labelled_order(flat: pd.DataFrame) -> np.ndarray:
    """Positions in `flat` of its attended/no-show rows, in visit order (ties in `flat`'s order)."""
    rows = np.flatnonzero(flat["outcome"].isin(LABELLED).to_numpy(dtype=bool))
    at = pd.to_datetime(flat["appointment_at"]).to_numpy()[rows]
    return rows[np.argsort(at, kind="stable")]


def labelled_rows(flat: pd.DataFrame, order: np.ndarray | None = None) -> pd.DataFrame:
    """The attended/no-show rows of `flat` in visit order (ties in `flat`'s order);
    `order`: their `labelled_order`, when the caller has it."""
    # Selected and ordered in one take: filtering, then sorting, copied the wide frame twice.
    order = labelled_order(flat) if order is None else order
    labelled = flat.take(order).reset_index(drop=True)
    if len(labelled) < 500 or labelled["outcome"].nunique() < 2:
        raise ValueError(
            "training needs at least 500 attended/no-show appointments with both outcomes"
        )
    return labelled


def lgb_params(spec: NoShowFeatureSpec, seed: int) -> dict[str, Any]:
    """LGB_PARAMS with the seed and the monotone constraints of the spec's columns."""
    return dict(LGB_PARAMS, seed=seed, monotone_constraints=_monotone(spec.columns))


def evaluate_no_show(
    labelled: pd.DataFrame,
    X: pd.DataFrame,
    y: np.ndarray,
    masks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    booster: lgb.Booster,
    spec: NoShowFeatureSpec,
    *,
    truth: pd.Series | np.ndarray | None,
    source: str,
    seed: int = 7,
    tiers: dict[str, float] | None = None,
    windows: dict[str, str] | None = None,
    trained_rows: int | None = None,
) -> NoShowTraining:
    """Everything after the fit: calibration, baselines, test metrics, ceiling, subgroups.

    `labelled`, `X` and `y` are rows in visit order, `masks` their train / valid / calib / test
    windows. The baselines are fitted on the train rows given, and the bundle's drift reference
    (`features.drift`) summarises them; when those are a sample of the training window (the
    Dask engine), `windows` and `trained_rows` describe all of it. `truth`: the true no-show
    probability by appointment_id, or one per row of `labelled` (NaN: none)."""
    train, _, calib, test = masks
    # Scores are needed on the calibration and test folds only (the early-stopping fold is
    # never scored again); the trimmed booster below gives the same raw scores, so they are
    # computed once.
    held_out = calib | test
    raw = np.full(len(X), np.nan)
    raw[held_out] = booster.predict(
        _rows(X, held_out), raw_score=True, num_iteration=booster.best_iteration
    )
    calibration = fit_calibration(raw[calib], y[calib])
    meta = {
        "tiers": tiers or DEFAULT_TIERS,
        "best_iteration": booster.best_iteration,
        "trained_rows": int(train.sum()) if trained_rows is None else trained_rows,
        "source": source,
    }
    booster = booster if booster.best_iteration <= 0 else _trimmed(booster)
    rng = np.random.default_rng(seed)
    sample_idx = np.flatnonzero(test)
    sample_idx = rng.choice(sample_idx, size=min(SHAP_ROWS, len(sample_idx)), replace=False)
    sample_features = X.iloc[np.sort(sample_idx)]
    contributions = NoShowPredictor(booster, calibration, spec, meta).contributions(sample_features)
    # The logistic baseline needs neither the trees nor their scores: it is fitted in a
    # second thread, on its own copies of its rows, while this one summarises the training
    # inputs and scores the model. Not beside LightGBM's scoring and attributions above: they
    # run two threads on two cores, and each tree waits for the slower of them, so a third
    # thread made both slower.
    with ThreadPoolExecutor(max_workers=1) as pool:
        logistic = pool.submit(_logistic_scores, *_logistic_inputs(X, y, train, test, spec, seed))
        # The inputs the model was fitted on, for drift reports (a sample of at most 200k rows)
        reference = FeatureReference.from_matrix(_rows(X, train), list(spec.categorical), seed=seed)
        predictor = NoShowPredictor(booster, calibration, spec, meta, reference)
        risk = predictor.calibrate(raw)  # NaN on the train and early-stopping rows (not scored)

        # Baselines on the same rows (the logistic regression's scores are filled in below).
        scores: dict[str, np.ndarray] = {"model": risk}
        scores["base_rate"] = np.full(len(y), y[train].mean())
        scores["logistic_regression"] = np.full(len(X), np.nan)
        cells = _rule_cells(X)
        cell_rate = pd.Series(y[train]).groupby(cells[train]).agg(["sum", "size"])
        rate = (cell_rate["sum"] + 10 * y[train].mean()) / (cell_rate["size"] + 10)
        scores["prior_no_show_and_lead_rule"] = (
            pd.Series(cells).map(rate).fillna(y[train].mean()).to_numpy()
        )

        day = pd.to_datetime(labelled["appointment_at"]).dt.normalize().to_numpy()
        metrics: dict[str, Any] = {"test": binary_metrics(y[test], risk[test], day[test])}
        metrics["calibration_fold"] = binary_metrics(y[calib], risk[calib])
        test_rows = _rows(labelled, test)  # copy-on-write: the columns added below stay here
        if truth is not None:
            true_p = (
                truth[test]
                if isinstance(truth, np.ndarray)
                else test_rows["appointment_id"].map(truth).to_numpy(dtype=float)
            )
            oracle = binary_metrics(y[test], true_p, day[test])
        subgroups = subgroup_table(y[test], risk[test], subgroup_columns(test_rows))
        scores["logistic_regression"][test] = logistic.result()

    metrics["baselines"] = {
        name: binary_metrics(y[test], s[test], day[test])
        for name, s in scores.items()
        if name != "model"
    }
    for name, s in scores.items():
        test_rows[f"score_{name}"] = s[test]
    test_rows["label"] = y[test]
    if truth is not None:
        test_rows["true_probability"] = true_p
        metrics["oracle"] = oracle
        metrics["model_share_of_ceiling"] = (metrics["test"]["roc_auc"] - 0.5) / (
            oracle["roc_auc"] - 0.5
        )
        metrics["gap_to_ceiling"] = oracle["roc_auc"] - metrics["test"]["roc_auc"]

    windows = windows or window_texts(labelled["appointment_at"], masks)
    predictor.metadata["windows"] = windows
    return NoShowTraining(
        predictor=predictor,
        metrics=metrics,
        subgroups=subgroups,
        test=test_rows,
        contributions=contributions,
        sample_features=sample_features,
        windows=windows,
    )


def _rows(frame: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """frame[mask], without a copy when the selected rows are one contiguous run (each time
    window of rows in visit order is): a slice is a view, a boolean selection copies every
    column (on a million rows, ~0.3 s a copy, mostly the memory's first touch)."""
    rows = np.flatnonzero(mask)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return frame.iloc[rows[0] : rows[-1] + 1]
    return frame[mask]


def _trimmed(booster: lgb.Booster) -> lgb.Booster:
    """A booster holding only the trees up to the early-stopping iteration."""
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
