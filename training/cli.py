"""The `referral-ml` command line. Heavy imports stay inside the commands so `--help` is instant."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Specialist matching and no-show risk for healthcare referrals.",
)


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the world into.")] = Path(
        "data/world"
    ),
    size: Annotated[
        Literal["small", "medium", "large"], typer.Option(help="Preset counts.")
    ] = "small",
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives the same tables.")
    ] = 7,
    patients: Annotated[int | None, typer.Option(help="Override the number of patients.")] = None,
    specialists: Annotated[
        int | None, typer.Option(help="Override the number of specialists.")
    ] = None,
    referrals: Annotated[int | None, typer.Option(help="Override the number of referrals.")] = None,
    months: Annotated[int | None, typer.Option(help="Override the months of history.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
) -> None:
    """Generate a synthetic referral world (tables, truth/, manifest.json) and print its calibration."""
    from pydantic import ValidationError

    from synthetic_data.calibration import format_table
    from synthetic_data.config import WorldConfig
    from synthetic_data.world import write_world

    try:
        cfg = WorldConfig.for_size(
            size,
            seed=seed,
            patients=patients,
            specialists=specialists,
            referrals=referrals,
            months=months,
        )
    except ValidationError as exc:
        for err in exc.errors():
            field = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
            typer.echo(f"error: {field}: {err['msg']}", err=True)
        raise typer.Exit(2) from None

    def report(stage: str, seconds: float) -> None:
        if not quiet:
            typer.echo(f"  done  {stage:<48} {seconds:6.1f} s", err=True)

    t0 = time.perf_counter()
    typer.echo(f"Generating a {size} world (seed {seed}) into {out} ...", err=True)
    manifest = write_world(cfg, out, report)
    counts = manifest["counts"]
    assert isinstance(counts, dict)
    typer.echo(
        ", ".join(f"{name} {n:,}" for name, n in counts.items())
        + f"  ({time.perf_counter() - t0:.1f} s)"
    )
    typer.echo("\nCalibration against published figures (shared/reference/FACTS.md):")
    calibration = manifest["calibration"]
    assert isinstance(calibration, list)
    typer.echo(format_table(calibration))
    missed = [r["metric"] for r in calibration if not r["ok"]]
    if missed:
        typer.echo(f"\n{len(missed)} figure(s) outside the target range.", err=True)


@app.command()
def validate(
    directory: Annotated[Path, typer.Argument(help="A dataset folder: one Parquet/CSV per table.")],
) -> None:
    """Check a dataset against the data contract; list every violation, exit 1 if any."""
    from features.validation import main_validate

    raise typer.Exit(main_validate(directory))


def main() -> None:
    """Entry point for the console script."""
    app(prog_name="referral-ml")


if __name__ == "__main__":
    main()
