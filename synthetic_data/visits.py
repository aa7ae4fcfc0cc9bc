"""The true no-show process: what makes a patient miss a booked visit, and what outreach changes.

Effects follow the published figures in shared/reference/FACTS.md: lead time (same-day visits are
rarely missed, visits weeks away often are), the patient's own record (their smoothed no-show
rate known at booking; this is what makes a prior no-show predict the next, OR ~4.4) plus a small
latent trait, Medicaid and self-pay coverage, Spanish-speaking patients, distance, weekday,
reminders (protective once lead time is accounted for) and an outreach call whose benefit is
larger for patients with transport and access barriers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BASE_LOGIT = -3.2
SAME_DAY_LOGIT = -1.6
LEAD_SLOPE = 0.68  # per log(1 + lead days)
PROPENSITY = 0.25
PAYER = {"medicaid": 0.32, "self_pay": 0.30, "medicare": -0.10, "commercial": 0.0}
SPANISH, OTHER_LANGUAGE = 0.28, 0.12
TEXT_REMINDER = -0.35
OUTREACH_MAX = 0.85  # logit reduction of a call for a patient with every barrier


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def no_show_logit(a: pd.DataFrame) -> np.ndarray:
    """True log-odds of a no-show without an outreach call, for appointment facts in `a`.

    Columns: lead_days, same_day, propensity, payer_type, age, language, distance_km,
    weekday (0=Mon), hour, text_reminder, visit_kind, urgency, referral_type.
    """
    age = a["age"].to_numpy()
    lang = a["language"].to_numpy()
    payer = pd.Series(a["payer_type"].to_numpy()).map(PAYER).to_numpy(dtype=float)
    lead = np.maximum(a["lead_days"].to_numpy(dtype=float), 0.0)
    logit = (
        BASE_LOGIT
        + np.where(a["same_day"].to_numpy(), SAME_DAY_LOGIT, LEAD_SLOPE * np.log1p(lead))
        + PROPENSITY * a["propensity"].to_numpy()
        + payer
        + 0.25 * ((age >= 18) & (age < 35))
        - 0.20 * (age >= 65)
        + SPANISH * (lang == "es")
        + OTHER_LANGUAGE * ((lang != "es") & (lang != "en"))
        + 0.012 * np.minimum(a["distance_km"].to_numpy(dtype=float), 60.0)
        + 0.10 * (a["weekday"].to_numpy() == 0)
        + 0.12 * (a["weekday"].to_numpy() == 4)
        + 0.10 * (a["hour"].to_numpy() < 9)
        + TEXT_REMINDER * a["text_reminder"].to_numpy()
        + 0.15 * (a["visit_kind"].to_numpy() == "follow_up")
        - 0.50 * (a["urgency"].to_numpy() == "stat")
        - 0.20 * (a["urgency"].to_numpy() == "urgent")
        - 0.20 * (a["referral_type"].to_numpy() == "self")
        + 0.15 * (a["referral_type"].to_numpy() == "emergency")
    )
    return logit


def outreach_logit_reduction(transport_barrier: np.ndarray) -> np.ndarray:
    """How much an outreach call lowers the log-odds of a no-show (0 for no barriers)."""
    return OUTREACH_MAX * np.asarray(transport_barrier)


# A patient's own record: missed visits known at booking raise the odds of missing the next one.
HISTORY_WEIGHT = 1.55
PRIOR_RATE, PRIOR_STRENGTH = 0.2, 3.0


def history_logit(prior_no_shows: np.ndarray, prior_visits: np.ndarray) -> np.ndarray:
    """Log-odds shift from the patient's record: their smoothed no-show rate vs the typical 20%."""
    rate = (prior_no_shows + PRIOR_RATE * PRIOR_STRENGTH) / (prior_visits + PRIOR_STRENGTH)
    typical = np.log(PRIOR_RATE / (1 - PRIOR_RATE))
    return HISTORY_WEIGHT * (np.log(rate / (1 - rate)) - typical)


def draw_no_shows(
    patient: np.ndarray,
    booked_min: np.ndarray,
    visit_min: np.ndarray,
    occurs: np.ndarray,
    base_logit: np.ndarray,
    u: np.ndarray,
    earlier: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw no-shows where each visit's odds depend on the patient's record known at its booking.

    `occurs` marks visits that take place (not cancelled, not in the future); `base_logit` is the
    log-odds before the patient's record; `u` uniform draws. `earlier` holds (patient, outcome
    minute, is_no_show) of attended/missed visits from an earlier batch. Visits are handled in
    order of booking within each patient, so a visit only sees outcomes known before it was
    booked. Returns (no_show, history shift) per visit.
    """
    m = len(patient)
    order = np.lexsort((booked_min, patient))
    p_sorted = patient[order]
    is_start = np.ones(m, dtype=bool)
    is_start[1:] = p_sorted[1:] != p_sorted[:-1]
    block_start = np.maximum.accumulate(np.where(is_start, np.arange(m), 0))
    rank = np.arange(m) - block_start

    visits = np.zeros(m)
    misses = np.zeros(m)
    if earlier is not None and len(earlier[0]):
        e_patient, e_min, e_miss = earlier
        keys = np.sort(e_patient.astype(np.int64) * (1 << 32) + e_min)
        miss_keys = np.sort(e_patient[e_miss].astype(np.int64) * (1 << 32) + e_min[e_miss])
        lo = patient.astype(np.int64) * (1 << 32)
        hi = lo + booked_min
        visits += np.searchsorted(keys, hi, "left") - np.searchsorted(keys, lo, "left")
        misses += np.searchsorted(miss_keys, hi, "left") - np.searchsorted(miss_keys, lo, "left")

    s_booked, s_visit, s_occurs = booked_min[order], visit_min[order], occurs[order]
    s_visits, s_misses = visits[order], misses[order]
    s_no_show = np.zeros(m, dtype=bool)
    s_shift = np.zeros(m)
    s_logit, s_u = base_logit[order], u[order]
    for k in range(int(rank.max()) + 1 if m else 0):
        rows = np.flatnonzero(rank == k)
        if k:
            rep = np.repeat(rows, k)
            prev = rep - np.tile(np.arange(1, k + 1), len(rows))
            known = s_occurs[prev] & (s_visit[prev] < s_booked[rep])
            s_visits[rows] += np.bincount(
                np.repeat(np.arange(len(rows)), k), weights=known, minlength=len(rows)
            )
            s_misses[rows] += np.bincount(
                np.repeat(np.arange(len(rows)), k),
                weights=known & s_no_show[prev],
                minlength=len(rows),
            )
        s_shift[rows] = history_logit(s_misses[rows], s_visits[rows])
        s_no_show[rows] = s_occurs[rows] & (s_u[rows] < sigmoid(s_logit[rows] + s_shift[rows]))
    no_show = np.empty(m, dtype=bool)
    shift = np.empty(m)
    no_show[order], shift[order] = s_no_show, s_shift
    return no_show, shift
