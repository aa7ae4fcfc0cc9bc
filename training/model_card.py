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
