"""Report artefacts of a no-show run: the PNG plots and the Markdown model card."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.model_card import RATIO_BAND, SECTIONS, SMALL_SUBGROUP, render_no_show_card
from training.plots import (
    calibration_plot,
    gain_by_threshold_plot,
    roc_pr_plot,
    shap_summary_plot,
    subgroup_calibration_plot,
)

pytestmark = pytest.mark.unit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(autouse=True)
def no_figures_left_open() -> Iterator[None]:
    """Every test starts and ends with no open matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a plot function left a figure open"


@pytest.fixture
def drawn_titles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Titles (axes titles and suptitles) of every figure saved during the test."""
    from matplotlib.figure import Figure

    titles: list[str] = []
    original = Figure.savefig

    def spy(self: Figure, *args: Any, **kwargs: Any) -> Any:
        titles.extend(ax.get_title() for ax in self.axes)
        titles.append(self.get_suptitle())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return titles


def assert_valid_png(path: Path) -> tuple[int, int]:
    """A complete PNG: signature, IHDR first, IEND last, every chunk's CRC right. Its size."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300 and height > 300
    assert len(data) > 10_000  # something was drawn
    return width, height


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    """5,000 test rows of a seeded synthetic world: truth, labels, model and baselines."""
    rng = np.random.default_rng(20240611)
    n = 5_000
    lead = rng.gamma(2.0, 8.0, n)
    prior = rng.poisson(0.4, n)
    payer = rng.choice(
        ["commercial", "medicaid", "medicare", "self_pay"], n, p=[0.5, 0.25, 0.2, 0.05]
    )
    logit = -2.0 + 0.03 * lead + 0.6 * prior + np.where(payer == "medicaid", 0.5, 0.0)
    truth = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < truth).astype(int)
    model = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.35, n))))
    logistic = 1 / (1 + np.exp(-(-1.6 + 0.02 * lead + 0.4 * prior)))
    return {
        "y": y,
        "truth": truth,
        "lead": lead,
        "prior": prior,
        "payer": payer,
        "scores": {
            "model": model,
            "base_rate": np.full(n, y.mean()),
            "logistic_regression": logistic,
            "prior_no_show_and_lead_rule": np.where(prior > 0, 0.3, 0.15),
            "ground-truth ceiling": truth,
        },
    }


def subgroup_frame(y: np.ndarray, p: np.ndarray, groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """The subgroup table's columns, computed here without the training code."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for group, levels in groups.items():
        for level in sorted(set(levels)):
            m = levels == level
            rows.append(
                {
                    "group": group,
                    "level": level,
                    "n": int(m.sum()),
                    "auc": roc_auc_score(y[m], p[m]),
                    "mean_predicted": p[m].mean(),
                    "observed": y[m].mean(),
                    "observed_over_predicted": y[m].mean() / p[m].mean(),
                    "calibration_slope": 1.0,
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- plots


def test_roc_pr_plot_writes_a_png(world: dict[str, Any], tmp_path: Path) -> None:
    out = roc_pr_plot(world["y"], world["scores"], tmp_path / "nested" / "roc_pr.png")
    assert out == tmp_path / "nested" / "roc_pr.png"
    assert_valid_png(out)


def test_roc_pr_plot_refuses_a_single_class(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="single class"):
        roc_pr_plot(np.zeros(10), {"model": np.linspace(0, 1, 10)}, tmp_path / "x.png")


def test_calibration_plot_writes_a_png_with_and_without_oracle(
    world: dict[str, Any], tmp_path: Path
) -> None:
    assert_valid_png(
        calibration_plot(
            world["y"], world["scores"]["model"], tmp_path / "c1.png", oracle=world["truth"]
        )
    )
    assert_valid_png(calibration_plot(world["y"], world["scores"]["model"], tmp_path / "c2.png"))


def _ece_in(titles: list[str]) -> float:
    found = [m for t in titles if (m := re.search(r"ECE = (\d+\.\d{3})", t))]
    assert len(found) == 1, titles
    return float(found[0].group(1))


def test_calibration_title_shows_the_ece_of_a_known_case(
    drawn_titles: list[str], tmp_path: Path
) -> None:
    # Given 10 groups of 500 rows, each with one predicted probability and a known event count
    predicted = np.round(np.linspace(0.05, 0.50, 10), 3)
    events = np.array([40, 30, 80, 60, 150, 100, 170, 210, 180, 260])
    p = np.repeat(predicted, 500)
    y = np.concatenate([np.r_[np.ones(k), np.zeros(500 - k)] for k in events])
    # (shuffled, so the bins must come from sorting the predictions)
    order = np.random.default_rng(1).permutation(len(y))
    # When the calibration plot is drawn on 10 equal-mass bins
    calibration_plot(y[order], p[order], tmp_path / "known.png", bins=10)
    # Then the title's ECE is the mean |observed - predicted| over the ten equal-size groups
    # |gaps| = .03 .04 .01 .08 .05 .10 .01 .02 .09 .02, mean 0.045
    expected = np.mean(np.abs(events / 500 - predicted))
    assert expected == pytest.approx(0.045)
    assert _ece_in(drawn_titles) == 0.045


def test_calibration_title_ece_matches_an_independent_computation(
    world: dict[str, Any], drawn_titles: list[str], tmp_path: Path
) -> None:
    y, p = world["y"], world["scores"]["model"]
    calibration_plot(y, p, tmp_path / "c.png", bins=10)
    # Decile of each row by its rank (5,000 rows: ten bins of exactly 500)
    decile = np.empty(len(p), dtype=int)
    decile[np.argsort(p, kind="stable")] = np.arange(len(p)) // 500
    frame = pd.DataFrame({"y": y, "p": p, "bin": decile}).groupby("bin").mean()
    expected = float((frame["y"] - frame["p"]).abs().mean())
    assert _ece_in(drawn_titles) == pytest.approx(expected, abs=5e-4)


def test_calibration_title_agrees_with_the_logged_ece_metric(
    world: dict[str, Any], drawn_titles: list[str], tmp_path: Path
) -> None:
    from training.metrics import expected_calibration_error

    y, p = world["y"][:4_321], world["scores"]["model"][:4_321]  # uneven bins
    calibration_plot(y, p, tmp_path / "c.png")
    assert _ece_in(drawn_titles) == pytest.approx(expected_calibration_error(y, p), abs=5e-4)


@pytest.mark.filterwarnings("error")
def test_subgroup_calibration_plot_writes_a_png_titled_audit(
    world: dict[str, Any], drawn_titles: list[str], tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    n = len(world["y"])
    groups = {
        "age_band": rng.choice(["0-17", "18-39", "40-64", "65+"], n),
        "sex": rng.choice(["F", "M"], n),
        "payer_type": world["payer"],
        "race_ethnicity (audit only)": rng.choice(
            ["Asian", "Black", "Hispanic", "White", "unknown"], n
        ),
    }
    table = subgroup_frame(world["y"], world["scores"]["model"], groups)
    table.loc[table["level"] == "Black", "observed_over_predicted"] = 1.4  # one flagged level
    # Tiny levels as a real test window has them: no events (ratio 0) and one row (ratio 5.3)
    tiny = pd.DataFrame(
        [
            ["language", "ko", 9, np.nan, 0.087, 0.0, 0.0, np.nan],
            ["language", "ht", 1, np.nan, 0.187, 1.0, 5.348, np.nan],
        ],
        columns=table.columns,
    )
    table = pd.concat([table, tiny], ignore_index=True)
    assert_valid_png(subgroup_calibration_plot(table, tmp_path / "subgroups.png"))
    assert any("audit" in t for t in drawn_titles)


def test_subgroup_calibration_plot_tolerates_an_empty_table(tmp_path: Path) -> None:
    empty = pd.DataFrame(
        columns=[
            "group",
            "level",
            "n",
            "auc",
            "mean_predicted",
            "observed",
            "observed_over_predicted",
            "calibration_slope",
        ]
    )
    assert_valid_png(subgroup_calibration_plot(empty, tmp_path / "empty.png"))
    with pytest.raises(ValueError, match="lacks columns"):
        subgroup_calibration_plot(empty.drop(columns="auc"), tmp_path / "bad.png")


def test_shap_summary_plot_handles_categoricals_and_missing_values(
    world: dict[str, Any], tmp_path: Path
) -> None:
    rng = np.random.default_rng(9)
    n = 2_000
    X = pd.DataFrame(
        {
            "lead_days": world["lead"][:n],
            "prior_no_shows": world["prior"][:n],
            "payer_type": pd.Categorical(world["payer"][:n]),
            "language": pd.Categorical(
                rng.choice(["en", "es", None], n, p=[0.8, 0.15, 0.05]), categories=["en", "es"]
            ),
            "same_day": rng.random(n) < 0.1,
            "distance_km": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2, 5, n)),
            **{f"noise_{i}": rng.normal(size=n) for i in range(14)},
        }
    )
    contributions = pd.DataFrame(
        {
            "lead_days": 0.03 * (X["lead_days"] - X["lead_days"].mean()),
            "prior_no_shows": 0.6 * (X["prior_no_shows"] - 0.4),
            "payer_type": np.where(X["payer_type"] == "medicaid", 0.4, -0.1),
            "language": np.where(X["language"] == "es", 0.2, -0.02),
            "same_day": np.where(X["same_day"], -0.3, 0.03),
            "distance_km": np.nan_to_num(0.01 * (X["distance_km"] - 10)),
            **{f"noise_{i}": rng.normal(0, 0.01, n) for i in range(14)},
        },
        index=X.index,
    )[list(X.columns)]
    assert_valid_png(shap_summary_plot(contributions, X, tmp_path / "shap.png"))
    with pytest.raises(ValueError, match="lack feature columns"):
        shap_summary_plot(contributions.drop(columns="same_day"), X, tmp_path / "bad.png")


def test_gain_plot_writes_a_png(world: dict[str, Any], tmp_path: Path) -> None:
    assert_valid_png(
        gain_by_threshold_plot(world["y"], world["scores"]["model"], tmp_path / "gain.png")
    )


def test_plots_close_their_figure_when_writing_fails(world: dict[str, Any], tmp_path: Path) -> None:
    # Given a destination whose parent is a file, so the PNG cannot be written
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    y, p = world["y"], world["scores"]["model"]
    # Then each plot raises and (checked by the autouse fixture) leaves no figure open
    with pytest.raises(OSError):
        calibration_plot(y, p, blocker / "calibration.png")
    with pytest.raises(OSError):
        gain_by_threshold_plot(y, p, blocker / "gain.png")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_plot(np.array([0, 1]), np.array([0.2, 1.5]), tmp_path / "x.png")


# ---------------------------------------------------------------- model card


def _metrics(auc: float) -> dict[str, float]:
    return {
        "roc_auc": auc,
        "pr_auc": 0.38123,
        "brier": 0.14,
        "log_loss": 0.4412,
        "ece": 0.0123,
        "recall_at_20pct_daily": 0.4109,
    }


def full_card(**overrides: Any) -> dict[str, Any]:
    subgroups = pd.DataFrame(
        [
            ["sex", "F", 2600, 0.70, 0.20, 0.21, 1.05, 0.98],
            ["sex", "M", 2400, 0.71, 0.19, 0.18, 0.947, 1.02],
            ["payer_type", "self_pay", 250, np.nan, 0.30, 0.21, 0.70, np.nan],
            ["race_ethnicity (audit only)", "Black", 800, 0.69, 0.20, 0.28, 1.4, 0.93],
        ],
        columns=[
            "group",
            "level",
            "n",
            "auc",
            "mean_predicted",
            "observed",
            "observed_over_predicted",
            "calibration_slope",
        ],
    )
    card: dict[str, Any] = {
        "name": "no-show",
        "version": "7",
        "trained_at": "2025-01-31T09:12:00+00:00",
        "data": {
            "source": "synthetic world data/small",
            "synthetic": True,
            "rows": 48_211,
            "date_range": "2023-01-02 .. 2024-12-31",
            "no_show_rate": 0.18734,
            "windows": {"train": "2023-01-02 .. 2024-03-10", "test": "2024-08-21 .. 2024-12-31"},
        },
        "features": ["lead_days", "same_day", "prior_no_shows", "age", "payer_type"],
        "metrics": {
            "model": _metrics(0.71234),
            "baselines": {"base_rate": _metrics(0.5), "logistic_regression": _metrics(0.65)},
            "ceiling": _metrics(0.7654),
        },
        "subgroups": subgroups,
        "calibration": "Platt scaling of LightGBM log-odds, fitted on the calibration window",
        "tiers": {"medium": 0.15, "high": 0.30},
    }
    card.update(overrides)
    return card


def section(markdown: str, title: str) -> str:
    """The text of one `## title` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def test_card_has_every_section_in_order() -> None:
    md = render_no_show_card(full_card())
    positions = [md.index(f"\n## {s}\n") for s in SECTIONS]
    assert positions == sorted(positions)
    assert set(SECTIONS) >= {
        "Model details",
        "Intended use",
        "Inputs",
        "Metrics",
        "Subgroups",
        "Calibration method",
        "Limits",
    }
    details = section(md, "Model details")
    for text in ("no-show", "7", "2025-01-31", "48,211", "2023-01-02 .. 2024-12-31", "0.187"):
        assert text in details
    assert "synthetic" in details


def test_card_warns_against_denying_care_and_overbooking() -> None:
    use = section(render_no_show_card(full_card()), "Intended use")
    assert "never use this score to deny care, to overbook or to double-book" in use
    for text in ("reminders", "call", "transport", "Samorani", "30%", "45 CFR 92.210"):
        assert text in use
    assert "medium: risk ≥ 0.150" in use


def test_card_metrics_table_has_model_baselines_and_ceiling_to_3_decimals() -> None:
    metrics = section(render_no_show_card(full_card()), "Metrics")
    for header in ("ROC-AUC", "PR-AUC", "Brier", "Log loss", "ECE", "Recall @ top 20%/day"):
        assert header in metrics
    model_row = next(line for line in metrics.splitlines() if line.startswith("| **model**"))
    assert "| 0.712 | 0.381 | 0.140 | 0.441 | 0.012 | 0.411 |" in model_row
    assert "baseline: logistic regression" in metrics
    assert "| ground-truth ceiling | 0.765 |" in metrics


def test_card_flags_a_subgroup_outside_the_ratio_band() -> None:
    assert RATIO_BAND == (0.8, 1.25)
    subgroups = section(render_no_show_card(full_card()), "Subgroups")
    rows = {line.split(" | ")[1]: line for line in subgroups.splitlines() if line.startswith("| ")}
    assert "⚠ outside" in rows["Black"] and "1.400" in rows["Black"]
    assert "small" not in rows["Black"]  # 800 rows
    assert "⚠ outside 0.8–1.25 (small)" in rows["self_pay"]  # 0.70 on 250 rows
    assert "⚠" not in rows["F"] and "⚠" not in rows["M"]
    assert "2 level(s) outside 0.8–1.25 (1 of them small):" in subgroups
    assert "race_ethnicity (audit only) = Black (1.400)" in subgroups
    assert "| — |" in rows["self_pay"]  # missing AUC


def test_card_thresholds_match_the_promotion_gate() -> None:
    from training.metrics import SUBGROUP_MIN_ROWS
    from training.promotion import RATIO_BAND as GATE_BAND

    assert tuple(RATIO_BAND) == tuple(GATE_BAND)
    assert SMALL_SUBGROUP == SUBGROUP_MIN_ROWS


def test_card_omits_the_ceiling_gracefully_for_own_data() -> None:
    own = full_card(data={"source": "own data visits.csv", "synthetic": False, "rows": 900})
    own["metrics"] = {**own["metrics"], "ceiling": None}
    md = render_no_show_card(own)
    metrics = section(md, "Metrics")
    assert "ground-truth ceiling |" not in metrics
    assert "No ground-truth ceiling" in metrics
    assert "own data" in section(md, "Model details")
    assert "Own data, one setting" in section(md, "Limits")
    del own["metrics"]["ceiling"]
    assert "ground-truth ceiling |" not in section(render_no_show_card(own), "Metrics")


def test_card_tolerates_a_minimal_dict_and_subgroup_records() -> None:
    md = render_no_show_card({"name": "no-show"})
    for s in SECTIONS:
        assert f"## {s}" in md
    assert "not recorded" in md
    records = full_card()["subgroups"].replace({np.nan: None}).to_dict(orient="records")
    md = render_no_show_card(
        full_card(subgroups=records, calibration={"method": "platt", "a": 1.02})
    )
    assert "⚠ outside" in section(md, "Subgroups")
    assert "- A: 1.020" in section(md, "Calibration method")
    with pytest.raises(ValueError, match="name"):
        render_no_show_card({})


def test_card_never_lists_race_or_ethnicity_as_an_input() -> None:
    md = render_no_show_card(full_card())
    inputs = section(md, "Inputs")
    listed = [line for line in inputs.splitlines() if line.startswith("- ")]
    assert len(listed) == 5
    assert not any(re.search("race|ethnic", line, re.I) for line in listed)
    mentions = [line for line in inputs.splitlines() if re.search("race|ethnic", line, re.I)]
    assert mentions and all("never model inputs" in line for line in mentions)
    assert "race" not in section(md, "Metrics").lower()
    with pytest.raises(ValueError, match="audit-only"):
        render_no_show_card(full_card(features=["lead_days", "race_ethnicity"]))
