"""Drift of a deployed no-show model's inputs: the appointments of a window against the training
reference saved in its bundle (`reference.json`, `features.drift`).

`no_show_drift` rebuilds the window's model matrix with the bundle's own feature builder
(`NoShowPredictor.features`, so exactly what the model would be given) and compares it with the
reference; `write_drift_report` writes `drift.json` and `drift.png`. No CLI here: a command
calls these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd

from features.drift import DEFAULT_MIN_ROWS, DEFAULT_THRESHOLDS, drift_report
from features.no_show import history_events
from features.predictor import NoShowPredictor

REPORT_JSON, REPORT_PNG = "drift.json", "drift.png"

TimeLike: TypeAlias = str | datetime | pd.Timestamp


def window_rows(flat: pd.DataFrame, start: TimeLike, end: TimeLike) -> pd.DataFrame:
    """The appointments of `flat` with a visit in [start, end), cancelled ones left out (the
    model is trained on attended and missed visits only, and a window's cancellations would
    show as drift that is not there)."""
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    if not lo < hi:
        raise ValueError(f"the window is empty: start {lo} is not before end {hi}")
    t = pd.to_datetime(flat["appointment_at"])
    inside = (t >= lo) & (t < hi)
    if "outcome" in flat.columns:
        inside &= flat["outcome"].ne("cancelled").fillna(True)
    return flat[inside.to_numpy(dtype=bool)]


def no_show_drift(
    bundle_dir: Path,
    flat: pd.DataFrame,
    events: pd.DataFrame | None,
    *,
    start: TimeLike,
    end: TimeLike,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> dict[str, Any]:
    """`features.drift.drift_report` of the appointments in [start, end) against the bundle's
    training reference, plus `window` (start, end, rows, first and last visit) and `model`.

    `flat`: flat appointment rows, best all of them (the window is selected here; the others
    are history). `events`: the outcome history; None takes `history_events(flat)` when `flat`
    has outcomes, as batch scoring does. Categorical inputs are compared on their raw values,
    so a level the model never saw counts as "other", not "missing" (the model matrix itself
    holds those as missing). ValueError: no reference in the bundle (trained before drift
    references were saved), or too few rows in the window.
    """
    predictor = NoShowPredictor.load(Path(bundle_dir))
    reference = predictor.reference
    if reference is None:
        raise ValueError(
            f"the bundle in {bundle_dir} has no reference.json (trained before drift "
            "references were saved): retrain it to get drift reports"
        )
    rows = window_rows(flat, start, end)
    if events is None and {"outcome", "outcome_at"} <= set(flat.columns):
        events = history_events(flat)
    X = predictor.features(rows, events)
    for col in reference.categorical:
        if col in rows.columns:
            X[col] = rows[col].astype("string").to_numpy()
    report = drift_report(reference, X, thresholds=thresholds, min_rows=min_rows)
    visits = pd.to_datetime(rows["appointment_at"])
    report["window"] = {
        "start": pd.Timestamp(start).isoformat(),
        "end": pd.Timestamp(end).isoformat(),
        "rows": len(rows),
        "first_visit": visits.min().isoformat() if len(rows) else None,
        "last_visit": visits.max().isoformat() if len(rows) else None,
    }
    report["model"] = {
        "bundle": str(bundle_dir),
        "version": predictor.metadata.get("version"),
        "trained_windows": predictor.metadata.get("windows"),
    }
    return report


def write_drift_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """`drift.json` (the report as it is) and `drift.png` (`training.plots_drift`) in
    `out_dir`; their paths by name ("report", "plot")."""
    from training.plots_drift import drift_plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / REPORT_JSON
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False, default=str))
    return {"report": json_path, "plot": drift_plot(report, out / REPORT_PNG)}
