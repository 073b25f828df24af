from __future__ import annotations

import polars as pl
import pytest
import typer

from pipelines.console import emit, fail


def test_fail_prints_brackets_literally(capsys: pytest.CaptureFixture[str]) -> None:
    exit_ = fail('add [[stages]] name = "X" for column Amount [EUR]')
    assert isinstance(exit_, typer.Exit) and exit_.exit_code == 2
    assert '[[stages]] name = "X" for column Amount [EUR]' in capsys.readouterr().err


def test_emit_json_and_csv(capsys: pytest.CaptureFixture[str]) -> None:
    frame = pl.DataFrame({"a": [1, 2], "b": ["x", None]})
    emit(frame, "json")
    assert '"a": 1' in capsys.readouterr().out
    emit(frame, "csv")
    assert capsys.readouterr().out.splitlines() == ["a,b", "1,x", "2,"]
