"""The no-show model card: Markdown rendered from one plain dict (see `render_no_show_card`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd

RATIO_BAND = (0.8, 1.25)  # observed/predicted no-show ratio per subgroup (as training.promotion)
METRIC_COLUMNS = (
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("brier", "Brier"),
    ("log_loss", "Log loss"),
    ("ece", "ECE"),
    ("recall_at_20pct_daily", "Recall @ top 20%/day"),
)
SMALL_SUBGROUP = 500  # default "small" subgroup size (as training.metrics.SUBGROUP_MIN_ROWS)
AUDIT_ONLY_MARKERS = ("race", "ethnic")  # never allowed among the model's inputs
SAMORANI = (
    "Samorani M, Harris SL, Blount LG, Lu H, Santoro MA. *Overbooked and Overlooked: Machine "
    "Learning and Racial Bias in Medical Appointment Scheduling.* Manufacturing & Service "
    "Operations Management 24(6), 2022"
)
SECTIONS = (
    "Model details",
    "Intended use",
    "Inputs",
    "Metrics",
    "Subgroups",
    "Calibration method",
    "Limits",
)


def render_no_show_card(card: Mapping[str, Any]) -> str:
    """Markdown model card of a no-show model run.

    Sections: Model details, Intended use, Inputs, Metrics, Subgroups, Calibration method,
    Limits. Every key except "name" is optional; a missing part is rendered as "not recorded"
    (or the section says so), never as an error. Numbers are shown with 3 decimals, counts with
    thousands separators. Feature names that look like race or ethnicity are refused
    (ValueError): those are audit-only and never a model input.

    Schema (a full example; `training.no_show_job._write_reports` builds it):

        {
            "name": "no-show",                        # required
            "version": "7",                           # registry version, str or int
            "trained_at": "2025-01-31T09:12:00+00:00",  # str, date or datetime
            "data": {
                "source": "synthetic world data/small",  # where the rows came from
                "synthetic": True,                    # True: generated world; False: own data
                "rows": 48_211,                       # labelled (attended / no-show) rows
                "date_range": "2023-01-02 .. 2024-12-31",  # str, or a (start, end) pair
                "no_show_rate": 0.187,
                "windows": {                          # time split, name -> "start .. end"
                    "train": "2023-01-02 .. 2024-03-10",
                    "valid": "2024-03-11 .. 2024-06-01",
                    "calibration": "2024-06-02 .. 2024-08-20",
                    "test": "2024-08-21 .. 2024-12-31",
                },
            },
            "features": ["lead_days", "same_day", "prior_no_shows", "age", "payer_type"],
            "metrics": {                              # each a training.metrics.binary_metrics dict
                "model": {"roc_auc": 0.71, "pr_auc": 0.38, "brier": 0.14, "log_loss": 0.44,
                          "ece": 0.012, "recall_at_20pct_daily": 0.41},
                "baselines": {                        # name -> metrics; may be empty
                    "base_rate": {...},
                    "logistic_regression": {...},
                    "prior_no_show_and_lead_rule": {...},
                },
                "ceiling": {...},                     # true probabilities; None for own data
            },
            "subgroups": subgroups,                   # training.metrics.subgroup_table frame
                                                      # (or its records): group, level, n, auc,
                                                      # mean_predicted, observed,
                                                      # observed_over_predicted, calibration_slope
            "calibration": "Platt scaling of LightGBM log-odds, fitted on the calibration window",
                                                      # or {"method": ..., "fitted_on": ...,
                                                      #     "ece": ..., "notes": ...}
            "subgroup_min_rows": 500,                 # levels with fewer rows are marked small
            "tiers": {"medium": 0.15, "high": 0.30},  # risk >= threshold -> outreach tier
            "limits": ["Extra caveat for this run."], # appended to the standard limits
        }
    """
    if not card.get("name"):
        raise ValueError("the card needs a model name")
    features = [str(f) for f in card.get("features") or []]
    audit = [f for f in features if any(m in f.lower() for m in AUDIT_ONLY_MARKERS)]
    if audit:
        raise ValueError(
            f"features {audit} look like race/ethnicity: those are audit-only, never inputs"
        )
    data = _mapping(card.get("data"))
    parts = [
        f"# Model card: {card['name']} (version {_text(card.get('version'))})",
        "",
        "Predicts the probability that a booked appointment ends as a no-show, to direct "
        "supportive outreach to the patients who need it most.",
        "",
        *_details(card, data),
        *_intended_use(card),
        *_inputs(features),
        *_metrics(_mapping(card.get("metrics"))),
        *_subgroups(card.get("subgroups"), int(card.get("subgroup_min_rows") or SMALL_SUBGROUP)),
        *_calibration(card.get("calibration")),
        *_limits(card, data),
    ]
    return "\n".join(parts).rstrip() + "\n"


# ---------------------------------------------------------------- formatting


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any) -> str:
    """A number with 3 decimals; '—' when missing or not finite."""
    if _missing(value):
        return "—"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return _cell(value)
    return f"{x:.3f}" if math.isfinite(x) else "—"


def _count(value: Any) -> str:
    if _missing(value):
        return "—"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return _cell(value)


def _text(value: Any, missing: str = "not recorded") -> str:
    if _missing(value) or value == "":
        return missing
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return _text(value, "—").replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _pretty(name: str) -> str:
    return name.replace("_", " ")


# ---------------------------------------------------------------- sections


def _head_rows(
    card: Mapping[str, Any], data: Mapping[str, Any], truth: str, records: str
) -> list[list[str]]:
    """Name, version, training time, kind and source of the data: the first rows of a card."""
    synthetic = data.get("synthetic")
    if synthetic is True:
        kind = f"synthetic (generated world with known {truth})"
    elif synthetic is False:
        kind = f"own data (real {records})"
    else:
        kind = "not recorded"
    return [
        ["Name", _cell(card.get("name"))],
        ["Version", _cell(card.get("version"))],
        ["Trained at", _cell(card.get("trained_at"))],
        ["Data", _cell(kind)],
        ["Data source", _cell(data.get("source"))],
    ]


def _date_range(data: Mapping[str, Any]) -> str:
    value = data.get("date_range")
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = " .. ".join(_text(d) for d in value)
    return _cell(value)


def _details(card: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    rows = _head_rows(card, data, "true probabilities", "appointments")
    rows += [
        ["Labelled rows", _count(data.get("rows"))],
        ["Date range", _date_range(data)],
        ["No-show rate", _num(data.get("no_show_rate"))],
    ]
    windows = _mapping(data.get("windows"))
    for name, span in windows.items():
        rows.append([f"{_pretty(str(name)).capitalize()} window", _cell(span)])
    return ["## Model details", "", *_table(["Field", "Value"], rows)]


def _intended_use(card: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Intended use",
        "",
        "Supportive outreach only: use the risk to offer extra reminders, a phone call, "
        "help with transport or rescheduling to the patients most likely to miss a visit.",
        "",
        "> **Warning — never use this score to deny care, to overbook or to double-book.** "
        "Scheduling that overbooks on no-show predictions shifts waiting onto the patients "
        "predicted to miss: in a large specialty clinic it made Black patients wait about 30% "
        f"longer than other patients ({SAMORANI}). Covered entities must also identify and "
        "mitigate the risk of discrimination from patient care decision support tools "
        "(45 CFR 92.210, Section 1557 of the Affordable Care Act).",
        "",
    ]
    tiers = _mapping(card.get("tiers"))
    if tiers:
        ordered = sorted(tiers.items(), key=lambda kv: float(kv[1]))
        described = "; ".join(f"{_pretty(str(k))}: risk ≥ {_num(v)}" for k, v in ordered)
        lines += [f"Outreach tiers: {described} (below the lowest: low).", ""]
    return lines


def _inputs(features: list[str]) -> list[str]:
    lines = ["## Inputs", ""]
    if features:
        lines.append(f"{len(features)} features, known at prediction time:")
        lines.append("")
        lines += [f"- `{f}`" for f in features]
    else:
        lines.append("Feature list not recorded.")
    lines += [
        "",
        "Race and ethnicity are never model inputs; they are used only to audit calibration "
        "by subgroup (see Subgroups).",
        "",
    ]
    return lines


def _metrics(metrics: Mapping[str, Any]) -> list[str]:
    lines = ["## Metrics", ""]
    entries: list[tuple[str, Mapping[str, Any]]] = []
    if metrics.get("model"):
        entries.append(("**model**", _mapping(metrics["model"])))
    for name, values in _mapping(metrics.get("baselines")).items():
        entries.append((f"baseline: {_pretty(str(name))}", _mapping(values)))
    ceiling = metrics.get("ceiling")
    if ceiling:
        entries.append(("ground-truth ceiling", _mapping(ceiling)))
    if not entries:
        return [*lines, "Metrics not recorded.", ""]
    lines += [
        "Test window, later in time than all training rows. Recall @ top 20%/day is the share "
        "of all no-shows reached when the riskiest 20% of each day's visits are called.",
        "",
    ]
    header = ["Scores", *(label for _, label in METRIC_COLUMNS)]
    rows = [[_cell(name), *(_num(m.get(key)) for key, _ in METRIC_COLUMNS)] for name, m in entries]
    lines += _table(header, rows)
    if ceiling:
        lines += [
            "The ground-truth ceiling scores the true no-show probabilities of the synthetic "
            "world: no model can do better on these rows.",
            "",
        ]
    else:
        lines += ["No ground-truth ceiling: the true probabilities are unknown for this data.", ""]
    return lines


def _subgroup_records(subgroups: Any) -> list[Mapping[str, Any]]:
    if subgroups is None:
        return []
    if isinstance(subgroups, pd.DataFrame):
        return list(subgroups.to_dict(orient="records"))
    return [r for r in subgroups if isinstance(r, Mapping)]


def _outside_band(ratio: Any) -> bool:
    if _missing(ratio):
        return False
    try:
        x = float(ratio)
    except (TypeError, ValueError):
        return False
    return math.isfinite(x) and not RATIO_BAND[0] <= x <= RATIO_BAND[1]


def _is_small(record: Mapping[str, Any], min_rows: int) -> bool:
    n = record.get("n")
    if n is None or _missing(n):
        return False
    try:
        return int(n) < min_rows
    except (TypeError, ValueError):
        return False


def _subgroups(subgroups: Any, min_rows: int) -> list[str]:
    lines = ["## Subgroups", ""]
    records = _subgroup_records(subgroups)
    if not records:
        return [*lines, "Subgroup audit not recorded.", ""]
    low, high = RATIO_BAND
    flagged = [r for r in records if _outside_band(r.get("observed_over_predicted"))]
    lines += [
        f"Test window, per subgroup level. A level is flagged when its observed/predicted "
        f"no-show ratio is outside {low}–{high}; levels with fewer than {min_rows:,} rows are "
        "marked small, as their ratio is noisy. Race/ethnicity levels are an audit only.",
        "",
    ]
    if flagged:
        small = sum(_is_small(r, min_rows) for r in flagged)
        named = "; ".join(
            f"{_cell(r.get('group'))} = {_cell(r.get('level'))} "
            f"({_num(r.get('observed_over_predicted'))}"
            f"{', small' if _is_small(r, min_rows) else ''})"
            for r in flagged
        )
        of_which = f" ({small} of them small)" if small else ""
        lines += [f"**{len(flagged)} level(s) outside {low}–{high}{of_which}:** {named}.", ""]
    else:
        lines += [f"Every level's observed/predicted ratio is within {low}–{high}.", ""]
    header = [
        "Group",
        "Level",
        "n",
        "AUC",
        "Mean predicted",
        "Observed",
        "Observed/predicted",
        "Calibration slope",
        "Flag",
    ]
    rows = []
    for r in records:
        flag = ""
        if _outside_band(r.get("observed_over_predicted")):
            flag = f"⚠ outside {low}–{high}" + (" (small)" if _is_small(r, min_rows) else "")
        rows.append(
            [
                _cell(r.get("group")),
                _cell(r.get("level")),
                _count(r.get("n")),
                _num(r.get("auc")),
                _num(r.get("mean_predicted")),
                _num(r.get("observed")),
                _num(r.get("observed_over_predicted")),
                _num(r.get("calibration_slope")),
                flag,
            ]
        )
    return lines + _table(header, rows)


def _calibration(calibration: Any) -> list[str]:
    lines = ["## Calibration method", ""]
    if isinstance(calibration, Mapping):
        method = _text(calibration.get("method"))
        lines.append(f"- Method: {method}")
        for key, value in calibration.items():
            if key == "method":
                continue
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            shown = _num(value) if numeric else _text(value)
            lines.append(f"- {_pretty(str(key)).capitalize()}: {shown}")
    else:
        lines.append(_text(calibration, "Not recorded."))
    return [*lines, ""]


def _limits(card: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    synthetic = data.get("synthetic")
    if synthetic is True:
        first = (
            "**Synthetic data.** Trained and evaluated on a generated world: the numbers show "
            "what the method recovers when the truth is known, not how it performs at a real "
            "clinic."
        )
    elif synthetic is False:
        first = (
            "**Own data, one setting.** Trained on one organisation's appointments; the numbers "
            "need not carry over to other clinics, populations or booking practices."
        )
    else:
        first = (
            "**Data origin not recorded.** If the rows were synthetic, the numbers say nothing "
            "about a real clinic; if they were real, they describe one setting only."
        )
    items = [
        first,
        "**Distribution shift.** Changes in booking rules, reminder systems, payer mix, "
        "seasons or clinic openings change who misses visits; re-evaluate before and after "
        "such changes.",
        "**Calibration drifts.** Predicted probabilities were calibrated on one time window; "
        "monitor observed vs predicted rates (overall and per subgroup) and recalibrate when "
        "they drift.",
        "**History needs patient ids.** Prior no-show and visit-history features need stable "
        "patient identifiers; without them every patient looks new and the risk falls back to "
        "booking-time features.",
    ]
    items += [str(x) for x in card.get("limits") or []]
    return ["## Limits", "", *(f"- {x}" for x in items), ""]


# ---------------------------------------------------------------- ranker card

RANKER_SECTIONS = (
    "Model details",
    "Intended use",
    "Labels",
    "Inputs",
    "Metrics",
    "Caveats",
    "Known limitations",
)


def render_ranker_card(card: Mapping[str, Any]) -> str:
    """Markdown model card of a specialist ranker run.

    Sections: Model details, Intended use, Labels, Inputs, Metrics, Caveats, Known limitations.
    Every key is optional; a missing part is rendered as "not recorded" (or the section says
    so), never as an error. Feature names that look like race or ethnicity are refused
    (ValueError), as on the no-show card.

    Schema (a full example):

        {
            "name": "specialist-ranker",
            "version": "3",                           # registry version, str or int
            "trained_at": "2025-01-31T09:12:00+00:00",  # str, date or datetime
            "data": {
                "source": "synthetic world data/medium",
                "synthetic": True,                    # True: generated world; False: own data
                "referrals": 41_200,                  # referrals with a historical choice
                "pairs": 1_310_000,                   # (referral, candidate) rows
                "date_range": "2023-01-02 .. 2024-12-31",  # str, or a (start, end) pair
                "windows": {...},                     # e.g. training.ranker.split_windows'
            },                                        # dict; else metrics["_windows"]
            "labels": "Logged grades 0..3 for evaluation; counterfactual ...",  # printed as is
            "features": ["distance_km", "in_network", ...],
            "metrics": training.ranker.evaluate(...), # {ranking: {metric: {"mean", "ci95"}}};
                                                      # "oracle.*" keys only with ground truth
            "caveats": ["Extra caveat for this run."],
        }
    """
    features = [str(f) for f in card.get("features") or []]
    audit = [f for f in features if any(m in f.lower() for m in AUDIT_ONLY_MARKERS)]
    if audit:
        raise ValueError(
            f"features {audit} look like race/ethnicity: those are audit-only, never inputs"
        )
    data = _mapping(card.get("data"))
    metrics = _mapping(card.get("metrics"))
    parts = [
        f"# Model card: {_text(card.get('name'), 'specialist ranker')} "
        f"(version {_text(card.get('version'))})",
        "",
        "Orders the in-network specialists that fit a referral, best match first, for the "
        "referral coordinator who helps the patient choose.",
        "",
        *_ranker_details(card, data, metrics),
        *_ranker_intended_use(),
        *_ranker_labels(card.get("labels")),
        *_ranker_inputs(features),
        *_ranker_metrics(metrics),
        *_ranker_caveats(card.get("caveats")),
        *_ranker_limits(data),
    ]
    return "\n".join(parts).rstrip() + "\n"


RANKER_METRICS = (
    ("ndcg@5", "NDCG@5 (logged)"),
    ("mrr", "MRR"),
    ("hit@5", "Hit@5"),
    ("oracle.ndcg@5", "Oracle NDCG@5"),
    ("oracle.regret@1", "Regret@1"),
)
WITH_INTERVAL = ("ndcg@5", "oracle.ndcg@5")  # shown as mean [95% CI]


def _ranker_details(
    card: Mapping[str, Any], data: Mapping[str, Any], metrics: Mapping[str, Any]
) -> list[str]:
    rows = _head_rows(card, data, "true match utility", "referrals")
    rows += [
        ["Referrals", _count(data.get("referrals"))],
        ["Candidate pairs", _count(data.get("pairs"))],
        ["Date range", _date_range(data)],
    ]
    windows = _mapping(data.get("windows")) or _mapping(metrics.get("_windows"))
    for name, value in windows.items():
        numeric = isinstance(value, int) and not isinstance(value, bool)
        label = _pretty(str(name)).capitalize()
        rows.append([label, _count(value) if numeric else _cell(value)])
    return ["## Model details", "", *_table(["Field", "Value"], rows)]


def _ranker_intended_use() -> list[str]:
    return [
        "## Intended use",
        "",
        "Rank the in-network specialists that fit a referral (specialty, distance, plan, "
        "availability) so that a referral coordinator sees the likely good matches first.",
        "",
        "> **Decision support only.** A coordinator and the patient choose the specialist; "
        "the ranking is a suggestion they may ignore. Never use it to deny or delay care, to "
        "restrict a patient's choice, or to steer patients away from specialists for "
        "reasons other than the patient's own needs.",
        "",
    ]


def _ranker_labels(labels: Any) -> list[str]:
    return [
        "## Labels",
        "",
        _text(labels, "Label design not recorded."),
        "",
        "Logged grades per referral (evaluation): 3 = chosen and completed, 2 = chosen and "
        "booked, 1 = chosen only, 0 = not chosen.",
        "",
    ]


def _ranker_inputs(features: list[str]) -> list[str]:
    lines = ["## Inputs", ""]
    if features:
        lines.append(
            f"{len(features)} pair features (referral x specialist), known at ranking time:"
        )
        lines.append("")
        lines += [f"- `{f}`" for f in features]
    else:
        lines.append("Feature list not recorded.")
    lines += ["", "Race and ethnicity are never model inputs.", ""]
    return lines


def _with_interval(value: Mapping[str, Any]) -> str:
    mean = _num(value.get("mean"))
    ci = value.get("ci95")
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        return f"{mean} [{_num(ci[0])}, {_num(ci[1])}]"
    return mean


def _ranker_metrics(metrics: Mapping[str, Any]) -> list[str]:
    lines = ["## Metrics", ""]
    names = [
        str(n) for n, v in metrics.items() if not str(n).startswith("_") and isinstance(v, Mapping)
    ]
    if not names:
        return [*lines, "Metrics not recorded.", ""]
    names = sorted(names, key=lambda n: n != "ranker")  # the model first, then as recorded
    oracle = any(k.startswith("oracle.") for n in names for k in _mapping(metrics[n]))
    columns = [(k, label) for k, label in RANKER_METRICS if oracle or not k.startswith("oracle.")]
    lines += [
        "Test window: referrals later in time than all training rows; mean per referral with "
        "a 95% bootstrap interval over referrals in brackets. Logged NDCG@5 uses the gain "
        "2^grade - 1; MRR and hit@5 find the best-graded (chosen) candidate. Logged metrics "
        "reward imitating the historical choice: the historical-choice baseline scores "
        "(nearly) perfectly on them by construction.",
        "",
    ]
    if oracle:
        lines += [
            "Oracle NDCG@5 scores the order against the true match utility (gain = utility "
            "above the referral's worst candidate); regret@1 is the best candidate's utility "
            "minus that of the one ranked first (lower is better).",
            "",
        ]
    rows = []
    for name in names:
        m = _mapping(metrics[name])
        shown = f"**{_pretty(name)}**" if name == "ranker" else _pretty(name)
        cells = []
        for key, _ in columns:
            value = _mapping(m.get(key))
            if not value:
                cells.append("—")
            elif key in WITH_INTERVAL:
                cells.append(_with_interval(value))
            else:
                cells.append(_num(value.get("mean")))
        rows.append([_cell(shown), *cells])
    lines += _table(["Ranking", *(label for _, label in columns)], rows)
    if not oracle:
        lines += [
            "No oracle metrics: the true match utility is unknown for this data, so only "
            "logged metrics (which favour the historical choice) are available.",
            "",
        ]
    return lines


def _ranker_caveats(caveats: Any) -> list[str]:
    items = [str(c) for c in caveats or []] if not isinstance(caveats, str) else [caveats]
    if not items:
        return ["## Caveats", "", "None recorded for this run.", ""]
    return ["## Caveats", "", *(f"- {c}" for c in items), ""]


def _ranker_limits(data: Mapping[str, Any]) -> list[str]:
    synthetic = data.get("synthetic")
    if synthetic is True:
        world = (
            "**Synthetic world.** Trained and evaluated on generated referrals whose true "
            "match utility is known; the numbers show what the method recovers in that "
            "world, not how it ranks for a real network of specialists and patients."
        )
    elif synthetic is False:
        world = (
            "**Own data, one network.** Trained on one organisation's referrals; the order "
            "need not carry over to other networks, regions or referral practices."
        )
    else:
        world = (
            "**Data origin not recorded.** If the referrals were synthetic, the numbers say "
            "nothing about a real network; if real, they describe one setting only."
        )
    items = [
        "**Position bias of logged data.** Historical choices were made from whatever list, "
        "habit or proximity the referring practice used: candidates that were never seen "
        "could not be chosen, so logged grades understate them and logged metrics reward "
        "imitating the old process.",
        "**The completion model only observes chosen specialists.** Completion outcomes "
        "exist only for the specialist actually chosen; the counterfactual labels of all "
        "other candidates are the model's extrapolation to pairs it never saw complete, "
        "and inherit any confounding of who was sent where.",
        world,
    ]
    return ["## Known limitations", "", *(f"- {x}" for x in items), ""]


# ---------------------------------------------------------------- outreach-uplift card

UPLIFT_SECTIONS = (
    "Model details",
    "Intended use",
    "Training population",
    "Evaluation",
    "Effect terms",
    "Promotion gates",
    "Limits",
)
UPLIFT_MIN_LEAD_DAYS = 2.0  # as features.uplift.DEFAULT_MIN_LEAD_DAYS
UPLIFT_POLICIES = (  # the four policies of the main table, in order
    ("uplift", "uplift"),
    ("risk", "risk (today's worklist)"),
    ("random", "random"),
    ("oracle", "oracle (true effect; synthetic only)"),
)
UPLIFT_KINDS = (
    ("true", "True: prevented per 100 calls [95% CI]"),
    ("estimated", "Estimated from outcomes: per 100 calls [95% CI]"),
)
EVIDENCE = {
    "true": "by the true effects of the synthetic world",
    "estimated": "as estimated from the outcomes",
}
SOURCE = {"true": "true effects", "estimated": "estimated from the outcomes"}


def render_uplift_card(card: Mapping[str, Any]) -> str:
    """Markdown model card of an outreach-uplift run.

    Sections: Model details, Intended use, Training population, Evaluation (the four-policy
    table, the other learners, a paragraph on whether uplift beats the risk worklist written
    from the numbers, ranking and calibration), Effect terms, Promotion gates, Limits. Every
    key is optional; a missing part is rendered as "not recorded" (or the section says so),
    never as an error. Term names that look like race or ethnicity are refused (ValueError).
    Per-100 figures are shown with 2 decimals.

    Schema (a full example; the values of `training.uplift.UpliftTraining`):

        {
            "name": "outreach-uplift",
            "version": "4",                           # registry version, str or int
            "trained_at": "2025-07-01T09:12:00+00:00",  # str, date or datetime
            "learner": "logit-interaction",           # or "t-learner", "dr-learner"
            "propensity": "randomised",               # or "estimated" (observational calls)
            "min_lead_days": 2.0,                     # the population: booked >= this ahead
            "data": {
                "source": "synthetic world data/world-medium",
                "synthetic": True,                    # True: generated world with true effects
                "rows": {"eligible": 92_210, "called": 11_052,
                         "test": 18_576, "test_called": 2_223},
                "windows": {"fit": "2024-01-04 .. 2025-03-17",
                            "test": "2025-03-18 .. 2025-06-30"},
            },
            "capacity_per_day": 25,                   # calls a day of every policy
            "call_share": 0.10,                       # capacity as a share of a day's visits
            "policies": r.policies.to_dict("records"),  # or the frame: policy, calls,
                                                      # estimated_per_100/_low/_high and, with
                                                      # truth, true_per_100/_low/_high
            "differences": r.metrics["differences"],  # uplift_minus_{risk,random}_{estimated,
                                                      # true}: {"value", "low", "high"}
            "auuc": r.metrics["auuc"],                # {estimated,true}_{uplift,risk,oracle}
            "average_benefit": r.metrics["average_benefit"],  # predicted, estimated,
                                                      # estimated_se, true (probabilities)
            "rank_correlation_with_true_effect": {"uplift": 0.71, "risk": 0.71},  # truth only
            "terms": [{"term": "constant", "coefficient": -0.26}, ...],  # logit-interaction
            "gates": [GateResult.to_dict(), ...],     # name, passed, value, threshold, detail
            "limits": ["Extra caveat for this run."], # appended to the standard limits
        }
    """
    terms = _records(card.get("terms"))
    audit = [
        str(t.get("term"))
        for t in terms
        if any(m in str(t.get("term")).lower() for m in AUDIT_ONLY_MARKERS)
    ]
    if audit:
        raise ValueError(
            f"effect terms {audit} look like race/ethnicity: those are audit-only, never inputs"
        )
    data = _mapping(card.get("data"))
    parts = [
        f"# Model card: {_text(card.get('name'), 'outreach-uplift')} "
        f"(version {_text(card.get('version'))})",
        "",
        "Estimates, for an appointment booked ahead, how much an outreach call lowers the "
        "chance of a no-show (the expected benefit of a call), so that the day's limited calls "
        "go to the patients a call helps most rather than simply to the riskiest.",
        "",
        *_uplift_details(card, data),
        *_uplift_intended_use(),
        *_uplift_population(card, data),
        *_uplift_evaluation(card, data),
        *_uplift_terms(card.get("learner"), terms),
        *_uplift_gates(card.get("gates")),
        *_uplift_limits(card, data),
    ]
    return "\n".join(parts).rstrip() + "\n"


def _records(value: Any) -> list[Mapping[str, Any]]:
    """Records of a frame or a list of mappings (objects with `to_dict` too); [] otherwise."""
    if value is None or isinstance(value, str | bytes | Mapping):
        return []
    if isinstance(value, pd.DataFrame):
        return list(value.to_dict(orient="records"))
    out = []
    for item in value:
        if not isinstance(item, Mapping) and callable(getattr(item, "to_dict", None)):
            item = item.to_dict()
        if isinstance(item, Mapping):
            out.append(item)
    return out


def _finite(value: Any) -> float | None:
    if _missing(value) or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _per100(value: Any, signed: bool = False) -> str:
    """A figure per 100 calls with 2 decimals ('—' when missing)."""
    x = _finite(value)
    if x is None:
        return "—"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _points(value: Any) -> str:
    """A probability as percentage points with 2 decimals."""
    x = _finite(value)
    return "—" if x is None else f"{100 * x:.2f}"


def _min_lead(card: Mapping[str, Any]) -> str:
    x = _finite(card.get("min_lead_days"))
    return f"{UPLIFT_MIN_LEAD_DAYS if x is None else x:g}"


def _share(value: Any) -> str:
    x = _finite(value)
    return "—" if x is None else f"{x:.0%}"


def _propensity_text(propensity: Any) -> str:
    if propensity == "randomised":
        return "randomised (constant: the share of appointments called)"
    if propensity == "estimated":
        return (
            "estimated (cross-fitted logistic model of the call on the features, clipped to "
            "[0.05, 0.95]; rows weighted by its inverse)"
        )
    return _text(propensity)


def _uplift_details(card: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    rows = _head_rows(card, data, "effects of a call", "appointments")
    counts = _mapping(data.get("rows"))
    capacity = _count(card.get("capacity_per_day"))
    if _finite(card.get("call_share")) is not None:
        capacity += f" ({_share(card.get('call_share'))} of an average day's eligible visits)"
    rows += [
        ["Learner", _cell(card.get("learner"))],
        ["Propensity", _cell(_propensity_text(card.get("propensity")))],
        ["Calls a day (capacity)", _cell(capacity)],
        ["Eligible appointments", _count(counts.get("eligible"))],
        ["Called", _count(counts.get("called"))],
        ["Test appointments", _count(counts.get("test"))],
        ["Called in the test window", _count(counts.get("test_called"))],
    ]
    for name, span in _mapping(data.get("windows")).items():
        rows.append([f"{_pretty(str(name)).capitalize()} window", _cell(span)])
    return ["## Model details", "", *_table(["Field", "Value"], rows)]


def _uplift_intended_use() -> list[str]:
    return [
        "## Intended use",
        "",
        "Decide whom to offer an outreach call (a reminder, help with transport or with "
        "rescheduling) within the day's calling capacity: each day, offer the calls to the "
        "appointments with the highest expected benefit, the no-shows a call is expected to "
        "prevent.",
        "",
        "> **Warning — risk and benefit are for offering help, never for denying or rationing "
        "care.** A low expected benefit means a call is not expected to change much, not that "
        "a patient deserves less: never use it to deny, delay or ration care, to overbook, or "
        "to withhold support a patient asks for. **The expected benefit is an estimate for a "
        "population, not a promise for a person:** it is the average effect of a call among "
        "appointments like this one; this patient may gain more, or nothing. Covered entities "
        "must identify and mitigate the risk of discrimination from patient care decision "
        "support tools (45 CFR 92.210, Section 1557 of the Affordable Care Act).",
        "",
    ]


def _uplift_population(card: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    counts = _mapping(data.get("rows"))
    lead = _min_lead(card)
    propensity = card.get("propensity")
    called, eligible = _finite(counts.get("called")), _finite(counts.get("eligible"))
    share = f" ({called / eligible:.1%})" if called is not None and eligible else ""
    tally = (
        f" {_count(called)} of the {_count(eligible)} were called{share}."
        if called is not None and eligible is not None
        else ""
    )
    if propensity == "estimated":
        who = "in which staff chose whom to call"
    else:
        who = "whose outreach call was randomised"
    lines = [
        "## Training population",
        "",
        f"Only appointments booked at least {lead} days ahead that ended as attended or "
        f"missed: the population {who}.{tally} Appointments booked later than that (there was "
        "no time to call) are not in it, and the model's benefit for them is not an estimate.",
        "",
    ]
    if propensity == "randomised":
        lines += [
            "The call was assigned at random, so called and uncalled appointments are "
            "comparable: the effects rest on the randomisation, with the share called as the "
            "propensity.",
            "",
        ]
    elif propensity == "estimated":
        lines += [
            "**Propensity estimated: observational calls.** The calls went to whom staff "
            "chose, so every learner weights rows by the inverse of an estimated propensity "
            "(a cross-fitted logistic model of the call on the features, clipped to "
            "[0.05, 0.95]). That removes confounding by the features only: every figure "
            "**assumes no unmeasured confounding**, no reason for calling (or not) that the "
            "features do not carry and that also changes attendance. If staff called patients "
            "for reasons they saw and the data do not, the effects are biased.",
            "",
        ]
    else:
        lines += ["Propensity (randomised or estimated) not recorded.", ""]
    if data.get("synthetic") is True:
        lines += [
            "The synthetic world also records each appointment's true effect of a call; it is "
            "used only to evaluate, never to fit.",
            "",
        ]
    return lines


def _policy_row(label: str, record: Mapping[str, Any], kinds: Sequence[str]) -> list[str]:
    calls = _count(record.get("calls"))
    if record.get("policy") == "random":
        calls = f"expected value (mean of {calls})"
    cells = []
    for kind in kinds:
        value = record.get(f"{kind}_per_100")
        low, high = record.get(f"{kind}_low"), record.get(f"{kind}_high")
        if _finite(value) is None:
            cells.append("—")
        elif _finite(low) is None or _finite(high) is None:
            cells.append(_per100(value))
        else:
            cells.append(f"{_per100(value)} [{_per100(low)}, {_per100(high)}]")
    return [_cell(label), _cell(calls), *cells]


def _interval_of(value: Any) -> tuple[float, float, float] | None:
    d = _mapping(value)
    point, low, high = (_finite(d.get(k)) for k in ("value", "low", "high"))
    if point is None or low is None or high is None:
        return None
    return point, low, high


def _verdict(low: float, high: float) -> str:
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "unclear"


def _why_wide(card: Mapping[str, Any], uplift: Mapping[str, Any]) -> str:
    counts = _mapping(_mapping(card.get("data")).get("rows"))
    called, test = _finite(counts.get("test_called")), _finite(counts.get("test"))
    if called is None:
        few = "few test appointments were called (the count was not recorded)"
    elif test is None:
        few = f"only {_count(called)} test appointments were called"
    else:
        few = f"only {_count(called)} of the {_count(test)} test appointments were called"
    low, high = _finite(uplift.get("estimated_low")), _finite(uplift.get("estimated_high"))
    spread = ""
    if low is not None and high is not None:
        spread = (
            f"; the uplift policy's own estimate spans ±{(high - low) / 2:.1f} no-shows per "
            "100 calls"
        )
    return (
        f"The outcome-based intervals are wide because {few}: a policy's estimate rests on "
        "the few called (and the uncalled) appointments among those it picks, and the effect "
        f"of a call is small next to the noise of who misses a visit{spread}."
    )


def _comparison(card: Mapping[str, Any], by: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The honest paragraph: does uplift beat the risk worklist, by how much, how sure."""
    diffs = _mapping(card.get("differences"))
    true_d = _interval_of(diffs.get("uplift_minus_risk_true"))
    est_d = _interval_of(diffs.get("uplift_minus_risk_estimated"))
    lines = ["### Does uplift beat the risk worklist?", ""]
    if true_d is None and est_d is None:
        return [*lines, "The comparison of uplift with the risk worklist was not recorded.", ""]
    basis = "true" if true_d is not None else "estimated"
    chosen = true_d if true_d is not None else est_d
    assert chosen is not None
    point, low, high = chosen
    uplift, risk = by.get("uplift", {}), by.get("risk", {})
    u, r = _finite(uplift.get(f"{basis}_per_100")), _finite(risk.get(f"{basis}_per_100"))
    figures = ""
    if u is not None and r is not None:
        figures = f" ({u:.2f} vs {r:.2f} no-shows prevented per 100 calls)"
    ci = f"95% interval {low:+.2f} to {high:+.2f}"
    verdict = _verdict(low, high)
    evidence = EVIDENCE[basis]
    if verdict == "better":
        text = (
            f"**Uplift beats the risk worklist** {evidence}: calling by expected benefit "
            f"prevents {point:.2f} more no-shows per 100 calls than calling the riskiest"
            f"{figures}, {ci}."
        )
    elif verdict == "worse":
        text = (
            f"**Uplift does worse than the risk worklist** {evidence}: calling by expected "
            f"benefit prevents {-point:.2f} fewer no-shows per 100 calls than calling the "
            f"riskiest{figures}, {ci}. Keep calling by risk."
        )
    else:
        text = (
            f"**Uplift and the risk worklist cannot be told apart** {evidence}: the difference "
            f"is {point:+.2f} no-shows prevented per 100 calls{figures}, and its {ci} "
            "includes zero."
        )
    paragraph = [text]
    if basis == "true":
        paragraph.append(
            "(The true-effect intervals are narrow because every appointment's effect is "
            "known: only the resampling of test days varies.)"
        )
        if est_d is not None:
            e_point, e_low, e_high = est_d
            e_ci = f"{e_point:+.2f} [{e_low:+.2f}, {e_high:+.2f}]"
            e_verdict = _verdict(e_low, e_high)
            if e_verdict == "unclear":
                paragraph.append(
                    "From the outcomes alone, the only evidence a real clinic has, the "
                    f"difference is {e_ci} per 100 calls: too wide to tell uplift from risk. "
                    + _why_wide(card, uplift)
                )
            elif e_verdict == verdict:
                paragraph.append(f"The estimate from the outcomes alone agrees: {e_ci}.")
            else:
                said = "better" if e_verdict == "better" else "worse"
                paragraph.append(
                    f"The estimate from the outcomes alone says uplift is {said} ({e_ci}), "
                    "unlike the true effects: a warning that it is noisy. "
                    + _why_wide(card, uplift)
                )
    elif verdict == "unclear":
        paragraph.append(
            _why_wide(card, uplift) + " More (randomised) calls are needed before replacing "
            "the risk worklist on this evidence."
        )
    random_d = _interval_of(diffs.get(f"uplift_minus_random_{basis}"))
    if random_d is not None:
        rp, rl, rh = random_d
        paragraph.append(
            f"Against calling at random, uplift prevents {rp:+.2f} no-shows per 100 calls "
            f"[{rl:+.2f}, {rh:+.2f}] ({SOURCE[basis]})."
        )
    return [*lines, " ".join(paragraph), ""]


def _uplift_evaluation(card: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    lines = ["## Evaluation", ""]
    records = _records(card.get("policies"))
    by = {str(r.get("policy")): r for r in records}
    truth = any(_finite(r.get("true_per_100")) is not None for r in records)
    kinds = [k for k, _ in UPLIFT_KINDS if k == "estimated" or truth]
    window = _mapping(data.get("windows")).get("test")
    where = f"Test window ({_text(window)})" if window else "Test window"
    capacity = _count(card.get("capacity_per_day"))
    outcomes = (
        "the outcomes, weighted by the estimated propensity"
        if card.get("propensity") == "estimated"
        else "the randomised outcomes"
    )
    lines += [
        f"{where}, later in time than every row the models were fitted on. Each policy calls at "
        f"most {capacity} appointments a day, highest score first; the figures are no-shows "
        "prevented per 100 calls with 95% bootstrap intervals over test days. **Estimated** is "
        "the mean doubly robust pseudo-outcome of the appointments called, from "
        f"{outcomes} (needs no truth: what a real clinic can measure)."
        + (
            " **True** is the mean true effect of those called (synthetic world only)."
            if truth
            else " No true figures: the true effects are unknown for this data."
        ),
        "",
    ]
    if not records:
        lines += ["Policy evaluation not recorded.", ""]
    else:
        learner = card.get("learner")
        header = ["Policy", "Calls", *(label for k, label in UPLIFT_KINDS if k in kinds)]
        main = []
        for key, label in UPLIFT_POLICIES:
            if key not in by:
                continue
            if key == "uplift":
                label = f"**uplift ({_text(learner, 'chosen learner')})**"
            main.append(_policy_row(label, by[key], kinds))
        lines += _table(header, main)
        note = (
            "Risk is today's worklist: the riskiest appointments (the no-show model's risk "
            "without a call) first. Random is the expected value of calling at random."
        )
        if "oracle" in by:
            note += " The oracle calls by the true effect: no policy can do better."
        lines += [note, ""]
        others = [r for r in records if str(r.get("policy")) not in dict(UPLIFT_POLICIES)]
        if others:
            lines += [
                "### Other learners",
                "",
                "The learners not chosen, fitted on the same rows and evaluated the same way:",
                "",
                *_table(header, [_policy_row(str(r.get("policy")), r, kinds) for r in others]),
            ]
    lines += _comparison(card, by)
    lines += _ranking_and_calibration(card)
    return lines


def _ranking_and_calibration(card: Mapping[str, Any]) -> list[str]:
    lines = ["### Ranking and calibration", ""]
    areas = _mapping(card.get("auuc"))
    names: list[str] = []
    for key in areas:
        for kind in ("estimated_", "true_"):
            if str(key).startswith(kind) and str(key)[len(kind) :] not in names:
                names.append(str(key)[len(kind) :])
    if names:
        truth = any(str(k).startswith("true_") for k in areas)
        header = ["Score", "AUUC, estimated", *(["AUUC, true"] if truth else [])]
        rows = []
        for name in names:
            row = [_cell(name), _per100(_scaled(areas.get(f"estimated_{name}")))]
            if truth:
                row.append(_per100(_scaled(areas.get(f"true_{name}"))))
            rows.append(row)
        lines += [
            "Area under the Qini curve (AUUC): cumulative no-shows prevented per 100 test "
            "appointments as the share called, best-first by each score, goes from 0 to 100% "
            "(ranked over the whole window). Calling at random gives half the curves' end point.",
            "",
            *_table(header, rows),
        ]
    else:
        lines += ["AUUC not recorded.", ""]
    benefit = _mapping(card.get("average_benefit"))
    if benefit:
        se = _finite(benefit.get("estimated_se"))
        plus = f" ± {_points(1.96 * se)}" if se is not None else ""
        true = (
            f", true {_points(benefit.get('true'))}"
            if _finite(benefit.get("true")) is not None
            else ""
        )
        lines += [
            "Average benefit of a call over the test appointments, in percentage points of "
            f"no-show probability: predicted {_points(benefit.get('predicted'))}, estimated "
            f"from the outcomes {_points(benefit.get('estimated'))}{plus}{true}.",
            "",
        ]
    correlation = _mapping(card.get("rank_correlation_with_true_effect"))
    if correlation:
        shown = ", ".join(f"{_pretty(str(k))} {_num(v)}" for k, v in correlation.items())
        lines += [f"Spearman rank correlation with the true effect: {shown}.", ""]
    return lines


def _scaled(value: Any) -> float | None:
    x = _finite(value)
    return None if x is None else 100 * x


def _uplift_terms(learner: Any, terms: list[Mapping[str, Any]]) -> list[str]:
    lines = ["## Effect terms", ""]
    if learner not in (None, "logit-interaction"):
        return [
            *lines,
            f"The {_text(learner)} learner has no effect terms to show: its benefit comes from "
            "LightGBM models.",
            "",
        ]
    if not terms:
        return [*lines, "Effect terms not recorded.", ""]
    lines += [
        "The logit-interaction learner: a call shifts the log-odds of a no-show by "
        "constant + Σ coefficient × term. Each coefficient is the change in the log-odds of a "
        "no-show when called per unit of the standardised term (numeric terms: one standard "
        "deviation of the fit window from its mean; `column = level`: that level instead of "
        "the most common one; `column >= value`: at or above the threshold). **Negative = the "
        "call helps more** (fewer no-shows); positive = it helps less. The constant is the "
        "shift for an appointment at the mean of every numeric term and the reference level "
        "of every indicator.",
        "",
    ]
    rows = []
    for t in terms:
        name = str(t.get("term"))
        coef = _finite(t.get("coefficient"))
        if coef is None:
            reading, ratio = "—", "—"
        else:
            ratio = f"{math.exp(coef):.3f}"
            if name == "constant":
                reading = "a call lowers no-shows" if coef < 0 else "a call does not lower them"
            else:
                reading = "call helps more" if coef < 0 else ("call helps less" if coef else "—")
        rows.append([f"`{_cell(name)}`", _num(coef), ratio, reading])
    return lines + _table(["Term", "Coefficient", "Odds ratio per unit", "Reading"], rows)


def _uplift_gates(gates: Any) -> list[str]:
    lines = ["## Promotion gates", ""]
    records = _records(gates)
    if not records:
        return [*lines, "Not evaluated for this run.", ""]
    failed = [str(r.get("name")) for r in records if r.get("passed") is not True]
    if failed:
        lines += [f"**{len(failed)} of {len(records)} gate(s) failed:** {', '.join(failed)}.", ""]
    else:
        lines += [f"All {len(records)} gates passed.", ""]
    rows = [
        [
            _cell(r.get("name")),
            "pass" if r.get("passed") is True else "**FAIL**",
            _num(r.get("value")),
            _num(r.get("threshold")),
            _cell(r.get("detail")),
        ]
        for r in records
    ]
    return lines + _table(["Gate", "Result", "Value", "Threshold", "Detail"], rows)


def _uplift_limits(card: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    synthetic = data.get("synthetic")
    if synthetic is True:
        world = (
            "**Synthetic data.** Trained and evaluated on a generated world whose effects of a "
            "call are known: the numbers show what the method recovers there, not how much a "
            "call helps at a real clinic."
        )
    elif synthetic is False:
        world = (
            "**Own data, one setting.** Trained on one organisation's calls; the effects need "
            "not carry over to other clinics, populations, callers or call scripts."
        )
    else:
        world = (
            "**Data origin not recorded.** If the rows were synthetic, the numbers say nothing "
            "about a real clinic; if they were real, they describe one setting only."
        )
    items = [
        "**Race and ethnicity are never inputs**, neither of the no-show features nor of the "
        "effect terms.",
        f"**Only the randomised population.** Effects are estimated for appointments booked at "
        f"least {_min_lead(card)} days ahead, where calls were made; for later bookings, or "
        "for patients, clinics or kinds of call unlike those in the data, the model "
        "extrapolates and its benefit is not an estimate.",
        world,
        "**One capacity, one call.** The per-100 figures hold for the capacity evaluated "
        f"({_count(card.get('capacity_per_day'))} calls a day) and for the calls as they were "
        "made; a different capacity, caller, script or channel changes them.",
    ]
    if card.get("propensity") == "estimated":
        items.append(
            "**Observational calls.** With an estimated propensity every effect assumes no "
            "unmeasured confounding; it cannot be checked from these data."
        )
    items += [str(x) for x in card.get("limits") or []]
    return ["## Limits", "", *(f"- {x}" for x in items), ""]
