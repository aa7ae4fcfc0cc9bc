"""Report artefacts of an outreach-uplift run: the three PNGs and the Markdown model card."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.model_card import UPLIFT_SECTIONS, render_uplift_card
from training.plots_uplift import benefit_calibration_plot, policy_plot, qini_plot
from training.uplift import auuc

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
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Titles, legend texts and y tick labels of every figure saved during the test."""
    from matplotlib.figure import Figure

    figures: list[dict[str, Any]] = []
    original = Figure.savefig

    def spy(self: Figure, *args: Any, **kwargs: Any) -> Any:
        figures.append(
            {
                "titles": [ax.get_title() for ax in self.axes],
                "suptitle": self.get_suptitle(),
                "yticks": [t.get_text() for ax in self.axes for t in ax.get_yticklabels()],
                "legend": [
                    [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
                    for ax in self.axes
                ],
            }
        )
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return figures


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000  # something was drawn


def qini_frame(truth: bool) -> pd.DataFrame:
    """Curves per appointment as `training.uplift.qini_curves`: all end at the same point."""
    f = np.linspace(0, 1, 21)
    end = 0.03
    out = {
        "fraction": f,
        "estimated_uplift": end * np.sqrt(f) + 0.004 * np.sin(9 * f),
        "estimated_risk": end * f**0.7,
    }
    if truth:
        out |= {
            "true_uplift": end * f**0.5,
            "true_risk": end * f**0.6,
            "estimated_oracle": end * f**0.3,
            "true_oracle": end * f**0.35,
        }
    return pd.DataFrame(out)


def policies_frame(truth: bool) -> pd.DataFrame:
    rows = [
        ("oracle", 1875, 13.4, 6.8, 20.1, 11.39, 11.22, 11.57),
        ("uplift", 1875, 4.55, -2.34, 11.41, 7.78, 7.60, 7.97),
        ("risk", 1875, 9.10, 2.79, 15.42, 6.98, 6.79, 7.20),
        ("uplift (t-learner)", 1875, 4.66, -2.21, 11.61, 7.19, 7.02, 7.37),
        ("uplift (dr-learner)", 1875, -1.87, -4.11, 0.59, 5.90, 5.71, 6.10),
        ("random", 18576, 2.93, 1.69, 4.20, 3.63, 3.58, 3.68),
    ]
    columns = [
        "policy",
        "calls",
        "estimated_per_100",
        "estimated_low",
        "estimated_high",
        "true_per_100",
        "true_low",
        "true_high",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    if not truth:
        frame = frame[frame["policy"] != "oracle"].drop(columns=columns[5:])
    return frame.reset_index(drop=True)


def calibration_frame(truth: bool) -> pd.DataFrame:
    predicted = np.linspace(0.006, 0.077, 10)
    frame = pd.DataFrame(
        {
            "decile": np.arange(1, 11),
            "rows": np.full(10, 1857),
            "predicted": predicted,
            "estimated": predicted
            + np.array([-2, 2, 0.5, 0.4, 2, 1.5, -3.7, -0.3, -0.5, -2.7]) / 100,
        }
    )
    if truth:
        frame["true"] = predicted * 1.05 + 0.001
    return frame


def interval(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high}


def full_card(truth: bool = True, **changes: Any) -> dict[str, Any]:
    policies = policies_frame(truth)
    differences = {
        "uplift_minus_risk_estimated": interval(-4.55, -11.55, 1.91),
        "uplift_minus_random_estimated": interval(1.63, -4.63, 8.25),
    }
    auuc_values = {"estimated_uplift": 0.0174, "estimated_risk": 0.0201}
    if truth:
        differences |= {
            "uplift_minus_risk_true": interval(0.80, 0.53, 1.08),
            "uplift_minus_random_true": interval(4.15, 3.98, 4.32),
        }
        auuc_values |= {"true_uplift": 0.0244, "true_risk": 0.0245, "estimated_oracle": 0.0257}
    card: dict[str, Any] = {
        "name": "outreach-uplift",
        "version": "4",
        "trained_at": "2025-07-01T09:12:00+00:00",
        "learner": "logit-interaction",
        "propensity": "randomised",
        "data": {
            "source": "synthetic world data/world-medium",
            "synthetic": truth,
            "rows": {"eligible": 92_210, "called": 11_052, "test": 18_576, "test_called": 2_223},
            "windows": {"fit": "2024-01-04 .. 2025-03-17", "test": "2025-03-18 .. 2025-06-30"},
        },
        "capacity_per_day": 25,
        "call_share": 0.10,
        "policies": policies.to_dict("records"),
        "differences": differences,
        "auuc": auuc_values,
        "average_benefit": {"predicted": 0.0321, "estimated": 0.0293, "estimated_se": 0.0076},
        "terms": [
            {"term": "constant", "coefficient": -0.257},
            {"term": "distance_km", "coefficient": -0.0387},
            {"term": "language = es", "coefficient": 0.0761},
        ],
    }
    if truth:
        card["average_benefit"]["true"] = 0.0363
        card["rank_correlation_with_true_effect"] = {"uplift": 0.705, "risk": 0.709}
    card.update(changes)
    return card


def section(markdown: str, title: str) -> str:
    """The text of one `## title` section (with its ### subsections)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def honest(markdown: str) -> str:
    match = re.search(
        r"^### Does uplift beat the risk worklist\?\n(.*?)(?=^##)", markdown, re.S | re.M
    )
    assert match, "no comparison paragraph"
    return match.group(1).strip()


def table_row(markdown: str, first_cell: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


# ---------------------------------------------------------------- Qini plot


@pytest.mark.parametrize("truth", [True, False])
def test_qini_plot_writes_a_png_with_one_panel_per_kind(
    tmp_path: Path, drawn: list[dict[str, Any]], truth: bool
) -> None:
    path = qini_plot(qini_frame(truth), tmp_path / "sub" / "qini.png")
    assert path == tmp_path / "sub" / "qini.png"
    assert_png(path)
    (figure,) = drawn
    titles = [t for t in figure["titles"] if t]
    if truth:
        assert titles == [
            "Estimated from the randomised outcomes",
            "True effects (synthetic world)",
        ]
    else:
        assert titles == ["Estimated from the randomised outcomes"]


def test_qini_legend_gives_each_curve_its_auuc_uplift_first(
    tmp_path: Path, drawn: list[dict[str, Any]]
) -> None:
    qini = qini_frame(True)
    qini_plot(qini, tmp_path / "qini.png")
    estimated, true = drawn[0]["legend"]
    frac = qini["fraction"].to_numpy()
    expected = auuc(100 * qini["estimated_uplift"].to_numpy(), frac)
    assert estimated[0] == f"uplift (chosen model) (AUUC {expected:.2f})"
    assert any(t.startswith("risk (today's worklist) (AUUC") for t in estimated)
    assert any(t.startswith("oracle (true effect) (AUUC") for t in true)
    # random: the straight line to the curves' end point (3 per 100), area half of it
    assert "random (AUUC 1.50)" in estimated
    assert "random (AUUC 1.50)" in true


def test_qini_plot_without_curves_refuses_and_closes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no estimated"):
        qini_plot(pd.DataFrame({"fraction": [0.0, 1.0]}), tmp_path / "qini.png")
    assert not (tmp_path / "qini.png").exists()


# ---------------------------------------------------------------- policy plot


@pytest.mark.parametrize("truth", [True, False])
def test_policy_plot_writes_a_png_true_panel_first(
    tmp_path: Path, drawn: list[dict[str, Any]], truth: bool
) -> None:
    assert_png(policy_plot(policies_frame(truth), 25, tmp_path / "policies.png"))
    (figure,) = drawn
    expected = ["Estimated from the randomised outcomes"]
    if truth:
        expected.insert(0, "True effects (synthetic world)")
    assert figure["titles"] == expected
    assert "25 appointments a day" in figure["suptitle"]
    policies = [t.split("\n")[0] for t in figure["yticks"] if t]
    names = ["uplift (chosen model)", "risk (today's worklist)", "random"]
    assert set(names) <= set(policies)
    assert ("oracle (true effect)" in policies) is truth


def test_policy_plot_skips_missing_truth_of_a_policy(tmp_path: Path) -> None:
    policies = policies_frame(True)
    policies.loc[policies["policy"] == "uplift (dr-learner)", "true_per_100"] = np.nan
    assert_png(policy_plot(policies, 7, tmp_path / "policies.png"))


def test_policy_plot_needs_a_figure_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_100"):
        policy_plot(pd.DataFrame({"policy": ["uplift"], "calls": [3]}), 5, tmp_path / "p.png")


# ---------------------------------------------------------------- benefit calibration plot


@pytest.mark.parametrize("truth", [True, False])
def test_benefit_calibration_plot_writes_a_png(
    tmp_path: Path, drawn: list[dict[str, Any]], truth: bool
) -> None:
    assert_png(benefit_calibration_plot(calibration_frame(truth), tmp_path / "calibration.png"))
    (figure,) = drawn
    (legend,) = figure["legend"]
    assert "estimated from the randomised outcomes" in legend
    assert "perfect calibration (y = x)" in legend
    assert ("true effect (synthetic world)" in legend) is truth
    assert "n = 18,570" in figure["titles"][0]


def test_benefit_calibration_plot_needs_the_estimate(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="estimated"):
        benefit_calibration_plot(
            calibration_frame(False).drop(columns="estimated"), tmp_path / "c.png"
        )


# ---------------------------------------------------------------- the card: structure


def test_card_has_every_section_in_order() -> None:
    md = render_uplift_card(full_card())
    positions = [md.index(f"\n## {s}\n") for s in UPLIFT_SECTIONS]
    assert positions == sorted(positions)
    assert md.startswith("# Model card: outreach-uplift (version 4)\n")


def test_card_policy_table_has_the_four_policies_with_intervals() -> None:
    evaluation = section(render_uplift_card(full_card()), "Evaluation")
    assert table_row(evaluation, "**uplift (logit-interaction)**") == [
        "**uplift (logit-interaction)**",
        "1,875",
        "7.78 [7.60, 7.97]",
        "4.55 [-2.34, 11.41]",
    ]
    assert table_row(evaluation, "risk (today's worklist)")[2:] == [
        "6.98 [6.79, 7.20]",
        "9.10 [2.79, 15.42]",
    ]
    assert table_row(evaluation, "random")[1] == "expected value (mean of 18,576)"
    assert (
        table_row(evaluation, "oracle (true effect; synthetic only)")[2] == "11.39 [11.22, 11.57]"
    )
    # the other learners come after the main table
    assert evaluation.index("### Other learners") < evaluation.index("| uplift (t-learner) |")
    assert table_row(evaluation, "uplift (dr-learner)")[2:] == [
        "5.90 [5.71, 6.10]",
        "-1.87 [-4.11, 0.59]",
    ]


def test_card_without_truth_has_no_true_column_and_no_oracle() -> None:
    evaluation = section(render_uplift_card(full_card(truth=False)), "Evaluation")
    header = next(line for line in evaluation.splitlines() if line.startswith("| Policy"))
    assert "True" not in header
    assert "oracle" not in evaluation.split("### Does uplift")[0]
    assert table_row(evaluation, "risk (today's worklist)") == [
        "risk (today's worklist)",
        "1,875",
        "9.10 [2.79, 15.42]",
    ]
    assert "true effects are unknown" in evaluation


def test_card_intended_use_warns_against_denying_care() -> None:
    use = section(render_uplift_card(full_card()), "Intended use")
    assert "never for denying or rationing care" in use
    assert "an estimate for a population, not a promise for a person" in use


def test_card_population_states_the_assumption_only_for_estimated_propensity() -> None:
    randomised = section(render_uplift_card(full_card()), "Training population")
    assert "booked at least 2 days ahead" in randomised
    assert "randomised" in randomised
    assert "unmeasured confounding" not in randomised
    assert "unmeasured confounding" not in section(render_uplift_card(full_card()), "Limits")
    estimated = render_uplift_card(full_card(propensity="estimated"))
    assert "**assumes no unmeasured confounding**" in section(estimated, "Training population")
    assert "unmeasured confounding" in section(estimated, "Limits")


def test_card_limits() -> None:
    limits = section(render_uplift_card(full_card(min_lead_days=3)), "Limits")
    assert "**Race and ethnicity are never inputs**" in limits
    assert "booked at least 3 days ahead" in limits
    assert "**Synthetic data.**" in limits
    own = section(render_uplift_card(full_card(truth=False)), "Limits")
    assert "**Own data, one setting.**" in own


# ---------------------------------------------------------------- the card: honest paragraph


@pytest.mark.parametrize(
    ("true_difference", "opening", "figure"),
    [
        (interval(0.80, 0.53, 1.08), "**Uplift beats the risk worklist**", "0.80 more"),
        (
            interval(-1.20, -1.50, -0.90),
            "**Uplift does worse than the risk worklist**",
            "1.20 fewer",
        ),
        (
            interval(0.10, -0.20, 0.40),
            "**Uplift and the risk worklist cannot be told apart**",
            "+0.10",
        ),
    ],
)
def test_honest_paragraph_follows_the_true_difference(
    true_difference: dict[str, float], opening: str, figure: str
) -> None:
    card = full_card()
    card["differences"]["uplift_minus_risk_true"] = true_difference
    text = honest(render_uplift_card(card))
    assert text.startswith(f"{opening} by the true effects of the synthetic world")
    assert figure in text
    low, high = true_difference["low"], true_difference["high"]
    assert f"{low:+.2f} to {high:+.2f}" in text
    # the outcome-based interval straddles zero: say so, and why (the called test count)
    assert "too wide to tell uplift from risk" in text
    assert "only 2,223 of the 18,576 test appointments were called" in text


@pytest.mark.parametrize(
    ("estimated", "opening"),
    [
        (interval(2.40, 0.50, 4.30), "**Uplift beats the risk worklist**"),
        (interval(-3.00, -5.50, -0.50), "**Uplift does worse than the risk worklist**"),
        (interval(-4.55, -11.55, 1.91), "**Uplift and the risk worklist cannot be told apart**"),
    ],
)
def test_honest_paragraph_uses_the_estimate_without_truth(
    estimated: dict[str, float], opening: str
) -> None:
    card = full_card(truth=False)
    card["differences"]["uplift_minus_risk_estimated"] = estimated
    text = honest(render_uplift_card(card))
    assert text.startswith(f"{opening} as estimated from the outcomes")
    unclear = estimated["low"] <= 0 <= estimated["high"]
    assert ("only 2,223 of the 18,576 test appointments were called" in text) is unclear
    assert ("More (randomised) calls are needed" in text) is unclear
    assert "true effects" not in text


def test_honest_paragraph_agreeing_estimate_needs_no_excuse() -> None:
    card = full_card()
    card["differences"]["uplift_minus_risk_estimated"] = interval(1.5, 0.2, 2.8)
    text = honest(render_uplift_card(card))
    assert "The estimate from the outcomes alone agrees: +1.50 [+0.20, +2.80]." in text
    assert "test appointments were called" not in text


def test_honest_paragraph_flags_an_estimate_that_contradicts_the_truth() -> None:
    card = full_card()
    card["differences"]["uplift_minus_risk_estimated"] = interval(-3.0, -5.0, -1.0)
    text = honest(render_uplift_card(card))
    assert "says uplift is worse (-3.00 [-5.00, -1.00]), unlike the true effects" in text


def test_honest_paragraph_without_the_called_count() -> None:
    card = full_card(truth=False)
    del card["data"]["rows"]
    text = honest(render_uplift_card(card))
    assert "few test appointments were called (the count was not recorded)" in text


# ---------------------------------------------------------------- the card: terms, gates, gaps


def test_effect_terms_table_for_logit_interaction() -> None:
    terms = section(render_uplift_card(full_card()), "Effect terms")
    assert "change in the log-odds of a no-show when called per unit of the standardised" in terms
    assert table_row(terms, "`distance_km`") == [
        "`distance_km`",
        "-0.039",
        f"{np.exp(-0.0387):.3f}",
        "call helps more",
    ]
    assert table_row(terms, "`language = es`")[3] == "call helps less"


def test_effect_terms_of_other_learners_and_race_terms() -> None:
    terms = section(render_uplift_card(full_card(learner="t-learner")), "Effect terms")
    assert "no effect terms" in terms
    assert "|" not in terms
    with pytest.raises(ValueError, match="race/ethnicity"):
        render_uplift_card(full_card(terms=[{"term": "race = black", "coefficient": 0.1}]))


def test_gates_are_listed_with_the_failures_first() -> None:
    gates = [
        {"name": "beats_random", "passed": True, "value": 3.9, "threshold": 0.0, "detail": "ok"},
        {
            "name": "not_worse_than_risk",
            "passed": False,
            "value": -0.4,
            "threshold": 0.0,
            "detail": "difference -1.2 [-2.0, -0.4]",
        },
    ]
    text = section(render_uplift_card(full_card(gates=gates)), "Promotion gates")
    assert "**1 of 2 gate(s) failed:** not_worse_than_risk." in text
    assert table_row(text, "not_worse_than_risk")[1] == "**FAIL**"
    assert table_row(text, "beats_random")[1] == "pass"
    assert "Not evaluated" in section(render_uplift_card(full_card()), "Promotion gates")


@pytest.mark.parametrize(
    "drop",
    [
        "rank_correlation_with_true_effect",
        "terms",
        "gates",
        "differences",
        "policies",
        "auuc",
        "average_benefit",
        "data",
        "learner",
        "propensity",
    ],
)
def test_card_survives_a_missing_key(drop: str) -> None:
    card = full_card()
    card.pop(drop, None)
    md = render_uplift_card(card)
    for s in UPLIFT_SECTIONS:
        assert f"\n## {s}\n" in md


def test_card_from_nothing_says_not_recorded() -> None:
    md = render_uplift_card({})
    assert md.startswith("# Model card: outreach-uplift (version not recorded)")
    assert "Policy evaluation not recorded." in md
    assert "The comparison of uplift with the risk worklist was not recorded." in md
    assert "Effect terms not recorded." in md
    assert "AUUC not recorded." in md


def test_card_accepts_the_policies_frame_and_nan_figures() -> None:
    policies = policies_frame(True)
    policies.loc[policies["policy"] == "random", "true_low"] = np.nan
    md = render_uplift_card(full_card(policies=policies))
    assert table_row(section(md, "Evaluation"), "random")[2] == "3.63"
