"""Starting and stopping real server processes in tests (MLflow, BentoML)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from serving.keys import Role
from serving.store import Store

STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, chars: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-chars:] or "(no output)"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (uvicorn worker included), then SIGKILL what is left."""
    pgid = proc.pid  # start_new_session=True: the server leads its own process group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT_S)
    # Whatever of the group is still running (a worker that ignored SIGTERM) is killed.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=STOP_TIMEOUT_S)


BENTOML_EXE = Path(sys.executable).parent / "bentoml"
REPO = Path(__file__).resolve().parents[2]
SERVICE_START_TIMEOUT_S = 90.0


def http_status(url: str) -> int:
    """The HTTP status of a GET (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@contextlib.contextmanager
def referral_service(
    root: Path,
    *,
    store_url: str,
    ranker: Path | None,
    no_show: Path | None,
    as_of: str,
    extra_env: dict[str, str] | None = None,
    wait_ready: bool = True,
    target: str = "serving.service:ReferralService",
    bentoml_home: Path | None = None,
    cwd: Path = REPO,
) -> Iterator[str]:
    """`bentoml serve <target>` (default: the service from the source tree) on a free local
    port, with these store, bundles (None: the newest in the BentoML store at `bentoml_home`)
    and clock, and no other REFERRAL_ML_/BENTOML_ settings but `extra_env`; yields its base URL
    once /readyz answers 200 (with `wait_ready=False`: once /livez does) and stops it
    afterwards. Logs go to `root`; a failed start fails the test with their tails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFERRAL_ML_", "BENTOML_"))}
    env.update(
        REFERRAL_ML_STORE=store_url,
        REFERRAL_ML_NOW=str(as_of),
        BENTOML_HOME=str(bentoml_home or root / "bentoml"),
        BENTOML_DO_NOT_TRACK="True",
        OMP_WAIT_POLICY="PASSIVE",
    )
    if ranker is not None:
        env["REFERRAL_ML_RANKER_DIR"] = str(ranker)
    if no_show is not None:
        env["REFERRAL_ML_NO_SHOW_DIR"] = str(no_show)
    env.update(extra_env or {})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        str(BENTOML_EXE),
        "serve",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    stderr = root / "stderr.log"
    with (root / "stdout.log").open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        probe = f"{base}/readyz" if wait_ready else f"{base}/livez"
        while http_status(probe) != 200:
            if proc.poll() is not None:
                pytest.fail(
                    f"bentoml serve exited with {proc.returncode}; stderr:\n{tail(stderr)}\n"
                    f"stdout:\n{tail(root / 'stdout.log')}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{probe} not 200 within {SERVICE_START_TIMEOUT_S:.0f} s; "
                    f"stderr:\n{tail(stderr)}\nstdout:\n{tail(root / 'stdout.log')}"
                )
            time.sleep(0.3)
        yield base
    finally:
        stop(proc)


CORS_ORIGIN = "http://referral-ui.example.org"  # the origin the test service allows


@dataclass
class Server:
    """A running test service: its URL, store, one key per role, a few tables, its bundles."""

    url: str
    store: Store
    keys: dict[Role, str]
    tables: dict[str, pd.DataFrame]
    ranker: Path | None = None
    no_show: Path | None = None
    as_of: str = ""


def call(
    server: Server,
    path: str,
    body: Any = None,
    key: str | None = None,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
    method: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    """GET without a body; POST with `body` as JSON, or with `raw` bytes as they are (or
    `method`). Returns status, headers (lower-case names) and the body text."""
    sent = {"Content-Type": content_type, **(headers or {})}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    verb = method or ("GET" if data is None else "POST")
    req = urllib.request.Request(server.url + path, data=data, headers=sent, method=verb)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            got = {k.lower(): v for k, v in response.headers.items()}
            return int(response.status), got, response.read().decode()
    except urllib.error.HTTPError as exc:
        got = {k.lower(): v for k, v in exc.headers.items()}
        return int(exc.code), got, exc.read().decode()


@dataclass(frozen=True)
class Exported:
    """Both models trained and promoted through the CLI, then exported to a BentoML store."""

    tracking_uri: str
    bentoml_home: Path
    ranker: Path  # the exported models' folders (bundle + VERSION + reports/)
    no_show: Path
    export_stdout: str


def referral_ml(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `referral-ml` CLI (a real process, as a user would)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "referral-ml"), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def newest_model(models: Path, name: str) -> Path:
    """The folder of the newest model of this name in a BentoML models folder."""
    return models / name / (models / name / "latest").read_text().strip()


@contextlib.contextmanager
def served_world(
    root: Path,
    world: Path,
    *,
    ranker: Path,
    no_show: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """A SQLite store in `root` loaded with `world`, one key per role, and `referral_service`
    on it with these bundles and the world's clock; yields the running Server."""
    from serving.keys import create_key

    url = f"sqlite:///{root / 'referral.db'}"
    store = Store(url)
    store.create()
    store.load_dataset(world)
    keys = {role: create_key(store, role)[1] for role in Role}
    as_of = str(json.loads((world / "manifest.json").read_text())["as_of"])
    try:
        with referral_service(
            root, store_url=url, ranker=ranker, no_show=no_show, as_of=as_of, extra_env=extra_env
        ) as base:
            tables = store.read_tables(["patients", "specialists", "plans"])
            yield Server(base, store, keys, tables, ranker, no_show, as_of)
    finally:
        store.dispose()
