"""Retraining on what actually happened: a challenger trained from the service store.

    referral-ml retrain no-show|ranker --since YYYY-MM-DD [--db URL] [--tracking-uri URI]

The store holds the original data plus everything fed back since (`POST /feedback`, `referral-ml
feedback load`): new bookings and referrals, and the outcomes as they became known. A retrain
snapshots the store's contract tables into a dataset folder, trains a challenger with the test
window starting at `--since` (the recent period), registers it, and runs the promotion gates,
which score the current champion on the same recent window: the challenger becomes @champion
only when it passes them. It is a job to schedule (cron, Airflow, Argo...): it exits 0 when the
challenger was promoted, 1 when the gates refused it, 2 on an error.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import TABLES

MODELS = ("no-show", "ranker")


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain did: the registered challenger and the promotion verdict."""

    model: str
    version: str
    run_id: str
    promoted: bool
    message: str
    rows: dict[str, int]
    metrics: dict[str, Any]


def snapshot_store(store_url: str, out: Path) -> dict[str, int]:
    """Write the store's contract tables as a dataset folder (Parquet, contract columns; the
    store never holds race/ethnicity, so that audit column is absent) with a manifest."""
    from serving.store import Store

    store = Store(store_url)
    try:
        tables = store.read_tables(list(TABLES))
    finally:
        store.dispose()
    if tables["appointments"].empty:
        raise ValueError(f"the store {store.url.split('@')[-1]} holds no appointments to train on")
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, frame in tables.items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
        counts[name] = len(frame)
    manifest = {
        "source": "service store snapshot",
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "counts": counts,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return counts


def retrain(
    model: str,
    since: pd.Timestamp,
    *,
    store_url: str,
    tracking_uri: str | None,
    metrics_out: Path | None = None,
    promote: bool = True,
) -> RetrainOutcome:
    """Snapshot the store, train a challenger tested from `since`, register it, and (unless
    `promote` is False) run the gates against the champion on that window."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, not {model!r}")
    with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
        data_dir = Path(tmp) / "snapshot"
        rows = snapshot_store(store_url, data_dir)
        at = pd.to_datetime(pd.read_parquet(data_dir / "appointments.parquet")["appointment_at"])
        if (at >= since).sum() == 0 or (at < since).sum() == 0:
            raise ValueError(
                f"--since {since.date()}: the store has appointments only on one side of it "
                f"({at.min():%Y-%m-%d} .. {at.max():%Y-%m-%d})"
            )
        outcome: Any
        if model == "no-show":
            from training.no_show import load_world
            from training.no_show_job import promote as promote_fn
            from training.no_show_job import train_and_register

            data = load_world(data_dir)
            data.source = f"service store (retrain since {since.date()})"
            outcome = train_and_register(
                data,
                test_from=since,
                offset_days=None,
                tracking_uri=tracking_uri,
                metrics_out=metrics_out,
            )
        else:
            from training.ranker_job import promote as promote_fn
            from training.ranker_job import train_and_register as train_ranker_and_register

            outcome = train_ranker_and_register(
                data_dir, test_from=since, tracking_uri=tracking_uri, metrics_out=metrics_out
            )
    promoted, message = False, "not promoted (--no-promote)"
    if promote:
        promoted, _, message = promote_fn(outcome.version, force=False, tracking_uri=tracking_uri)
    return RetrainOutcome(
        model,
        outcome.version,
        outcome.run_id,
        promoted,
        message,
        rows,
        outcome.metrics_document,
    )
