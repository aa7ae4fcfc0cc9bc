"""The notebooks run top to bottom on a small world (nbmake), and are stored without outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _books() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_four_notebooks_are_there_and_stored_without_outputs() -> None:
    assert [p.name[:2] for p in _books()] == ["01", "02", "03", "04"]
    for path in _books():
        book = json.loads(path.read_text())
        code = [c for c in book["cells"] if c["cell_type"] == "code"]
        assert code, path.name
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), path.name
        # They import the project's code rather than copying it
        assert any("from training" in "".join(c["source"]) for c in code) or path.name.startswith(
            "01"
        )


@pytest.mark.integration
@pytest.mark.slow
def test_the_notebooks_run_on_a_small_world(small_world: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REFERRAL_ML_NOTEBOOK_WORLD": str(small_world),
        "MPLBACKEND": "Agg",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbmake",
            "-q",
            "-p",
            "no:cacheprovider",
            *map(str, _books()),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "4 passed" in run.stdout
