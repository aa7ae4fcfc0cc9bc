"""FHIR and CMS interoperability end to end: the CLI imports a directory into a real store, the
runtime recommends on it, the world survives a FHIR round trip, and training reads FHIR
Appointment ndjson exactly as it reads the contract's table."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.codes import npi_of
from features.reasons import NO_HISTORY, UNLISTED_AVAILABILITY, UNLISTED_NETWORKS
from features.validation import load_dataset, validate_directory
from serving.runtime import Runtime
from serving.schemas import RecommendRequest
from serving.store import Store
from training.cli import app

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CMS_SAMPLE = FIXTURES / "cms_sample.csv"


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def fhir_export(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> Path:
    out = tmp_path_factory.mktemp("fhir") / "world"
    # --no-validate: tests/unit/test_fhir_export.py validates every resource of this export
    code, output = _cli("export-fhir", str(small_world), "--out", str(out), "--no-validate")
    assert code == 0, output
    return out


@pytest.fixture(scope="module")
def cms_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Path, str]:
    root = tmp_path_factory.mktemp("cms")
    url = f"sqlite:///{root / 'directory.db'}"
    code, output = _cli(
        "import-directory", "cms", str(CMS_SAMPLE), "--db", url, "--out", str(root / "dataset")
    )
    assert code == 0, output
    store = Store(url)
    return store, root / "dataset", output


def test_a_cms_import_reports_counts_and_writes_a_valid_dataset(
    cms_store: tuple[Store, Path, str],
) -> None:
    store, dataset, output = cms_store
    report = json.loads((dataset / "import_report.json").read_text())
    assert f"imported {report['imported']:,} specialists" in output
    assert report["imported"] > 0 and sum(report["skipped"].values()) > 0
    for reason, n in report["skipped"].items():
        assert f"{reason} {n:,}" in output
    assert report["problems"] and all(p.startswith("line ") for p in report["problems"])
    assert validate_directory(dataset).ok
    stored = store.read_tables(["specialists"])["specialists"]
    assert len(stored) == report["imported"] == report["tables"]["specialists"]


def test_recommend_works_on_an_imported_cms_directory_and_says_what_it_lacks(
    cms_store: tuple[Store, Path, str], bundles: dict[str, Path]
) -> None:
    store, _, _ = cms_store
    sp = store.read_tables(["specialists"])["specialists"]
    counts = sp.groupby("specialty").size().sort_values(ascending=False)
    specialty = str(counts.index[0])
    first = sp[sp["specialty"] == specialty].iloc[0]
    runtime = Runtime(
        store.url, bundles["ranker"], bundles["no_show"], now=datetime(2026, 12, 1), store=store
    )
    assert runtime.load(), runtime.not_ready_reason
    body = {
        "referral": {
            "patient": {
                "age": 58,
                "sex": "F",
                "language": "en",
                "latitude": float(first["latitude"]) + 0.01,
                "longitude": float(first["longitude"]),
                "insurance_plan_id": "ANY-PLAN",
            },
            "specialty": specialty,
            "reason_code": "I50.9",
        },
        "k": 10,
    }
    res = runtime.recommend(RecommendRequest.model_validate(body), "rid")
    assert res.specialists, res.empty_reason
    assert len({npi_of(s.specialist_id) for s in res.specialists}) == len(res.specialists)
    for s in res.specialists:
        assert UNLISTED_AVAILABILITY in s.reasons and UNLISTED_NETWORKS in s.reasons
        assert not any("% of referrals here" in r or "★" in r for r in s.reasons)
        assert s.next_available is None and s.availability_listed is False
    said = {r for s in res.specialists for r in s.reasons}
    assert NO_HISTORY in said or "no reviews yet" in said or "km away" in " ".join(said)


def test_the_world_survives_a_fhir_round_trip(
    fhir_export: Path, small_tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    out = tmp_path / "imported"
    code, output = _cli("import-directory", "fhir", str(fhir_export / "ndjson"), "--out", str(out))
    assert code == 0, output
    back = load_dataset(out)
    key = ["specialist_id"]
    cols = ["specialist_id", "specialty", "latitude", "longitude", "organization_id"]
    before = small_tables["specialists"][cols].sort_values(key).reset_index(drop=True)
    after = back["specialists"][cols].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after, check_dtype=False)
    full = ["first_name", "last_name", "sex", "languages", "network_ids", "accepting_new_patients"]
    a = small_tables["specialists"].set_index("specialist_id")[full].sort_index()
    b = back["specialists"].set_index("specialist_id")[full].sort_index()
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    orgs = ["organization_id", "latitude", "longitude", "postal_code", "city", "state"]
    used = small_tables["organizations"][
        small_tables["organizations"]["organization_id"].isin(before["organization_id"])
    ]
    pd.testing.assert_frame_equal(
        used[orgs].sort_values("organization_id").reset_index(drop=True),
        back["organizations"][orgs].sort_values("organization_id").reset_index(drop=True),
        check_dtype=False,
    )


def test_training_reads_fhir_appointments_as_the_contract_table(
    fhir_export: Path, small_world: Path
) -> None:
    from training.no_show import load_world
    from training.no_show_job import load_no_show_data

    said: list[str] = []
    fhir = load_no_show_data(
        small_world,
        None,
        None,
        None,
        say=said.append,
        fhir_appointments=fhir_export / "ndjson" / "Appointment.ndjson",
    )
    plain = load_world(small_world)
    assert any("appointments read from Appointment.ndjson" in s for s in said)

    def rows(flat: pd.DataFrame) -> pd.DataFrame:
        out = flat.sort_values("appointment_id").reset_index(drop=True)
        for c in out.columns:
            if pd.api.types.is_datetime64_any_dtype(out[c]):
                out[c] = out[c].astype("datetime64[us]")  # Parquet keeps ms, FHIR reading us
        return out

    pd.testing.assert_frame_equal(rows(fhir.flat), rows(plain.flat), check_dtype=False)


def test_bad_fhir_appointments_are_reported_by_line_and_the_rest_used(
    fhir_export: Path, small_world: Path, tmp_path: Path
) -> None:
    from training.no_show_job import load_no_show_data

    lines = (fhir_export / "ndjson" / "Appointment.ndjson").read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]  # line 3: cut short, not JSON
    bad_status = json.loads(lines[4])
    bad_status["status"] = "attended"  # line 5: not an Appointment status
    lines[4] = json.dumps(bad_status)
    path = tmp_path / "Appointment.ndjson"
    path.write_text("\n".join(lines) + "\n")
    said: list[str] = []
    rejected = tmp_path / "rejected.txt"
    data = load_no_show_data(
        small_world, None, None, rejected, say=said.append, fhir_appointments=path
    )
    assert len(data.flat) == len(lines) - 2
    listed = rejected.read_text().splitlines()
    assert [m.split(":")[0] for m in listed] == ["line 3", "line 5"]
    assert "Appointment.status" in listed[1]
    assert any("2 FHIR Appointment resource(s) not used" in s for s in said)


def test_a_fhir_appointments_file_with_nothing_usable_is_a_one_line_error(
    small_world: Path, tmp_path: Path
) -> None:
    code, output = _cli(
        "train",
        "no-show",
        "--data",
        str(small_world),
        "--fhir-appointments",
        str(FIXTURES / "fhir_appointments" / "bad.ndjson"),
        "--rejected-out",
        str(tmp_path / "rejected.txt"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert code == 2, output
    assert "no usable Appointment resources" in output and "line 2:" in output
