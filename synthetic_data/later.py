"""The later period of a world: the same patients, specialists and plans after a shift.

The base world is simulated up to the shift start exactly as without a shift. The later period
then continues that simulation, with its own random streams, for `Shift.months` months: new
referrals are drawn over the period, the referrals still waiting to be reached at the shift
start are scheduled, the visits that were upcoming at the shift start take place (with the draws
made when they were booked), follow-ups and rebookings follow, all on the same calendars. From
the shift start on, bookings are made `lead_time_scale` times further ahead, the no-show log-odds
of every visit booked in the period move by `no_show_logit`, and with `new_network` a new plan
and network appear and a share of the commercially insured patients move to it.

What the later period adds is split in two, so that no id is written twice:

- new rows (``later/<table>.parquet``): referrals, appointments and slots created in the period
  (their ids continue the base sequences), and the new plan;
- updates (``later/updates/<table>.parquet``): base rows whose state changed by the end of the
  period, as they are then (upcoming visits that took place or were cancelled, referrals whose
  status moved on, slots booked in the period, moved patients, specialists who joined the new
  network).

``combine_tables`` (``read_later_world`` for a folder) applies the updates to the base tables and
appends the new rows: the world as of the end of the later period, which satisfies the contract.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import SEP, TABLES, TRUTH_TABLES
from synthetic_data.config import GENERATOR_VERSION, NewNetwork, WorldConfig
from synthetic_data.directory import Directory
from synthetic_data.population import Population
from synthetic_data.referrals import ReferralDraws, choose_specialists, draw_referrals
from synthetic_data.simulate import (
    MINUTE,
    FunnelLogits,
    Requests,
    Timing,
    _appointments,
    _final_status,
    _minutes,
    _visit_events,
    book_requests,
    draw_timing,
    funnel_logits,
    schedule,
    second_requests,
)
from synthetic_data.world import (
    BaseRun,
    appointment_rows,
    appointment_truth,
    content_hash,
    match_utility,
    ordered_appointments,
)

LATER_FOLDER, UPDATES_FOLDER = "later", "updates"
LATER_STREAM = 20_260_510  # mixed with the seed: the later period's own random streams
NEW_PLAN = (
    "PLN-D-HMO",
    "Dogwood Direct HMO",
    "commercial",
    "HMO",
    "NET-D-NARROW",
    False,
)
CALENDAR_DAYS = 84  # calendars reach this many days past a period's end (times the lead scale)


@dataclasses.dataclass
class LaterWorld:
    """The later period: new rows, updated base rows, truth of the new rows, and its figures."""

    tables: dict[str, pd.DataFrame]
    updates: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]
    figures: dict[str, dict[str, float | int | None]]


def add_new_network(
    rng: np.random.Generator, directory: Directory, pop: Population, spec: NewNetwork
) -> tuple[Directory, Population]:
    """The directory and population with the new plan: some practices join its network and
    take the plan, some commercially insured patients move to it."""
    plan_id, _, _, _, network_id, _ = NEW_PLAN
    cols = list(directory.plans.columns)
    plans = pd.concat([directory.plans, pd.DataFrame([NEW_PLAN], columns=cols)], ignore_index=True)
    orgs = directory.organizations
    specialty = orgs[orgs["kind"] == "specialty_practice"]
    owner = specialty["system_id"].fillna(specialty["organization_id"]).astype(str)
    owners = np.array(sorted(set(owner)), dtype=object)
    joined_owners = set(owners[rng.random(len(owners)) < spec.organization_share])
    joined_orgs = set(specialty["organization_id"][owner.isin(joined_owners)])
    specs = directory.specialists.copy()
    joins = specs["organization_id"].isin(joined_orgs).to_numpy()

    def plus(values: pd.Series, item: str) -> list[str]:
        return [v + SEP + item if v else item for v in values.tolist()]

    specs.loc[joins, "network_ids"] = plus(specs.loc[joins, "network_ids"], network_id)
    specs.loc[joins, "accepted_plan_ids"] = plus(specs.loc[joins, "accepted_plan_ids"], plan_id)
    patients = pop.patients.copy()
    moves = (pop.payer_type == "commercial") & (rng.random(len(patients)) < spec.patient_share)
    patients.loc[moves, "insurance_plan_id"] = plan_id
    return (
        dataclasses.replace(directory, plans=plans, specialists=specs),
        dataclasses.replace(pop, patients=patients),
    )


def _concat_draws(base: ReferralDraws, later: ReferralDraws) -> ReferralDraws:
    """Base and later referrals as one set of rows (later rows after the base ones); the truth
    pairs are the later ones, with their rows in the combined numbering."""
    n_b = len(base.frame)
    tp = later.truth_pairs
    if not tp.empty:
        tp = tp.assign(referral_row=tp["referral_row"].to_numpy() + n_b)
    return ReferralDraws(
        frame=pd.concat([base.frame, later.frame], ignore_index=True),
        patient_row=np.concatenate([base.patient_row, later.patient_row]),
        chosen=np.concatenate([base.chosen, later.chosen]),
        distance_km=np.concatenate([base.distance_km, later.distance_km]),
        in_network=np.concatenate([base.in_network, later.in_network]),
        accepts_plan=np.concatenate([base.accepts_plan, later.accepts_plan]),
        focus_match=np.concatenate([base.focus_match, later.focus_match]),
        truth_pairs=tp,
    )


def _resolve_upcoming(ap: pd.DataFrame, end: np.datetime64) -> pd.DataFrame:
    """Visits without an outcome at the snapshot, as they turn out by `end`, with the draws made
    when they were booked (cancellation time, the no-show uniform, their true probability)."""
    out = ap.copy()
    open_ = out["outcome"].isna().to_numpy()
    appt_at = out["appointment_at"].to_numpy().astype("datetime64[m]")
    cancel_at = out["_cancel_at"].to_numpy().astype("datetime64[m]")
    cancelled = open_ & out["_cancel_drawn"].to_numpy(dtype=bool) & (cancel_at <= end)
    happened = open_ & ~cancelled & (appt_at <= end)
    p = np.where(
        out["outreach_call"].to_numpy(dtype=bool),
        out["p_no_show_with_outreach"].to_numpy(),
        out["p_no_show_without_outreach"].to_numpy(),
    )
    no_show = happened & (out["_u_no_show"].to_numpy() < p)
    outcome = out["outcome"].to_numpy(dtype=object).copy()
    outcome[happened] = np.where(no_show[happened], "no_show", "attended")
    outcome[cancelled] = "cancelled"
    outcome_at = out["outcome_at"].to_numpy().astype("datetime64[m]").copy()
    outcome_at[happened] = appt_at[happened]
    outcome_at[cancelled] = cancel_at[cancelled]
    out["outcome"] = outcome
    out["outcome_at"] = outcome_at
    return out


def _changed(new: pd.DataFrame, old: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Rows (aligned by position) where any of `columns` differs; two missing values are equal."""
    out = np.zeros(len(new), dtype=bool)
    for c in columns:
        x, y = new[c].reset_index(drop=True), old[c].reset_index(drop=True)
        both_missing = (x.isna() & y.isna()).to_numpy()
        equal = (x == y).fillna(False).to_numpy(dtype=bool)
        out |= ~(equal | both_missing)
    return out


def build_later(cfg: WorldConfig, run: BaseRun) -> LaterWorld:
    """Continue a simulated base world through the later period of its shift."""
    shift = cfg.shift
    if shift is None:
        raise ValueError("the world has no shift, hence no later period")
    origin, start, end = cfg.start_time, cfg.as_of, cfg.later_end
    end_min = int(_minutes(np.array([end]), origin)[0])
    streams = np.random.SeedSequence([cfg.seed, LATER_STREAM]).spawn(4)
    rng_net, rng_ref, rng_choice, rng = (np.random.default_rng(s) for s in streams)

    directory, pop = run.directory, run.pop
    if shift.new_network is not None:
        directory, pop = add_new_network(rng_net, directory, pop, shift.new_network)
    base = run.draws
    n_b = len(base.frame)
    base_days = (start - origin) / np.timedelta64(1, "D")
    later_days = (end - start) / np.timedelta64(1, "D")
    n_l = max(1, round(cfg.referrals * later_days / base_days))
    frame = draw_referrals(cfg, rng_ref, directory, pop, (start, end), n_l, first_id=n_b + 1)
    draws = choose_specialists(
        cfg, rng_choice, directory, pop, frame, before=(base.frame, base.chosen)
    )
    every = _concat_draws(base, draws)
    pad = np.timedelta64(int(np.ceil(CALENDAR_DAYS * max(1.0, shift.lead_time_scale))), "D")
    book, old_to_new = run.book.extended(end + pad)

    # First visits: referrals not reached by the shift start, then the period's new ones.
    state = run.funnel.state
    waiting = np.flatnonzero(state.loop_status == "sent")
    rows = np.concatenate([waiting, n_b + np.arange(n_l)])
    created = every.frame["created_at"].to_numpy().astype("datetime64[m]")
    urgency = every.frame["urgency"].to_numpy()
    timing_l = draw_timing(rng, created[n_b:], urgency[n_b:])
    timing = Timing(
        *(
            np.concatenate([getattr(state.timing, f.name)[waiting], getattr(timing_l, f.name)])
            for f in dataclasses.fields(Timing)
        )
    )
    logits_l, _ = funnel_logits(draws, centre=state.utility_centre)
    logits = FunnelLogits(
        *(
            np.concatenate([getattr(state.logits, f.name)[waiting], getattr(logits_l, f.name)])
            for f in dataclasses.fields(FunnelLogits)
        )
    )
    owners = state.second_owner_base + np.arange(len(rows))
    status1, status1_min, slot1 = schedule(
        book,
        origin,
        end,
        created[rows],
        urgency[rows],
        every.chosen[rows],
        timing,
        logits,
        owners,
        shift.lead_time_scale,
    )

    # Visits booked before the shift start that take place (or are cancelled) in the period.
    base_ap = _resolve_upcoming(run.appointments, end)
    base_ap["slot"] = old_to_new[base_ap["slot"].to_numpy()]
    coords = (
        directory.specialists["latitude"].to_numpy(),
        directory.specialists["longitude"].to_numpy(),
    )
    first = np.flatnonzero(slot1 >= 0)
    ap1 = _appointments(
        cfg,
        rng,
        pop,
        every,
        book,
        rows[first],
        slot1[first],
        timing.booked_at[first],
        "new",
        end,
        *coords,
        earlier=_visit_events(base_ap, origin),
        logit_shift=shift.no_show_logit,
    )
    ap1["owner"] = owners[first]

    # Follow-ups and rebookings: those asked for after the shift start by base visits, and those
    # of first visits that took place in the period.
    resolved_now = (
        run.appointments["outcome"].isna().to_numpy() & base_ap["outcome"].notna().to_numpy()
    )
    was_first = base_ap["owner"].to_numpy() < n_b
    sources = pd.concat([base_ap[resolved_now & was_first], ap1], ignore_index=True)
    requests = Requests.concat([state.pending, second_requests(rng, sources)])
    requests = requests.take(requests.booked_at <= end)
    requests = requests.take(np.argsort(requests.booked_at, kind="stable"))
    owners2 = state.second_owner_base + len(rows) + np.arange(len(requests.referral_row))
    got = book_requests(book, every.chosen, requests, owners2, origin, shift.lead_time_scale)
    took = got >= 0
    ap2 = _appointments(
        cfg,
        rng,
        pop,
        every,
        book,
        requests.referral_row[took],
        got[took],
        requests.booked_at[took],
        requests.visit_kind[took],
        end,
        *coords,
        earlier=_visit_events(pd.concat([base_ap, ap1], ignore_index=True), origin),
        logit_shift=shift.no_show_logit,
    )
    ap2["owner"] = owners2[took]

    # Referral statuses as of the end of the period.
    status = np.concatenate([state.loop_status, np.empty(n_l, dtype=object)])
    status_min = np.concatenate([state.loop_status_min, np.zeros(n_l, dtype=np.int64)])
    status[rows], status_min[rows] = status1, status1_min
    new_ap, new_ids = ordered_appointments(
        pd.concat([ap1, ap2], ignore_index=True), len(base_ap) + 1
    )
    all_ap = pd.concat([base_ap, new_ap], ignore_index=True)
    status, status_min = _final_status(status, status_min, all_ap, origin)
    future = status_min > end_min
    status = np.where(future, "sent", status)
    status_min = np.where(future, _minutes(created, origin), status_min)
    status_at = (origin + status_min * MINUTE).astype("datetime64[s]")

    # Tables: new rows and updated base rows.
    spec_ids = directory.specialists["specialist_id"].to_numpy()
    patient_ids = pop.patients["patient_id"].to_numpy()
    referral_ids = every.frame["referral_id"].to_numpy()
    owner_max = int(max(book.owner.max(), 0))
    by_owner = np.empty(owner_max + 1, dtype=object)
    by_owner[base_ap["owner"].to_numpy()] = run.appointment_ids
    by_owner[new_ap["owner"].to_numpy()] = new_ids
    availability = book.frame(by_owner, spec_ids, end)
    slot_ids = availability["slot_id"].to_numpy()
    is_new_slot = np.ones(book.n_slots, dtype=bool)
    is_new_slot[old_to_new] = False
    base_tables = run.tables
    old_slots = availability.iloc[old_to_new].reset_index(drop=True)
    slot_changed = _changed(
        old_slots, base_tables["availability"], ["status", "booked_at", "appointment_id"]
    )
    chosen = np.where(draws.chosen >= 0, spec_ids[np.maximum(draws.chosen, 0)], None)
    f = draws.frame
    referrals = f.drop(columns="_patient_row").assign(
        created_at=f["created_at"].to_numpy().astype("datetime64[s]"),
        specialist_id=pd.array(chosen, dtype="string"),
        status=status[n_b:],
        status_at=status_at[n_b:],
    )
    base_referrals = base_tables["referrals"].assign(status=status[:n_b], status_at=status_at[:n_b])
    referral_changed = _changed(base_referrals, base_tables["referrals"], ["status", "status_at"])
    appointments = appointment_rows(new_ap, new_ids, referral_ids, patient_ids, spec_ids, slot_ids)
    resolved_rows = np.flatnonzero(resolved_now)
    updated_visits = appointment_rows(
        base_ap.iloc[resolved_rows],
        run.appointment_ids[resolved_rows],
        referral_ids,
        patient_ids,
        spec_ids,
        slot_ids,
    )
    tables: dict[str, pd.DataFrame] = {
        "availability": availability[is_new_slot],
        "referrals": referrals,
        "appointments": appointments,
    }
    updates: dict[str, pd.DataFrame] = {
        "availability": old_slots[slot_changed],
        "referrals": base_referrals[referral_changed],
        "appointments": updated_visits,
    }
    if shift.new_network is not None:
        tables["plans"] = directory.plans.iloc[len(base_tables["plans"]) :]
        moved = _changed(pop.patients, base_tables["patients"], ["insurance_plan_id"])
        updates["patients"] = pop.patients[moved]
        joined = _changed(directory.specialists, base_tables["specialists"], ["network_ids"])
        updates["specialists"] = directory.specialists[joined]
    tables = {k: tables[k][list(TABLES[k])].reset_index(drop=True) for k in TABLES if k in tables}
    updates = {
        k: updates[k][list(TABLES[k])].reset_index(drop=True) for k in TABLES if k in updates
    }
    truth = {
        "appointments": appointment_truth(new_ap, new_ids),
        "match_utility": match_utility(
            every, availability, all_ap, spec_ids, referral_ids, row_offset=n_b
        ),
    }
    figures = {
        "base": period_figures(
            base_tables["appointments"], run.truth["appointments"], base.in_network, base.chosen
        ),
        "later": period_figures(
            tables["appointments"], truth["appointments"], draws.in_network, draws.chosen
        ),
    }
    if shift.new_network is not None:
        on_new = f["patient_id"].map(pop.patients.set_index("patient_id")["insurance_plan_id"])
        figures["later"]["referrals_on_the_new_plan"] = round(
            float((on_new == NEW_PLAN[0]).mean()), 4
        )
    return LaterWorld(tables=tables, updates=updates, truth=truth, figures=figures)


def period_figures(
    appointments: pd.DataFrame,
    truth: pd.DataFrame,
    in_network: np.ndarray,
    chosen: np.ndarray,
) -> dict[str, float | int | None]:
    """What a period looks like: its no-show rate (visits with an outcome), lead times, the mean
    true no-show probability of its bookings and the in-network share of its referrals."""
    done = appointments["outcome"].isin(["attended", "no_show"]).to_numpy(dtype=bool)
    no_show = (appointments["outcome"] == "no_show").to_numpy(dtype=bool, na_value=False)
    lead = (
        appointments["appointment_at"] - appointments["booked_at"]
    ).dt.total_seconds().to_numpy() / 86_400
    p = truth["p_no_show_without_outreach"].to_numpy()

    def r(x: float) -> float | None:
        return round(float(x), 4) if np.isfinite(x) else None

    has = chosen >= 0
    return {
        "appointments": len(appointments),
        "visits_with_outcome": int(done.sum()),
        "no_show_rate": r(no_show[done].mean()) if done.any() else None,
        "median_lead_days": r(np.median(lead)) if len(lead) else None,
        "mean_lead_days": r(lead.mean()) if len(lead) else None,
        "mean_true_no_show_probability": r(p.mean()) if len(p) else None,
        "referrals": len(chosen),
        "referrals_in_network": r(in_network[has].mean()) if has.any() else None,
    }


def later_manifest(cfg: WorldConfig, later: LaterWorld) -> dict[str, object]:
    """The later period's manifest: period, shift, counts, id ranges, hashes and figures."""
    assert cfg.shift is not None
    shift = cfg.shift.model_dump(mode="json")
    shift["start"] = str(pd.Timestamp(cfg.as_of).date())
    ids = {
        name: {"first": str(df.iloc[0, 0]), "last": str(df.iloc[-1, 0])}
        for name, df in later.tables.items()
        if len(df)
    }
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "period": {"start": str(pd.Timestamp(cfg.as_of)), "end": str(pd.Timestamp(cfg.later_end))},
        "shift": shift,
        "counts": {name: len(df) for name, df in later.tables.items()},
        "update_counts": {name: len(df) for name, df in later.updates.items()},
        "truth_counts": {name: len(df) for name, df in later.truth.items()},
        "ids": ids,
        "content_hashes": {name: content_hash(df) for name, df in later.tables.items()}
        | {f"{UPDATES_FOLDER}/{n}": content_hash(df) for n, df in later.updates.items()}
        | {f"truth/{name}": content_hash(df) for name, df in later.truth.items()},
        "figures": later.figures,
        "layout": (
            "<table>.parquet: rows new in the period (ids continue the base ones); "
            "updates/<table>.parquet: base rows as they are at the period's end; "
            "truth/: truth of the new rows. synthetic_data.later.read_later_world(<world>) "
            "gives the world as of the period's end."
        ),
    }


def combine_tables(
    base: dict[str, pd.DataFrame],
    new: dict[str, pd.DataFrame],
    updates: dict[str, pd.DataFrame],
) -> dict[str, pd.DataFrame]:
    """Base tables with the updated rows replaced (by primary key, in place) and the new rows
    appended: the world as of the end of the later period."""
    out: dict[str, pd.DataFrame] = {}
    for name, df in base.items():
        key = TABLES[name][0] if name in TABLES else TRUTH_TABLES[name][0]
        upd = updates.get(name)
        if upd is not None and len(upd):
            pos = pd.Index(df[key]).get_indexer(upd[key])
            if (pos < 0).any():
                raise ValueError(f"updates/{name} names rows that are not in the base table")
            keep = np.ones(len(df), dtype=bool)
            keep[pos] = False
            order = np.concatenate([np.flatnonzero(keep), pos])
            merged = pd.concat([df[keep], upd[list(df.columns)]], ignore_index=True)
            df = merged.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
        extra = new.get(name)
        if extra is not None and len(extra):
            df = pd.concat([df, extra[list(df.columns)]], ignore_index=True)
        out[name] = df
    return out


def read_later_world(
    world: Path,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The public and truth tables of a world folder as of the end of its later period."""
    from features.validation import load_dataset, load_truth_tables

    world = Path(world)
    later = world / LATER_FOLDER
    if not (later / "manifest.json").is_file():
        raise FileNotFoundError(f"{world} has no later period ({LATER_FOLDER}/manifest.json)")
    tables = combine_tables(
        load_dataset(world), load_dataset(later), load_dataset(later / UPDATES_FOLDER)
    )
    truth = combine_tables(load_truth_tables(world), load_truth_tables(later), {})
    return tables, truth


def write_later(
    cfg: WorldConfig,
    later: LaterWorld,
    out: Path,
    write: Callable[[list[tuple[pd.DataFrame, Path]]], None] | None = None,
) -> dict[str, object]:
    """Write the later period into `out`/later (see the module docstring); its manifest.
    `write` writes (table, path) pairs (default: one plain Parquet file each)."""
    folder = Path(out) / LATER_FOLDER
    (folder / UPDATES_FOLDER).mkdir(parents=True, exist_ok=True)
    (folder / "truth").mkdir(exist_ok=True)
    files = [(df, folder / f"{name}.parquet") for name, df in later.tables.items()]
    files += [(df, folder / UPDATES_FOLDER / f"{n}.parquet") for n, df in later.updates.items()]
    files += [(df, folder / "truth" / f"{name}.parquet") for name, df in later.truth.items()]
    if write is not None:
        write(files)
    else:
        for df, path in files:
            df.to_parquet(path, index=False)
    manifest = later_manifest(cfg, later)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
