"""The serving path's pair features (one referral, fields coded once, no DataFrame) equal the
training path's `pair_features` on the same pairs, in both the snapshot ("as of now") and the
point-in-time branches, and whatever the request leaves out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.contract import TABLES
from features.ranking import PAIR_FEATURES, RankingContext, pair_features, request_pair_features

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def ctx_and_tables(small_world: Path) -> tuple[RankingContext, dict[str, pd.DataFrame]]:
    t = {name: pd.read_parquet(small_world / f"{name}.parquet") for name in TABLES}
    ctx = RankingContext.build(
        t["specialists"],
        t["plans"],
        t["organizations"],
        t["availability"],
        t["appointments"],
        t["referrals"],
    )
    return ctx, t


def _both(ctx: RankingContext, rows: np.ndarray, **fields: Any) -> tuple[np.ndarray, np.ndarray]:
    n = len(rows)
    frame = pd.DataFrame(
        {
            "specialist_row": rows,
            "as_of": np.full(n, np.datetime64(fields["as_of"], "s")),
            "latitude": np.full(n, fields["latitude"]),
            "longitude": np.full(n, fields["longitude"]),
            **{
                k: [fields[k]] * n
                for k in ("insurance_plan_id", "reason_code", "urgency", "language", "sex")
            },
            "patient_id": [fields.get("patient_id") or ""] * n,
            "referring_system": [fields.get("referring_system") or ""] * n,
        }
    )
    return request_pair_features(ctx, rows, **fields), pair_features(ctx, frame).to_numpy()


@pytest.mark.parametrize("as_of", ["2100-01-01", "2024-06-01"])  # snapshot / point in time
def test_request_features_equal_pair_features(
    ctx_and_tables: tuple[RankingContext, dict[str, pd.DataFrame]], as_of: str
) -> None:
    ctx, t = ctx_and_tables
    seen = t["appointments"][t["appointments"]["outcome"] == "attended"].iloc[0]
    row_of = {s: i for i, s in enumerate(ctx.specialists["specialist_id"].astype(str))}
    # Every specialist, with the patient's own specialist first (continuity is exercised)
    first = row_of[str(seen["specialist_id"])]
    rows = np.r_[first, np.arange(len(ctx.specialists))]
    system = next(s for s in ctx.arrays.system_index)
    fast, reference = _both(
        ctx,
        rows,
        as_of=pd.Timestamp(as_of),
        latitude=float(ctx.specialists["latitude"].iloc[0]),
        longitude=float(ctx.specialists["longitude"].iloc[0]),
        insurance_plan_id=str(t["plans"]["insurance_plan_id"].iloc[0]),
        reason_code="I50.9",
        urgency="urgent",
        language="es",
        sex="F",
        patient_id=str(seen["patient_id"]),
        referring_system=system,
    )
    assert fast.shape == (len(rows), len(PAIR_FEATURES))
    np.testing.assert_array_equal(fast, reference)
    column = {name: j for j, name in enumerate(PAIR_FEATURES)}
    if as_of == "2100-01-01":
        assert fast[0, column["continuity"]] == 1.0
    assert fast[:, column["same_system"]].any() and fast[:, column["in_network"]].any()


def test_request_features_with_the_optional_fields_left_out(
    ctx_and_tables: tuple[RankingContext, dict[str, pd.DataFrame]],
) -> None:
    ctx, _ = ctx_and_tables
    rows = np.arange(min(40, len(ctx.specialists)))
    fast, reference = _both(
        ctx,
        rows,
        as_of=pd.Timestamp("2100-01-01"),
        latitude=41.9,
        longitude=-87.6,
        insurance_plan_id=None,  # unknown plan: no network claim
        reason_code="Z00.0",  # a category nobody treats
        urgency="stat",
        language=None,
        sex=None,
    )
    np.testing.assert_array_equal(fast, reference)
    column = {name: j for j, name in enumerate(PAIR_FEATURES)}
    assert not fast[:, column["in_network"]].any() and not fast[:, column["sex_match"]].any()
    assert (fast[:, column["urgency_level"]] == 2.0).all()
