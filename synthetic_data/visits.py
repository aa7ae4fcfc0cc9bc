"""The true no-show process: what makes a patient miss a booked visit, and what outreach changes.

Effects follow the published figures in shared/reference/FACTS.md: lead time (same-day visits are
rarely missed, visits weeks away often are), a persistent patient propensity (prior no-shows
predict the next), Medicaid and self-pay coverage, Spanish-speaking patients, distance, weekday,
reminders (protective once lead time is accounted for) and an outreach call whose benefit is
larger for patients with transport and access barriers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BASE_LOGIT = -3.95
SAME_DAY_LOGIT = -1.6
LEAD_SLOPE = 0.68  # per log(1 + lead days)
PROPENSITY = 2.1
PAYER = {"medicaid": 0.55, "self_pay": 0.30, "medicare": -0.10, "commercial": 0.0}
SPANISH, OTHER_LANGUAGE = 0.50, 0.15
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
