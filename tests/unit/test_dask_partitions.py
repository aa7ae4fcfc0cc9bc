"""The Dask engine's pieces without a cluster: the partitioned Parquet writer and its readers,
features built on partitions (equal to the single-machine ones), the merged feature spec, and
log redaction. Dask runs them on its synchronous scheduler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import dask
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.contract import TABLES
from features.no_show import NoShowFeatureSpec, build_features, history_events
from features.validation import main_validate
from synthetic_data.config import WorldConfig
from synthetic_data.world import write_world
from training.dask_engine import (
    ROW,
    _RedactingFilter,
    merge_specs,
    model_inputs,
    no_show_frames,
    ranker_pairs,
    read_partitions,
)
from training.no_show import labelled_rows, load_world
from training.ranker import load_ranker_data

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]

CFG = WorldConfig.for_size("small", seed=11)


@pytest.fixture(scope="module")
def partitioned_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small world (seed 11) written as row groups of 1,000 rows."""
    out = tmp_path_factory.mktemp("partitioned") / "small"
    write_world(CFG, out, partition_rows=1000)
    return out


@pytest.fixture(autouse=True)
def synchronous() -> Iterator[None]:
    with dask.config.set(scheduler="synchronous"):
        yield


def test_partitioned_world_has_row_groups_and_the_same_content(
    partitioned_world: Path, small_world: Path
) -> None:
    # Given the same config written plainly (session fixture) and as 1,000-row groups
    # Then the big tables are split, the small ones are not, and every table reads back equal
    assert pq.ParquetFile(partitioned_world / "appointments.parquet").num_row_groups == 5
    assert pq.ParquetFile(partitioned_world / "plans.parquet").num_row_groups == 1
    assert pq.ParquetFile(small_world / "appointments.parquet").num_row_groups == 1
    for name in TABLES:
        pd.testing.assert_frame_equal(
            pd.read_parquet(partitioned_world / f"{name}.parquet"),
            pd.read_parquet(small_world / f"{name}.parquet"),
        )
    # And a Dask reader takes one partition per row group
    assert read_partitions(partitioned_world / "appointments.parquet").npartitions == 5


def test_partitioned_world_passes_validation(partitioned_world: Path) -> None:
    assert main_validate(partitioned_world) == 0


def test_a_row_group_size_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="partition_rows"):
        write_world(CFG, tmp_path / "w", partition_rows=0)


def test_features_on_partitions_equal_the_single_machine_features(
    partitioned_world: Path,
) -> None:
    # Given appointments read as 5 partitions and shuffled into 3 (by clinic, then by patient)
    frames = no_show_frames(partitioned_world, test_from=None, offset_days=None, npartitions=3)
    got = frames.features.compute().sort_values(["appointment_at", ROW], kind="stable")
    got = got.reset_index(drop=True)
    # When the single-machine path builds the same rows
    data = load_world(partitioned_world)
    labelled = labelled_rows(data.flat)
    X, spec = build_features(labelled, history_events(data.flat))
    # Then the spec, the model inputs (history and entity rates included) and the rows agree
    assert frames.spec == spec
    pd.testing.assert_frame_equal(model_inputs(got, spec), X)
    pd.testing.assert_frame_equal(got[list(labelled.columns)], labelled)
    assert frames.features.npartitions == 3
    # And the history events of the partitions, in file order, are the table's
    events = frames.flat.map_partitions(history_events).compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(events, history_events(data.flat))


def test_features_with_a_prediction_offset_agree_too(partitioned_world: Path) -> None:
    frames = no_show_frames(partitioned_world, test_from=None, offset_days=3.0, npartitions=2)
    got = frames.features.compute().sort_values(["appointment_at", ROW], kind="stable")
    data = load_world(partitioned_world)
    X, spec = build_features(labelled_rows(data.flat), history_events(data.flat), offset_days=3.0)
    pd.testing.assert_frame_equal(model_inputs(got.reset_index(drop=True), spec), X)


def test_ranker_pairs_on_partitions_equal_the_single_machine_pairs(small_world: Path) -> None:
    # Given referrals dealt round-robin into 3 partitions
    pairs = ranker_pairs(small_world, npartitions=3)
    got = pairs.compute().sort_values(["created_at", "referral_id"], kind="stable")
    # Then the pairs, their features, labels and order within each referral are load_ranker_data's
    pd.testing.assert_frame_equal(got.reset_index(drop=True), load_ranker_data(small_world).pairs)
    assert pairs.npartitions == 3


def _spec(numeric: list[str], levels: dict[str, list[str]]) -> NoShowFeatureSpec:
    return NoShowFeatureSpec(numeric=numeric, categorical=levels, base_rate=0.5)


def test_merged_spec_keeps_the_builders_column_order_and_every_level() -> None:
    # Given partitions where 'age' is missing in one and 'distance_km' in another
    parts = [
        _spec(["lead_days", "age", "prior_no_shows"], {"sex": ["F"], "language": ["en"]}),
        _spec(["lead_days", "distance_km", "prior_no_shows"], {"sex": ["M"], "language": []}),
        _spec(["lead_days", "age", "distance_km"], {"sex": ["F", "X"], "language": ["es"]}),
    ]
    outcomes = pd.Series(["no_show", "attended", "attended", "attended"])
    # When merged
    spec = merge_specs(parts, outcomes, offset_days=2.0)
    # Then columns keep the order every partition agrees on, levels are the sorted union and the
    # prior is the no-show rate of all outcomes
    assert spec.numeric == ["lead_days", "age", "distance_km", "prior_no_shows"]
    assert spec.categorical == {"sex": ["F", "M", "X"], "language": ["en", "es"]}
    assert spec.base_rate == 0.25
    assert spec.offset_days == 2.0


def test_redacted_log_records_keep_no_task_arguments_or_exception_text() -> None:
    # Given a failed task's record as distributed logs it, quoting a patient id and a traceback
    record = logging.LogRecord(
        "distributed.worker",
        logging.ERROR,
        __file__,
        1,
        "Compute Failed\nKey:       %s\nTask:  %s\nException: %r\n",
        ("flatten-1", "_flatten(patient_id='PT000123')", KeyError("PT000123")),
        exc_info=None,
    )
    # When it passes the filter
    assert _RedactingFilter().filter(record)
    # Then only the first line of the template is left
    text = logging.Formatter("%(message)s").format(record)
    assert text == "Compute Failed"
    assert "PT000123" not in text
