"""`bentoml build` of the service works (what `make bento` runs), and the built Bento serves:
started from its own copy of the code, outside the source tree, with the models it names.
Containerizing it needs a Docker engine, which CI lacks (README, "Deploying")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from serving.keys import Role, create_key
from serving.store import Store
from tests.integration.servers import REPO, Exported, http_status, referral_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENTOML = Path(sys.executable).parent / "bentoml"


def _uv() -> str:
    found = REPO / ".uv" / "bin" / "uv"
    return str(found) if found.exists() else (shutil.which("uv") or "uv")


def _post(url: str, body: dict[str, object], key: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def test_bento_builds_and_serves(exported: Exported, small_world: Path, tmp_path: Path) -> None:
    # Given the models exported to a BentoML store and the lock file exported as requirements
    build = tmp_path / "ctx"
    shutil.copytree(
        REPO,
        build,
        ignore=shutil.ignore_patterns(
            ".venv", ".uv", "data", "mlruns", "*.db*", ".git", "test-artifacts", "build"
        ),
    )
    (build / "build").mkdir()
    exported_req = subprocess.run(
        [_uv(), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--quiet"]
        + ["-o", str(build / "build" / "requirements.txt")],
        cwd=build,
        capture_output=True,
        text=True,
        env=dict(os.environ, UV_PYTHON_DOWNLOADS="never"),
    )
    assert exported_req.returncode == 0, exported_req.stderr
    env = dict(os.environ, BENTOML_HOME=str(exported.bentoml_home), BENTOML_DO_NOT_TRACK="True")
    env["PATH"] = f"{Path(_uv()).parent}:{env['PATH']}"  # bentoml build calls uv
    # When the Bento is built from bentofile.yaml
    run = subprocess.run(
        [str(BENTOML), "build", "-f", "bentofile.yaml", ".", "--output", "tag"],
        cwd=build,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    tag = run.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = exported.bentoml_home / "bentos" / name / version
    # Then it holds the service code, the code sets and the two exported models
    meta = yaml.safe_load((bento / "bento.yaml").read_text())
    assert meta["service"] == "serving.service:ReferralService"
    assert {m["tag"].split(":")[0] for m in meta["models"]} == {"specialist-ranker", "no-show"}
    assert (bento / "src" / "serving" / "service.py").exists()
    assert (bento / "src" / "features" / "codesets" / "specialties.csv").exists()
    assert not (bento / "src" / "tests").exists() and not (bento / "src" / "data").exists()
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "lightgbm==" in requirements and "bentoml==" in requirements

    # And served by its tag from an empty folder, it answers /recommend with its own models
    url = f"sqlite:///{tmp_path / 'referral.db'}"
    store = Store(url)
    store.create()
    store.load_dataset(small_world)
    key = create_key(store, Role.REFERRAL_UI)[1]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with referral_service(
        tmp_path,
        store_url=url,
        ranker=None,
        no_show=None,
        as_of=str(json.loads((small_world / "manifest.json").read_text())["as_of"]),
        target=tag,
        bentoml_home=exported.bentoml_home,
        cwd=elsewhere,
    ) as base:
        assert http_status(f"{base}/readyz") == 200
        body = json.loads((REPO / "examples" / "recommend.json").read_text())
        status, answer = _post(f"{base}/recommend", body, key)
        assert status == 200, answer
        assert answer["model_version"] and isinstance(answer["specialists"], list)
    store.dispose()
