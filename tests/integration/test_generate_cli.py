"""`referral-ml generate` end to end through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from features.contract import TABLES, TRUTH_TABLES

pytestmark = pytest.mark.integration


def test_generate_then_validate_through_the_console_script(tmp_path: Path) -> None:
    # Given a fresh folder
    out = tmp_path / "w"
    exe = Path(sys.executable).parent / "referral-ml"
    # When the console script generates a small world with overridden counts
    gen = subprocess.run(
        [
            str(exe),
            "generate",
            "--size",
            "small",
            "--seed",
            "5",
            "--patients",
            "800",
            "--referrals",
            "1200",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then it succeeds, writes every table, truth/ and a manifest, and prints the calibration
    assert gen.returncode == 0, gen.stderr
    assert "Calibration against published figures" in gen.stdout
    assert "no-show rate, all visits" in gen.stdout
    for name in TABLES:
        assert (out / f"{name}.parquet").exists()
    for name in TRUTH_TABLES:
        assert (out / "truth" / f"{name}.parquet").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["patients"] == 800 and manifest["counts"]["referrals"] == 1200
    assert len(pd.read_parquet(out / "referrals.parquet")) == 1200
    # And the world it wrote passes `validate`
    val = subprocess.run(
        [str(exe), "validate", str(out)], capture_output=True, text=True, timeout=120
    )
    assert val.returncode == 0, val.stdout + val.stderr
    assert "satisfies the contract" in val.stdout


def test_generate_rejects_a_bad_count_with_a_clear_message(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "referral-ml"
    run = subprocess.run(
        [str(exe), "generate", "--patients", "0", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "patients" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "x").exists()
