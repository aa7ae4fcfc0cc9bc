"""The referral funnel over time: scheduling, leakage, visits, outcomes, follow-ups and rebookings.

sent -> scheduled -> completed, or never_scheduled, cancelled, leaked. Whether a referral gets
scheduled depends on fit, distance, network status and the wait it is offered; a visit's outcome
depends on the true no-show process in synthetic_data.visits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.geo import haversine_km
from synthetic_data.config import WorldConfig
from synthetic_data.directory import Directory
from synthetic_data.population import Population
from synthetic_data.referrals import WAIT_COST, ReferralDraws
from synthetic_data.scheduling import HOLD, HOLD_WINDOW, ROUTINE, SlotBook
from synthetic_data.visits import draw_no_shows, no_show_logit, outreach_logit_reduction, sigmoid

MINUTE = np.timedelta64(1, "m")
NEVER_BASE, NEVER_UTILITY = -3.0, 0.8
LEAK_BASE, LEAK_OUT_OF_NETWORK, LEAK_UTILITY = -3.6, 1.0, 0.4
DAY_MIN = 24 * 60


@dataclass
class Funnel:
    """What happened to every referral, and every appointment booked."""

    status: np.ndarray
    status_at: np.ndarray
    appointments: pd.DataFrame  # one row per appointment, with truth columns prefixed 'p_'


def _minutes(t: np.ndarray, origin: np.datetime64) -> np.ndarray:
    return ((t - origin) / MINUTE).astype(np.int64)


def run_funnel(
    cfg: WorldConfig,
    rng: np.random.Generator,
    directory: Directory,
    pop: Population,
    draws: ReferralDraws,
    book: SlotBook,
) -> Funnel:
    """Simulate scheduling and visits for all referrals, in time order."""
    origin, end = cfg.start_time, cfg.as_of
    end_min = int(_minutes(np.array([end]), origin)[0])
    f = draws.frame
    n = len(f)
    created = f["created_at"].to_numpy().astype("datetime64[m]")
    urgency = f["urgency"].to_numpy()
    rtype = f["referral_type"].to_numpy()

    stat, urgent = urgency == "stat", urgency == "urgent"
    contact = np.where(
        stat,
        rng.uniform(0, 240, n),
        np.where(urgent, rng.uniform(120, 1440, n), 120 + rng.exponential(3 * DAY_MIN, n)),
    )
    booked_at = created + contact.astype(np.int64) * MINUTE
    notice = np.where(stat, 60, np.where(urgent, 720, DAY_MIN))
    prefer_later = np.where(
        ~stat & ~urgent & (rng.random(n) < 0.5), rng.exponential(7 * DAY_MIN, n), 0
    )
    earliest = booked_at + (notice + prefer_later).astype(np.int64) * MINUTE
    chosen = np.maximum(draws.chosen, 0)
    pos_hold = book.positions(chosen, HOLD, booked_at + 60 * MINUTE)
    pos_routine = book.positions(chosen, ROUTINE, earliest)

    # Whether a referral gets scheduled follows the true match utility of the chosen specialist
    # (fit, quality, distance, network, language, preference) and, below, the wait offered:
    # good matches complete, poor ones stall or leak. This is what makes logged outcomes a
    # learning signal for the ranker.
    utility = _chosen_static_utility(draws, n)
    centred = utility - np.nanmean(utility) if np.isfinite(utility).any() else np.zeros(n)
    centred = np.nan_to_num(centred, nan=0.0)
    never_base = NEVER_BASE - NEVER_UTILITY * centred + 0.2 * (rtype == "provider")
    leak_base = LEAK_BASE + LEAK_OUT_OF_NETWORK * ~draws.in_network - LEAK_UTILITY * centred
    wait_weight = NEVER_UTILITY * pd.Series(urgency).map(WAIT_COST).to_numpy(dtype=float)

    # The sequential part: plain Python over lists is several times faster than numpy scalars.
    slot_start_min = _minutes(book.start, origin).tolist()
    created_min = _minutes(created, origin).tolist()
    booked_min = _minutes(booked_at, origin).tolist()
    u_cancel, u_never, u_leak = (
        rng.random(n).tolist(),
        rng.random(n).tolist(),
        rng.random(n).tolist(),
    )
    never_l, leak_l, wait_w = never_base.tolist(), leak_base.tolist(), wait_weight.tolist()
    has_choice = (draws.chosen >= 0).tolist()
    quick = (stat | urgent).tolist()
    ph, pr = pos_hold.tolist(), pos_routine.tolist()
    hold_window = int(HOLD_WINDOW / MINUTE)

    status = np.empty(n, dtype=object)
    status_min = np.zeros(n, dtype=np.int64)
    first_slot = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        c0, b0 = created_min[i], booked_min[i]
        if not has_choice[i]:
            status[i], status_min[i] = "never_scheduled", c0 + 30 * DAY_MIN
            continue
        if b0 > end_min:
            status[i], status_min[i] = "sent", c0
            continue
        if u_cancel[i] < 0.02:
            status[i], status_min[i] = "cancelled", b0
            continue
        slot = -1
        if quick[i]:
            p = book.find(ph[i])
            s = book.slot_at(p)
            if s >= 0 and slot_start_min[s] - b0 <= hold_window:
                slot = s
        if slot < 0:
            p = book.find(pr[i])
            slot = book.slot_at(p)
        if slot < 0:
            status[i], status_min[i] = "never_scheduled", c0 + 30 * DAY_MIN
            continue
        wait = (slot_start_min[slot] - c0) / DAY_MIN
        if u_never[i] < 1.0 / (1.0 + math.exp(-(never_l[i] + wait_w[i] * wait))):
            status[i], status_min[i] = "never_scheduled", c0 + 30 * DAY_MIN
            continue
        if u_leak[i] < 1.0 / (1.0 + math.exp(-(leak_l[i] + 0.04 * wait))):
            status[i], status_min[i] = "leaked", b0 + 3 * DAY_MIN
            continue
        book.book(p, booked_at[i], i)
        first_slot[i] = slot
        status[i], status_min[i] = "scheduled", b0

    first = np.flatnonzero(first_slot >= 0)
    coords = (
        directory.specialists["latitude"].to_numpy(),
        directory.specialists["longitude"].to_numpy(),
    )
    appts = _appointments(
        cfg, rng, pop, draws, book, first, first_slot[first], booked_at[first], "new", end, *coords
    )

    # Second pass: follow-ups for attended first visits, rebookings after a miss or cancellation.
    att = appts["outcome"].to_numpy() == "attended"
    missed = np.isin(appts["outcome"].to_numpy(), ["no_show", "cancelled"])
    follow = att & (rng.random(len(appts)) < 0.45)
    rebook = missed & (rng.random(len(appts)) < 0.55)
    a_time = appts["appointment_at"].to_numpy().astype("datetime64[m]")
    o_time = appts["outcome_at"].to_numpy().astype("datetime64[m]")
    req_ref = np.concatenate(
        [appts["referral_row"].to_numpy()[follow], appts["referral_row"].to_numpy()[rebook]]
    )
    req_booked = np.concatenate(
        [
            a_time[follow] + 30 * MINUTE,
            o_time[rebook]
            + (60 + rng.exponential(3 * DAY_MIN, rebook.sum())).astype(np.int64) * MINUTE,
        ]
    )
    req_earliest = np.concatenate(
        [
            a_time[follow] + rng.integers(14 * DAY_MIN, 56 * DAY_MIN, follow.sum()) * MINUTE,
            req_booked[follow.sum() :] + DAY_MIN * MINUTE,
        ]
    )
    req_kind = np.array(
        ["follow_up"] * int(follow.sum()) + ["new"] * int(rebook.sum()), dtype=object
    )
    ok = req_booked <= end
    req_ref, req_booked, req_earliest, req_kind = (
        req_ref[ok],
        req_booked[ok],
        req_earliest[ok],
        req_kind[ok],
    )
    order = np.argsort(req_booked, kind="stable")
    req_ref, req_booked, req_earliest, req_kind = (
        req_ref[order],
        req_booked[order],
        req_earliest[order],
        req_kind[order],
    )
    positions = book.positions(draws.chosen[req_ref], ROUTINE, req_earliest).tolist()
    got_slot = np.full(len(req_ref), -1, dtype=np.int64)
    owner_base = n  # second-pass owners are numbered after the referrals
    for j, p0 in enumerate(positions):
        p = book.find(p0)
        s = book.slot_at(p)
        if s >= 0:
            book.book(p, req_booked[j], owner_base + j)
            got_slot[j] = s
    took = got_slot >= 0
    second = _appointments(
        cfg,
        rng,
        pop,
        draws,
        book,
        req_ref[took],
        got_slot[took],
        req_booked[took],
        req_kind[took],
        end,
        *coords,
        earlier=_visit_events(appts, origin),
    )
    second["owner"] = owner_base + np.flatnonzero(took)
    appts["owner"] = appts["referral_row"].to_numpy()
    all_appts = pd.concat([appts, second], ignore_index=True)

    status, status_min = _final_status(status, status_min, all_appts, origin)
    # An outcome due after the snapshot is not known yet: the referral is still open then.
    future = status_min > end_min
    status = np.where(future, "sent", status)
    status_min = np.where(future, np.asarray(created_min, dtype=np.int64), status_min)
    status_at = origin + status_min * MINUTE
    return Funnel(status=status, status_at=status_at, appointments=all_appts)


def _appointments(
    cfg: WorldConfig,
    rng: np.random.Generator,
    pop: Population,
    draws: ReferralDraws,
    book: SlotBook,
    ref_rows: np.ndarray,
    slots: np.ndarray,
    booked_at: np.ndarray,
    visit_kind: str | np.ndarray,
    end: np.datetime64,
    spec_lat: np.ndarray,
    spec_lon: np.ndarray,
    earlier: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Appointment rows with reminders, the randomised outreach call, truth and outcome."""
    m = len(ref_rows)
    f = draws.frame
    origin = cfg.start_time
    prow = draws.patient_row[ref_rows]
    spec_row = book.specialist[slots]
    appt_at = book.start[slots].astype("datetime64[m]")
    booked_at = booked_at.astype("datetime64[m]")
    lead_days = (appt_at - booked_at) / np.timedelta64(1, "D")
    same_day = appt_at.astype("datetime64[D]") == booked_at.astype("datetime64[D]")
    text = (lead_days >= 3) & (rng.random(m) < 0.85)
    outreach = (lead_days >= 2) & (rng.random(m) < cfg.outreach_share)
    dist = haversine_km(
        pop.patients["latitude"].to_numpy()[prow],
        pop.patients["longitude"].to_numpy()[prow],
        spec_lat[spec_row],
        spec_lon[spec_row],
    )
    facts = pd.DataFrame(
        {
            "lead_days": lead_days,
            "same_day": same_day,
            "propensity": pop.no_show_propensity[prow],
            "payer_type": pop.payer_type[prow],
            "age": pop.age[prow],
            "language": pop.patients["preferred_language"].to_numpy()[prow],
            "distance_km": dist,
            "weekday": pd.DatetimeIndex(appt_at).day_of_week.to_numpy(),
            "hour": pd.DatetimeIndex(appt_at).hour.to_numpy(),
            "text_reminder": text,
            "visit_kind": np.broadcast_to(np.asarray(visit_kind, dtype=object), (m,)),
            "urgency": f["urgency"].to_numpy()[ref_rows],
            "referral_type": f["referral_type"].to_numpy()[ref_rows],
        }
    )
    tau = outreach_logit_reduction(pop.transport_barrier[prow])
    # The call's effect enters before the draw; the record-based shift is added per visit below.
    logit = no_show_logit(facts)
    p_cancel = sigmoid(-3.6 + 0.45 * np.log1p(np.maximum(lead_days, 0)))
    cancel_at = (
        booked_at + (rng.random(m) * (appt_at - booked_at) / MINUTE).astype(np.int64) * MINUTE
    )
    cancelled = (rng.random(m) < p_cancel) & (cancel_at <= end)
    happened = appt_at <= end
    no_show, shift = draw_no_shows(
        prow,
        _minutes(booked_at, origin),
        _minutes(appt_at, origin),
        happened & ~cancelled,
        logit - np.where(outreach, tau, 0.0),
        rng.random(m),
        earlier,
    )
    p0, p1 = sigmoid(logit + shift), sigmoid(logit + shift - tau)
    outcome = np.where(no_show, "no_show", "attended").astype(object)
    outcome[~happened] = None
    outcome[cancelled] = "cancelled"
    outcome_at = np.where(cancelled, cancel_at, np.where(happened, appt_at, np.datetime64("NaT")))
    return pd.DataFrame(
        {
            "referral_row": ref_rows,
            "patient_row": prow,
            "specialist_row": spec_row,
            "slot": slots,
            "visit_kind": facts["visit_kind"].to_numpy(),
            "booked_at": booked_at,
            "appointment_at": appt_at,
            "text_reminder": text,
            "outreach_call": outreach,
            "outcome": outcome,
            "outcome_at": outcome_at.astype("datetime64[m]"),
            "p_no_show_without_outreach": p0,
            "p_no_show_with_outreach": p1,
            "lead_days": lead_days,
        }
    )


def _chosen_static_utility(draws: ReferralDraws, n: int) -> np.ndarray:
    """True static utility of each referral's chosen specialist (NaN when not among truth rows)."""
    tp = draws.truth_pairs
    out = np.full(n, np.nan)
    if tp.empty:
        return out
    rows = tp["referral_row"].to_numpy()
    sel = tp["specialist_row"].to_numpy() == draws.chosen[rows]
    out[rows[sel]] = tp["static_utility"].to_numpy(dtype=float)[sel]
    return out


def _visit_events(
    appts: pd.DataFrame, origin: np.datetime64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patient, outcome minute, is_no_show) of the attended and missed visits of a batch."""
    outcome = appts["outcome"].to_numpy(dtype=object)
    took_place = (outcome == "attended") | (outcome == "no_show")
    minutes = _minutes(appts["outcome_at"].to_numpy()[took_place].astype("datetime64[m]"), origin)
    return appts["patient_row"].to_numpy()[took_place], minutes, outcome[took_place] == "no_show"


def _final_status(
    status: np.ndarray, status_min: np.ndarray, appts: pd.DataFrame, origin: np.datetime64
) -> tuple[np.ndarray, np.ndarray]:
    """Scheduled referrals become completed when a first visit (or its rebooking) is attended,
    cancelled when the last attempt was missed or cancelled; upcoming ones stay scheduled."""
    status, status_min = status.copy(), status_min.copy()
    new = appts[appts["visit_kind"] == "new"].sort_values("booked_at", kind="stable")
    last = new.groupby("referral_row").tail(1)
    rows = last["referral_row"].to_numpy()
    when = (last["outcome_at"].to_numpy() - origin) / MINUTE
    missed = np.isin(last["outcome"].to_numpy(), ["no_show", "cancelled"])
    status[rows[missed]] = "cancelled"
    status_min[rows[missed]] = when[missed].astype(np.int64)
    attended = new[new["outcome"] == "attended"].groupby("referral_row")["outcome_at"].min()
    rows_a = attended.index.to_numpy()
    status[rows_a] = "completed"
    status_min[rows_a] = ((attended.to_numpy() - origin) / MINUTE).astype(np.int64)
    return status, status_min
