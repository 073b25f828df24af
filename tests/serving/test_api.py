"""The API against a published small company: roles, scoping, errors, metrics, readiness."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.auth import add_key, hash_key, remove_key
from serving.jobs import JobRunner
from serving.settings import ServeSettings
from tests.serving.conftest import Keys

ROLES = (None, "leader", "ops", "rep")

READS = (
    "/v1/forecasts",
    "/v1/pipeline/weighted",
    "/v1/deals/priorities",
    "/v1/accuracy",
    "/v1/anomalies",
    "/v1/kpis",
    "/v1/me",
)


def _deal_of(client: TestClient, keys: Keys, owner: str) -> str:
    body = client.get(
        "/v1/deals/priorities", params={"owner": owner, "limit": 1}, headers=keys.headers("leader")
    ).json()
    return str(body["deals"][0]["deal_id"])


@pytest.fixture
def quick_jobs(published: Path, keys: Keys) -> TestClient:
    """An app whose refresh job is a no-op process (the real one is tested on its own)."""
    runner = JobRunner(published, command=lambda data: [sys.executable, "-c", "pass"])
    app = create_app(ServeSettings(data=published), runner=runner)
    with TestClient(app) as client:
        yield client  # type: ignore[misc]


def test_auth_matrix_every_endpoint_every_role(quick_jobs: TestClient, keys: Keys) -> None:
    client = quick_jobs
    own = _deal_of(client, keys, keys.rep_owner)
    other = _deal_of(client, keys, keys.other_owner)
    job = client.post("/v1/jobs/refresh", headers=keys.headers("ops"))
    assert job.status_code == 202, job.text
    JobRunner.wait(client.app.state.jobs, job.json()["id"], timeout=30)  # type: ignore[attr-defined]
    job_path = f"/v1/jobs/{job.json()['id']}"
    expected: dict[tuple[str, str], dict[str | None, int]] = {}
    for path in ("/healthz", "/readyz", "/metrics"):
        expected["GET", path] = dict.fromkeys(ROLES, 200)
    for path in READS:
        expected["GET", path] = {None: 401, "leader": 200, "ops": 200, "rep": 200}
    expected["GET", f"/v1/deals/{own}"] = {None: 401, "leader": 200, "ops": 200, "rep": 200}
    expected["GET", f"/v1/deals/{other}"] = {None: 401, "leader": 200, "ops": 200, "rep": 404}
    expected["GET", "/v1/forecasts?by=region"] = {None: 401, "leader": 200, "ops": 200, "rep": 403}
    expected["GET", f"/v1/deals/priorities?owner={keys.other_owner}"] = {
        None: 401,
        "leader": 200,
        "ops": 200,
        "rep": 403,
    }
    expected["GET", job_path] = {None: 401, "leader": 200, "ops": 200, "rep": 403}
    # ops last: its refresh is accepted (202) and runs one at a time
    expected["POST", "/v1/jobs/refresh"] = {None: 401, "leader": 403, "rep": 403, "ops": 202}
    seen = {}
    for (method, path), by_role in expected.items():
        for role, status in by_role.items():
            response = client.request(method, path, headers=keys.headers(role))
            seen[method, path, role] = response.status_code
            assert response.status_code == status, (method, path, role, response.text)
            if status == 401:
                assert response.headers["www-authenticate"] == "Bearer"
    assert len(seen) == sum(len(v) for v in expected.values())


def test_wrong_key_is_401_and_a_revoked_key_stops_working(client: TestClient, keys: Keys) -> None:
    assert client.get("/v1/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    path = client.app.state.settings.keys_path  # type: ignore[attr-defined]
    key, entry = add_key(path, "leader", name="temp")
    client.app.state.keys.refresh()  # type: ignore[attr-defined]
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).json() == {
        "role": "leader",
        "owner_id": None,
    }
    assert remove_key(path, entry["id"])
    client.app.state.keys.refresh()  # type: ignore[attr-defined]
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_keys_are_stored_hashed(published: Path, keys: Keys) -> None:
    text = ServeSettings(data=published).keys_path.read_text()
    for key in (keys.leader, keys.ops, keys.rep):
        assert key not in text
        assert hash_key(key) in text


def test_a_rep_sees_only_their_own_deals_and_numbers(client: TestClient, keys: Keys) -> None:
    rep = keys.headers("rep")
    deals = client.get("/v1/deals/priorities", params={"limit": 1000}, headers=rep).json()
    assert deals["owner"] == keys.rep_owner and deals["total"] == len(deals["deals"]) > 0
    assert {d["owner_id"] for d in deals["deals"]} == {keys.rep_owner}
    assert [d["rank"] for d in deals["deals"]] == list(range(1, deals["total"] + 1))
    for path in ("/v1/forecasts", "/v1/pipeline/weighted", "/v1/kpis", "/v1/accuracy"):
        body = client.get(path, headers=rep).json()
        assert body["by"] == "owner_id", path
        rows = body.get("forecasts") or body.get("rows") or body.get("by_month")
        assert rows, path
        assert {r["segment"] for r in rows} == {keys.rep_owner}, path
    leader = client.get("/v1/forecasts", params={"by": "owner_id"}, headers=keys.headers("leader"))
    assert len({r["segment"] for r in leader.json()["forecasts"]}) > 1


def test_a_reps_deal_404_is_the_same_as_a_missing_deal(client: TestClient, keys: Keys) -> None:
    other = _deal_of(client, keys, keys.other_owner)
    theirs = client.get(f"/v1/deals/{other}", headers=keys.headers("rep"))
    missing = client.get("/v1/deals/D-NOPE", headers=keys.headers("rep"))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].replace(other, "X") == missing.json()["detail"].replace(
        "D-NOPE", "X"
    )


def test_deal_detail_has_scores_reasons_flags_and_stage_history(
    client: TestClient, keys: Keys
) -> None:
    ranked = client.get(
        "/v1/deals/priorities", params={"limit": 1000}, headers=keys.headers("leader")
    ).json()["deals"]
    assert [d["priority"] for d in ranked] == sorted((d["priority"] for d in ranked), reverse=True)
    flagged = next(d for d in ranked if d["flags"])
    body = client.get(f"/v1/deals/{flagged['deal_id']}", headers=keys.headers("leader")).json()
    deal = body["deal"]
    assert deal == flagged
    assert 0 <= deal["p_won"] <= 1 and 0 <= deal["p_slip"] <= 1
    assert deal["expected_value"] >= deal["expected_this_period"] >= 0
    urgency = 1 + 0.25 * min(len(deal["flags"]), 4)
    assert deal["priority"] == pytest.approx(deal["expected_this_period"] * urgency)
    assert len(deal["reasons"]) == 3 and all(r["text"] for r in deal["reasons"])
    assert all(f["evidence"] for f in deal["flags"])
    history = body["stage_history"]
    assert history and history[-1]["stage"] == deal["stage"]
    assert [h["changed_at"] for h in history] == sorted(h["changed_at"] for h in history)


def test_forecast_has_months_quarter_parts_and_targets(client: TestClient, keys: Keys) -> None:
    body = client.get("/v1/forecasts", headers=keys.headers("leader")).json()
    months = [r for r in body["forecasts"] if r["period"] == "month"]
    assert [r["horizon"] for r in months] == list(range(body["months"]))
    assert any(r["period"] == "quarter" for r in body["forecasts"])
    # what each month publishes and why (the champion's backtest choice), beside the deal model
    assert body["published"] and body["published"][0].startswith("h0: ")
    assert {r["chosen"] for r in body["league"]} == {True, False}
    assert all(r["method"] and r["deal_model_p50"] is not None for r in body["forecasts"])
    for r in body["forecasts"]:
        assert r["p10"] <= r["p50"] <= r["p90"]
        assert r["mean"] == pytest.approx(
            r["booked_to_date"] + r["pipeline_mean"] + r["newbiz_mean"], rel=1e-9
        )
    assert body["actuals"] and all(a["segment"] == "total" for a in body["actuals"])
    two = client.get("/v1/forecasts", params={"months": 2}, headers=keys.headers("leader")).json()
    assert [r["horizon"] for r in two["forecasts"] if r["period"] == "month"] == [0, 1]


def test_accuracy_history_has_closed_months_next_to_the_baseline(
    client: TestClient, keys: Keys
) -> None:
    body = client.get("/v1/accuracy", headers=keys.headers("ops")).json()
    methods = {r["method"] for r in body["by_month"]}
    assert {"dealcast", "stage_weighted_hist", "stage_weighted_crm"} <= methods
    assert {r["horizon"] for r in body["summary"]} >= {0}
    h1 = client.get("/v1/accuracy", params={"horizon": 1}, headers=keys.headers("ops")).json()
    assert h1["by_month"] and {r["horizon"] for r in h1["by_month"]} == {1}


def test_anomalies_list_what_the_detectors_published_most_severe_first(
    client: TestClient, keys: Keys
) -> None:
    body = client.get("/v1/anomalies", headers=keys.headers("ops")).json()
    assert body["detectors"] == ["kpi", "rep", "data_quality", "deal"]
    rows = body["anomalies"]
    assert rows, "the simulated company has open deals with risk flags at least"
    rank = {"high": 0, "medium": 1, "low": 2}
    order = [(rank[r["severity"]], -r["score"]) for r in rows]
    assert order == sorted(order)
    assert {r["kind"] for r in rows} <= set(body["detectors"])
    deals = client.get(
        "/v1/anomalies", params={"kind": "deal"}, headers=keys.headers("ops")
    ).json()["anomalies"]
    assert deals and {r["kind"] for r in deals} == {"deal"}
    assert all(r["by"] == "deal_id" and r["period_end"] for r in deals)
    others = client.get(
        "/v1/anomalies", params=[("kind", "kpi"), ("kind", "rep")], headers=keys.headers("ops")
    ).json()["anomalies"]
    assert len(others) + len(deals) <= len(rows)
    assert {r["kind"] for r in others} <= {"kpi", "rep"}


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/v1/forecasts", {"months": 0}, "months"),
        ("/v1/forecasts", {"months": 12}, "months"),
        ("/v1/forecasts", {"by": "planet"}, "by"),
        ("/v1/pipeline/weighted", {"close_month": "soon"}, "close_month"),
        ("/v1/deals/priorities", {"limit": 0}, "limit"),
        ("/v1/accuracy", {"from": "2026-05-01", "to": "2026-01-01"}, "to"),
        ("/v1/accuracy", {"horizon": -1}, "horizon"),
        ("/v1/anomalies", {"severity": "dire"}, "severity"),
        ("/v1/anomalies", {"kind": "weather"}, "kind"),
        ("/v1/kpis", {"period": "day"}, "period"),
    ],
)
def test_bad_parameters_get_422_naming_them(
    client: TestClient, keys: Keys, path: str, params: dict[str, object], name: str
) -> None:
    response = client.get(path, params=params, headers=keys.headers("leader"))
    assert response.status_code == 422, response.text
    assert [e["loc"][:2] for e in response.json()["detail"]] == [["query", name]]


def test_unknown_ids_are_404(client: TestClient, keys: Keys) -> None:
    assert client.get("/v1/deals/D-0", headers=keys.headers("leader")).status_code == 404
    assert client.get("/v1/jobs/job-0", headers=keys.headers("ops")).status_code == 404


def test_metrics_count_requests_by_route_and_show_the_results_age(
    client: TestClient, keys: Keys
) -> None:
    for _ in range(3):
        client.get("/v1/forecasts", headers=keys.headers("leader"))
    client.get("/v1/deals/D-0", headers=keys.headers("leader"))
    text = client.get("/metrics").text
    assert (
        'dealcast_http_requests_total{method="GET",route="/v1/forecasts",status="200"} 3.0' in text
    )
    assert 'route="/v1/deals/{deal_id}",status="404"' in text
    assert "dealcast_http_request_duration_seconds_bucket" in text
    age = [line for line in text.splitlines() if line.startswith("dealcast_published_age_seconds")]
    assert len(age) == 1 and float(age[0].split()[1]) >= 0


def test_not_ready_until_something_is_published(tmp_path: Path) -> None:
    key = "k-" + "x" * 20
    settings = ServeSettings(data=tmp_path, api_keys={hash_key(key): "leader"})
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert client.get("/healthz").status_code == 200
        headers = {"Authorization": f"Bearer {key}"}
        assert client.get("/v1/me", headers=headers).json()["role"] == "leader"
        missing = client.get("/v1/forecasts", headers=headers)
        assert missing.status_code == 503 and "dealcast publish" in missing.json()["detail"]


def test_dev_mode_lets_keyless_requests_in_as_ops_and_warns(
    published: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dealcast.serving"):
        with TestClient(create_app(ServeSettings(data=published, dev_mode=True))) as client:
            assert client.get("/v1/me").json() == {"role": "ops", "owner_id": None}
    assert any("DEV MODE" in r.getMessage() for r in caplog.records)
    with TestClient(create_app(ServeSettings(data=published))) as client:
        assert client.get("/v1/me").status_code == 401


def test_serving_does_not_load_mlflow() -> None:
    """MLflow being down cannot affect serving: the app does not even import it."""
    code = (
        "import sys, serving.app, serving.answers; "
        "sys.exit(1 if any(m == 'mlflow' or m.startswith('mlflow.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_keys_command_prints_the_key_once_and_refuses_a_bad_role(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app as cli

    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "add", "--role", "rep:rep-0003", "--data", str(tmp_path)])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[0]
    stored = json.loads((tmp_path / "api-keys.json").read_text())["keys"]
    assert [e["role"] for e in stored] == ["rep:rep-0003"]
    assert stored[0]["sha256"] == hash_key(key) and key not in json.dumps(stored)
    listed = runner.invoke(cli, ["keys", "list", "--data", str(tmp_path)])
    assert "rep:rep-0003" in listed.stdout and key not in listed.stdout
    bad = runner.invoke(cli, ["keys", "add", "--role", "boss", "--data", str(tmp_path)])
    assert bad.exit_code == 2 and "leader, ops or rep:<owner_id>" in bad.output
