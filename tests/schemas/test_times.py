"""The stored and shown timestamp forms (schemas/times.py): byte for byte what earlier versions wrote."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.times import epoch_of, epoch_utc_seconds, now_utc_millis, parse_utc, utc_seconds
from schemas.zoom import zoom_time
from workers.admin import utc_iso

BERLIN_SUMMER = timezone(timedelta(hours=2))


def test_utc_seconds_converts_to_utc_and_drops_fractions() -> None:
    moment = datetime(2026, 7, 1, 12, 0, 1, 987654, tzinfo=BERLIN_SUMMER)
    assert utc_seconds(moment) == "2026-07-01T10:00:01Z"
    assert zoom_time(moment) == "2026-07-01T10:00:01Z"


def test_an_epoch_in_the_seconds_form() -> None:
    epoch = datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC).timestamp() + 0.75
    assert epoch_utc_seconds(epoch) == "2026-11-22T10:00:01Z"
    assert utc_iso(epoch) == "2026-11-22T10:00:01Z"
    assert utc_iso(None) is None


def test_now_to_the_millisecond_with_z() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now_utc_millis())


@pytest.mark.parametrize("value", ["2026-11-22T10:00:01Z", "2026-11-22T12:00:01+02:00", "2026-11-22T10:00:01"])
def test_parse_utc_reads_z_offsets_and_naive_as_utc(value: str) -> None:
    assert parse_utc(value) == datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)
    assert parse_utc(value).tzinfo is not None


def test_epoch_of_a_stored_isoformat() -> None:
    end = datetime(2026, 11, 22, 11, 0, tzinfo=BERLIN_SUMMER)
    assert epoch_of(end.isoformat()) == end.timestamp()
    assert epoch_of(None) is None and epoch_of("") is None
