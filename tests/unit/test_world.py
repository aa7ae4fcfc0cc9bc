"""The simulated world: ranges, determinism, funnel consistency and the truth tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.codes import is_valid_npi, reasons, specialties
from features.contract import TABLES, TRUTH_TABLES, split_multi
from features.geo import haversine_km
from features.validation import validate_tables, validate_truth_tables
from synthetic_data.config import WorldConfig
from synthetic_data.geography import METROS
from synthetic_data.world import build_world, content_hash

pytestmark = pytest.mark.unit


def test_world_satisfies_the_contract(small_tables: dict, small_truth: dict) -> None:
    report = validate_tables(small_tables)
    assert report.ok, "\n".join(str(v) for v in report.violations[:20])
    assert validate_truth_tables(small_truth).ok


def test_manifest_records_seed_counts_hashes_and_calibration(
    small_world: Path, small_tables: dict
) -> None:
    manifest = json.loads((small_world / "manifest.json").read_text())
    assert manifest["seed"] == 11 and manifest["size"] == "small"
    assert manifest["counts"] == {k: len(v) for k, v in small_tables.items()}
    assert set(manifest["content_hashes"]) == set(TABLES) | {f"truth/{t}" for t in TRUTH_TABLES}
    assert manifest["content_hashes"]["patients"] == content_hash(small_tables["patients"])
    assert {row["metric"] for row in manifest["calibration"]} >= {"no-show rate, all visits"}


def test_same_seed_gives_identical_tables_and_another_seed_does_not() -> None:
    cfg = WorldConfig.for_size("small", seed=3, patients=500, referrals=800, specialists=120)
    a, ta = build_world(cfg)
    b, tb = build_world(cfg)
    for name in TABLES:
        assert content_hash(a[name]) == content_hash(b[name]), name
    for name in TRUTH_TABLES:
        assert content_hash(ta[name]) == content_hash(tb[name]), name
    c, _ = build_world(cfg.model_copy(update={"seed": 4}))
    assert content_hash(a["referrals"]) != content_hash(c["referrals"])


def test_value_ranges(small_tables: dict) -> None:
    pt, sp = small_tables["patients"], small_tables["specialists"]
    age = 2024 - pt["birth_year"]
    assert age.between(0, 96).all()
    # Everyone lives and practises within ~75 km of one of the metro centres in use.
    for df in (pt, sp):
        d = np.min(
            [haversine_km(df["latitude"], df["longitude"], m.lat, m.lon) for m in METROS], axis=0
        )
        assert (d < 75).all()
    assert sp["specialist_id"].map(is_valid_npi).all()
    assert sp["specialty"].isin(list(specialties())).all()
    assert sp["specialty"].nunique() >= 20
    rated = sp["rating"].notna()
    assert sp.loc[rated, "rating"].between(1, 5).all()
    assert (sp.loc[~rated, "review_count"] == 0).all()
    assert (sp["weekly_capacity"] >= 1).all()


def test_focus_areas_belong_to_the_specialty(small_tables: dict) -> None:
    sp = small_tables["specialists"]
    cats = {}
    for r in reasons().values():
        cats.setdefault(r.specialty, set()).add(r.category)
    for code, focus in zip(sp["specialty"], sp["focus_codes"], strict=True):
        assert len(split_multi(focus)) >= 1 and set(split_multi(focus)) <= cats[code]


def test_payer_mix_and_medicare_by_age(small_tables: dict) -> None:
    pt, pl = small_tables["patients"], small_tables["plans"]
    payer = pt["insurance_plan_id"].map(pl.set_index("insurance_plan_id")["payer_type"])
    shares = payer.value_counts(normalize=True)
    assert 0.35 < shares["commercial"] < 0.70
    assert 0.10 < shares["medicaid"] < 0.30
    seniors = (2024 - pt["birth_year"]) >= 65
    assert (payer[seniors] == "medicare").mean() > 0.85
    assert (payer[~seniors] == "medicare").mean() == 0


def test_funnel_is_consistent(small_tables: dict) -> None:
    rf, ap, av = (
        small_tables["referrals"],
        small_tables["appointments"],
        small_tables["availability"],
    )
    # Every completed referral has an attended first visit.
    attended_new = ap[(ap["outcome"] == "attended") & (ap["visit_kind"] == "new")]["referral_id"]
    completed = rf.loc[rf["status"] == "completed", "referral_id"]
    assert completed.isin(attended_new).all()
    assert (
        rf.loc[rf["status"].isin(["never_scheduled", "leaked", "sent"]), "referral_id"]
        .isin(ap["referral_id"])
        .sum()
        == 0
    )
    # No slot is booked twice, and busy slots are exactly the booked ones.
    assert ap["slot_id"].is_unique
    busy = av[av["status"] == "busy"]
    assert set(busy["appointment_id"]) == set(ap["appointment_id"])
    # Time order: no appointment before its referral; booked before it happens.
    created = ap["referral_id"].map(rf.set_index("referral_id")["created_at"])
    assert (ap["booked_at"] >= created).all()
    assert (ap["booked_at"] <= ap["appointment_at"]).all()
    slot = av.set_index("slot_id").loc[ap["slot_id"]]
    assert (slot["start"].to_numpy() == ap["appointment_at"].to_numpy()).all()
    assert (slot["specialist_id"].to_numpy() == ap["specialist_id"].to_numpy()).all()


def test_upcoming_appointments_have_no_outcome(small_world: Path, small_tables: dict) -> None:
    as_of = pd.Timestamp(json.loads((small_world / "manifest.json").read_text())["as_of"])
    ap = small_tables["appointments"]
    future = ap["appointment_at"] > as_of
    assert future.any()
    assert (
        ap.loc[future, "outcome"].isin(["cancelled"]).sum() + ap.loc[future, "outcome"].isna().sum()
        == future.sum()
    )
    assert (ap["booked_at"] <= as_of).all()


def test_reminders_follow_the_clinic_rule_and_outreach_is_randomised(
    small_tables: dict, small_truth: dict
) -> None:
    ap = small_tables["appointments"]
    lead = (ap["appointment_at"] - ap["booked_at"]).dt.total_seconds() / 86400
    # Texts go only to visits booked at least 3 days ahead.
    assert not ap.loc[lead < 3, "text_reminder"].any()
    assert ap.loc[lead >= 3, "text_reminder"].mean() > 0.7
    # The outreach call is a randomised ~12% of visits booked >= 2 days ahead, blind to risk.
    eligible = ap[lead >= 2]
    assert 0.08 < eligible["outreach_call"].mean() < 0.16
    p0 = eligible["appointment_id"].map(
        small_truth["appointments"].set_index("appointment_id")["p_no_show_without_outreach"]
    )
    called = eligible["outreach_call"].to_numpy()
    assert abs(p0[called].mean() - p0[~called].mean()) < 0.04


def test_truth_is_coherent(small_tables: dict, small_truth: dict) -> None:
    t = small_truth["appointments"]
    assert (t["p_no_show_with_outreach"] <= t["p_no_show_without_outreach"] + 1e-12).all()
    assert np.allclose(
        t["outreach_effect"], t["p_no_show_without_outreach"] - t["p_no_show_with_outreach"]
    )
    assert t["outreach_effect"].std() > 0.01  # outreach helps some patients more than others
    mu = small_truth["match_utility"]
    chosen = mu[mu["chosen"]]
    rf = small_tables["referrals"]
    with_choice = rf[rf["specialist_id"].notna()]
    # Exactly one chosen candidate per referral, and it is the referral's specialist.
    assert chosen["referral_id"].astype(str).is_unique
    assert len(chosen) == len(with_choice)
    merged = chosen.assign(referral_id=chosen["referral_id"].astype(str)).merge(
        rf, on="referral_id"
    )
    assert (merged["specialist_id_x"].astype(str) == merged["specialist_id_y"]).all()
    assert set(small_truth["specialists"]["specialist_id"]) == set(
        small_tables["specialists"]["specialist_id"]
    )


def test_historical_choice_is_imperfect(small_truth: dict) -> None:
    # The old process does not always pick the best candidate, so a model has room to do better.
    mu = small_truth["match_utility"].assign(referral_id=lambda d: d["referral_id"].astype(str))
    best = mu.groupby("referral_id")["utility"].transform("max")
    several = mu.groupby("referral_id")["utility"].transform("size") >= 5
    chosen = mu[mu["chosen"] & several]
    regret = best[chosen.index] - chosen["utility"]
    assert 0.3 < (regret > 1e-6).mean() < 0.95
    # ...but it is better than picking at random among the same candidates.
    assert chosen["utility"].mean() > mu[several]["utility"].mean()
