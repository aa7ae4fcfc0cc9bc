"""The `referral-ml` command line. Heavy imports stay inside the commands so `--help` is instant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Specialist matching and no-show risk for healthcare referrals.",
)


@app.command()
def validate(
    directory: Annotated[Path, typer.Argument(help="A dataset folder: one Parquet/CSV per table.")],
) -> None:
    """Check a dataset against the data contract; list every violation, exit 1 if any."""
    from features.validation import main_validate

    raise typer.Exit(main_validate(directory))


def main() -> None:
    """Entry point for the console script."""
    app()
