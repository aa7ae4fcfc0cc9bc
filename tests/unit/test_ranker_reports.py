"""Report artefacts of a ranker run: gain by position, NDCG per group, their PNGs and the card."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.model_card import RANKER_SECTIONS, render_ranker_card
from training.plots_ranker import (
    gain_by_position,
    gain_by_position_plot,
    metric_by_group,
    metric_by_group_plot,
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
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Titles and y tick labels (bottom to top) of every figure saved during the test."""
    from matplotlib.figure import Figure

    figures: list[dict[str, Any]] = []
    original = Figure.savefig

    def spy(self: Figure, *args: Any, **kwargs: Any) -> Any:
        figures.append(
            {
                "titles": [ax.get_title() for ax in self.axes],
                "yticks": [t.get_text() for ax in self.axes for t in ax.get_yticklabels()],
                "legend": [
                    t.get_text()
                    for ax in self.axes
                    if ax.get_legend()
                    for t in ax.get_legend().get_texts()
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


def frame(referrals: list[dict[str, Any]], with_utility: bool = True, **extra: Any) -> pd.DataFrame:
    """Test pairs from per-referral lists: utility, label, and score_<name> per candidate.

    Each referral is {"id", "utility": [...], optional "label": [...], optional "specialty",
    "urgency", and "scores": {name: [...]}}; rows of a referral are consecutive.
    """
    rows = []
    for r in referrals:
        n = len(r["utility"])
        labels = r.get("label", [0] * n)
        for i in range(n):
            row: dict[str, Any] = {
                "referral_id": r["id"],
                "specialist_id": f"{r['id']}-s{i}",
                "specialty": r.get("specialty", "207RC0000X"),
                "urgency": r.get("urgency", "routine"),
                "label": labels[i],
                "chosen": labels[i] > 0,
            }
            if with_utility:
                row["utility"] = r["utility"][i]
            for name, s in r["scores"].items():
                row[f"score_{name}"] = s[i]
            rows.append(row)
    return pd.DataFrame(rows).assign(**extra)


def by_truth(rid: str, utility: list[float], **fields: Any) -> dict[str, Any]:
    """A referral scored by a perfect ranking (score = utility) and its reverse."""
    u = np.asarray(utility, dtype=float)
    return {
        "id": rid,
        "utility": list(u),
        "scores": {"perfect": list(u), "reversed": list(-u)},
        **fields,
    }


def curve(table: pd.DataFrame, ranking: str) -> np.ndarray:
    rows = table[table["ranking"] == ranking].sort_values("position")
    return rows["mean_gain"].to_numpy()


@pytest.fixture(scope="module")
def random_pairs() -> pd.DataFrame:
    """150 referrals of 8 candidates in 3 specialties and 2 urgencies, noisy rankings."""
    rng = np.random.default_rng(7)
    specialties = np.array(["207RC0000X", "207N00000X", "2084P0800X"])
    refs = []
    for i in range(150):
        u = rng.normal(0, 1, 8)
        label = np.zeros(8, dtype=int)
        label[int(np.argmax(u + rng.normal(0, 1, 8)))] = rng.integers(1, 4)
        refs.append(
            {
                "id": f"r{i:03d}",
                "utility": list(u),
                "label": list(label),
                "specialty": specialties[i % 3],
                "urgency": "urgent" if i % 4 == 0 else "routine",
                "scores": {
                    "ranker": list(u + rng.normal(0, 0.5, 8)),
                    "weighted_rule": list(u + rng.normal(0, 0.8, 8)),
                    "historical_choice": list(label * 1e3 + rng.normal(0, 1, 8)),
                    "nearest": list(rng.normal(0, 1, 8)),
                },
            }
        )
    return frame(refs)


# ---------------------------------------------------------------- gain by position


def test_gain_by_position_matches_a_hand_computed_case() -> None:
    # Given two referrals with known utilities: gains (utility - min) [0, 2, 1] and [1, 0]
    test = frame([by_truth("a", [1.0, 3.0, 2.0]), by_truth("b", [5.0, 4.0])])
    # When the mean gain at positions 1..4 is computed
    table = gain_by_position(test, k=4)
    # Then the ideal is (2+1)/2, (1+0)/2, 0, 0 (a missing position adds 0)
    np.testing.assert_allclose(curve(table, "ideal"), [1.5, 0.5, 0.0, 0.0])
    # And the perfect ranking equals the ideal at every position
    np.testing.assert_allclose(curve(table, "perfect"), curve(table, "ideal"))
    # And the reversed ranking puts the worst first: (0+0)/2, (1+1)/2, (2+0)/2, 0
    np.testing.assert_allclose(curve(table, "reversed"), [0.0, 1.0, 1.0, 0.0])
    assert list(table.columns) == ["ranking", "position", "mean_gain"]
    assert list(dict.fromkeys(table["ranking"])) == ["perfect", "reversed", "ideal"]


def test_gain_by_position_perfect_ranking_is_ideal_and_reversed_is_lower(
    random_pairs: pd.DataFrame,
) -> None:
    # Given random referrals and a ranking that scores by the true utility
    test = random_pairs.assign(
        score_perfect=random_pairs["utility"], score_reversed=-random_pairs["utility"]
    )
    # When the gain by position is computed over all 8 candidates and two empty positions
    table = gain_by_position(test, k=10)
    # Then the perfect ranking is the ideal, every other ranking is below it at position 1
    np.testing.assert_allclose(curve(table, "perfect"), curve(table, "ideal"))
    first = table[table["position"] == 1].set_index("ranking")["mean_gain"]
    assert (first.drop(["perfect", "ideal"]) < first["ideal"]).all()
    # And the reversed ranking puts the worst (gain 0) first and the best at position 8
    reversed_ = curve(table, "reversed")
    assert reversed_[0] == 0.0
    assert reversed_[7] == pytest.approx(curve(table, "ideal")[0])
    # And positions past the last candidate add nothing
    np.testing.assert_allclose(table.loc[table["position"] > 8, "mean_gain"], 0.0)


def test_gain_by_position_ignores_unknown_utilities() -> None:
    # Given one referral with a missing utility and one with a single known utility
    test = frame(
        [
            by_truth("a", [1.0, np.nan, 3.0]),
            by_truth("b", [np.nan, 7.0, np.nan]),
        ]
    )
    # When the gain by position is computed
    table = gain_by_position(test, k=3)
    # Then only referral a's known candidates count: gains [0, 2]
    np.testing.assert_allclose(curve(table, "ideal"), [2.0, 0.0, 0.0])
    np.testing.assert_allclose(curve(table, "reversed"), [0.0, 2.0, 0.0])


def test_gain_by_position_uses_the_logged_gain_without_utility() -> None:
    # Given no utility column and logged grades 3 (completed) and 1 (chosen only)
    refs = [
        {"id": "a", "utility": [0, 0, 0], "label": [0, 3, 0], "scores": {"x": [3, 2, 1]}},
        {"id": "b", "utility": [0, 0], "label": [1, 0], "scores": {"x": [1, 2]}},
    ]
    test = frame(refs, with_utility=False)
    # When the gain by position is computed
    table = gain_by_position(test, k=2)
    # Then the gain is 2**grade - 1: ideal (7+1)/2, 0; x ranks both chosen second
    np.testing.assert_allclose(curve(table, "ideal"), [4.0, 0.0])
    np.testing.assert_allclose(curve(table, "x"), [0.0, 4.0])


def test_gain_by_position_prefers_utility_over_the_logged_grade() -> None:
    # Given a referral whose logged choice is the worst candidate by the truth
    refs = [{"id": "a", "utility": [0.0, 2.0], "label": [3, 0], "scores": {"x": [1, 0]}}]
    # When the gain by position is computed with the truth present
    table = gain_by_position(frame(refs), k=2)
    # Then the oracle gain is used: x (which follows the logged choice) gets 0 first
    np.testing.assert_allclose(curve(table, "x"), [0.0, 2.0])


def test_gain_by_position_breaks_ties_by_row_order() -> None:
    # Given a ranking that ties every candidate
    refs = [{"id": "a", "utility": [1.0, 4.0, 0.0], "scores": {"flat": [0, 0, 0]}}]
    # When the gain by position is computed
    table = gain_by_position(frame(refs), k=3)
    # Then candidates keep their row order (as training.ranker.ndcg_at): gains 1, 4, 0
    np.testing.assert_allclose(curve(table, "flat"), [1.0, 4.0, 0.0])


def test_gain_by_position_refuses_bad_frames() -> None:
    test = frame([by_truth("a", [1.0, 2.0]), by_truth("b", [1.0, 2.0])])
    with pytest.raises(ValueError, match="score_"):
        gain_by_position(test.drop(columns=["score_perfect", "score_reversed"]))
    with pytest.raises(ValueError, match="consecutive"):
        gain_by_position(test.iloc[[0, 2, 1, 3]])
    with pytest.raises(ValueError, match="k must"):
        gain_by_position(test, k=0)


# ---------------------------------------------------------------- NDCG by group


def test_metric_by_group_perfect_is_one_and_reversed_lower() -> None:
    # Given 3 cardiology and 2 dermatology referrals
    refs = [by_truth(f"c{i}", [1.0, 3.0, 2.0 + i], specialty="207RC0000X") for i in range(3)]
    refs += [by_truth(f"d{i}", [2.0, 1.0, 0.0], specialty="207N00000X") for i in range(2)]
    # When NDCG@2 is computed per specialty
    table = metric_by_group(frame(refs), "specialty", k=2, min_referrals=1)
    # Then the perfect ranking scores 1.0 in each group and the reversed one less
    ndcg = table.set_index(["group", "ranking"])["ndcg"]
    assert ndcg[("207RC0000X", "perfect")] == pytest.approx(1.0)
    assert ndcg[("207N00000X", "perfect")] == pytest.approx(1.0)
    # Dermatology reversed: gains [2, 1, 0] ranked 0, 1 -> (0 + 1/log2 3) / (2 + 1/log2 3)
    expected = (1 / np.log2(3)) / (2 + 1 / np.log2(3))
    assert ndcg[("207N00000X", "reversed")] == pytest.approx(expected)
    assert ndcg[("207RC0000X", "reversed")] < 1.0
    assert list(table.columns) == ["group", "referrals", "ranking", "ndcg", "metric"]
    assert set(table["metric"]) == {"oracle NDCG@2"}
    assert table.set_index("group")["referrals"].to_dict() == {"207RC0000X": 3, "207N00000X": 2}


def test_metric_by_group_drops_small_groups(random_pairs: pd.DataFrame) -> None:
    # Given 150 referrals: 38 urgent (every fourth) and 112 routine
    # When groups need at least 40 referrals
    table = metric_by_group(random_pairs, "urgency", k=5, min_referrals=40)
    # Then only routine is left, with every ranking
    assert set(table["group"]) == {"routine"}
    assert set(table["referrals"]) == {112}
    assert set(table["ranking"]) == {"ranker", "weighted_rule", "historical_choice", "nearest"}
    # And with a lower threshold both are kept, largest first
    both = metric_by_group(random_pairs, "urgency", k=5, min_referrals=38)
    assert list(dict.fromkeys(both["group"])) == ["routine", "urgent"]


def test_metric_by_group_agrees_with_the_overall_mean_of_ndcg_at(
    random_pairs: pd.DataFrame,
) -> None:
    from training.ranker import ndcg_at

    # Given one group holding every referral
    test = random_pairs.assign(everyone="all")
    # When NDCG@5 is computed per group
    table = metric_by_group(test, "everyone", k=5, min_referrals=1)
    # Then it is the mean of training.ranker.ndcg_at over the referrals' oracle gains
    for name in ("ranker", "nearest"):
        per = [
            (g["utility"].to_numpy() - g["utility"].min(), g[f"score_{name}"].to_numpy())
            for _, g in test.groupby("referral_id", sort=False)
        ]
        expected = np.nanmean(ndcg_at([p[0] for p in per], [p[1] for p in per], 5))
        got = table.loc[table["ranking"] == name, "ndcg"].item()
        assert got == pytest.approx(expected)
    # And the ranker (less noise) beats the random nearest ranking
    ndcg = table.set_index("ranking")["ndcg"]
    assert ndcg["ranker"] > ndcg["weighted_rule"] > ndcg["nearest"]


def test_metric_by_group_uses_logged_ndcg_without_utility(random_pairs: pd.DataFrame) -> None:
    # Given the same pairs without the truth
    test = random_pairs.drop(columns=["utility"])
    # When NDCG@5 is computed per urgency
    table = metric_by_group(test, "urgency", k=5, min_referrals=1)
    # Then it is the logged NDCG: the historical choice ranks the chosen first, a perfect 1.0
    assert set(table["metric"]) == {"logged NDCG@5"}
    hist = table[table["ranking"] == "historical_choice"]["ndcg"]
    np.testing.assert_allclose(hist, 1.0)
    assert (table[table["ranking"] == "nearest"]["ndcg"] < 1.0).all()


def test_metric_by_group_refuses_a_column_that_varies_within_a_referral(
    random_pairs: pd.DataFrame,
) -> None:
    with pytest.raises(ValueError, match="varies within a referral"):
        metric_by_group(random_pairs, "specialist_id")
    with pytest.raises(ValueError, match="no column"):
        metric_by_group(random_pairs, "payer")


# ---------------------------------------------------------------- plots


def test_gain_by_position_plot_names_the_gain(
    random_pairs: pd.DataFrame, drawn: list[dict[str, Any]], tmp_path: Path
) -> None:
    # Given the pairs with and without the truth
    # When both gain plots are drawn
    oracle = gain_by_position_plot(random_pairs, tmp_path / "nested" / "gain.png")
    logged = gain_by_position_plot(random_pairs.drop(columns=["utility"]), tmp_path / "g2.png")
    # Then both are PNGs, and the titles say which gain they show
    assert oracle == tmp_path / "nested" / "gain.png"
    assert_png(oracle)
    assert_png(logged)
    assert "true match utility" in drawn[0]["titles"][0]
    assert "logged outcome" in drawn[1]["titles"][0]
    assert "150 test referrals" in drawn[0]["titles"][0]
    # And the legend lists the ideal first and every ranking
    legend = drawn[0]["legend"]
    assert legend[0].startswith("ideal")
    for name in ("ranker", "weighted rule", "historical choice", "nearest"):
        assert any(t.startswith(name) for t in legend)


def test_metric_by_group_plot_shows_names_counts_and_ranker_order(
    random_pairs: pd.DataFrame, drawn: list[dict[str, Any]], tmp_path: Path
) -> None:
    # Given NDCG@5 per specialty (50 referrals each)
    table = metric_by_group(random_pairs, "specialty", k=5, min_referrals=30)
    # When it is plotted
    out = metric_by_group_plot(table, "specialty", tmp_path / "spec.png")
    # Then the PNG is written with specialty names and counts as labels
    assert_png(out)
    labels = drawn[0]["yticks"]
    assert sorted(labels) == sorted(["Cardiology  (50)", "Dermatology  (50)", "Psychiatry  (50)"])
    # And the groups run from the ranker's best (top) to its worst (bottom)
    ranker = table[table["ranking"] == "ranker"].set_index("group")["ndcg"]
    names = {"207RC0000X": "Cardiology", "207N00000X": "Dermatology", "2084P0800X": "Psychiatry"}
    bottom_to_top = [names[g] for g in ranker.sort_values().index]
    assert [label.split("  ")[0] for label in labels] == bottom_to_top
    assert re.search(r"oracle NDCG@5 by specialty", drawn[0]["titles"][0], re.IGNORECASE)


def test_metric_by_group_plot_without_groups_still_writes(
    random_pairs: pd.DataFrame, tmp_path: Path
) -> None:
    # Given a threshold no group reaches
    table = metric_by_group(random_pairs, "urgency", min_referrals=10_000)
    assert table.empty
    # When it is plotted, Then an (explanatory) PNG is still written
    out = metric_by_group_plot(table, "urgency", tmp_path / "empty.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE


# ---------------------------------------------------------------- ranker card


def metric(mean: float, lo: float, hi: float) -> dict[str, Any]:
    return {"mean": mean, "ci95": [lo, hi]}


def evaluation(oracle: bool) -> dict[str, Any]:
    """The shape `training.ranker.evaluate` returns, for three rankings."""
    out: dict[str, Any] = {}
    for i, name in enumerate(("ranker", "weighted_rule", "historical_choice")):
        m = {
            "ndcg@1": metric(0.5, 0.4, 0.6),
            "ndcg@5": metric(0.61 + i / 100, 0.58 + i / 100, 0.64 + i / 100),
            "ndcg@10": metric(0.7, 0.6, 0.8),
            "mrr": metric(0.543, 0.5, 0.6),
            "hit@5": metric(0.877, 0.8, 0.9),
        }
        if oracle:
            m["oracle.ndcg@5"] = metric(0.952 - i / 10, 0.946 - i / 10, 0.957 - i / 10)
            m["oracle.regret@1"] = metric(0.25 + i, 0.2, 0.3)
        out[name] = m
    out["_windows"] = {"test_from": "2024-10-14", "test_referrals": 785}
    return out


def test_ranker_card_shows_every_ranking_and_the_intervals() -> None:
    # Given a card with oracle metrics
    card = {
        "name": "specialist-ranker",
        "version": 4,
        "trained_at": "2025-01-31T09:12:00+00:00",
        "data": {"source": "world small", "synthetic": True, "referrals": 3_925, "pairs": 29_000},
        "labels": "Counterfactual completion labels (0..30) for training.",
        "features": ["distance_km", "in_network"],
        "metrics": evaluation(oracle=True),
        "caveats": ["Small world: wide intervals."],
    }
    # When it is rendered
    text = render_ranker_card(card)
    # Then every section, ranking and confidence interval is there
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert headings == list(RANKER_SECTIONS)
    for name in ("**ranker**", "weighted rule", "historical choice"):
        assert f"| {name} |" in text
    assert "0.952 [0.946, 0.957]" in text  # oracle NDCG@5 of the ranker
    assert "0.852 [0.846, 0.857]" in text  # and of the weighted rule
    assert "0.610 [0.580, 0.640]" in text  # logged NDCG@5 of the ranker
    assert "| Regret@1 |" in text and "2.250" in text
    assert "3,925" in text and "29,000" in text and "785" in text
    assert "Counterfactual completion labels (0..30) for training." in text
    assert "Small world: wide intervals." in text
    assert "never use it to deny" in text.lower()
    assert "position bias" in text.lower() and "only observes chosen" in text.lower()
    assert "**Synthetic world.**" in text
    # And the private windows entry is not a ranking row
    assert "| _windows |" not in text


def test_ranker_card_without_oracle_metrics() -> None:
    # Given own data: metrics without oracle keys
    card = {"name": "r", "data": {"synthetic": False}, "metrics": evaluation(oracle=False)}
    # When it is rendered
    text = render_ranker_card(card)
    # Then the oracle columns are left out, explained, and the logged intervals stay
    assert "Oracle NDCG@5" not in text and "Regret@1" not in text
    assert "No oracle metrics" in text
    assert "0.620 [0.590, 0.650]" in text
    assert "**Own data, one network.**" in text


def test_ranker_card_is_graceful_with_an_empty_card() -> None:
    # Given nothing at all
    text = render_ranker_card({})
    # Then every section is still rendered, saying what was not recorded
    assert re.findall(r"^## (.+)$", text, re.MULTILINE) == list(RANKER_SECTIONS)
    assert "Metrics not recorded." in text
    assert "Label design not recorded." in text
    assert "Feature list not recorded." in text
    assert "**Data origin not recorded.**" in text


def test_ranker_card_refuses_race_features() -> None:
    with pytest.raises(ValueError, match="audit-only"):
        render_ranker_card({"features": ["distance_km", "patient_race"]})
