"""Hardening of the API and the refresh job.

- a restart with a corrupt newest publication serves the newest readable one and says which
  it skipped; the error clears once a good publication is served;
- any deal id (``/`` included) round-trips through ``/v1/deals/{deal_id}``;
- ``/metrics`` labels come from a fixed set (made-up methods are ``other``); every response
  carries CSP / nosniff / frame-options headers; HEAD works wherever GET does;
- publish with MLflow unreachable fails within seconds with one clear line; the forecasts are
  kept only once the publication is live.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import quote

import polars as pl
import pytest
from fastapi.testclient import TestClient

from features.forecast_log import ForecastLog
from serving.app import create_app
from serving.publication import TABLES, current_version, published_root, write_publication
from serving.results import ResultsHolder, load_publication
from serving.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[2]


def _tiny(data: Path, marker: int) -> str:
    """A publication of empty tables (enough for /readyz and the holder)."""
    tables = {name: pl.DataFrame({"x": [marker]}) for name in TABLES}
    manifest = {"as_of": datetime(2026, 11, 1, tzinfo=UTC).isoformat(), "marker": marker}
    return write_publication(data, tables, manifest)


def _corrupt(data: Path, version: str) -> None:
    (published_root(data) / version / "scores.parquet").write_bytes(b"PAR1 not parquet")


def test_restart_with_a_corrupt_newest_publication_serves_the_previous(tmp_path: Path) -> None:
    good = _tiny(tmp_path, 1)
    bad = _tiny(tmp_path, 2)
    _corrupt(tmp_path, bad)
    app = create_app(ServeSettings(data=tmp_path, reload_interval=0.05, dev_mode=True))
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["version"] == good
        assert bad in body["detail"] and "skipped" in body["detail"]
        # an operator points CURRENT back at the good one: the error goes away
        (published_root(tmp_path) / "CURRENT").write_text(good + "\n")
        for _ in range(100):
            body = client.get("/readyz").json()
            if body["detail"] == "serving the latest publication":
                break
            time.sleep(0.05)
        assert body["detail"] == "serving the latest publication"
        assert body["version"] == good


def test_a_new_good_publication_clears_the_error(tmp_path: Path) -> None:
    _tiny(tmp_path, 1)
    holder = ResultsHolder(tmp_path)
    holder.refresh()
    bad = _tiny(tmp_path, 2)
    _corrupt(tmp_path, bad)
    holder.refresh()
    assert holder.last_error and bad in holder.last_error
    newest = _tiny(tmp_path, 3)
    assert holder.refresh() is True
    assert holder.current is not None and holder.current.version == newest
    assert holder.last_error is None


def test_with_no_readable_publication_readyz_says_why(tmp_path: Path) -> None:
    only = _tiny(tmp_path, 1)
    _corrupt(tmp_path, only)
    holder = ResultsHolder(tmp_path)
    assert holder.refresh() is False and holder.current is None
    assert holder.last_error and "no other readable publication" in holder.last_error


def test_security_headers_head_and_bounded_metrics(tmp_path: Path) -> None:
    _tiny(tmp_path, 1)
    app = create_app(ServeSettings(data=tmp_path, reload_interval=0.05))
    with TestClient(app) as client:
        for path in ("/", "/healthz", "/readyz", "/static/app.js", "/v1/me", "/nowhere"):
            response = client.get(path)
            assert "default-src 'self'" in response.headers["content-security-policy"], path
            assert "'unsafe-inline'" not in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
        index = client.get("/").text
        assert "<script>" not in index and "<style" not in index and "style=" not in index
        for path in ("/", "/healthz", "/static/app.css"):
            head = client.head(path)
            assert head.status_code == 200, path
            assert head.content == b""
            assert head.headers["x-frame-options"] == "DENY"
        for i in range(30):
            client.request(f"MADEUP{i}", "/healthz")
            client.get(f"/no/such/path/{i}")
        text = client.get("/metrics").text
    series = [ln for ln in text.splitlines() if ln.startswith("dealcast_http_requests_total{")]
    assert not any("MADEUP" in ln for ln in series)
    assert any('method="other"' in ln for ln in series)
    assert not any("/no/such/path" in ln for ln in series)
    assert len(series) < 20
    assert any('method="HEAD"' in ln and 'route="/healthz"' in ln for ln in series)


ODD_IDS = ("../../etc/passwd", "acme/2026 Q4?x#y", "100% sure", "plain")


def _deals_publication(data: Path) -> None:
    """A publication of four open deals whose ids hold ``/``, ``..``, ``?``, ``#``, ``%``."""
    n = len(ODD_IDS)
    scores = pl.DataFrame(
        {
            "deal_id": list(ODD_IDS),
            "owner_id": ["r1"] * n,
            "team": ["t"] * n,
            "region": ["EU"] * n,
            "product": ["p"] * n,
            "segment": ["s"] * n,
            "account_id": ["a"] * n,
            "stage": ["Demo"] * n,
            "amount": [100.0] * n,
            "expected_close_date": [date(2026, 12, 1)] * n,
            "forecast_category": ["pipeline"] * n,
            "days_in_stage": [3.0] * n,
            "p_won": [0.5] * n,
            "p_this_month": [0.1] * n,
            "p_slip": [0.2] * n,
            "expected_value": [50.0] * n,
            "expected_this_period": [40.0] * n,
            "likely_close_month": [date(2026, 12, 1)] * n,
            "priority": [float(n - i) for i in range(n)],
            "rank": list(range(1, n + 1)),
        }
    )
    reasons = pl.DataFrame(
        {"deal_id": list(ODD_IDS), "order": [0] * n, "text": ["why"] * n, "effect": [0.1] * n}
    )
    history = pl.DataFrame(
        {
            "deal_id": list(ODD_IDS),
            "changed_at": [datetime(2026, 10, 1, tzinfo=UTC)] * n,
            "stage": ["Demo"] * n,
            "amount": [100.0] * n,
            "expected_close_date": [date(2026, 12, 1)] * n,
        }
    )
    tables = {name: pl.DataFrame({"x": [1]}) for name in TABLES}
    tables.update(
        scores=scores,
        reasons=reasons,
        flags=pl.DataFrame(schema={"deal_id": pl.String}),
        stage_history=history,
    )
    write_publication(data, tables, {"as_of": datetime(2026, 11, 1, tzinfo=UTC).isoformat()})


def test_any_deal_id_round_trips(tmp_path: Path) -> None:
    _deals_publication(tmp_path)
    app = create_app(ServeSettings(data=tmp_path, dev_mode=True))
    with TestClient(app) as client:
        listed = client.get("/v1/deals/priorities?limit=100").json()
        assert {d["deal_id"] for d in listed["deals"]} == set(ODD_IDS)
        for deal_id in ODD_IDS:
            # what the dashboard sends: encodeURIComponent(id)
            response = client.get(f"/v1/deals/{quote(deal_id, safe='')}")
            assert response.status_code == 200, (deal_id, response.text)
            body = response.json()
            assert body["deal"]["deal_id"] == deal_id
            assert len(body["stage_history"]) == 1
        missing = client.get(f"/v1/deals/{quote('no/such', safe='')}")
        assert missing.status_code == 404
        assert client.get("/v1/deals/priorities").status_code == 200  # still the list
        metrics = client.get("/metrics").text
        assert 'route="/v1/deals/{deal_id}",status="200"' in metrics  # one series for all ids
    js = (ROOT / "serving" / "static" / "app.js").read_text()
    assert "/v1/deals/${encodeURIComponent(id)}" in js


def test_publish_with_mlflow_unreachable_fails_fast_with_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "publish", "--data", str(tmp_path)],
        cwd=ROOT,
        env={
            **__import__("os").environ,
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert "MLflow tracking server http://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert elapsed < 30


@pytest.mark.slow
def test_kept_forecasts_are_written_only_once_the_publication_is_live(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.publish as publish_module

    data = tmp_path / "data"
    shutil.copytree(published, data, symlinks=True, ignore=shutil.ignore_patterns("jobs"))
    before = sorted(p.name for p in ForecastLog(data).files())
    live_before = current_version(data)

    def killed(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt  # as if the process were stopped right before going live

    monkeypatch.setattr(publish_module, "write_publication", killed)
    with pytest.raises(KeyboardInterrupt):
        publish_module.run_publish(data, n_samples=100)
    assert sorted(p.name for p in ForecastLog(data).files()) == before
    assert current_version(data) == live_before
    monkeypatch.undo()
    result = publish_module.run_publish(data, n_samples=100)
    after = sorted(p.name for p in ForecastLog(data).files())
    assert len(after) > len(before)
    manifest = load_publication(data, result["version"]).manifest
    assert manifest["store_version"] == (data / "store" / "current").resolve().name


def test_publication_on_a_full_disk_is_one_clear_error_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    live = _tiny(tmp_path, 1)

    def full(self: pl.DataFrame, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    with pytest.raises(OSError, match="no space left on the device; nothing changed"):
        _tiny(tmp_path, 2)
    monkeypatch.undo()
    assert current_version(tmp_path) == live
    assert not [p for p in published_root(tmp_path).iterdir() if p.name.startswith(".")]
    assert current_version(tmp_path) != live or _tiny(tmp_path, 3) == current_version(tmp_path)
