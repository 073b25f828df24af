from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.console import data_dir


def test_data_dir_defaults_to_dealcast_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEALCAST_DATA", raising=False)
    assert data_dir(None) == Path("dealcast-data")


def test_environment_then_flag_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEALCAST_DATA", str(tmp_path / "env"))
    assert data_dir(None) == tmp_path / "env"
    assert data_dir(tmp_path / "flag") == tmp_path / "flag"
