"""Closing the loop end to end (#10): a world whose later period shifts (longer leads, more
no-shows), its bookings and outcomes fed back to a deployed no-show model, monitoring that flags
the degraded calibration and the drift, and a retrain on the store that the gates promote."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from serving.runtime import Runtime
from serving.schemas import MonitoringRequest, WorklistRequest
from serving.store import Store
from synthetic_data.config import Shift, WorldConfig
from synthetic_data.world import write_world
from training.feedback_job import append_bookings, load_feedback

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXE = str(Path(sys.executable).parent / "referral-ml")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=900, cwd=cwd)


def test_shift_is_flagged_and_a_retrained_challenger_is_promoted(
    tmp_path: Path, bundles: dict[str, Path]
) -> None:
    from training import registry

    # A world whose last four months change: bookings 1.6x further ahead, no-show log-odds +0.6
    cfg = WorldConfig.for_size(
        "small",
        seed=5,
        patients=10_000,
        referrals=25_000,
        specialists=600,
        shift=Shift(months=4, lead_time_scale=1.6, no_show_logit=0.6),
    )
    world = tmp_path / "world"
    write_world(cfg, world)
    as_of = datetime(2025, 1, 1)
    url, tracking = f"sqlite:///{tmp_path / 'store.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = Store(url)
    store.create()
    store.load_dataset(world)

    # The champion is trained on the base period only
    for step in (
        ("train", "no-show", "--data", str(world)),
        ("promote", "no-show", "--force"),
    ):
        run = cli(*step, "--tracking-uri", tracking, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
    registry.configure(tracking)
    champion = registry.download_bundle("no-show", dst=tmp_path / "champion")

    # The later period's bookings arrive, are scored (the prediction log), then their outcomes
    appended = append_bookings(url, world / "later")
    assert appended["appointments"] > 5_000
    runtime = Runtime(url, bundles["ranker"], champion, now=as_of, store=store)
    assert runtime.load(), runtime.not_ready_reason
    start, last = as_of.date(), date(2025, 4, 30)
    while start <= last:
        end = min(start + timedelta(days=30), last)
        runtime.worklist(WorklistRequest(start=start, end=end, capacity=500), "scoring")
        start = end + timedelta(days=1)
    fed = load_feedback(url, world / "later")
    assert fed.recorded > 5_000 and not fed.unknown and not fed.rejected
    again = load_feedback(url, world / "later")  # idempotent
    assert again.recorded == 0 and again.duplicates == fed.recorded

    # Monitoring sees the miscalibration and the longer leads
    report = runtime.monitoring(MonitoringRequest(start=as_of.date(), end=last), "m").model_dump()
    assert report["calibration_degraded"] is True
    overall = report["no_show"]["overall"]
    assert overall["observed_rate"] > overall["mean_predicted"] + 0.05
    drift = {f["feature"]: f for f in report["drift"]["features"]}
    assert drift["lead_days"]["status"] in ("moderate", "significant")

    # A retrain on the store (original data + feedback), gated on the recent window, promotes
    retrain = cli(
        "retrain",
        "no-show",
        "--since",
        "2025-03-15",
        "--db",
        url,
        "--tracking-uri",
        tracking,
        cwd=tmp_path,
    )
    assert retrain.returncode == 0, retrain.stdout + retrain.stderr
    assert "registered no-show challenger version 2" in retrain.stdout
    assert "promoted" in retrain.stdout and "PASS  ece" in retrain.stdout
    assert str(registry.champion("no-show").version) == "2"
