"""The HTML dashboard in a real browser (the system Chromium), against ``dealcast serve``.

What each role sees, and that the page shows the API's own numbers: the leader's fan chart
and forecast table, the accuracy and anomalies sections, a rep's deals (and nothing else of
anyone else's), and the error a wrong key gets.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.serving.conftest import Keys

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not CHROMIUM.exists():
    _MISSING = f"{CHROMIUM} is missing: the dashboard tests need it (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(_MISSING, pytrace=False)
    pytest.skip(_MISSING, allow_module_level=True)


def _get(url: str, path: str, key: str) -> Any:
    request = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _money(value: float | None) -> str:
    """The page's money format (``fmtMoney`` in serving/static/app.js)."""
    if value is None:
        return "—"
    size = abs(value)
    if size >= 999_995_000:
        text = f"{size / 1e9:.2f}B"
    elif size >= 999_995:
        text = f"{size / 1e6:.2f}M"
    elif size >= 999.95:
        text = f"{size / 1e3:.1f}K"
    else:
        text = f"{size:.0f}"
    return f"−{text}" if value < 0 and text != "0" else text


def _percent(value: float, digits: int) -> str:
    """The page's percentage format (``fmtPct``)."""
    text = f"{abs(value) * 100:.{digits}f}"
    return f"−{text}%" if value < 0 and float(text) != 0 else f"{text}%"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def tab(browser: Browser, live_server: str) -> Iterator[Page]:
    """A fresh browser tab (its own sessionStorage). Afterwards: no JavaScript error happened
    and the page asked nothing of any other host (it must work offline)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    elsewhere: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith((live_server, "data:"))
            else elsewhere.append(request.url)
        ),
    )
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the dashboard: {errors}"
    assert not elsewhere, f"the dashboard fetched from other hosts: {elsewhere}"


def _sign_in(page: Page, url: str, key: str) -> None:
    page.goto(url)
    login = page.get_by_test_id("login")
    login.get_by_label("API key").fill(key)
    login.get_by_role("button", name="Sign in").click()


def test_leader_sees_the_forecast_accuracy_and_anomalies(
    tab: Page, live_server: str, keys: Keys
) -> None:
    forecasts = _get(live_server, "/v1/forecasts", keys.leader)
    total = [f for f in forecasts["forecasts"] if f["segment"] == "total"]
    months = sorted((f for f in total if f["period"] == "month"), key=lambda f: f["horizon"])
    quarter = min((f for f in total if f["period"] == "quarter"), key=lambda f: f["target_month"])
    assert months and months[0]["horizon"] == 0

    _sign_in(tab, live_server, keys.leader)
    expect(tab.get_by_test_id("role")).to_have_text("Leader")
    expect(tab.get_by_test_id("provenance")).to_contain_text(forecasts["version"])
    expect(tab.get_by_test_id("provenance")).to_contain_text(forecasts["as_of"][:10])

    chart = tab.get_by_test_id("fan-chart")
    expect(chart.locator("svg path.band")).to_have_count(1)
    expect(chart.locator("svg circle.p50-point")).to_have_count(len(months))
    past = [
        a
        for a in forecasts["actuals"]
        if a["segment"] == "total" and a["month"] < months[0]["target_month"]
    ]
    expect(chart.locator("svg circle.actual-point")).to_have_count(min(12, len(past)))
    assert chart.locator("svg .target-marker").count() > 0
    assert chart.locator("svg path.band").get_attribute("d")

    table = tab.get_by_test_id("forecast-table")
    this_month = table.locator('tbody tr[data-period="month"][data-horizon="0"]')
    expect(this_month.locator('td[data-col="p50"]')).to_have_text(_money(months[0]["p50"]))
    expect(this_month.locator('td[data-col="p10"]')).to_have_text(_money(months[0]["p10"]))
    expect(this_month.locator('td[data-col="p90"]')).to_have_text(_money(months[0]["p90"]))
    expect(this_month.locator('td[data-col="target"]')).to_have_text(_money(months[0]["target"]))
    quarter_row = table.locator(
        f'tbody tr[data-period="quarter"][data-month="{quarter["target_month"]}"]'
    )
    expect(quarter_row.locator('td[data-col="p50"]')).to_have_text(_money(quarter["p50"]))

    regions = _get(live_server, "/v1/forecasts?by=region", keys.leader)["forecasts"]
    region_quarters = [f for f in regions if f["period"] == "quarter"]
    region_rows = tab.get_by_test_id("region-table").locator("tbody tr:not(.total-row)")
    expect(region_rows).to_have_count(len(region_quarters))

    tab.get_by_role("tab", name="Accuracy & anomalies").click()
    accuracy = _get(live_server, "/v1/accuracy?horizon=0", keys.leader)
    summary = [r for r in accuracy["summary"] if r["segment"] is None]
    assert summary, "the fixture keeps a forecast made months ago: some month has closed"
    accuracy_rows = tab.get_by_test_id("accuracy-table").locator("tbody tr")
    expect(accuracy_rows).to_have_count(len(summary))
    ours = next(r for r in summary if r["method"] == "dealcast" and r["period"] == "month")
    expect(
        tab.get_by_test_id("accuracy-table").locator(
            'tr[data-method="dealcast"][data-period="month"] td[data-col="accuracy"]'
        )
    ).to_have_text(_percent(ours["accuracy"], 1))
    closed = [
        r for r in accuracy["by_month"] if r["method"] == "dealcast" and r["period"] == "month"
    ]
    expect(
        tab.get_by_test_id("accuracy-chart").locator("svg circle.series-point.m-dealcast")
    ).to_have_count(len(closed))

    anomalies = _get(live_server, "/v1/anomalies?kind=kpi&kind=rep&kind=data_quality", keys.leader)
    section = tab.get_by_test_id("anomalies")
    if not anomalies["detectors"]:
        expect(section).to_contain_text("No anomaly detector has run yet")
        expect(section.locator("tbody tr")).to_have_count(0)
    else:
        expect(section.locator("tbody tr")).to_have_count(len(anomalies["anomalies"]))

    tab.get_by_role("button", name="Sign out").click()
    expect(tab.get_by_test_id("login")).to_be_visible()
    assert tab.evaluate("sessionStorage.getItem('dealcast.key')") is None


def test_rep_sees_only_their_own_deals(tab: Page, live_server: str, keys: Keys) -> None:
    mine = _get(live_server, "/v1/deals/priorities?limit=50", keys.rep)["deals"]
    assert mine and {d["owner_id"] for d in mine} == {keys.rep_owner}
    query = urllib.parse.urlencode({"owner": keys.other_owner, "limit": 1})
    theirs = _get(live_server, f"/v1/deals/priorities?{query}", keys.leader)["deals"][0]

    _sign_in(tab, live_server, keys.rep)
    expect(tab.get_by_test_id("role")).to_contain_text(keys.rep_owner)
    rows = tab.get_by_test_id("priorities-table").locator("tbody tr[data-deal-id]")
    expect(rows).to_have_count(len(mine))
    shown = rows.evaluate_all("rows => rows.map(row => row.dataset.dealId)")
    assert shown == [d["deal_id"] for d in mine]

    for leadership in ("fan-chart", "forecast-table", "accuracy-chart", "anomalies"):
        expect(tab.get_by_test_id(leadership)).to_be_hidden()
    expect(tab.get_by_test_id("fan-chart").locator("svg")).to_have_count(0)
    expect(tab.get_by_role("tab", name="Forecast", exact=True)).to_be_hidden()
    expect(tab.get_by_test_id("owner")).to_be_hidden()

    rows.first.click()
    detail = tab.get_by_test_id("deal-detail")
    expect(detail).to_contain_text(mine[0]["deal_id"])
    history = _get(live_server, f"/v1/deals/{mine[0]['deal_id']}", keys.rep)["stage_history"]
    expect(detail.get_by_test_id("stage-change")).to_have_count(len(history))

    fetch_status = """async (id) => {
        const key = sessionStorage.getItem("dealcast.key");
        const response = await fetch(`/v1/deals/${encodeURIComponent(id)}`,
                                     {headers: {Authorization: `Bearer ${key}`}});
        return response.status;
    }"""
    assert tab.evaluate("sessionStorage.getItem('dealcast.key')") == keys.rep
    assert tab.evaluate(fetch_status, mine[0]["deal_id"]) == 200
    assert tab.evaluate(fetch_status, theirs["deal_id"]) == 404


def test_a_wrong_key_shows_the_error(tab: Page, live_server: str) -> None:
    _sign_in(tab, live_server, "dc_not-a-key-anyone-has")
    error = tab.get_by_test_id("error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("unknown key", ignore_case=True)
    expect(tab.get_by_test_id("login")).to_be_visible()
    expect(tab.get_by_test_id("fan-chart")).to_be_hidden()
    assert tab.evaluate("sessionStorage.getItem('dealcast.key')") is None
