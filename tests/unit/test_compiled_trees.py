"""Compiled trees (features.compiled) score like LightGBM, and fall back to it cleanly.

Tiny models trained here (a binary model with pandas categoricals and missing numbers, a
LambdaRank model), each compiled once per module (a fraction of a second each)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features import compiled
from features.compiled import (
    FrameEncoder,
    LightGBMScorer,
    LleavesScorer,
    TreeSettings,
    library_key,
    library_path,
    scorer_for,
)
from features.matcher import Matcher, MatchRequest, SpecialistRanker
from features.no_show import NoShowFeatureSpec
from features.predictor import NoShowPredictor
from features.ranking import PAIR_FEATURES

pytestmark = pytest.mark.unit

LANGUAGES = ["en", "es", "zh", "vi", "ht"]
PAYERS = ["commercial", "medicaid", "medicare"]
PARAMS = {"verbose": -1, "num_threads": 1, "deterministic": True, "seed": 3}


def _no_show_frame(n: int, seed: int, unseen: bool = False) -> pd.DataFrame:
    """Rows like the no-show matrix: numbers with NaNs, a bool, two pandas categoricals (with
    an unseen category, a missing one and another category order when `unseen`)."""
    rng = np.random.default_rng(seed)
    lead = rng.gamma(2.0, 10.0, n)
    lead[rng.random(n) < 0.15] = np.nan
    prior = rng.beta(1, 4, n)
    prior[rng.random(n) < 0.1] = np.nan
    languages = LANGUAGES + ["pl"] if unseen else LANGUAGES
    language = rng.choice(languages, n).astype(object)
    if unseen:
        language[rng.random(n) < 0.1] = None
    frame = pd.DataFrame(
        {
            "lead_days": lead,
            "age": rng.integers(0, 95, n),
            "text_reminder": rng.random(n) < 0.5,
            "prior_no_show_rate": prior,
            # unseen: another order, and "pl", a category the model never saw
            "language": pd.Categorical(
                language, categories=[*LANGUAGES[::-1], "pl"] if unseen else LANGUAGES
            ),
            "payer_type": pd.Categorical(rng.choice(PAYERS, n), categories=PAYERS),
        }
    )
    return frame


def _no_show_booster() -> lgb.Booster:
    X = _no_show_frame(3000, seed=1)
    logit = (
        0.03 * X["lead_days"].fillna(60)
        + 2 * X["prior_no_show_rate"].fillna(0.5)
        + X["language"].isin(["es", "ht"]).to_numpy() * 0.8
        - X["text_reminder"].to_numpy() * 0.5
        - 1.5
    )
    y = np.random.default_rng(2).random(len(X)) < 1 / (1 + np.exp(-logit))
    params = {
        **PARAMS,
        "objective": "binary",
        "num_leaves": 15,
        "min_data_in_leaf": 10,
        "min_data_per_group": 5,
        "cat_smooth": 1.0,
        "max_cat_to_onehot": 2,
    }
    return lgb.train(params, lgb.Dataset(X, y.astype(int)), num_boost_round=25)


def _ranker_booster() -> lgb.Booster:
    rng = np.random.default_rng(4)
    X = rng.random((2000, len(PAIR_FEATURES)))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = np.clip((3 * np.nan_to_num(X[:, 0]) + rng.random(2000) * 2).round(), 0, 3).astype(int)
    params = {**PARAMS, "objective": "lambdarank", "num_leaves": 15, "min_data_in_leaf": 10}
    frame = pd.DataFrame(X, columns=list(PAIR_FEATURES))
    return lgb.train(params, lgb.Dataset(frame, y, group=[20] * 100), num_boost_round=25)


def _no_show_bundle(directory: Path, booster: lgb.Booster) -> Path:
    spec = NoShowFeatureSpec(
        numeric=["lead_days", "age", "text_reminder", "prior_no_show_rate"],
        categorical={"language": LANGUAGES, "payer_type": PAYERS},
    )
    return NoShowPredictor(booster, (1.0, 0.0), spec, {}).save(directory)


@pytest.fixture(scope="module")
def no_show_booster() -> lgb.Booster:
    return _no_show_booster()


@pytest.fixture(scope="module")
def no_show_bundle(tmp_path_factory: pytest.TempPathFactory, no_show_booster: lgb.Booster) -> Path:
    """A no-show bundle with its trees compiled into it (as `referral-ml export` leaves it)."""
    bundle = _no_show_bundle(tmp_path_factory.mktemp("no_show"), no_show_booster)
    compiled.build_library(bundle / "model.txt", bundle, lock=False)
    return bundle


@pytest.fixture(scope="module")
def ranker_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = SpecialistRanker(_ranker_booster(), PAIR_FEATURES).save(
        tmp_path_factory.mktemp("ranker")
    )
    compiled.build_library(bundle / "model.txt", bundle, lock=False)
    return bundle


def _settings(tmp_path: Path, **values: Any) -> TreeSettings:
    return TreeSettings(cache_dir=tmp_path / "cache", **values)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# -- equal scores ---------------------------------------------------------------------------


def test_the_test_models_use_categorical_splits_and_missing_values(
    no_show_booster: lgb.Booster,
) -> None:
    # Given the binary model: it must exercise what the compiled trees have to get right
    trees = no_show_booster.dump_model()["tree_info"]
    kinds, missing = set(), set()
    stack = [t["tree_structure"] for t in trees]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            kinds.add(node["decision_type"])
            missing.add(node["missing_type"])
            stack += [node["left_child"], node["right_child"]]
    assert kinds == {"<=", "=="} and "NaN" in missing
    assert no_show_booster.pandas_categorical == [LANGUAGES, PAYERS]


@pytest.mark.parametrize("unseen", [False, True])
def test_compiled_no_show_scores_equal_lightgbm_raw_scores(
    no_show_bundle: Path, tmp_path: Path, unseen: bool
) -> None:
    # Given the serving set-up of a bundle with a compiled library
    predictor = NoShowPredictor.load(no_show_bundle, trees=_settings(tmp_path))
    assert predictor.backend == "lleaves"
    # When random rows (NaNs; unseen, missing and reordered categories) are scored
    X = _no_show_frame(5000, seed=9, unseen=unseen)
    expected = predictor.booster.predict(X, raw_score=True)
    # Then the raw scores equal LightGBM's to 1e-6, row by row and for a single row
    assert _max_diff(predictor.raw_score(X), expected) <= 1e-6
    assert _max_diff(predictor.raw_score(X.iloc[[7]]), expected[[7]]) <= 1e-6
    assert _max_diff(predictor.predict_matrix(X), predictor.calibrate(expected)) <= 1e-6


def test_compiled_ranker_scores_equal_lightgbm(ranker_bundle: Path, tmp_path: Path) -> None:
    # Given a LambdaRank bundle loaded for serving
    ranker = SpecialistRanker.load(ranker_bundle, trees=_settings(tmp_path))
    assert ranker.backend == "lleaves"
    rng = np.random.default_rng(5)
    values = rng.normal(0.5, 0.6, (3000, len(PAIR_FEATURES)))
    values[rng.random(values.shape) < 0.2] = np.nan
    X = pd.DataFrame(values, columns=list(PAIR_FEATURES))
    # Then its scores are LightGBM's (raw = predicted for LambdaRank)
    assert _max_diff(ranker.score(X), ranker.booster.predict(X, raw_score=True)) <= 1e-6
    assert _max_diff(ranker.score(X), ranker.booster.predict(X)) <= 1e-6
    # And a wider frame, columns in another order (as pair_features returns), scores the same
    wide = X.assign(patient_note=1.0)[["patient_note", *reversed(PAIR_FEATURES)]]
    assert np.array_equal(ranker.score(wide), ranker.score(X))
    assert np.array_equal(ranker.attribute(wide.iloc[:9]), ranker.attribute(X.iloc[:9]))
    with pytest.raises(ValueError, match="feature columns missing"):
        ranker.score(X.drop(columns=["distance_km"]))


def test_two_threads_score_like_one(no_show_bundle: Path, tmp_path: Path) -> None:
    X = _no_show_frame(9000, seed=10, unseen=True)
    one = NoShowPredictor.load(no_show_bundle, trees=_settings(tmp_path, threads=1))
    two = NoShowPredictor.load(no_show_bundle, trees=_settings(tmp_path, threads=2))
    assert two.scorer.threads == 2
    assert np.array_equal(one.raw_score(X), two.raw_score(X))


def test_the_encoder_builds_the_matrix_lightgbm_builds(no_show_booster: lgb.Booster) -> None:
    # Given frames with other dtypes: nullable ints with <NA>, float32, categories unseen
    X = _no_show_frame(2000, seed=11, unseen=True)
    X["age"] = pd.array(np.where(np.arange(len(X)) % 7 == 0, None, X["age"]), dtype="Int64")
    X["prior_no_show_rate"] = X["prior_no_show_rate"].astype(np.float32)
    encoder = FrameEncoder(no_show_booster.num_feature(), no_show_booster.pandas_categorical)
    A = encoder(X)
    # Then LightGBM scores the encoded matrix exactly as it scores the frame
    assert A.dtype == np.float64 and A.flags.c_contiguous
    assert np.array_equal(
        no_show_booster.predict(A, raw_score=True), no_show_booster.predict(X, raw_score=True)
    )
    assert np.isnan(A[X["language"].isna().to_numpy(), 4]).all()


def test_the_encoder_refuses_what_lightgbm_refuses(no_show_booster: lgb.Booster) -> None:
    encoder = FrameEncoder(no_show_booster.num_feature(), no_show_booster.pandas_categorical)
    X = _no_show_frame(10, seed=12)
    with pytest.raises(ValueError, match="categorical columns"):
        encoder(X.assign(language=X["language"].astype(str).to_numpy()))
    with pytest.raises(ValueError, match="feature columns"):
        encoder(X.iloc[:, :3])


# -- matcher: the same answers with either backend --------------------------------------------


def test_the_matcher_ranks_and_explains_alike_with_compiled_trees(
    ranker_bundle: Path, small_tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    # Given one ranker served by LightGBM and by compiled trees, over the small world
    plain = SpecialistRanker.load(ranker_bundle, trees=_settings(tmp_path, backend="lightgbm"))
    fast = SpecialistRanker.load(ranker_bundle, trees=_settings(tmp_path))
    assert (plain.backend, fast.backend) == ("lightgbm", "lleaves")
    now = pd.Timestamp("2025-07-01")
    a = Matcher.from_tables(plain, small_tables, now=now)
    b = Matcher.from_tables(fast, small_tables, now=now)
    specialty = str(small_tables["specialists"]["specialty"].mode()[0])
    sp = small_tables["specialists"]
    for lat, lon in zip(sp["latitude"][:5], sp["longitude"][:5], strict=True):
        req = MatchRequest(float(lat), float(lon), specialty, "I50.9", insurance_plan_id=None)
        # When both answer the same referral
        left, right = a.recommend(req, k=5), b.recommend(req, k=5)
        # Then they rank the same specialists with the same scores and reasons
        assert [m.specialist_id for m in left.matches] == [m.specialist_id for m in right.matches]
        assert [m.reasons for m in left.matches] == [m.reasons for m in right.matches]
        assert np.allclose(
            [m.score for m in left.matches], [m.score for m in right.matches], atol=1e-6
        )


def test_lightgbm_ranks_and_explains_alike_in_one_pass_and_in_two(
    ranker_bundle: Path,
    small_tables: dict[str, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a ranker served by plain LightGBM, and referrals with more candidates than the
    # one-pass limit (scores first, then the top k attributed) and with fewer (one pass)
    import features.matcher as matcher_module

    plain = SpecialistRanker.load(ranker_bundle, trees=_settings(tmp_path, backend="lightgbm"))
    matcher = Matcher.from_tables(plain, small_tables, now=pd.Timestamp("2025-07-01"))
    specialty = str(small_tables["specialists"]["specialty"].mode()[0])
    sp = small_tables["specialists"]
    seen = []
    for lat, lon in zip(sp["latitude"][:5], sp["longitude"][:5], strict=True):
        req = MatchRequest(float(lat), float(lon), specialty, "I50.9", insurance_plan_id=None)
        # When the same referral is answered with either path
        monkeypatch.setattr(matcher_module, "ONE_PASS_ROWS", 0)
        two = matcher.recommend(req, k=5)
        monkeypatch.setattr(matcher_module, "ONE_PASS_ROWS", 10**9)
        one = matcher.recommend(req, k=5)
        seen.append(two.candidates)
        # Then the specialists, scores and reasons are the same
        assert [m.specialist_id for m in one.matches] == [m.specialist_id for m in two.matches]
        assert [m.reasons for m in one.matches] == [m.reasons for m in two.matches]
        assert np.allclose([m.score for m in one.matches], [m.score for m in two.matches])
    assert max(seen) > 5  # some referrals had candidates beyond the top k


# -- threads --------------------------------------------------------------------------------


def _recording(booster: lgb.Booster, calls: list[dict[str, Any]]) -> Callable[..., Any]:
    original = booster.predict

    def predict(data: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(data, **kwargs)

    return predict


@pytest.mark.parametrize("backend", ["lightgbm", "auto"])
def test_every_serving_model_call_is_bounded_to_the_configured_threads(
    no_show_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    # Given the serving set-up with the default thread count (1)
    settings = TreeSettings.from_env({compiled.CACHE_ENV: str(tmp_path), "REFERRAL_ML_TREES": ""})
    settings = settings.model_copy(update={"backend": backend})
    assert settings.threads == 1
    predictor = NoShowPredictor.load(no_show_bundle, trees=settings)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(predictor.booster, "predict", _recording(predictor.booster, calls))
    # When scores, top factors and TreeSHAP contributions are computed
    X = _no_show_frame(50, seed=13)
    predictor.predict_matrix(X)
    predictor.top_factors(X)
    predictor.contributions(X)
    # Then every LightGBM call was asked for one thread
    assert calls and all(c.get("num_threads") == 1 for c in calls)


def test_thread_and_backend_settings_come_from_the_environment() -> None:
    env = {"REFERRAL_ML_MODEL_THREADS": "2", "REFERRAL_ML_TREES": "LightGBM"}
    settings = TreeSettings.from_env(env)
    assert (settings.threads, settings.backend) == (2, "lightgbm")
    assert TreeSettings.from_env({}) == TreeSettings()
    for bad in ({"REFERRAL_ML_MODEL_THREADS": "0"}, {"REFERRAL_ML_MODEL_THREADS": "two"}):
        with pytest.raises(ValueError, match="REFERRAL_ML_MODEL_THREADS must be a whole number"):
            TreeSettings.from_env(bad)
    with pytest.raises(ValueError, match="REFERRAL_ML_TREES must be auto, lleaves or lightgbm"):
        TreeSettings.from_env({"REFERRAL_ML_TREES": "treelite"})


def test_a_model_built_in_training_keeps_lightgbm_and_its_threads(
    no_show_booster: lgb.Booster,
) -> None:
    # Training and batch jobs (no serving set-up) score as before: LightGBM, its own threads
    spec = NoShowFeatureSpec(numeric=[], categorical={})
    predictor = NoShowPredictor(no_show_booster, (1.0, 0.0), spec)
    assert predictor.backend == "lightgbm" and predictor.scorer.threads is None


# -- fallbacks ------------------------------------------------------------------------------


def test_the_environment_can_force_lightgbm(
    no_show_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = TreeSettings.from_env({"REFERRAL_ML_TREES": "lightgbm"})
    with caplog.at_level(logging.INFO, logger="features.compiled"):
        predictor = NoShowPredictor.load(no_show_bundle, trees=settings)
    assert predictor.backend == "lightgbm"
    assert isinstance(predictor.scorer, LightGBMScorer) and predictor.scorer.threads == 1
    assert [r.getMessage() for r in caplog.records] == [
        "no-show model: trees scored by LightGBM (REFERRAL_ML_TREES=lightgbm)"
    ]
    X = _no_show_frame(100, seed=14)
    assert np.array_equal(predictor.raw_score(X), predictor.booster.predict(X, raw_score=True))


def _copy_bundle(src: Path, dst: Path, keep_library: bool) -> Path:
    dst.mkdir()
    for item in src.iterdir():
        if keep_library or not item.name.startswith("trees-"):
            (dst / item.name).write_bytes(item.read_bytes())
    return dst


@pytest.mark.parametrize("damage", ["garbage", "truncated", "sidecar"])
def test_a_corrupt_library_falls_back_with_one_log_line_and_scores_correctly(
    no_show_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    # Given a bundle whose compiled library was damaged after it was written
    bundle = _copy_bundle(no_show_bundle, tmp_path / "bundle", keep_library=True)
    (library,) = bundle.glob(f"trees-*{compiled.SUFFIX}")
    data = library.read_bytes()
    if damage == "garbage":
        library.write_bytes(bytes(len(data)))
    elif damage == "truncated":
        library.write_bytes(data[: len(data) // 2])
    else:
        (bundle / (library.name + ".json")).write_text("{not json")
    # When it is loaded for serving
    with caplog.at_level(logging.INFO, logger="features.compiled"):
        predictor = NoShowPredictor.load(bundle, trees=_settings(tmp_path))
    # Then LightGBM serves it, one warning names the file (no row values), and nothing compiled
    assert predictor.backend == "lightgbm"
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and library.name in record.getMessage()
    assert "scoring with LightGBM" in record.getMessage()
    assert not (tmp_path / "cache").exists()
    X = _no_show_frame(200, seed=15, unseen=True)
    assert np.array_equal(predictor.raw_score(X), predictor.booster.predict(X, raw_score=True))


def test_a_library_of_another_model_is_refused_by_the_probe_check(
    no_show_bundle: Path, ranker_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a bundle whose library file (and consistent sidecar) holds a different model's code
    bundle = _copy_bundle(no_show_bundle, tmp_path / "bundle", keep_library=True)
    (own,) = bundle.glob(f"trees-*{compiled.SUFFIX}")
    (other,) = ranker_bundle.glob(f"trees-*{compiled.SUFFIX}")
    own.write_bytes(other.read_bytes())
    sidecar = bundle / (own.name + ".json")
    meta = compiled.json.loads(sidecar.read_text())
    meta["sha256"] = compiled.hashlib.sha256(other.read_bytes()).hexdigest()
    sidecar.write_text(compiled.json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="features.compiled"):
        predictor = NoShowPredictor.load(bundle, trees=_settings(tmp_path))
    # Then it does not serve: LightGBM does, and the log says why
    assert predictor.backend == "lightgbm"
    (record,) = caplog.records
    assert "differ from LightGBM" in record.getMessage() or "does not load" in record.getMessage()


def test_a_missing_compiler_falls_back(
    no_show_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a bundle without a library and no lleaves importable
    bundle = _copy_bundle(no_show_bundle, tmp_path / "bundle", keep_library=False)
    monkeypatch.setitem(__import__("sys").modules, "lleaves.compiler.ast", None)
    with caplog.at_level(logging.WARNING, logger="features.compiled"):
        predictor = NoShowPredictor.load(bundle, trees=_settings(tmp_path))
    assert predictor.backend == "lightgbm"
    assert "lleaves is not installed" in caplog.records[0].getMessage()


def test_a_failing_compile_falls_back(
    ranker_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _copy_bundle(ranker_bundle, tmp_path / "bundle", keep_library=False)

    def broken(_model_file: Path) -> bytes:
        raise RuntimeError("LLVM ERROR: out of memory")

    monkeypatch.setattr(compiled, "_compile_object", broken)
    ranker = SpecialistRanker.load(bundle, trees=_settings(tmp_path))
    assert ranker.backend == "lightgbm"
    # (unless compiled trees are required: then loading fails, naming the reason)
    with pytest.raises(ValueError, match=r"REFERRAL_ML_TREES=lleaves .* out of memory"):
        SpecialistRanker.load(bundle, trees=_settings(tmp_path, backend="lleaves"))
    X = pd.DataFrame(
        np.random.default_rng(6).random((30, len(PAIR_FEATURES))), columns=list(PAIR_FEATURES)
    )
    assert np.array_equal(ranker.score(X), ranker.booster.predict(X, raw_score=True))


# -- the cache ------------------------------------------------------------------------------


def test_a_bundle_without_a_library_is_compiled_once_into_the_cache(
    no_show_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a bundle without its library (exported elsewhere, or before compiled trees)
    bundle = _copy_bundle(no_show_bundle, tmp_path / "bundle", keep_library=False)
    settings = _settings(tmp_path)
    # When it is loaded for serving twice
    first = NoShowPredictor.load(bundle, trees=settings)
    assert first.backend == "lleaves"
    (cached,) = (tmp_path / "cache").glob(f"trees-*{compiled.SUFFIX}")
    assert isinstance(first.scorer, LleavesScorer) and first.scorer.path == cached

    def no_compiling(_model_file: Path) -> bytes:
        raise AssertionError("compiled again")

    monkeypatch.setattr(compiled, "_compile_object", no_compiling)
    again = NoShowPredictor.load(bundle, trees=settings)
    # Then the second load used the cached library, compiling nothing
    assert again.backend == "lleaves"
    assert list(bundle.glob("trees-*")) == []


def test_the_cache_key_changes_with_the_model_and_the_toolchain(
    no_show_bundle: Path, ranker_bundle: Path
) -> None:
    text = (no_show_bundle / "model.txt").read_bytes()
    tools = compiled.toolchain()
    key = library_key(text, tools)
    assert library_key(text, tools) == key
    assert library_key((ranker_bundle / "model.txt").read_bytes(), tools) != key
    assert library_key(text.replace(b"leaf_value=", b"leaf_value=1", 1), tools) != key
    for field in ("cpu", "cpu_features", "lleaves", "llvmlite", "layout"):
        assert library_key(text, {**tools, field: tools[field] + "x"}) != key, field
    assert library_path(no_show_bundle, key).name.startswith(f"trees-{key[:24]}")


def test_a_changed_model_does_not_use_the_old_library(
    no_show_bundle: Path, tmp_path: Path, no_show_booster: lgb.Booster
) -> None:
    # Given a bundle whose model.txt was replaced by a retrained model, its old library kept
    bundle = _copy_bundle(no_show_bundle, tmp_path / "bundle", keep_library=True)
    retrained = lgb.Booster(model_str=no_show_booster.model_to_string(num_iteration=10))
    retrained.save_model(str(bundle / "model.txt"))
    # When it is loaded, the new model is compiled (into the cache) and scores as itself
    predictor = NoShowPredictor.load(bundle, trees=_settings(tmp_path))
    assert predictor.backend == "lleaves"
    X = _no_show_frame(500, seed=16, unseen=True)
    assert _max_diff(predictor.raw_score(X), retrained.predict(X, raw_score=True)) <= 1e-6
    assert len(list((tmp_path / "cache").glob(f"trees-*{compiled.SUFFIX}"))) == 1


def test_scorer_for_never_raises_on_an_unreadable_model(tmp_path: Path) -> None:
    booster = _ranker_booster()
    scorer = scorer_for(booster, tmp_path / "missing.txt", _settings(tmp_path), "ranker")
    assert scorer.backend == "lightgbm"
