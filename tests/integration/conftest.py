"""Integration fixtures: a real MLflow tracking server and a real PostgreSQL server, each started
once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.postgres import PostgresError, find_bindir, running_cluster
from tests.integration.servers import (
    CORS_ORIGIN,
    Exported,
    Server,
    newest_model,
    referral_ml,
    served_world,
)
from tests.integration.servers import free_port as _free_port
from tests.integration.servers import stop as _stop
from tests.integration.servers import tail as _tail

MLFLOW_EXE = Path(sys.executable).parent / "mlflow"
REQUIRE_POSTGRES_ENV = "REFERRAL_ML_REQUIRE_POSTGRES"  # CI sets it: no silent skip there
START_TIMEOUT_S = 60.0
PORT_ATTEMPTS = 3


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _start(root: Path, port: int, stderr: Path) -> subprocess.Popen[bytes]:
    # A hermetic server: no MLFLOW_* settings from the test process (MLflow's set_tracking_uri
    # exports MLFLOW_TRACKING_URI), and no background job runner, which the tests do not use.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [
        str(MLFLOW_EXE),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with (root / "stdout.log").open("wb") as out, stderr.open("wb") as err:
        return subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=err, start_new_session=True
        )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real `mlflow server` (SQLite backend, proxied artifacts) on a free local port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    stderr = root / "stderr.log"
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _start(root, port, stderr)
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and not _healthy(url):
            if time.monotonic() > deadline:
                _stop(proc)
                pytest.fail(
                    f"mlflow server did not answer {url}/health within {START_TIMEOUT_S:.0f} s; "
                    f"stderr:\n{_tail(stderr)}"
                )
            time.sleep(0.2)
        if proc.poll() is None:
            break
        _stop(proc)
        # The port was free a moment ago; someone may have taken it since. Try another.
        if "address already in use" in _tail(stderr).lower() and attempt < PORT_ATTEMPTS:
            continue
        pytest.fail(f"mlflow server exited with {proc.returncode}; stderr:\n{_tail(stderr)}")
    try:
        yield url
    finally:
        died = proc.poll()
        _stop(proc)
    if died is not None:
        pytest.fail(f"mlflow server died during the session ({died}); stderr:\n{_tail(stderr)}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of the database `referral` on a throwaway PostgreSQL server (127.0.0.1,
    a free port, trust auth), stopped at the end of the session. Skips when PostgreSQL is not
    installed, unless $REFERRAL_ML_REQUIRE_POSTGRES=1: then it fails."""
    bindir = find_bindir()
    if bindir is None:
        reason = (
            "PostgreSQL is not installed (no initdb/pg_ctl/postgres under "
            "/usr/lib/postgresql/*/bin, $REFERRAL_ML_PG_BINDIR or PATH); "
            "`make postgres-deps` installs Debian's postgresql package"
        )
        if os.environ.get(REQUIRE_POSTGRES_ENV, "").strip().lower() not in {"", "0", "false", "no"}:
            pytest.fail(f"{REQUIRE_POSTGRES_ENV} is set but {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        with running_cluster(bindir, "referral") as cluster:
            yield cluster.url("referral")
    except PostgresError as exc:
        pytest.fail(f"PostgreSQL test server: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> Exported:
    """`referral-ml train`, `promote --force` (a small world may not pass every gate) and
    `export` of both models on the small world, once per test session."""
    root = tmp_path_factory.mktemp("exported")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    env = {"BENTOML_HOME": str(root / "bentoml")}
    for model in ("no-show", "ranker"):
        trained = referral_ml(
            "train", model, "--data", str(small_world), "--tracking-uri", tracking, cwd=root
        )
        assert trained.returncode == 0, trained.stderr
        promoted = referral_ml("promote", model, "--force", "--tracking-uri", tracking, cwd=root)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    run = referral_ml("export", "--tracking-uri", tracking, cwd=root, env=env)
    assert run.returncode == 0, run.stderr
    models = root / "bentoml" / "models"
    return Exported(
        tracking,
        root / "bentoml",
        newest_model(models, "specialist-ranker"),
        newest_model(models, "no-show"),
        run.stdout,
    )


@pytest.fixture(scope="package")
def server(
    tmp_path_factory: pytest.TempPathFactory, small_world: Path, bundles: dict[str, Path]
) -> Iterator[Server]:
    """One real `bentoml serve` of the service for the integration tests: models trained on the
    small world, a SQLite store loaded with it, one key per role, CORS allowed for CORS_ORIGIN."""
    root = tmp_path_factory.mktemp("service")
    with served_world(
        root,
        small_world,
        ranker=bundles["ranker"],
        no_show=bundles["no_show"],
        extra_env={"REFERRAL_ML_CORS_ORIGINS": CORS_ORIGIN},
    ) as running:
        yield running
