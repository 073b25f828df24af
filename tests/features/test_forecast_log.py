"""Kept forecasts and the accuracy table: schema checks at the door, atomic writes."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.forecast_log import (
    ACCURACY_SCHEMA,
    KEPT_SCHEMA,
    ForecastExistsError,
    ForecastLog,
    KeptForecastError,
    accuracy_path,
    new_forecast_id,
    read_accuracy,
    segment_label,
    write_accuracy,
)
from tests.features.kept_forecasts import kept_frame, row

SEP, OCT, JUL = date(2026, 9, 1), date(2026, 10, 1), date(2026, 7, 1)


def forecast(forecast_id: str = "F1") -> pl.DataFrame:
    return kept_frame(
        [
            row(SEP, "dealcast", 90.0, 80.0, 120.0),
            row(SEP, "stage_weighted_crm", 130.0),
            row(OCT, "dealcast", 210.0, 150.0, 260.0),
            row(JUL, "dealcast", 400.0, 300.0, 500.0, period="quarter"),
            row(SEP, "dealcast", 50.0, 40.0, 60.0, by="region", segment="EU"),
        ],
        forecast_id=forecast_id,
    )


def accuracy_rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.lit(100.0).alias("actual"),
        pl.col("p50").alias("forecast"),
        (pl.col("p50") - 100.0).alias("error"),
        (pl.col("p50") - 100.0).abs().alias("abs_error"),
        (1 - (pl.col("p50") - 100.0).abs() / 100.0).alias("accuracy"),
        pl.when(pl.col("p10").is_not_null()).then(pl.lit(True)).alias("covered"),
    ).select(list(ACCURACY_SCHEMA))


def test_nothing_kept_reads_empty_with_the_schema(tmp_path: Path) -> None:
    log = ForecastLog(tmp_path)
    assert log.read().schema == pl.Schema(KEPT_SCHEMA)
    assert log.read().height == 0
    assert read_accuracy(tmp_path).schema == pl.Schema(ACCURACY_SCHEMA)


def test_append_then_read_round_trips(tmp_path: Path) -> None:
    log = ForecastLog(tmp_path)
    assert log.append(forecast("F1")) == "F1"
    assert log.append(forecast("F2").reverse()) == "F2"  # any row order
    kept = log.read()
    assert kept.schema == pl.Schema(KEPT_SCHEMA)
    assert kept["forecast_id"].value_counts().sort("forecast_id").rows() == [("F1", 5), ("F2", 5)]
    first = kept.filter(pl.col("forecast_id") == "F1")
    assert_frame_equal(first, forecast("F1"), check_row_order=False)
    assert (tmp_path / "forecasts" / "kept" / "F1.parquet").exists()


def test_reappending_the_same_forecast_is_a_no_op_and_another_one_an_error(
    tmp_path: Path,
) -> None:
    log = ForecastLog(tmp_path)
    log.append(forecast())
    mtime = log.path_of("F1").stat().st_mtime_ns
    assert log.append(forecast()) == "F1"  # a retried job
    assert log.path_of("F1").stat().st_mtime_ns == mtime
    changed = forecast().with_columns(pl.col("mean") + 1.0)
    with pytest.raises(ForecastExistsError, match="'F1' is already kept .* give the new forecast"):
        log.append(changed)
    assert_frame_equal(log.read(), forecast(), check_row_order=False)


def test_a_crash_before_the_rename_leaves_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = ForecastLog(tmp_path)
    log.append(forecast("F1"))
    before = log.read()

    def crash(src: object, dst: object) -> None:
        raise OSError("killed during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed during rename"):
        log.append(forecast("F2"))
    monkeypatch.undo()
    assert_frame_equal(log.read(), before)
    assert not log.path_of("F2").exists()
    assert sorted(p.name for p in log.kept.iterdir()) == ["F1.parquet"]  # no debris either
    # a process killed outright leaves its temporary file: readers never see it
    (log.kept / ".tmp-F3-deadbeef.parquet").write_bytes(b"half a parquet file")
    assert_frame_equal(log.read(), before)
    assert log.append(forecast("F2")) == "F2"


def _set(column: str, value: object, where: int | None = None) -> Callable[[pl.DataFrame], object]:
    """Set ``column`` to ``value`` in row ``where`` (every row when None)."""

    def change(frame: pl.DataFrame) -> pl.DataFrame:
        values = frame[column].to_list()
        for i in range(len(values)) if where is None else [where]:
            values[i] = value
        return frame.with_columns(pl.Series(column, values, dtype=frame.schema[column]))

    return change


BAD_FRAMES: list[tuple[Callable[[pl.DataFrame], object], str]] = [
    (lambda f: f.drop("p90", "model_version"), r"lacks column\(s\) p90, model_version"),
    (lambda f: f.with_columns(pl.lit(1).alias("p95")), r"has unknown column\(s\) p95"),
    (lambda f: f.with_columns(pl.col("p50").cast(pl.String)), "column p50 must be Float64, got"),
    (
        lambda f: f.with_columns(pl.col("as_of").dt.replace_time_zone(None)),
        "column as_of is a naive Datetime: give it a time zone",
    ),
    (lambda f: f.lazy(), "expected a polars DataFrame, got LazyFrame"),
    (lambda f: f.head(0), "has no rows"),
    (_set("p50", None, 1), r"nulls in required column\(s\) p50"),
    (_set("forecast_id", "F2", 0), "holds 2 forecast_ids"),
    (_set("forecast_id", "../up"), "'../up' is not a safe file name"),
    (_set("as_of", datetime(2026, 9, 11, tzinfo=UTC), 0), "has 2 different as_of values"),
    (_set("period", "week", 0), "period must be 'month' or 'quarter'"),
    (_set("origin_month", date(2026, 8, 1)), "origin_month must be the first day of as_of's"),
    (_set("target_month", date(2026, 9, 15), 0), "target_month must be the first day of a month"),
    (_set("target_month", date(2026, 8, 1), 3), "a quarter's target_month must be its first"),
    (
        _set("horizon", 2, 0),
        r"horizon must be the months .*\(origin_month, target_month, horizon\)",
    ),
    (
        lambda f: _set("horizon", -1, 0)(_set("target_month", date(2026, 8, 1), 0)(f)),
        "the target period must not have ended before origin_month",
    ),
    (_set("by", "planet", 4), "by must be '' .* or dimensions of owner_id, team, region"),
    (
        _set("by", "region,planet", 4),
        r"joined by ','; 1 row\(s\) break it, e.g. \(by\) = 'region,p",
    ),
    (_set("segment", "EU", 0), "the company total .* must have segment 'total'"),
    (_set("method", "Deal Cast", 0), "method must be a lower-case name"),
    (_set("p90", None, 0), "p10 and p90 must both be given"),
    (_set("p10", 95.0, 0), r"p10 <= p50 <= p90; 1 row\(s\) break it, e.g. .* = \('dealcast', 95.0"),
    (lambda f: pl.concat([f, f.head(1)]), "repeats 2 rows of one key"),
]


@pytest.mark.parametrize(("spoil", "message"), BAD_FRAMES)
def test_schema_errors_name_the_column_and_the_fix(
    tmp_path: Path, spoil: Callable[[pl.DataFrame], object], message: str
) -> None:
    log = ForecastLog(tmp_path)
    with pytest.raises(KeptForecastError, match=message):
        log.append(spoil(forecast()))  # type: ignore[arg-type]
    assert log.read().height == 0


def test_convertible_types_are_converted(tmp_path: Path) -> None:
    frame = forecast().with_columns(
        pl.col("as_of")
        .dt.convert_time_zone("Europe/Paris")
        .cast(pl.Datetime("ns", "Europe/Paris")),
        pl.col("horizon").cast(pl.Int32),
        pl.col("target").cast(pl.Int64),
        pl.lit(None).alias("newbiz_mean"),
    )
    ForecastLog(tmp_path).append(frame)
    assert_frame_equal(ForecastLog(tmp_path).read(), forecast(), check_row_order=False)


def test_several_dimensions_join_into_one_by_and_segment(tmp_path: Path) -> None:
    deals = pl.DataFrame({"region": ["EU", None], "product": ["SMB", "Core"]})
    assert deals.select(segment_label(["region", "product"]))["segment"].to_list() == [
        "EU · SMB",
        "(none) · Core",
    ]
    kept = kept_frame([row(SEP, "dealcast", 5.0, by="region,product", segment="EU · SMB")])
    assert ForecastLog(tmp_path).append(kept) == "F1"


def test_new_forecast_ids_are_unique_sortable_file_names(tmp_path: Path) -> None:
    moment = datetime(2026, 10, 5, 8, 30, tzinfo=UTC)
    ids = {new_forecast_id(moment) for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"20261005T083000000000Z-[0-9a-f]{8}", i) for i in ids)
    forecast_id = ids.pop()
    assert ForecastLog(tmp_path).append(forecast(forecast_id)) == forecast_id


def test_accuracy_table_round_trips_and_is_replaced_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = accuracy_rows(forecast("F1"))
    path = write_accuracy(tmp_path, first)
    assert path == accuracy_path(tmp_path) == tmp_path / "forecasts" / "accuracy.parquet"
    assert_frame_equal(read_accuracy(tmp_path), first, check_row_order=False)

    def crash(src: object, dst: object) -> None:
        raise OSError("killed during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed during rename"):
        write_accuracy(tmp_path, pl.concat([first, accuracy_rows(forecast("F2"))]))
    monkeypatch.undo()
    assert_frame_equal(read_accuracy(tmp_path), first, check_row_order=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["accuracy.parquet"]


def test_accuracy_table_is_checked(tmp_path: Path) -> None:
    rows = accuracy_rows(forecast())
    with pytest.raises(KeptForecastError, match="accuracy table lacks column"):
        write_accuracy(tmp_path, rows.drop("covered"))
    with pytest.raises(KeptForecastError, match="repeat a key"):
        write_accuracy(tmp_path, pl.concat([rows, rows.head(1)]))
    assert not accuracy_path(tmp_path).exists()
