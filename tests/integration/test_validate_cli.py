"""`referral-ml validate` end to end: Parquet folder in, summary or violation lines out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from tests.unit.contract_fixtures import valid_tables
from training.cli import app

pytestmark = pytest.mark.integration


def _args(directory: Path) -> list[str]:
    # Typer runs a lone command without its name; with more commands it becomes a subcommand.
    is_group = hasattr(typer.main.get_command(app), "commands")
    return ["validate", str(directory)] if is_group else [str(directory)]


def _write(tables: dict[str, pd.DataFrame], directory: Path) -> None:
    for table, df in tables.items():
        df.to_parquet(directory / f"{table}.parquet", index=False)


def test_validate_clean_then_corrupted(tmp_path: Path) -> None:
    runner = CliRunner()
    tables = valid_tables()
    _write(tables, tmp_path)

    clean = runner.invoke(app, _args(tmp_path))
    assert clean.exit_code == 0, clean.output
    assert "Dataset satisfies the contract." in clean.output
    assert "Rows per table" in clean.output
    assert "No-show rate" in clean.output
    assert len(clean.output.splitlines()) <= 24

    patients = tables["patients"].copy()
    patients.loc[2, "birth_year"] = 1850
    patients.to_parquet(tmp_path / "patients.parquet", index=False)

    broken = runner.invoke(app, _args(tmp_path))
    assert broken.exit_code == 1, broken.output
    expected = "patients.birth_year row 2: birth_year 1850 is outside the range 1900..2026"
    assert expected in [line.strip() for line in broken.output.splitlines()], broken.output
    assert "1 violation in total (patients 1)." in broken.output


def test_validate_unreadable_input_exits_2(tmp_path: Path) -> None:
    runner = CliRunner()
    _write(valid_tables(), tmp_path)
    (tmp_path / "referrals.parquet").write_bytes(b"PAR1 truncated")
    result = runner.invoke(app, _args(tmp_path))
    assert result.exit_code == 2, result.output
    assert "cannot read referrals.parquet" in result.output

    missing = runner.invoke(app, _args(tmp_path / "does-not-exist"))
    assert missing.exit_code == 2
