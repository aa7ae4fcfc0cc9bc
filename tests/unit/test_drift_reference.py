"""Drift references saved with the model bundles, the drift job and its report files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import AUDIT_ONLY_COLUMNS
from features.drift import REFERENCE_FILE, FeatureReference
from features.matcher import SpecialistRanker
from features.no_show import history_events
from features.predictor import NoShowPredictor
from training.drift_job import no_show_drift, write_drift_report
from training.no_show import NoShowData, labelled_rows, load_world, time_split
from training.plots_drift import drift_plot
from training.ranker import load_ranker_data, split_windows, training_reference

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def data(small_world: Path) -> NoShowData:
    return load_world(small_world)


@pytest.fixture(scope="module")
def test_window(bundles: dict[str, Path]) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first, last + 1 day) of the no-show bundle's test window."""
    text = NoShowPredictor.load(bundles["no_show"]).metadata["windows"]["test"]
    first, last = (pd.Timestamp(t) for t in text.split(" .. "))
    return first, last + pd.Timedelta(days=1)


def _longer_leads(flat: pd.DataFrame, factor: float) -> pd.DataFrame:
    """The same visits booked `factor` times as far ahead."""
    visit = pd.to_datetime(flat["appointment_at"])
    return flat.assign(booked_at=visit - (visit - pd.to_datetime(flat["booked_at"])) * factor)


def test_the_no_show_bundle_holds_the_reference_of_its_training_rows(
    bundles: dict[str, Path], data: NoShowData
) -> None:
    predictor = NoShowPredictor.load(bundles["no_show"])
    ref = predictor.reference
    # Then the reference covers exactly the model's inputs, race never among them
    assert ref is not None
    assert ref.columns == predictor.spec.columns
    assert ref.categorical == list(predictor.spec.categorical)
    assert not AUDIT_ONLY_COLUMNS & set(ref.columns)
    assert "race" not in (bundles["no_show"] / REFERENCE_FILE).read_text()
    # And it summarises the training window's rows, not every labelled row
    assert ref.rows == predictor.metadata["trained_rows"]
    labelled = labelled_rows(data.flat)
    X = predictor.features(labelled, history_events(data.flat))
    train, *_ = time_split(labelled["appointment_at"], None)
    assert ref == FeatureReference.from_matrix(X[train], list(predictor.spec.categorical), seed=7)
    assert ref != FeatureReference.from_matrix(X, list(predictor.spec.categorical), seed=7)


def test_the_ranker_bundle_holds_a_reference_of_its_training_pairs(
    bundles: dict[str, Path], small_world: Path
) -> None:
    ranker = SpecialistRanker.load(bundles["ranker"])
    ref = ranker.reference
    assert ref is not None
    assert ref.columns == list(ranker.features)
    assert ref.categorical == [] and not AUDIT_ONLY_COLUMNS & set(ref.columns)
    # The training window's pairs (the small world has fewer than the 200k sampled at most)
    pairs = load_ranker_data(small_world).pairs
    train, *_ = split_windows(pairs, None)
    assert ref.rows == int(train.sum()) < len(pairs)
    assert ref == training_reference(pairs[train])


def test_bundles_without_a_reference_still_load(bundles: dict[str, Path], tmp_path: Path) -> None:
    # Given copies of both bundles as they were before drift references (no reference.json)
    old_ns = shutil.copytree(bundles["no_show"], tmp_path / "no_show")
    old_rk = shutil.copytree(bundles["ranker"], tmp_path / "ranker")
    for bundle in (old_ns, old_rk):
        (bundle / REFERENCE_FILE).unlink()
    # Then they load, without a reference, and score as before
    ns, rk = NoShowPredictor.load(old_ns), SpecialistRanker.load(old_rk)
    assert ns.reference is None and rk.reference is None
    assert NoShowPredictor.load(bundles["no_show"]).reference is not None
    assert (
        ns.booster.model_to_string()
        == NoShowPredictor.load(bundles["no_show"]).booster.model_to_string()
    )
    # And saving a bundle without a reference leaves no stale one behind
    full = shutil.copytree(bundles["no_show"], tmp_path / "resaved")
    ns.save(full)
    assert not (full / REFERENCE_FILE).exists()
    # While a corrupt reference is refused, naming the file
    (old_ns / REFERENCE_FILE).write_text('{"kind": "feature-reference", "rows": 3}')
    with pytest.raises(ValueError, match=r"no-show model bundle .* reference\.json"):
        NoShowPredictor.load(old_ns)
    (old_rk / REFERENCE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"ranker bundle .* reference\.json"):
        SpecialistRanker.load(old_rk)


def test_lead_times_1_6_times_longer_are_significant_drift(
    bundles: dict[str, Path], data: NoShowData, test_window: tuple[pd.Timestamp, pd.Timestamp]
) -> None:
    start, end = test_window
    # Given the test window as it was, lead times are stable against training
    as_was = no_show_drift(bundles["no_show"], data.flat, None, start=start, end=end)
    assert as_was["features"]["lead_days"]["status"] == "stable"
    # When the same visits are booked 1.6 times as far ahead
    shifted = no_show_drift(
        bundles["no_show"], _longer_leads(data.flat, 1.6), None, start=start, end=end
    )
    lead = shifted["features"]["lead_days"]
    # Then lead_days is significant drift, with a tiny chi-square p-value
    assert lead["psi"] > 0.3 and lead["status"] == "significant"
    assert lead["p_value"] < 1e-20
    assert "lead_days" in shifted["summary"]["drifted"]
    # And the window is the one asked for, cancelled visits left out
    t = pd.to_datetime(data.flat["appointment_at"])
    inside = (t >= start) & (t < end) & (data.flat["outcome"] != "cancelled")
    assert shifted["window"]["rows"] == int(inside.sum()) == shifted["summary"]["window_rows"]
    assert shifted["window"]["start"] == start.isoformat()
    # And the same thresholds given higher make it moderate
    loose = no_show_drift(
        bundles["no_show"],
        _longer_leads(data.flat, 1.6),
        None,
        start=start,
        end=end,
        thresholds=(0.2, lead["psi"] + 0.1),
    )
    assert loose["features"]["lead_days"]["status"] == "moderate"


def test_a_language_the_model_never_saw_counts_as_other(
    bundles: dict[str, Path], data: NoShowData, test_window: tuple[pd.Timestamp, pd.Timestamp]
) -> None:
    start, end = test_window
    flat = data.flat.copy()
    t = pd.to_datetime(flat["appointment_at"])
    window = np.flatnonzero(((t >= start) & (t < end)).to_numpy())
    # flatten_world's joined text columns are categoricals: a new value is a new category first
    flat["language"] = flat["language"].cat.add_categories(["xx"])
    flat.loc[flat.index[window[::5]], "language"] = "xx"  # every fifth visit of the window
    report = no_show_drift(bundles["no_show"], flat, None, start=start, end=end)
    language = report["features"]["language"]
    other = language["buckets"].index("other")
    assert language["recent_shares"][other] == pytest.approx(0.2, abs=0.02)
    assert language["reference_shares"][other] == 0.0
    assert language["recent_shares"][language["buckets"].index("missing")] == 0.0
    assert language["status"] == "significant"


def test_the_job_refuses_a_small_window_and_a_bundle_without_reference(
    bundles: dict[str, Path], data: NoShowData, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="a drift report needs at least 500"):
        no_show_drift(bundles["no_show"], data.flat, None, start="2024-12-30", end="2025-01-01")
    with pytest.raises(ValueError, match="window is empty"):
        no_show_drift(bundles["no_show"], data.flat, None, start="2025-01-01", end="2024-12-01")
    old = shutil.copytree(bundles["no_show"], tmp_path / "old")
    (old / REFERENCE_FILE).unlink()
    with pytest.raises(ValueError, match=r"has no reference\.json"):
        no_show_drift(old, data.flat, None, start="2024-01-01", end="2025-01-01")


def test_the_report_files_are_json_and_a_png(
    bundles: dict[str, Path],
    data: NoShowData,
    test_window: tuple[pd.Timestamp, pd.Timestamp],
    tmp_path: Path,
) -> None:
    start, end = test_window
    report = no_show_drift(
        bundles["no_show"], _longer_leads(data.flat, 1.6), None, start=start, end=end
    )
    files = write_drift_report(report, tmp_path / "drift")
    assert files == {
        "report": tmp_path / "drift" / "drift.json",
        "plot": tmp_path / "drift" / "drift.png",
    }
    assert json.loads(files["report"].read_text()) == json.loads(json.dumps(report))
    png = files["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    with pytest.raises(ValueError, match="no features"):
        drift_plot({"features": {}, "summary": {}}, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_a_categorical_column_gets_the_reference_its_text_gets() -> None:
    from features.drift import FeatureReference

    rng = np.random.default_rng(5)
    levels = np.array(["b", "a", "c", None], dtype=object)
    values = rng.choice(levels, 5000, p=[0.5, 0.3, 0.15, 0.05])
    as_categorical = pd.DataFrame(
        {"lang": pd.Categorical(values, categories=["c", "a", "b", "never-seen"])}
    )
    as_text = pd.DataFrame({"lang": pd.Series(values, dtype="str")})
    a = FeatureReference.from_matrix(as_categorical, ["lang"], max_rows=None)
    b = FeatureReference.from_matrix(as_text, ["lang"], max_rows=None)
    assert a == b
    assert a.features["lang"].levels == ("a", "b", "c")  # a category with no rows is no level
