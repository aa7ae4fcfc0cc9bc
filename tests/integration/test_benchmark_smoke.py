"""The generator benchmark harness runs on a tiny size, so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_generate_benchmark_smoke(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_generate.py"),
            "--sizes",
            "small",
            "--results",
            str(tmp_path),
            "--overrides",
            json.dumps({"patients": 300, "referrals": 400}),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert "| small |" in run.stdout
    (written,) = tmp_path.glob("generate-*.json")
    result = json.loads(written.read_text())["results"][0]
    assert result["rows"] > 0 and result["peak_rss_gb"] > 0 and result["ratio_to_write"] > 1
