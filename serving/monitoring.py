"""Live performance of the served models, from the prediction log and the outcomes since fed back.

No-show (`no_show_report`): the latest prediction of each appointment made before its visit
(`predictions.as_of` <= `appointment_at`, both clinic-local), joined to the stored outcome;
cancellations are left out (as in training: the label is no-show among attended or missed
visits). Per ISO week of the visit and over the whole window: rows with an outcome, observed
no-show rate, mean predicted risk, their gap, AUC (rank-based: `auc`), ECE over risk deciles
and the top-20%-per-day recall (share of the no-shows found among the riskiest 20% of each
day's scored visits); the calibration by decile; subgroups by payer type and age band (never
race/ethnicity: it is audit-only and not even stored).

Ranker (`ranker_report`): referrals with a logged top-k, by where their chosen specialist
(referrals.specialist_id) was: ranked first, lower, or not recommended; completion rate =
completed / (completed + leaked).

Drift: with features.drift and a no-show bundle carrying a reference, PSI per input between the
training reference and the rebuilt inputs of the window's scored appointments (their features
rebuilt now, with the history as of the last load), with the drift module's statuses.

Flags: calibration degraded when |observed - predicted| overall > CALIBRATION_GAP or ECE > ECE;
AUC dropped when the window's AUC is more than AUC_DROP under the training test AUC (none
without a training AUC). Thresholds: module constants, overridden by REFERRAL_ML_MONITOR_*.

Gauges on /metrics (prometheus_client; BentoML 1.4 serves the default registry, in
multiprocess mode one value per worker, the most recent one): referral_ml_no_show_auc,
referral_ml_no_show_calibration_gap and referral_ml_feature_psi{feature}, set by
`update_gauges` each time a report is computed.

Only numpy, pandas and prometheus_client (no scikit-learn: this runs in the service).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
from prometheus_client import Gauge

from features.metrics import ranking_metrics
from features.no_show import age_band
from serving.schemas import (
    CalibrationBin,
    DriftMonitoring,
    FeaturePsi,
    MonitoringFlag,
    MonitoringRequest,
    MonitoringResponse,
    NoShowMonitoring,
    Performance,
    RankerGroup,
    RankerMonitoring,
)

if TYPE_CHECKING:
    from serving.store import Store

CALIBRATION_GAP: Final = 0.03  # |observed - predicted| overall
ECE: Final = 0.05
AUC_DROP: Final = 0.03  # under the training test AUC
TOP_SHARE: Final = 0.2
DECILES: Final = 10
ENV_PREFIX: Final = "REFERRAL_ML_MONITOR_"
ENV_INTERVAL: Final = "REFERRAL_ML_MONITOR_INTERVAL_MINUTES"  # background refresh; 0: off
DRIFT_MIN_ROWS_NOTE: Final = (
    "fewer than {n} rows: PSI is mostly sampling noise (about (buckets - 1) / rows)"
)
_GAUGE_MODE: Final = "mostrecent"

NO_SHOW_AUC = Gauge(
    "referral_ml_no_show_auc",
    "No-show model ROC AUC over the last /monitoring window",
    multiprocess_mode=_GAUGE_MODE,
)
NO_SHOW_CALIBRATION_GAP = Gauge(
    "referral_ml_no_show_calibration_gap",
    "Observed no-show rate minus mean predicted risk over the last /monitoring window",
    multiprocess_mode=_GAUGE_MODE,
)
FEATURE_PSI = Gauge(
    "referral_ml_feature_psi",
    "PSI of each no-show model input against its training reference (last /monitoring window)",
    labelnames=["feature"],
    multiprocess_mode=_GAUGE_MODE,
)


@dataclass(frozen=True)
class Thresholds:
    calibration_gap: float = CALIBRATION_GAP
    ece: float = ECE
    auc_drop: float = AUC_DROP

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Thresholds:
        """REFERRAL_ML_MONITOR_CALIBRATION_GAP / _ECE / _AUC_DROP override the constants
        (ValueError for a value that is not a positive number)."""
        env = os.environ if env is None else env
        values: dict[str, float] = {}
        for name in ("calibration_gap", "ece", "auc_drop"):
            text = env.get(ENV_PREFIX + name.upper(), "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a number") from None
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a positive number")
            values[name] = value
        return cls(**values)


# ------------------------------------------------------------------------------- metrics


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC: the probability that a random positive scores above a random negative, ties
    counting half (the training reports' own, `features.metrics.ranking_metrics`). None with
    one class."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return None
    return ranking_metrics(y, np.asarray(p, dtype=float))[0]


def decile_bins(p: np.ndarray, bins: int = DECILES) -> np.ndarray:
    """Each row's risk decile 0..bins-1, by rank (equal-count bins; ties split by order)."""
    n = len(p)
    if n == 0:
        return np.zeros(0, dtype=int)
    order = np.argsort(np.asarray(p, dtype=float), kind="stable")
    out = np.empty(n, dtype=int)
    out[order] = (np.arange(n) * bins) // n
    return out


def calibration(y: np.ndarray, p: np.ndarray, bins: int = DECILES) -> list[CalibrationBin]:
    """Mean predicted risk and observed rate per risk decile."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    b = decile_bins(p, bins)
    out = []
    for i in range(bins):
        m = b == i
        if m.any():
            out.append(
                CalibrationBin(
                    decile=i + 1,
                    rows=int(m.sum()),
                    mean_predicted=float(p[m].mean()),
                    observed=float(y[m].mean()),
                )
            )
    return out


def ece(y: np.ndarray, p: np.ndarray, bins: int = DECILES) -> float | None:
    """Expected calibration error: the row-weighted mean |observed - predicted| over deciles."""
    n = len(p)
    if n == 0:
        return None
    return float(
        sum(c.rows * abs(c.observed - c.mean_predicted) for c in calibration(y, p, bins)) / n
    )


def top_recall(
    y: np.ndarray, p: np.ndarray, day: np.ndarray, share: float = TOP_SHARE
) -> float | None:
    """Share of the no-shows that are among the riskiest ceil(share * n) visits of their day."""
    y = np.asarray(y, dtype=bool)
    if not y.any():
        return None
    frame = pd.DataFrame({"y": y, "p": np.asarray(p, dtype=float), "day": day})
    found = 0
    for _, g in frame.groupby("day", sort=False):
        k = math.ceil(share * len(g))
        found += int(g.sort_values("p", ascending=False, kind="stable")["y"].iloc[:k].sum())
    return found / int(y.sum())


def performance(group: str, rows: pd.DataFrame) -> Performance:
    """Metrics of labelled rows (columns y: 1 no-show, p: risk, day)."""
    y = rows["y"].to_numpy(dtype=float)
    p = rows["p"].to_numpy(dtype=float)
    n = len(rows)
    observed = float(y.mean()) if n else None
    predicted = float(p.mean()) if n else None
    return Performance(
        group=group,
        rows=n,
        no_shows=int(y.sum()),
        observed_rate=observed,
        mean_predicted=predicted,
        calibration_gap=None if observed is None or predicted is None else observed - predicted,
        auc=auc(y, p),
        ece=ece(y, p),
        top20_recall=top_recall(y, p, rows["day"].to_numpy()) if n else None,
    )


def iso_week(stamps: pd.Series) -> pd.Series:
    iso = pd.to_datetime(stamps).dt.isocalendar()
    return iso["year"].astype(str) + "-W" + iso["week"].astype(int).map("{:02d}".format)


# ------------------------------------------------------------------------------- reports


def window(req: MonitoringRequest, today: date) -> tuple[date, date]:
    """The report's days (both included)."""
    end = req.end or (
        today if req.start is None else req.start + timedelta(weeks=req.weeks) - timedelta(days=1)
    )
    start = req.start or end - timedelta(weeks=req.weeks) + timedelta(days=1)
    return start, end


def latest_before_visit(log: pd.DataFrame) -> pd.DataFrame:
    """The latest logged prediction per appointment made no later than its visit."""
    ok = log["as_of"].notna() & (log["as_of"] <= log["appointment_at"])
    return log[ok].drop_duplicates("appointment_id", keep="last").reset_index(drop=True)


def no_show_report(log: pd.DataFrame, training_auc: float | None) -> NoShowMonitoring | None:
    """The no-show section from `Store.no_show_log` rows (None when nothing was scored)."""
    scored = latest_before_visit(log)
    if scored.empty:
        return None
    done = scored[scored["outcome"].isin(["attended", "no_show"])].copy()
    done["y"] = (done["outcome"] == "no_show").astype(float)
    done["p"] = done["score"].astype(float)
    done["day"] = pd.to_datetime(done["appointment_at"]).dt.date
    done["week"] = iso_week(done["appointment_at"]) if len(done) else pd.Series(dtype=str)
    age = pd.to_datetime(done["appointment_at"]).dt.year - done["birth_year"]
    done["age_band"] = age_band(age.to_numpy(dtype=float))
    done["payer_type"] = done["payer_type"].where(done["payer_type"].notna(), "unknown").astype(str)
    weeks = [performance(str(w), g) for w, g in done.groupby("week", sort=True)]
    subgroups = {
        name: [performance(str(v), g) for v, g in done.groupby(name, sort=True)]
        for name in ("payer_type", "age_band")
    }
    return NoShowMonitoring(
        model_versions=sorted({str(v) for v in scored["model_version"].dropna()}),
        scored=len(scored),
        with_outcome=len(done),
        overall=performance("overall", done),
        weeks=weeks,
        calibration=calibration(done["y"].to_numpy(), done["p"].to_numpy()),
        subgroups=subgroups,
        training_auc=training_auc,
    )


def ranker_report(log: pd.DataFrame) -> RankerMonitoring | None:
    """The ranker section from `Store.ranker_log` rows: each referral's latest logged top-k."""
    if log.empty:
        return None
    last = log.drop_duplicates("referral_id", keep="last")[["referral_id", "request_id"]]
    latest = log.merge(last, on=["referral_id", "request_id"])
    groups: dict[str, list[str]] = {"ranked_first": [], "lower_rank": [], "not_recommended": []}
    statuses: dict[str, str] = {}
    for referral, g in latest.groupby("referral_id", sort=True):
        chosen = g["chosen_specialist_id"].iloc[0]
        statuses[str(referral)] = str(g["status"].iloc[0])
        ranks = dict(zip(g["item"].astype(str), g["rank"], strict=True))
        rank = ranks.get(str(chosen)) if isinstance(chosen, str) and chosen else None
        key = "not_recommended" if rank is None else "ranked_first" if rank == 1 else "lower_rank"
        groups[key].append(str(referral))
    out = []
    for name, ids in groups.items():
        st = [statuses[i] for i in ids]
        completed, leaked = st.count("completed"), st.count("leaked")
        final = completed + leaked
        out.append(
            RankerGroup(
                group=name,
                referrals=len(ids),
                completed=completed,
                leaked=leaked,
                pending=len(ids) - final,
                completion_rate=completed / final if final else None,
            )
        )
    return RankerMonitoring(referrals=len(statuses), groups=out)


def drift_section(reference: Any, X: pd.DataFrame) -> DriftMonitoring:
    """PSI per reference input of the window's rebuilt model matrix (features.drift)."""
    from features.drift import DEFAULT_MIN_ROWS, STATUSES, psi, status_of

    values = psi(reference, X)
    rows = [
        FeaturePsi(feature=name, psi=float(v), status=status_of(float(v)))
        for name, v in sorted(values.items(), key=lambda kv: -kv[1])
    ]
    worst = next((s for s in reversed(STATUSES) if any(r.status == s for r in rows)), STATUSES[0])
    note = DRIFT_MIN_ROWS_NOTE.format(n=DEFAULT_MIN_ROWS) if len(X) < DEFAULT_MIN_ROWS else None
    return DriftMonitoring(rows=len(X), status=worst, features=rows, note=note)


def flags(no_show: NoShowMonitoring | None, thresholds: Thresholds) -> list[MonitoringFlag]:
    """calibration_gap, calibration_ece (either raised: calibration degraded) and auc_dropped
    (absent when there is nothing to compare)."""
    if no_show is None or no_show.overall.rows == 0:
        return []
    o = no_show.overall
    gap = abs(o.calibration_gap) if o.calibration_gap is not None else None
    out = [
        MonitoringFlag(
            name="calibration_gap",
            raised=bool(gap is not None and gap > thresholds.calibration_gap),
            value=gap,
            threshold=thresholds.calibration_gap,
            message="|observed - predicted| no-show rate over the window",
        ),
        MonitoringFlag(
            name="calibration_ece",
            raised=bool(o.ece is not None and o.ece > thresholds.ece),
            value=o.ece,
            threshold=thresholds.ece,
            message="expected calibration error over risk deciles",
        ),
    ]
    if no_show.training_auc is not None and o.auc is not None:
        drop = no_show.training_auc - o.auc
        out.append(
            MonitoringFlag(
                name="auc_dropped",
                raised=drop > thresholds.auc_drop,
                value=drop,
                threshold=thresholds.auc_drop,
                message=f"training test AUC {no_show.training_auc:.4f} minus the window's "
                f"{o.auc:.4f}",
            )
        )
    return out


def build_report(
    store: Store,
    req: MonitoringRequest,
    *,
    today: date,
    request_id: str,
    training_auc: float | None = None,
    rebuild: Any = None,
    thresholds: Thresholds | None = None,
) -> MonitoringResponse:
    """The whole report. `rebuild(appointment_ids, start, end)` -> (reference, model matrix)
    for the drift section, or None (no reference, or no drift module): no drift section."""
    thresholds = thresholds or Thresholds.from_env()
    start, end = window(req, today)
    lo, hi = datetime.combine(start, time.min), datetime.combine(end + timedelta(days=1), time.min)
    notes: list[str] = []
    log = store.no_show_log(lo, hi)
    no_show = no_show_report(log, training_auc)
    if no_show is None:
        notes.append("no no-show prediction logged before a visit in the window")
    elif training_auc is None:
        notes.append("no training AUC in the bundle: the auc_dropped flag is not computed")
    ranker = ranker_report(store.ranker_log(lo, hi))
    if ranker is None:
        notes.append("no recommendation with a referral_id logged in the window")
    drift = None
    if rebuild is not None and no_show is not None:
        scored = latest_before_visit(log)
        built = rebuild(sorted(set(scored["appointment_id"].astype(str))), lo, hi)
        if built is not None:
            reference, X = built
            if len(X):
                drift = drift_section(reference, X)
    raised = {f.name: f.raised for f in flags(no_show, thresholds)}
    report = MonitoringResponse(
        start=start,
        end=end,
        no_show=no_show,
        ranker=ranker,
        drift=drift,
        calibration_degraded=raised.get("calibration_gap", False)
        or raised.get("calibration_ece", False),
        auc_dropped=raised.get("auc_dropped"),
        flags=flags(no_show, thresholds),
        notes=notes,
        request_id=request_id,
    )
    update_gauges(report)
    return report


def update_gauges(report: MonitoringResponse) -> None:
    """Set the /metrics gauges from a report (NaN where it measured nothing)."""
    overall = report.no_show.overall if report.no_show is not None else None
    NO_SHOW_AUC.set(overall.auc if overall is not None and overall.auc is not None else math.nan)
    gap = overall.calibration_gap if overall is not None else None
    NO_SHOW_CALIBRATION_GAP.set(gap if gap is not None else math.nan)
    if report.drift is not None:
        for f in report.drift.features:
            FEATURE_PSI.labels(feature=f.feature).set(f.psi)
