"""The console end to end: a real `bentoml serve` of models trained, promoted and exported by the
CLI, driven in headless Chromium (Debian's /usr/bin/chromium through Playwright) as an outreach
nurse, a referral coordinator and an administrator would use it. Screenshots of each page are
saved to test-artifacts/console/ (or $REFERRAL_ML_ARTIFACTS_DIR/console/)."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from serving.keys import Role
from serving.schemas import WORKLIST_CSV_COLUMNS
from tests.integration.servers import REPO, Exported, Server, call, served_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUIRE_BROWSER_ENV = "REFERRAL_ML_REQUIRE_BROWSER"  # CI sets it: no silent skip there
CHROMIUM = Path(os.environ.get("REFERRAL_ML_CHROMIUM", "/usr/bin/chromium"))
# As root, in a closed network: no sandbox, and none of Chromium's own calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


def _artifacts() -> Path:
    root = Path(os.environ.get("REFERRAL_ML_ARTIFACTS_DIR", REPO / "test-artifacts"))
    out = root / "console"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright over /usr/bin/chromium); skips when it is missing, unless
    $REFERRAL_ML_REQUIRE_BROWSER=1: then it fails."""
    if not CHROMIUM.exists():
        reason = f"Chromium is not installed at {CHROMIUM}; `make browser-deps` installs it"
        if os.environ.get(REQUIRE_BROWSER_ENV, "").strip().lower() not in {"", "0", "false", "no"}:
            pytest.fail(f"{REQUIRE_BROWSER_ENV} is set but {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _uplift_bundle(directory: Path, no_show: Path) -> Path:
    """A hand-built outreach-uplift bundle over the exported no-show model's features (its
    training lives elsewhere): a call helps medicaid patients most."""
    from features.no_show import NoShowFeatureSpec
    from features.uplift import EffectTerms, UpliftPredictor

    spec = NoShowFeatureSpec.from_dict(json.loads((no_show / "feature_spec.json").read_text()))
    terms = EffectTerms(
        numeric=["distance_km"],
        center=[10.0],
        scale=[5.0],
        fill=[10.0],
        indicators=[("payer_type", "medicaid")],
        thresholds=[("age", 75.0)],
        coef=[-0.3, -0.1, -1.5, -0.1],
    )
    uplift = UpliftPredictor("logit-interaction", spec, terms, metadata={"version": "1"})
    return uplift.save(directory)


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory, small_world: Path, exported: Exported
) -> Iterator[Server]:
    """The service on the exported champions and a hand-built outreach-uplift bundle, a store
    loaded with the small world, a key per role."""
    root = tmp_path_factory.mktemp("console-service")
    uplift = _uplift_bundle(root / "outreach_uplift", exported.no_show)
    with served_world(
        root,
        small_world,
        ranker=exported.ranker,
        no_show=exported.no_show,
        extra_env={"REFERRAL_ML_UPLIFT_DIR": str(uplift)},
    ) as running:
        yield running


def _points(benefit: float | None) -> str:
    """The console's figure for an expected benefit."""
    return "—" if benefit is None else f"{100 * benefit:.1f} pts"


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser tab (its own session storage) that fails the test on a console error,
    such as a script or style blocked by the page's security policy."""
    context = chromium.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    yield tab
    context.close()
    # A 401 for the deliberately bad key is the only error a test may cause
    unexpected = [e for e in errors if "401" not in e]
    assert not unexpected, unexpected


def _sign_in(page: Any, console: Server, role: Role) -> None:
    page.goto(f"{console.url}/console/")
    page.fill("#api-key", console.keys[role])
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#who:not([hidden])")


def _visible_pages(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#nav a", "links => links.filter(a => !a.hidden).map(a => a.dataset.page)"
    )


def test_outreach_nurse_works_the_worklist(page: Any, console: Server) -> None:
    # Given an outreach key, signing in opens the worklist and only the worklist
    _sign_in(page, console, Role.OUTREACH)
    assert page.is_visible("#page-worklist")
    assert _visible_pages(page) == ["worklist"]
    # When the next three days are shown
    start = date.fromisoformat(console.as_of[:10])
    end = start + timedelta(days=2)
    page.fill("#wl-start", start.isoformat())
    page.fill("#wl-end", end.isoformat())
    page.fill("#wl-capacity", "15")
    page.click("#wl-load")
    page.wait_for_selector("#wl-table tbody tr")
    # Then the rows are the API's worklist, in its order: highest risk first
    body = {"start": start.isoformat(), "end": end.isoformat(), "capacity": 15}
    status, _, text = call(console, "/outreach/worklist", body, console.keys[Role.OUTREACH])
    assert status == 200
    api_rows = json.loads(text)["rows"]
    ids = page.eval_on_selector_all("#wl-table tbody tr", "rows => rows.map(r => r.dataset.id)")
    assert ids == [r["appointment_id"] for r in api_rows] and len(ids) > 3
    risks = [
        float(t.rstrip("%")) for t in page.locator("#wl-table tbody td.risk").all_inner_texts()
    ]
    assert risks == sorted(risks, reverse=True)
    # And beside each risk, the benefit of a call in percentage points ("—": not estimated)
    headers = page.locator("#wl-table thead th").all_inner_texts()
    assert headers[headers.index("Risk") + 1] == "Benefit if called"
    benefits = page.locator("#wl-table tbody td.benefit").all_inner_texts()
    assert benefits == [_points(r["expected_benefit"]) for r in api_rows]
    assert any(b.endswith(" pts") for b in benefits)
    tiers = page.locator("#wl-table tbody .chip").all_inner_texts()
    assert tiers == [r["tier"] for r in api_rows]
    factors = page.locator("#wl-table tbody tr:first-child td.factors").inner_text()
    assert factors and "_" not in factors  # factors in words, not column names
    assert "highest risk first" in page.inner_text("#wl-summary")
    page.screenshot(path=str(_artifacts() / "worklist.png"), full_page=True)

    # When the nurse moves down with the keyboard and marks the patient reached
    page.keyboard.press("j")
    second = ids[1]
    assert "selected" in (page.get_attribute(f'tr[data-id="{second}"]', "class") or "")
    page.keyboard.press("r")
    page.wait_for_selector(f"#status:has-text('Recorded for {second}: reached (call)')")
    # Then the contact is in the store, and the row says so without a reload
    log = console.store.contacts([second])
    assert list(log["outcome"]) == ["reached"] and list(log["channel"]) == ["call"]
    assert page.inner_text(f'tr[data-id="{second}"] td.contacts') == "1: last reached"
    assert "done" in (page.get_attribute(f'tr[data-id="{second}"]', "class") or "")
    # And a button records a message left by text on the first row
    page.select_option("#wl-channel", "text")
    page.click(f'tr[data-id="{ids[0]}"] button[data-outcome="left_message"]')
    page.wait_for_selector(f"#status:has-text('Recorded for {ids[0]}: left a message (text)')")
    first = console.store.contacts([ids[0]])
    assert list(first["outcome"]) == ["left_message"] and list(first["channel"]) == ["text"]
    page.click(f'tr[data-id="{ids[0]}"] button[data-outcome="rescheduled"]')
    page.wait_for_selector(f"#status:has-text('Recorded for {ids[0]}: rescheduled (text)')")
    assert list(console.store.contacts([ids[0]])["outcome"]) == ["left_message", "rescheduled"]

    # When the list is exported, the CSV holds the same rows
    with page.expect_download() as download:
        page.click("#wl-csv")
    csv_path = Path(download.value.path())
    lines = csv_path.read_text().strip().splitlines()
    assert lines[0] == ",".join(WORKLIST_CSV_COLUMNS)
    assert [line.split(",")[0] for line in lines[1:]] == ids
    assert download.value.suggested_filename == f"worklist_{start}_{end}.csv"
    shutil.copy(csv_path, _artifacts() / "worklist.csv")

    # When the list is ordered by the expected benefit of a call instead
    page.select_option("#wl-order", "expected_benefit")
    page.click("#wl-load")
    page.wait_for_selector("#wl-summary:has-text('largest expected benefit')")
    status, _, text = call(
        console,
        "/outreach/worklist",
        {**body, "order": "expected_benefit"},
        console.keys[Role.OUTREACH],
    )
    assert status == 200
    by_benefit = json.loads(text)["rows"]
    # Then the rows are in the API's benefit order, and the summary says so
    shown = page.eval_on_selector_all("#wl-table tbody tr", "rows => rows.map(r => r.dataset.id)")
    assert shown == [r["appointment_id"] for r in by_benefit] and shown != ids
    benefits = page.locator("#wl-table tbody td.benefit").all_inner_texts()
    assert benefits == [_points(r["expected_benefit"]) for r in by_benefit]
    assert "selected" in (page.get_attribute(f'tr[data-id="{shown[0]}"]', "class") or "")
    page.screenshot(path=str(_artifacts() / "worklist_by_benefit.png"), full_page=True)

    # And the models page is not this key's to open
    page.goto(f"{console.url}/console/#models")
    page.wait_for_selector("#page-forbidden:not([hidden])")
    assert page.inner_text("#forbidden-role") == "outreach"


def _patient_near_specialists(console: Server) -> dict[str, Any]:
    sp = console.tables["specialists"]
    first = sp[sp["accepting_new_patients"].astype(bool)].iloc[0]
    plan = console.tables["plans"].iloc[0]
    return {
        "latitude": round(float(first["latitude"]) + 0.02, 4),
        "longitude": round(float(first["longitude"]) - 0.02, 4),
        "plan": str(plan["insurance_plan_id"]),
        "specialty": str(first["specialty"]),
    }


def test_referral_coordinator_gets_ranked_specialists_on_a_local_map(
    page: Any, console: Server
) -> None:
    # Given a referral key, signing in opens the referral page and only that page
    _sign_in(page, console, Role.REFERRAL_UI)
    page.wait_for_selector("#page-referral:not([hidden])")
    assert _visible_pages(page) == ["referral"]
    page.wait_for_selector("#rf-plan option", state="attached")
    # When the coordinator fills in a referral
    where = _patient_near_specialists(console)
    page.fill("#rf-lat", str(where["latitude"]))
    page.fill("#rf-lon", str(where["longitude"]))
    page.fill("#rf-age", "61")
    page.select_option("#rf-plan", where["plan"])
    page.select_option("#rf-specialty", where["specialty"])
    reason = page.eval_on_selector("#rf-reason", "s => s.value")
    page.select_option("#rf-urgency", "urgent")
    page.check("#rf-oon")
    page.fill("#rf-k", "6")
    page.click("#rf-submit")
    page.wait_for_selector("#rf-list > li")
    # Then the list is the API's answer for the same referral, in its order
    patient = {
        "age": 61,
        "sex": "F",
        "language": "en",
        "latitude": where["latitude"],
        "longitude": where["longitude"],
        "insurance_plan_id": where["plan"],
    }
    body = {
        "referral": {
            "patient": patient,
            "specialty": where["specialty"],
            "reason_code": reason,
            "urgency": "urgent",
            "preferences": {"allow_out_of_network": True},
        },
        "k": 6,
    }
    status, _, text = call(console, "/recommend", body, console.keys[Role.REFERRAL_UI])
    assert status == 200
    answer = json.loads(text)["specialists"]
    shown = page.eval_on_selector_all(
        "#rf-list > li", "items => items.map(i => i.dataset.specialist)"
    )
    assert shown == [s["specialist_id"] for s in answer] and shown
    first_reasons = page.locator("#rf-list > li:first-child ul.reasons li").all_inner_texts()
    assert first_reasons == answer[0]["reasons"]
    # And the map draws the patient at its centre and each specialist at its distance
    assert page.locator("#rf-map .patient-marker").count() == 1
    assert page.locator("#rf-map .spec-marker").count() == len(answer)
    centre = page.eval_on_selector(
        "#rf-map circle.patient", "c => [+c.getAttribute('cx'), +c.getAttribute('cy')]"
    )
    ratios = []
    for s in answer:
        x, y = page.eval_on_selector(
            f'#rf-map .spec-marker[data-rank="{s["rank"]}"] circle',
            "c => [+c.getAttribute('cx'), +c.getAttribute('cy')]",
        )
        if s["distance_km"] >= 0.5:
            ratios.append(math.dist((x, y), centre) / s["distance_km"])
    assert ratios and max(ratios) / min(ratios) < 1.1  # one scale: pixels per km
    page.screenshot(path=str(_artifacts() / "referral.png"), full_page=True)

    # When a preference leaves nobody, the page says which filter did it
    page.fill("#rf-distance", "1")
    page.fill("#rf-lat", "0")
    page.fill("#rf-lon", "0")
    page.click("#rf-submit")
    page.wait_for_selector("#rf-summary:has-text('No specialist found')")
    assert page.locator("#rf-list > li").count() == 0
    # And the worklist is not this key's to open
    page.goto(f"{console.url}/console/#worklist")
    page.wait_for_selector("#page-forbidden:not([hidden])")


def test_administrator_sees_the_models_metrics_plots_and_cards(
    page: Any, console: Server, exported: Exported
) -> None:
    # Given an admin key, every page is open
    _sign_in(page, console, Role.ADMIN)
    assert _visible_pages(page) == ["worklist", "referral", "models"]
    # When the models page is opened
    page.click("#nav a[data-page=models]")
    page.wait_for_selector('article[data-model="no-show"] figure[data-plot="calibration"] img[src]')
    page.wait_for_function(
        "() => [...document.querySelectorAll('#models img')].every(i => i.complete && i.naturalWidth > 100)"
    )
    # Then both champions are shown with their registry version, and the outreach-uplift model
    for model in ("no-show", "specialist-ranker", "outreach-uplift"):
        heading = page.inner_text(f'article[data-model="{model}"] > h3')
        assert heading == f"{model} — version 1"
    # And the no-show metrics are the training run's, with baselines and the ceiling
    doc = json.loads((exported.no_show / "reports" / "metrics.json").read_text())
    table = page.locator('article[data-model="no-show"] table.metrics')
    header = table.locator("thead th").all_inner_texts()
    assert header[:2] == ["metric", "model"] and header[-1] == "ceiling"
    auc_row = table.locator("tbody tr", has=page.locator("th", has_text="roc_auc")).first
    assert auc_row.locator("td").first.inner_text() == f"{doc['test']['roc_auc']:.4f}"
    # And the calibration and subgroup plots come first, then the rest of the run's plots
    plots = page.eval_on_selector_all(
        'article[data-model="no-show"] figure', "f => f.map(x => x.dataset.plot)"
    )
    assert plots[:2] == ["calibration", "subgroup_calibration"] and len(plots) >= 4
    # And each model card is rendered from its Markdown (headings and tables)
    card = page.locator('article[data-model="no-show"] .card-md')
    assert card.locator("h3").first.inner_text().startswith("Model card: no-show")
    assert card.locator("table").count() >= 2
    ranker_card = page.locator('article[data-model="specialist-ranker"] .card-md h3').first
    assert "Model card" in ranker_card.inner_text()
    page.screenshot(path=str(_artifacts() / "models.png"), full_page=True)


def test_a_bad_key_is_refused_and_signing_out_forgets_the_key(page: Any, console: Server) -> None:
    # Given a key that is not valid, nothing opens
    page.goto(f"{console.url}/console/")
    page.fill("#api-key", "rml_0000000000000000_not-a-real-secret")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin-error:has-text('not valid')")
    assert page.is_hidden("#nav") and page.is_visible("#page-signin")
    # When a valid key signs in, a reload keeps the session (this tab only)
    _sign_in(page, console, Role.OUTREACH)
    page.reload()
    page.wait_for_selector("#page-worklist:not([hidden])")
    # And signing out forgets it
    page.click("#sign-out")
    page.wait_for_selector("#page-signin:not([hidden])")
    assert page.evaluate("() => sessionStorage.length") == 0
    page.reload()
    page.wait_for_selector("#page-signin:not([hidden])")
