"""A later period of the same world with a shift: layout, time cut, ids, the shift's effects,
truth and the contract of base + later together."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from features.contract import TABLES, TRUTH_TABLES
from features.validation import (
    load_dataset,
    load_truth_tables,
    validate_tables,
    validate_truth_tables,
)
from synthetic_data.config import NewNetwork, Shift, WorldConfig
from synthetic_data.later import (
    NEW_PLAN,
    LaterWorld,
    build_later,
    combine_tables,
    read_later_world,
)
from synthetic_data.world import BaseRun, content_hash, simulate_world, write_world

pytestmark = pytest.mark.unit

SHIFT = Shift(months=6, lead_time_scale=1.6, no_show_logit=0.4, new_network=NewNetwork())
SHIFT_START = pd.Timestamp("2025-01-01")  # the small preset's 12 months from 2024-01-01
LATER_END = pd.Timestamp("2025-07-01")

# Content hashes of WorldConfig.for_size("small", seed=11) as generated before the shift existed.
# A deliberate change to the generator's output updates them.
SMALL_SEED_11_HASHES = {
    "organizations": "66664c6279554d1376daeafa16d2d48c977df74f8c18fdfc3a9db8cc312c4ee2",
    "plans": "1a0dee654ac258e2e5f33763d333402e306e8274163c1d42c448a5fc689edecb",
    "patients": "fdcb14233d7ecd9c93e879fc7447ae2e61e473469b022b8144cce524adbc2c31",
    "referring_providers": "8727f2078739c83677fe266a75b15a15d97accc4cb22114d7e6188935bf12bda",
    "specialists": "0b1619180fe5ba7871519cfe2ee4c60adce436baaffdb3c1bd5a250f92b99318",
    "availability": "aba31af2c5f2df85862403e4c30fdfa417f9092086e69fc9cb63a17d72019b42",
    "referrals": "572bbcede16609ebc51afb618b3633c61686056d849571e9721ebdbc78136df1",
    "appointments": "e9010780dda992a3624064ca034eb9f9535214371d0fb311e85173feff420fb7",
    "truth/patients": "4fc6c4beede317be447ddbc4b70d01143e7109bd4a83e020a7f938a627a1c025",
    "truth/specialists": "1d46013bdf1ff801945ab94ad4433fb54fc510efc5a957b967a2975f791f8e71",
    "truth/match_utility": "5d1834ded4f0f47a5d6cbfec0fa570aca5b0e2f17c8755f842d771f8d5519192",
}


@pytest.fixture(scope="module")
def shifted_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small seed-11 world with a 6-month later period: leads x1.6, no-show logit +0.4 and
    a new network (about two seconds)."""
    out = tmp_path_factory.mktemp("shift") / "world"
    write_world(WorldConfig.for_size("small", seed=11, shift=SHIFT), out)
    return out


@pytest.fixture(scope="module")
def base_run() -> BaseRun:
    """The base period of the small seed-11 world, in memory, to continue in several ways."""
    return simulate_world(WorldConfig.for_size("small", seed=11))


def _later(run: BaseRun, shift: Shift) -> LaterWorld:
    return build_later(WorldConfig.for_size("small", seed=11, shift=shift), run)


@pytest.fixture(scope="module")
def control(base_run: BaseRun) -> LaterWorld:
    """The same later period with nothing changed."""
    return _later(base_run, Shift(months=6))


def _read(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def _no_show_rate(appointments: pd.DataFrame) -> float:
    done = appointments[appointments["outcome"].isin(["attended", "no_show"])]
    return float((done["outcome"] == "no_show").mean())


def _median_lead_days(appointments: pd.DataFrame) -> float:
    lead = appointments["appointment_at"] - appointments["booked_at"]
    return float(lead.dt.total_seconds().median() / 86_400)


# The true no-show probabilities go through exp and log, whose last bits differ between CPUs
# (numpy's AVX-512 and AVX2 code paths: an AMD EPYC with AVX-512 wrote other bits than the
# machine these hashes were first taken on, while every drawn outcome was the same). That table
# is compared with its floats rounded to 8 decimals.
ROUNDED_HASHES = {
    "truth/appointments": "4b50d14ac479723ccab81024b2bf85785585a92631e71631c1dabefe729dcacc",
}


def _rounded_hash(df: pd.DataFrame) -> str:
    floats = [c for c in df.columns if df[c].dtype.kind == "f"]
    return content_hash(df.assign(**{c: df[c].round(8) for c in floats}))


def test_the_default_world_is_what_it_was_before_shifts(small_world: Path) -> None:
    manifest = json.loads((small_world / "manifest.json").read_text())
    exact = {k: v for k, v in manifest["content_hashes"].items() if k not in ROUNDED_HASHES}
    assert exact == SMALL_SEED_11_HASHES
    for name, expected in ROUNDED_HASHES.items():
        assert _rounded_hash(pd.read_parquet(small_world / f"{name}.parquet")) == expected
    assert "shift" not in manifest["config"] and "later" not in manifest
    assert not (small_world / "later").exists()


def test_the_base_of_a_shifted_world_is_the_world_without_a_shift(
    small_world: Path, shifted_world: Path
) -> None:
    # Given the same seed with and without a shift starting at the end of the base months
    plain = json.loads((small_world / "manifest.json").read_text())
    shifted = json.loads((shifted_world / "manifest.json").read_text())
    # Then every base table and truth table is the same, byte for byte
    assert shifted["content_hashes"] == plain["content_hashes"]
    for name in TABLES:
        path = f"{name}.parquet"
        assert (shifted_world / path).read_bytes() == (small_world / path).read_bytes(), name
    for name in TRUTH_TABLES:
        path = f"truth/{name}.parquet"
        assert (shifted_world / path).read_bytes() == (small_world / path).read_bytes(), name
    assert shifted["as_of"] == plain["as_of"] == str(SHIFT_START)
    assert shifted["calibration"] == plain["calibration"]
    assert shifted["config"]["shift"]["lead_time_scale"] == 1.6
    assert shifted["later"]["folder"] == "later"


def test_the_layout_of_the_later_period(shifted_world: Path) -> None:
    later = shifted_world / "later"
    assert set(_read(later)) == {"plans", "availability", "referrals", "appointments"}
    updates = set(_read(later / "updates"))
    assert updates == {"patients", "specialists", "availability", "referrals", "appointments"}
    assert set(_read(later / "truth")) == {"appointments", "match_utility"}
    for folder in (later, later / "updates"):
        for name, df in _read(folder).items():
            assert list(df.columns) == list(TABLES[name]), name
    manifest = json.loads((later / "manifest.json").read_text())
    assert manifest["counts"] == {k: len(v) for k, v in _read(later).items()}
    assert manifest["update_counts"] == {k: len(v) for k, v in _read(later / "updates").items()}
    assert manifest["truth_counts"] == {k: len(v) for k, v in _read(later / "truth").items()}
    assert manifest["period"] == {"start": str(SHIFT_START), "end": str(LATER_END)}
    assert manifest["shift"]["start"] == "2025-01-01" and manifest["shift"]["no_show_logit"] == 0.4


def test_base_tables_end_at_the_shift_start_and_later_ones_start_there(
    shifted_world: Path,
) -> None:
    base, later = load_dataset(shifted_world), _read(shifted_world / "later")
    updates = _read(shifted_world / "later" / "updates")
    b_rf, b_ap, b_av = base["referrals"], base["appointments"], base["availability"]
    assert (b_rf["created_at"] < SHIFT_START).all()
    assert (b_rf["status_at"] <= SHIFT_START).all()
    assert (b_ap["booked_at"] <= SHIFT_START).all()
    assert (b_ap["outcome_at"].dropna() <= SHIFT_START).all()
    assert (b_av["booked_at"].dropna() <= SHIFT_START).all()
    # Visits upcoming at the shift start are open in the base tables
    assert b_ap["outcome"].isna().sum() > 0
    l_rf, l_ap, l_av = later["referrals"], later["appointments"], later["availability"]
    assert l_rf["created_at"].between(SHIFT_START, LATER_END).all()
    assert l_ap["booked_at"].between(SHIFT_START, LATER_END).all()
    assert l_ap["outcome_at"].dropna().between(SHIFT_START, LATER_END).all()
    assert (l_ap["appointment_at"] >= SHIFT_START).all()
    assert (l_av["start"] >= b_av["start"].max()).all()
    assert l_av["booked_at"].dropna().between(SHIFT_START, LATER_END).all()
    # What changed in base rows happened in the later period
    assert updates["appointments"]["outcome_at"].between(SHIFT_START, LATER_END).all()
    assert updates["availability"]["booked_at"].between(SHIFT_START, LATER_END).all()
    assert updates["referrals"]["status_at"].between(SHIFT_START, LATER_END).all()


def test_an_earlier_shift_start_cuts_the_base_period_there(tmp_path: Path) -> None:
    start = date(2024, 10, 1)
    cfg = WorldConfig.for_size(
        "small",
        seed=11,
        patients=600,
        referrals=900,
        specialists=120,
        shift=Shift(start=start, months=2),
    )
    manifest = write_world(cfg, tmp_path)
    assert manifest["as_of"] == "2024-10-01 00:00:00"
    base, later = load_dataset(tmp_path), _read(tmp_path / "later")
    assert len(base["referrals"]) == 900
    assert (base["referrals"]["created_at"] < pd.Timestamp(start)).all()
    assert (base["appointments"]["booked_at"] <= pd.Timestamp(start)).all()
    period = (pd.Timestamp(start), pd.Timestamp("2024-12-01"))
    assert later["referrals"]["created_at"].between(*period).all()
    tables, _ = read_later_world(tmp_path)
    assert validate_tables(tables).ok


def test_later_ids_continue_the_base_sequences_without_collisions(shifted_world: Path) -> None:
    base, later = load_dataset(shifted_world), _read(shifted_world / "later")
    updates = _read(shifted_world / "later" / "updates")
    for name, prefix, width in (
        ("appointments", "AP", 8),
        ("referrals", "RF", 8),
        ("availability", "SL", 9),
    ):
        key = TABLES[name][0]
        b, new = base[name][key], later[name][key]
        assert set(b).isdisjoint(new), name
        first = len(b) + 1
        expected = [f"{prefix}{i:0{width}d}" for i in range(first, first + len(new))]
        assert new.tolist() == expected, name
        assert updates[name][key].isin(b).all(), name
    assert later["plans"]["insurance_plan_id"].tolist() == [NEW_PLAN[0]]
    assert not base["plans"]["insurance_plan_id"].isin(later["plans"]["insurance_plan_id"]).any()


def test_the_later_median_lead_time_is_about_the_scale_times_the_base_one(
    shifted_world: Path, control: LaterWorld
) -> None:
    base = load_dataset(shifted_world)["appointments"]
    later = _read(shifted_world / "later")["appointments"]
    base_lead, later_lead = _median_lead_days(base), _median_lead_days(later)
    control_lead = _median_lead_days(control.tables["appointments"])
    # Against the base period (the later period's mix of visits differs a little) ...
    assert 1.35 < later_lead / base_lead < 1.9
    # ... and against the same period without the shift
    assert 1.4 < later_lead / control_lead < 1.8
    assert 0.9 < control_lead / base_lead < 1.2
    manifest = json.loads((shifted_world / "later" / "manifest.json").read_text())
    assert manifest["figures"]["later"]["median_lead_days"] == pytest.approx(later_lead, abs=1e-3)
    assert manifest["figures"]["base"]["median_lead_days"] == pytest.approx(base_lead, abs=1e-3)


def test_a_positive_no_show_logit_raises_the_later_no_show_rate(
    base_run: BaseRun, control: LaterWorld
) -> None:
    # Given the same later period with only the no-show log-odds shifted
    shifted = _later(base_run, Shift(months=6, no_show_logit=0.4))
    lowered = _later(base_run, Shift(months=6, no_show_logit=-0.4))
    rates = {
        name: _no_show_rate(w.tables["appointments"])
        for name, w in (("up", shifted), ("same", control), ("down", lowered))
    }
    base_rate = _no_show_rate(base_run.tables["appointments"])
    # Then the no-show rate moves with it, and so does the truth behind it
    assert rates["up"] > rates["same"] + 0.03 > rates["down"] + 0.06
    assert rates["up"] > base_rate + 0.03
    assert abs(rates["same"] - base_rate) < 0.03
    p = {
        name: w.truth["appointments"]["p_no_show_without_outreach"].mean()
        for name, w in (("up", shifted), ("same", control))
    }
    assert p["up"] > p["same"] + 0.04
    assert shifted.figures["later"]["no_show_rate"] == pytest.approx(rates["up"], abs=1e-4)
    # The referrals are the same: only behaviour changed
    assert shifted.tables["referrals"]["created_at"].equals(
        control.tables["referrals"]["created_at"]
    )


def test_truth_rows_match_the_later_appointments_one_to_one(shifted_world: Path) -> None:
    later = _read(shifted_world / "later")
    truth = load_truth_tables(shifted_world / "later")
    ap, t = later["appointments"], truth["appointments"]
    assert t["appointment_id"].tolist() == ap["appointment_id"].tolist()
    assert t["appointment_id"].is_unique
    assert t["p_no_show_with_outreach"].le(t["p_no_show_without_outreach"] + 1e-12).all()
    mu = truth["match_utility"].assign(referral_id=lambda d: d["referral_id"].astype(str))
    rf = later["referrals"]
    assert mu["referral_id"].isin(rf["referral_id"]).all()
    chosen = mu[mu["chosen"]]
    with_choice = rf[rf["specialist_id"].notna()]
    assert chosen["referral_id"].is_unique and len(chosen) == len(with_choice)
    by_ref = with_choice.set_index("referral_id")["specialist_id"]
    assert (chosen["specialist_id"].astype(str).to_numpy() == by_ref[chosen["referral_id"]]).all()
    assert validate_truth_tables(truth).ok


def test_base_and_later_satisfy_the_contract_together(shifted_world: Path) -> None:
    base, later = load_dataset(shifted_world), _read(shifted_world / "later")
    # Plain concatenation of the base tables and the later period's new rows ...
    concatenated = {
        name: pd.concat([df, later[name]], ignore_index=True) if name in later else df
        for name, df in base.items()
    }
    report = validate_tables(concatenated)
    assert report.ok, "\n".join(str(v) for v in report.violations[:20])
    # ... and the world as of the end of the later period (updates applied)
    tables, truth = read_later_world(shifted_world)
    report = validate_tables(tables)
    assert report.ok, "\n".join(str(v) for v in report.violations[:20])
    assert validate_truth_tables(truth).ok
    assert len(tables["appointments"]) == len(base["appointments"]) + len(later["appointments"])


def test_the_world_at_the_later_end_is_a_consistent_funnel(shifted_world: Path) -> None:
    t, _ = read_later_world(shifted_world)
    rf, ap, av = t["referrals"], t["appointments"], t["availability"]
    attended_new = ap[(ap["outcome"] == "attended") & (ap["visit_kind"] == "new")]["referral_id"]
    assert rf.loc[rf["status"] == "completed", "referral_id"].isin(attended_new).all()
    closed_without_visit = rf["status"].isin(["never_scheduled", "leaked", "sent"])
    assert not rf.loc[closed_without_visit, "referral_id"].isin(ap["referral_id"]).any()
    assert ap["slot_id"].is_unique
    busy = av[av["status"] == "busy"]
    assert set(busy["appointment_id"]) == set(ap["appointment_id"])
    created = ap["referral_id"].map(rf.set_index("referral_id")["created_at"])
    assert (ap["booked_at"] >= created).all()
    assert (ap["booked_at"] <= ap["appointment_at"]).all()
    assert (ap["booked_at"] <= LATER_END).all()
    future = ap["appointment_at"] > LATER_END
    assert future.any()
    assert ap.loc[future, "outcome"].isna().sum() + (ap.loc[future, "outcome"] == "cancelled").sum()
    assert ap.loc[future, "outcome"].isin(["attended", "no_show"]).sum() == 0
    slot = av.set_index("slot_id").loc[ap["slot_id"]]
    assert (slot["start"].to_numpy() == ap["appointment_at"].to_numpy()).all()


def test_visits_upcoming_at_the_shift_start_take_place_in_the_later_period(
    shifted_world: Path,
) -> None:
    base = load_dataset(shifted_world)["appointments"].set_index("appointment_id")
    upd = _read(shifted_world / "later" / "updates")["appointments"].set_index("appointment_id")
    was = base.loc[upd.index]
    assert was["outcome"].isna().all() and upd["outcome"].notna().all()
    unchanged = [c for c in upd.columns if c not in ("outcome", "outcome_at")]
    pd.testing.assert_frame_equal(upd[unchanged], was[unchanged])
    # Every visit open at the shift start and due before the later end got its outcome
    open_due = base["outcome"].isna() & (base["appointment_at"] <= LATER_END)
    assert set(base.index[open_due]) <= set(upd.index)
    # ... drawn from the probabilities of their (base) truth, which the shift does not change
    truth = load_truth_tables(shifted_world)["appointments"].set_index("appointment_id")
    took_place = upd[upd["outcome"].isin(["attended", "no_show"])]
    p = truth.loc[took_place.index, "p_no_show_without_outreach"]
    assert abs(_no_show_rate(took_place) - p.mean()) < 0.08
    assert (took_place["outcome_at"] == took_place["appointment_at"]).all()


def test_the_new_network_moves_commercial_patients_to_a_new_plan(shifted_world: Path) -> None:
    base, upd = load_dataset(shifted_world), _read(shifted_world / "later" / "updates")
    plans = base["plans"].set_index("insurance_plan_id")
    moved = upd["patients"]
    before = base["patients"].set_index("patient_id").loc[moved["patient_id"], "insurance_plan_id"]
    assert (moved["insurance_plan_id"] == NEW_PLAN[0]).all()
    assert (plans.loc[before, "payer_type"] == "commercial").all()
    commercial = (
        base["patients"]["insurance_plan_id"].map(plans["payer_type"]) == "commercial"
    ).sum()
    assert 0.2 < len(moved) / commercial < 0.4
    joined = upd["specialists"]
    assert joined["network_ids"].str.contains(NEW_PLAN[4]).all()
    assert joined["accepted_plan_ids"].str.contains(NEW_PLAN[0]).all()
    later_rf = _read(shifted_world / "later")["referrals"]
    assert later_rf["patient_id"].isin(moved["patient_id"]).sum() > 50


def test_the_later_period_is_deterministic_and_follows_the_seed(base_run: BaseRun) -> None:
    a, b = _later(base_run, SHIFT), _later(base_run, SHIFT)
    for name in a.tables:
        assert content_hash(a.tables[name]) == content_hash(b.tables[name]), name
    for name in a.updates:
        assert content_hash(a.updates[name]) == content_hash(b.updates[name]), name
    other = build_later(
        WorldConfig.for_size("small", seed=12, shift=SHIFT),
        simulate_world(WorldConfig.for_size("small", seed=12)),
    )
    assert content_hash(other.tables["referrals"]) != content_hash(a.tables["referrals"])


def test_combine_tables_replaces_updated_rows_in_place() -> None:
    base = {"plans": pd.DataFrame({"insurance_plan_id": ["A", "B", "C"], "plan_name": list("abc")})}
    combined = combine_tables(
        base,
        {"plans": pd.DataFrame({"insurance_plan_id": ["D"], "plan_name": ["d"]})},
        {"plans": pd.DataFrame({"insurance_plan_id": ["B"], "plan_name": ["b2"]})},
    )
    assert combined["plans"]["plan_name"].tolist() == ["a", "b2", "c", "d"]
    with pytest.raises(ValueError, match="not in the base"):
        combine_tables(base, {}, {"plans": pd.DataFrame({"insurance_plan_id": ["Z"]})})


@pytest.mark.parametrize(
    "values",
    [
        {"months": 0},
        {"lead_time_scale": 0.0},
        {"lead_time_scale": float("nan")},
        {"no_show_logit": float("inf")},
        {"no_show_logit": 5.0},
        {"new_network": {"patient_share": 0.0}},
        {"unknown": 1},
    ],
)
def test_bad_shift_values_are_rejected(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Shift.model_validate(values)


def test_a_shift_start_outside_the_world_is_rejected() -> None:
    for start in (date(2023, 12, 1), date(2024, 1, 15), date(2030, 1, 1)):
        with pytest.raises(ValidationError, match="shift start"):
            WorldConfig.for_size("small", shift=Shift(start=start))
    with pytest.raises(ValueError, match="no shift"):
        _ = WorldConfig.for_size("small").later_end


def test_generate_writes_the_later_period_and_rejects_bad_values(tmp_path: Path) -> None:
    from training.cli import app

    runner = CliRunner()
    small = ["generate", "--patients", "500", "--referrals", "700", "--specialists", "100"]
    out = tmp_path / "w"
    args = [*small, "--out", str(out), "--quiet", "--later-months", "2"]
    run = runner.invoke(app, [*args, "--shift-lead-time", "1.6", "--shift-no-show-logit", "0.4"])
    assert run.exit_code == 0, run.output
    assert "Later period 2025-01-01 to 2025-03-01" in run.output
    assert "median lead time, days" in run.output
    manifest = json.loads((out / "later" / "manifest.json").read_text())
    assert manifest["shift"]["lead_time_scale"] == 1.6 and manifest["shift"]["new_network"] is None
    for bad, flag in (
        (["--later-months", "2", "--shift-lead-time", "0"], "--shift-lead-time"),
        (["--later-months", "2", "--shift-no-show-logit", "nan"], "--shift-no-show-logit"),
        (["--later-months", "0"], "--later-months"),
        (["--later-months", "2", "--shift-start", "2023-02-01"], "--shift-start"),
        (["--shift-new-network"], "--shift-new-network"),
    ):
        run = runner.invoke(app, [*small, "--out", str(tmp_path / "bad"), *bad])
        assert run.exit_code == 2, (bad, run.output)
        lines = [line for line in run.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {flag}: "), run.output
        assert not (tmp_path / "bad").exists()
