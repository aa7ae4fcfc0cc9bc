"""The world measured against published figures (shared/reference/FACTS.md), on its own output."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.codes import icd10_category
from features.contract import split_multi
from features.history import patient_history
from features.network import network_matrices


def logistic_odds_ratios(X: np.ndarray, y: np.ndarray, names: list[str]) -> dict[str, float]:
    """Unpenalised logistic regression by Newton's method; odds ratio per named column."""
    Xc = np.hstack([np.ones((len(X), 1)), X.astype(float)])
    beta = np.zeros(Xc.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-Xc @ beta))
        w = p * (1 - p)
        grad = Xc.T @ (y - p)
        hess = (Xc * w[:, None]).T @ Xc + 1e-9 * np.eye(Xc.shape[1])
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return {n: float(np.exp(b)) for n, b in zip(names, beta[1:], strict=True)}


def _row(
    metric: str, value: float, lo: float | None, hi: float | None, published: str
) -> dict[str, object]:
    ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    if lo is not None and hi is not None:
        target = f"{lo:g}-{hi:g}"
    else:
        target = f"> {lo:g}" if lo is not None else f"< {hi:g}"
    return {
        "metric": metric,
        "value": round(float(value), 4),
        "target": target,
        "published": published,
        "ok": bool(ok),
    }


def calibration_table(tables: dict[str, pd.DataFrame]) -> list[dict[str, object]]:
    """Each calibrated figure of the world with its target range and the published value."""
    ap, pt, pl, rf, sp = (
        tables[k] for k in ("appointments", "patients", "plans", "referrals", "specialists")
    )
    done = ap[ap["outcome"].isin(["attended", "no_show"])].copy()
    y = (done["outcome"] == "no_show").to_numpy(dtype=float)
    lead = (done["appointment_at"] - done["booked_at"]).dt.total_seconds().to_numpy() / 86_400
    same_day = (
        done["appointment_at"].dt.normalize() == done["booked_at"].dt.normalize()
    ).to_numpy()
    hist = patient_history(done.assign(as_of=done["booked_at"]), ap)
    any_prior = (hist["prior_no_shows"].to_numpy() > 0).astype(float)
    payer = (
        done["patient_id"]
        .map(pt.set_index("patient_id")["insurance_plan_id"])
        .map(pl.set_index("insurance_plan_id")["payer_type"])
        .to_numpy()
    )
    lang = done["patient_id"].map(pt.set_index("patient_id")["preferred_language"]).to_numpy()
    text = done["text_reminder"].to_numpy(dtype=float)
    lead_x = np.column_stack([np.log1p(np.maximum(lead, 0)), same_day])
    ors = logistic_odds_ratios(
        np.column_stack([any_prior, payer == "medicaid", lang == "es", text, lead_x]),
        y,
        ["prior", "medicaid", "spanish", "text", "log_lead", "same_day"],
    )
    ors_prior = logistic_odds_ratios(np.column_stack([any_prior, lead_x]), y, ["prior", "a", "b"])
    ors_mcd = logistic_odds_ratios(
        np.column_stack([payer == "medicaid", lead_x]), y, ["medicaid", "a", "b"]
    )
    ors_text = logistic_odds_ratios(np.column_stack([text, lead_x]), y, ["text", "a", "b"])

    closed = rf[rf["status"].isin(["completed", "cancelled", "leaked", "never_scheduled"])]
    never_completed = float((closed["status"] != "completed").mean())
    in_net_m, _, plan_index = network_matrices(pl, sp)
    spec_index = pd.Series(np.arange(len(sp)), index=sp["specialist_id"])
    first_visit = ap.drop_duplicates("referral_id")
    sched = rf[rf["referral_id"].isin(first_visit["referral_id"])]
    plan_rows = (
        sched["patient_id"].map(pt.set_index("patient_id")["insurance_plan_id"]).map(plan_index)
    )
    in_network = in_net_m[
        plan_rows.to_numpy(dtype=int), spec_index[sched["specialist_id"]].to_numpy()
    ]
    chosen = rf[rf["specialist_id"].notna()]
    focus = chosen["specialist_id"].map(sp.set_index("specialist_id")["focus_codes"])
    misdirected = np.mean(
        [
            icd10_category(r) not in split_multi(f)
            for r, f in zip(chosen["reason_code"], focus, strict=True)
        ]
    )
    eligible = done[lead >= 2]
    calls = eligible["outreach_call"].to_numpy()
    ns = (eligible["outcome"] == "no_show").to_numpy()
    relative = 1 - ns[calls].mean() / ns[~calls].mean() if calls.any() else float("nan")

    return [
        _row("no-show rate, all visits", y.mean(), 0.17, 0.24, "20.2% (110,527 visits)"),
        _row("no-show rate, same-day bookings", y[same_day].mean(), None, 0.08, "4.7%"),
        _row(
            "no-show rate, lead >= 21 days", y[lead >= 21].mean(), 0.25, None, "32.6% at 3-4 weeks"
        ),
        _row(
            "odds ratio, any prior no-show (lead-adjusted)", ors_prior["prior"], 3.0, 6.0, "OR 4.4"
        ),
        _row("odds ratio, Medicaid (lead-adjusted)", ors_mcd["medicaid"], 1.3, 2.0, "OR 1.6"),
        _row("odds ratio, Spanish-speaking (adjusted)", ors["spanish"], 1.1, 1.6, "OR 1.3"),
        _row(
            "raw no-show ratio, text reminder vs none",
            y[text == 1].mean() / y[text == 0].mean(),
            1.0,
            None,
            "reminders look harmful in raw data",
        ),
        _row(
            "odds ratio, text reminder (lead-adjusted)",
            ors_text["text"],
            None,
            1.0,
            "protective, up to 38% fewer",
        ),
        _row(
            "relative no-show reduction from outreach call (randomised)",
            relative,
            0.10,
            0.40,
            "29.2% -> 22.8% (22%)",
        ),
        _row("referrals never completed", never_completed, 0.20, 0.35, "up to 30%"),
        _row(
            "scheduled referrals in network", float(in_network.mean()), 0.80, 0.95, "about 9 in 10"
        ),
        _row(
            "referrals to a specialist without the reason in focus",
            float(misdirected),
            0.25,
            0.45,
            "> 25% misdirected",
        ),
    ]


def format_table(rows: list[dict[str, object]]) -> str:
    """The calibration table as aligned plain text."""
    head = f"{'figure':58} {'world':>8}  {'target':>12}  {'ok':>3}  published"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['metric']:58} {r['value']:>8.3f}  {r['target']:>12}  {'yes' if r['ok'] else 'NO':>3}  {r['published']}"
        )
    return "\n".join(lines)
