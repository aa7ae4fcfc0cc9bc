"""The service's set-up commands: export the champions to BentoML, load the store, manage keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features.matcher import SpecialistRanker
from features.predictor import NoShowPredictor
from serving.keys import Role, verify
from serving.store import Store
from tests.integration.servers import Exported

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).parent / "referral-ml")


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_export_refuses_without_champions(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"BENTOML_HOME": str(tmp_path / "bentoml")}
    # Given nothing promoted, export refuses and writes nothing
    refused = cli("export", "--tracking-uri", store, cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "no @champion" in refused.stderr
    assert not (tmp_path / "bentoml" / "models").exists() or not any(
        (tmp_path / "bentoml" / "models").iterdir()
    )


@pytest.mark.slow
def test_export_puts_both_champions_and_their_reports_in_the_bentoml_store(
    exported: Exported, tmp_path: Path
) -> None:
    # Given both models trained, promoted (forced) and exported (the `exported` fixture)
    # Then each is a BentoML model holding its bundle and registry version
    ranker, no_show = exported.ranker, exported.no_show
    assert (ranker / "VERSION").read_text().strip() == "1"
    assert SpecialistRanker.load(ranker).features
    assert NoShowPredictor.load(no_show).tiers["high"] > 0
    assert "specialist-ranker v1 -> BentoML specialist-ranker:" in exported.export_stdout
    # And the run's reports beside it: card, plots and metrics, as the console shows them
    for model, plots in ((no_show, {"calibration", "subgroup_calibration"}), (ranker, set())):
        reports = model / "reports"
        assert (reports / "model_card.md").read_text().startswith("# Model card")
        assert plots <= {p.stem for p in reports.glob("*.png")}
        assert any(reports.glob("*.png"))
        assert "test" in json.loads((reports / "metrics.json").read_text())
    # And exporting the same champions again adds nothing to the store
    env = {"BENTOML_HOME": str(exported.bentoml_home)}
    again = cli("export", "--tracking-uri", exported.tracking_uri, cwd=tmp_path, env=env)
    assert again.returncode == 0 and again.stdout.count("(already there)") == 2, again.stdout
    models = exported.bentoml_home / "models"
    assert len([p for p in (models / "no-show").iterdir() if p.is_dir()]) == 1


def test_store_load_and_keys(small_world: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'referral.db'}"
    # When a world is loaded into the store, the counts are printed
    loaded = cli("store", "load", "--data", str(small_world), "--db", db, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert "specialists 300" in loaded.stdout
    # And a key is printed once and verifies with its role, until revoked
    made = cli("keys", "create", "--role", "outreach", "--db", db, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    found = verify(Store(db), secret)
    assert found is not None and found[1] == Role.OUTREACH
    assert cli("keys", "revoke", found[0], "--db", db, cwd=tmp_path).returncode == 0
    assert verify(Store(db), secret) is None
    # Bad input is named, without a traceback
    bad_role = cli("keys", "create", "--role", "nurse", "--db", db, cwd=tmp_path)
    assert bad_role.returncode == 2 and "--role" in bad_role.stderr
    missing = cli("store", "load", "--data", str(tmp_path / "nope"), "--db", db, cwd=tmp_path)
    assert missing.returncode == 2 and "is missing" in missing.stderr
    assert "Traceback" not in bad_role.stderr + missing.stderr
