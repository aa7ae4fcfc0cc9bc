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
class Timing:
    """Per-referral draws of the funnel: when the patient is reached and the slot search starts,
    and the uniforms behind cancelling, never scheduling and leaking."""

    booked_at: np.ndarray  # datetime64[m]: the contact that books
    earliest: np.ndarray  # datetime64[m]: earliest routine slot the patient takes
    u_cancel: np.ndarray
    u_never: np.ndarray
    u_leak: np.ndarray


@dataclass
class FunnelLogits:
    """Per-referral log-odds of never being scheduled and of leaking, and the weight of a wait."""

    never: np.ndarray
    leak: np.ndarray
    wait_weight: np.ndarray


@dataclass
class Requests:
    """Second bookings asked for after a visit: follow-ups and rebookings, by referral row."""

    referral_row: np.ndarray
    booked_at: np.ndarray
    earliest: np.ndarray
    visit_kind: np.ndarray

    def take(self, keep: np.ndarray) -> Requests:
        """The requests at `keep` (a mask or an index)."""
        return Requests(
            self.referral_row[keep],
            self.booked_at[keep],
            self.earliest[keep],
            self.visit_kind[keep],
        )

    @staticmethod
    def concat(parts: list[Requests]) -> Requests:
        """All requests of several batches, in order."""
        return Requests(
            *(
                np.concatenate([getattr(r, name) for r in parts])
                for name in ("referral_row", "booked_at", "earliest", "visit_kind")
            )
        )


@dataclass
class FunnelState:
    """What a continuation of the funnel past the snapshot needs (see synthetic_data.later)."""

    timing: Timing
    logits: FunnelLogits
    utility_centre: float  # mean true utility of the chosen specialists, to centre on
    loop_status: np.ndarray  # status from scheduling, before visits and the snapshot mask
    loop_status_min: np.ndarray
    pending: Requests  # follow-ups and rebookings asked for after the snapshot
    second_owner_base: int  # owner number of the first second-pass request


@dataclass
class Funnel:
    """What happened to every referral, and every appointment booked."""

    status: np.ndarray
    status_at: np.ndarray
    appointments: pd.DataFrame  # one row per appointment, with truth columns prefixed 'p_'
    state: FunnelState


def _minutes(t: np.ndarray, origin: np.datetime64) -> np.ndarray:
    return ((t - origin) / MINUTE).astype(np.int64)


def draw_timing(rng: np.random.Generator, created: np.ndarray, urgency: np.ndarray) -> Timing:
    """When each referral's patient is reached, the earliest slot they take, and the uniforms."""
    n = len(created)
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
    u_cancel, u_never, u_leak = rng.random(n), rng.random(n), rng.random(n)
    return Timing(booked_at, earliest, u_cancel, u_never, u_leak)


def funnel_logits(draws: ReferralDraws, centre: float | None = None) -> tuple[FunnelLogits, float]:
    """Log-odds of never scheduling and leaking per referral, from the true utility of the
    chosen specialist centred on `centre` (default: its mean over these referrals)."""
    # Whether a referral gets scheduled follows the true match utility of the chosen specialist
    # (fit, quality, distance, network, language, preference) and, below, the wait offered:
    # good matches complete, poor ones stall or leak. This is what makes logged outcomes a
    # learning signal for the ranker.
    f = draws.frame
    n = len(f)
    utility = _chosen_static_utility(draws, n)
    if centre is None:
        centre = float(np.nanmean(utility)) if np.isfinite(utility).any() else 0.0
    centred = utility - centre if np.isfinite(utility).any() else np.zeros(n)
    centred = np.nan_to_num(centred, nan=0.0)
    rtype = f["referral_type"].to_numpy()
    urgency = f["urgency"].to_numpy()
    never_base = NEVER_BASE - NEVER_UTILITY * centred + 0.2 * (rtype == "provider")
    leak_base = LEAK_BASE + LEAK_OUT_OF_NETWORK * ~draws.in_network - LEAK_UTILITY * centred
    wait_weight = NEVER_UTILITY * pd.Series(urgency).map(WAIT_COST).to_numpy(dtype=float)
    return FunnelLogits(never_base, leak_base, wait_weight), centre


def schedule(
    book: SlotBook,
    origin: np.datetime64,
    end: np.datetime64,
    created: np.ndarray,
    urgency: np.ndarray,
    chosen: np.ndarray,
    timing: Timing,
    logits: FunnelLogits,
    owners: np.ndarray,
    lead_time_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Book the first visit of each referral, in the given (time) order; returns status, status
    minute and slot (-1 when none was booked). `chosen` < 0: no specialist. With a
    `lead_time_scale`, the booking takes the free slot nearest to that many times the lead of
    the slot it would otherwise take (a later period's shift)."""
    n = len(created)
    end_min = int(_minutes(np.array([end]), origin)[0])
    stat, urgent = urgency == "stat", urgency == "urgent"
    spec = np.maximum(chosen, 0)
    booked_at = timing.booked_at
    pos_hold = book.positions(spec, HOLD, booked_at + 60 * MINUTE)
    pos_routine = book.positions(spec, ROUTINE, timing.earliest)

    # The sequential part: plain Python over lists is several times faster than numpy scalars.
    slot_start_min = _minutes(book.start, origin).tolist()
    created_min = _minutes(created, origin).tolist()
    booked_min = _minutes(booked_at, origin).tolist()
    u_cancel, u_never, u_leak = (
        timing.u_cancel.tolist(),
        timing.u_never.tolist(),
        timing.u_leak.tolist(),
    )
    never_l, leak_l = logits.never.tolist(), logits.leak.tolist()
    wait_w = logits.wait_weight.tolist()
    has_choice = (chosen >= 0).tolist()
    quick = (stat | urgent).tolist()
    ph, pr = pos_hold.tolist(), pos_routine.tolist()
    owner_l = owners.tolist()
    hold_window = int(HOLD_WINDOW / MINUTE)
    scaled = lead_time_scale != 1.0

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
                if scaled:
                    p, slot = _stretch(book, p, s, b0, slot_start_min, lead_time_scale)
        if slot < 0:
            p = book.find(pr[i])
            slot = book.slot_at(p)
            if scaled and slot >= 0:
                p, slot = _stretch(book, p, slot, b0, slot_start_min, lead_time_scale)
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
        book.book(p, booked_at[i], owner_l[i])
        first_slot[i] = slot
        status[i], status_min[i] = "scheduled", b0
    return status, status_min, first_slot


def _stretch(
    book: SlotBook, p: int, slot: int, b0: int, slot_start_min: list[int], scale: float
) -> tuple[int, int]:
    """The free slot of the same block nearest to `scale` x the lead of `slot` (booked at minute
    b0; free at key position p), or `slot` itself when the calendar has none further on."""
    target = b0 + round(scale * (slot_start_min[slot] - b0))
    kind = int(book.kind[slot])
    at = book.position_at(int(book.specialist[slot]), kind, target)
    q = book.find(at)
    s = book.slot_at(q)
    if scale > 1.0:
        before = book.free_before(at, p)
        s_before = book.slot_at(before)
        if s < 0 or target - slot_start_min[s_before] <= slot_start_min[s] - target:
            q, s = before, s_before
    if s < 0:
        return p, slot
    if kind == HOLD and slot_start_min[s] - b0 > scale * int(HOLD_WINDOW / MINUTE):
        return p, slot
    return q, s


def book_requests(
    book: SlotBook,
    chosen: np.ndarray,
    requests: Requests,
    owners: np.ndarray,
    origin: np.datetime64,
    lead_time_scale: float = 1.0,
) -> np.ndarray:
    """Book each request (in order) in the first free routine slot at/after its earliest time;
    the slot per request, -1 when the calendar is full."""
    positions = book.positions(chosen[requests.referral_row], ROUTINE, requests.earliest).tolist()
    got_slot = np.full(len(positions), -1, dtype=np.int64)
    scaled = lead_time_scale != 1.0
    slot_start_min = _minutes(book.start, origin).tolist() if scaled else []
    booked_min = _minutes(requests.booked_at, origin).tolist() if scaled else []
    owner_l = owners.tolist()
    for j, p0 in enumerate(positions):
        p = book.find(p0)
        s = book.slot_at(p)
        if s >= 0:
            if scaled:
                p, s = _stretch(book, p, s, booked_min[j], slot_start_min, lead_time_scale)
            book.book(p, requests.booked_at[j], owner_l[j])
            got_slot[j] = s
    return got_slot


def second_requests(rng: np.random.Generator, appts: pd.DataFrame) -> Requests:
    """Follow-ups for attended first visits, rebookings after a miss or cancellation, ordered by
    booking time (stable)."""
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
    return Requests(req_ref, req_booked, req_earliest, req_kind)


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

    timing = draw_timing(rng, created, urgency)
    logits, centre = funnel_logits(draws)
    status, status_min, first_slot = schedule(
        book, origin, end, created, urgency, draws.chosen, timing, logits, np.arange(n)
    )
    loop_status, loop_status_min = status.copy(), status_min.copy()

    first = np.flatnonzero(first_slot >= 0)
    coords = (
        directory.specialists["latitude"].to_numpy(),
        directory.specialists["longitude"].to_numpy(),
    )
    appts = _appointments(
        cfg,
        rng,
        pop,
        draws,
        book,
        first,
        first_slot[first],
        timing.booked_at[first],
        "new",
        end,
        *coords,
    )

    # Second pass: follow-ups for attended first visits, rebookings after a miss or cancellation.
    requests = second_requests(rng, appts)
    ok = requests.booked_at <= end
    pending = requests.take(~ok)
    requests = requests.take(ok)
    requests = requests.take(np.argsort(requests.booked_at, kind="stable"))
    owner_base = n  # second-pass owners are numbered after the referrals
    owners = owner_base + np.arange(len(requests.referral_row))
    got_slot = book_requests(book, draws.chosen, requests, owners, origin)
    took = got_slot >= 0
    second = _appointments(
        cfg,
        rng,
        pop,
        draws,
        book,
        requests.referral_row[took],
        got_slot[took],
        requests.booked_at[took],
        requests.visit_kind[took],
        end,
        *coords,
        earlier=_visit_events(appts, origin),
    )
    second["owner"] = owners[took]
    appts["owner"] = appts["referral_row"].to_numpy()
    all_appts = pd.concat([appts, second], ignore_index=True)

    status, status_min = _final_status(status, status_min, all_appts, origin)
    # An outcome due after the snapshot is not known yet: the referral is still open then.
    future = status_min > end_min
    status = np.where(future, "sent", status)
    created_min = _minutes(created, origin)
    status_min = np.where(future, created_min, status_min)
    status_at = origin + status_min * MINUTE
    state = FunnelState(
        timing=timing,
        logits=logits,
        utility_centre=centre,
        loop_status=loop_status,
        loop_status_min=loop_status_min,
        pending=pending,
        second_owner_base=owner_base + len(owners),
    )
    return Funnel(status=status, status_at=status_at, appointments=all_appts, state=state)


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
    logit_shift: float = 0.0,
) -> pd.DataFrame:
    """Appointment rows with reminders, the randomised outreach call, truth and outcome.

    `logit_shift` is added to every visit's no-show log-odds (a later period's changed
    behaviour). Columns starting with '_' keep the draws behind an outcome not known by `end`
    (synthetic_data.later resolves those visits when the world runs on)."""
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
    if logit_shift:
        logit = logit + logit_shift
    p_cancel = sigmoid(-3.6 + 0.45 * np.log1p(np.maximum(lead_days, 0)))
    cancel_at = (
        booked_at + (rng.random(m) * (appt_at - booked_at) / MINUTE).astype(np.int64) * MINUTE
    )
    cancel_drawn = rng.random(m) < p_cancel
    cancelled = cancel_drawn & (cancel_at <= end)
    happened = appt_at <= end
    u = rng.random(m)
    no_show, shift = draw_no_shows(
        prow,
        _minutes(booked_at, origin),
        _minutes(appt_at, origin),
        happened & ~cancelled,
        logit - np.where(outreach, tau, 0.0),
        u,
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
            "_cancel_drawn": cancel_drawn,
            "_cancel_at": cancel_at,
            "_u_no_show": u,
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
