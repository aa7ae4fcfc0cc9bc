"""serving.monitoring: rank AUC, weekly metrics and flags on hand-built logs; the report and its
gauges over the small world after outcomes are fed back."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest

from serving import monitoring
from serving.keys import Role, create_key
from serving.monitoring import Thresholds, auc, flags, no_show_report, ranker_report
from serving.runtime import Runtime
from serving.schemas import MonitoringRequest
from serving.service import ENDPOINTS, JSON_ENDPOINTS, Endpoint, dispatch
from tests.unit.runtime_fixtures import loaded_runtime

pytestmark = pytest.mark.unit


def brute_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_rank_auc_equals_the_brute_force_pair_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60 + 10 * seed
    p = rng.integers(0, 8, n) / 8.0  # many ties
    y = (rng.random(n) < 0.3 + 0.4 * p).astype(int)
    assert auc(y, p) == pytest.approx(brute_auc(y, p), abs=1e-12)


def test_auc_is_none_with_one_class_and_exact_on_a_tiny_case() -> None:
    assert auc(np.array([0, 0]), np.array([0.1, 0.2])) is None
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs won 2 + 1 of 4
    assert auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == 0.75


def _log(rows: list[tuple[str, str, float, str | None]], as_of: str = "2025-06-01") -> pd.DataFrame:
    """(appointment_id, appointment_at, score, outcome) -> a no-show log as Store.no_show_log."""
    return pd.DataFrame(
        {
            "as_of": pd.Timestamp(as_of),
            "at": pd.Timestamp("2026-01-01"),
            "model_version": "1",
            "appointment_id": [r[0] for r in rows],
            "score": [r[2] for r in rows],
            "appointment_at": pd.to_datetime([r[1] for r in rows]),
            "outcome": [r[3] for r in rows],
            "birth_year": 1960.0,
            "payer_type": "medicare",
        }
    )


def test_weekly_metrics_of_a_hand_built_log() -> None:
    # Week 2025-W27 (Mon 30 June): 4 visits with outcomes, one cancelled, one still open.
    # Week 2025-W28: 2 visits, one no-show ranked below the attended one.
    log = _log(
        [
            ("A1", "2025-06-30T09:00", 0.9, "no_show"),
            ("A2", "2025-06-30T10:00", 0.4, "no_show"),
            ("A3", "2025-06-30T11:00", 0.5, "attended"),
            ("A4", "2025-07-01T09:00", 0.1, "attended"),
            ("A5", "2025-07-01T10:00", 0.3, "cancelled"),
            ("A6", "2025-07-02T10:00", 0.3, None),
            ("B1", "2025-07-07T09:00", 0.2, "no_show"),
            ("B2", "2025-07-07T10:00", 0.6, "attended"),
        ]
    )
    report = no_show_report(log, training_auc=0.8)
    assert report is not None
    assert report.scored == 8 and report.with_outcome == 6  # cancelled and open left out
    w27, w28 = report.weeks
    assert (w27.group, w27.rows, w27.no_shows) == ("2025-W27", 4, 2)
    assert w27.auc == 0.75
    assert w27.observed_rate == 0.5 and w27.mean_predicted == pytest.approx(0.475)
    assert w27.calibration_gap == pytest.approx(0.025)
    # 30 June: 3 visits, top ceil(0.6) = 1 is A1 (a no-show); 1 July: A4 attended -> 1 of 2
    assert w27.top20_recall == 0.5
    assert (w28.group, w28.rows, w28.auc) == ("2025-W28", 2, 0.0)
    assert report.overall.rows == 6 and report.overall.no_shows == 3
    assert report.overall.auc == pytest.approx(
        brute_auc(np.array([1, 1, 0, 0, 1, 0]), np.array([0.9, 0.4, 0.5, 0.1, 0.2, 0.6]))
    )
    assert [g.group for g in report.subgroups["age_band"]] == ["65+"]
    assert sum(c.rows for c in report.calibration) == 6


def test_the_latest_prediction_before_the_visit_is_used() -> None:
    early = _log([("A1", "2025-06-30T09:00", 0.1, "no_show")], as_of="2025-06-01")
    later = _log([("A1", "2025-06-30T09:00", 0.7, "no_show")], as_of="2025-06-20")
    after = _log([("A1", "2025-06-30T09:00", 0.01, "no_show")], as_of="2025-07-02")
    report = no_show_report(pd.concat([early, later, after], ignore_index=True), None)
    assert report is not None and report.scored == 1
    assert report.overall.mean_predicted == pytest.approx(0.7)


def _calibrated(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.5, n)
    y = rng.random(n) < p
    days = pd.Timestamp("2025-06-02T09:00") + pd.to_timedelta(rng.integers(0, 28, n), unit="D")
    log = pd.DataFrame(
        {
            "as_of": pd.Timestamp("2025-06-01"),
            "at": pd.Timestamp("2026-01-01"),
            "model_version": "1",
            "appointment_id": [f"AP{i:06d}" for i in range(n)],
            "score": p,
            "appointment_at": days,
            "outcome": np.where(y, "no_show", "attended"),
            "birth_year": rng.integers(1930, 2010, n).astype(float),
            "payer_type": rng.choice(["commercial", "medicaid"], n),
        }
    )
    return log, y


def test_the_calibration_flag_is_raised_only_when_outcomes_shift() -> None:
    log, y = _calibrated(20_000, seed=3)
    t = Thresholds()
    fine = no_show_report(log, training_auc=None)
    assert fine is not None
    assert not any(f.raised for f in flags(fine, t))
    # flip 10% of the attended visits to no-shows: observed rises by ~0.07
    rng = np.random.default_rng(4)
    attended = np.flatnonzero(~y)
    flip = rng.choice(attended, size=len(attended) // 10, replace=False)
    shifted = log.copy()
    shifted.loc[flip, "outcome"] = "no_show"
    report = no_show_report(shifted, training_auc=None)
    assert report is not None
    raised = {f.name for f in flags(report, t) if f.raised}
    assert "calibration_gap" in raised
    assert report.overall.calibration_gap is not None and report.overall.calibration_gap > 0.05


def test_the_auc_flag_compares_with_training() -> None:
    log, _ = _calibrated(5_000, seed=5)
    report = no_show_report(log, training_auc=None)
    assert report is not None and report.overall.auc is not None
    assert "auc_dropped" not in {f.name for f in flags(report, Thresholds())}
    high = report.model_copy(update={"training_auc": report.overall.auc + 0.05})
    same = report.model_copy(update={"training_auc": report.overall.auc + 0.01})
    assert {f.name for f in flags(high, Thresholds()) if f.raised} == {"auc_dropped"}
    assert not any(f.raised for f in flags(same, Thresholds()))


def test_thresholds_come_from_the_environment() -> None:
    t = Thresholds.from_env({"REFERRAL_ML_MONITOR_ECE": "0.2"})
    assert (t.calibration_gap, t.ece, t.auc_drop) == (0.03, 0.2, 0.03)
    with pytest.raises(ValueError, match="ECE"):
        Thresholds.from_env({"REFERRAL_ML_MONITOR_ECE": "-1"})


def test_ranker_completion_by_rank_of_the_chosen_specialist() -> None:
    rows = []
    for ref, chosen, status in [
        ("R1", "S1", "completed"),
        ("R2", "S2", "leaked"),
        ("R3", "S9", "completed"),
        ("R4", "S1", "leaked"),
        ("R5", None, "scheduled"),
    ]:
        for rank, item in enumerate(["S1", "S2", "S3"], start=1):
            rows.append(("2025-06-01", f"q-{ref}", ref, item, rank, status, chosen))
    log = pd.DataFrame(
        rows,
        columns=[
            "as_of",
            "request_id",
            "referral_id",
            "item",
            "rank",
            "status",
            "chosen_specialist_id",
        ],
    )
    report = ranker_report(log)
    assert report is not None and report.referrals == 5
    by = {g.group: g for g in report.groups}
    assert (by["ranked_first"].referrals, by["ranked_first"].completion_rate) == (2, 0.5)
    assert (by["lower_rank"].completed, by["lower_rank"].leaked) == (0, 1)
    assert by["not_recommended"].referrals == 2 and by["not_recommended"].pending == 1
    assert by["not_recommended"].completion_rate == 1.0


# ------------------------------------------------------------------ over the small world


@pytest.fixture(scope="module")
def runtime(
    tmp_path_factory: pytest.TempPathFactory,
    small_world: Path,
    bundles: dict[str, Path],
    as_of: datetime,
) -> Runtime:
    return loaded_runtime(tmp_path_factory.mktemp("mon"), small_world, bundles, as_of)


def _endpoint(method: str, path: str) -> Endpoint:
    return next(e for e in ENDPOINTS if e.method == method and e.path == path)


def test_monitoring_after_feedback_reports_and_sets_the_gauges(
    runtime: Runtime, as_of: datetime
) -> None:
    admin = {"authorization": f"Bearer {create_key(runtime.store, Role.ADMIN)[1]}"}
    start, end = as_of.date(), as_of.date() + timedelta(days=20)
    body = {"start": start.isoformat(), "end": end.isoformat(), "capacity": 500}
    out = dispatch(runtime, JSON_ENDPOINTS[("POST", "/outreach/worklist")], admin, body)
    assert out.status == 200
    scored = runtime.store.predictions("no-show")
    assert len(scored) >= 50
    # outcomes: the riskier half of the scored visits missed, the rest attended
    flat = runtime.store.upcoming_appointments(as_of, as_of + timedelta(days=21))
    at = dict(zip(flat["appointment_id"], flat["appointment_at"], strict=True))
    ranked = scored.sort_values("score", ascending=False)["subject"].tolist()
    events = [
        {
            "kind": "appointment",
            "appointment_id": a,
            "outcome": "no_show" if i < len(ranked) // 4 else "attended",
            "occurred_at": pd.Timestamp(at[a]).isoformat(),
        }
        for i, a in enumerate(ranked)
    ]
    fed = dispatch(runtime, JSON_ENDPOINTS[("POST", "/feedback")], admin, {"events": events})
    assert fed.status == 200 and fed.body["recorded"] == len(events)
    query = {"start": start.isoformat(), "end": end.isoformat()}
    rep = dispatch(runtime, _endpoint("GET", "/monitoring"), admin, query)
    assert rep.status == 200, rep.body
    ns = rep.body["no_show"]
    assert ns["with_outcome"] == len(events) and ns["overall"]["auc"] == 1.0
    assert ns["weeks"] and all(w["group"].startswith("20") for w in ns["weeks"])
    assert set(ns["subgroups"]) == {"payer_type", "age_band"}
    assert "race" not in str(rep.body) and "ethnic" not in str(rep.body)
    text = generate_latest().decode()
    assert "referral_ml_no_show_auc 1.0" in text
    assert "referral_ml_no_show_calibration_gap" in text
    if runtime.state.predictor.reference is not None:
        assert rep.body["drift"]["features"]
        assert "referral_ml_feature_psi{feature=" in text
    # only admins read it; a bad window names its field
    outreach = {"authorization": f"Bearer {create_key(runtime.store, Role.OUTREACH)[1]}"}
    assert dispatch(runtime, _endpoint("GET", "/monitoring"), outreach, query).status == 403
    bad = dispatch(runtime, _endpoint("GET", "/monitoring"), admin, {"weeks": "99"})
    assert bad.status == 422 and bad.body["errors"][0]["field"] == "weeks"


def test_a_report_with_nothing_logged_says_so(runtime: Runtime) -> None:
    report = monitoring.build_report(
        runtime.store,
        MonitoringRequest(start="2020-01-01", end="2020-01-31"),  # type: ignore[arg-type]
        today=datetime(2020, 2, 1).date(),
        request_id="r",
    )
    assert report.no_show is None and report.ranker is None and report.flags == []
    assert report.notes and report.calibration_degraded is False


def test_the_background_refresh_is_off_by_default(runtime: Runtime) -> None:
    from serving.service import _watch_monitoring

    assert _watch_monitoring(runtime, {}) is False
    assert _watch_monitoring(runtime, {"REFERRAL_ML_MONITOR_INTERVAL_MINUTES": "x"}) is False
