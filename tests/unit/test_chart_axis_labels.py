"""The time axis of the dashboard's charts: minutes on an hour, seconds on a few minutes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

charts = pytest.importorskip("pgqueue.dashboard.charts")

START = datetime(2026, 1, 1, 10, 5, tzinfo=timezone.utc)


def test_a_chart_of_the_last_hour_labels_its_minutes() -> None:
    minutes = [START + timedelta(minutes=n) for n in range(60)]
    svg = str(charts.lines(minutes, {"ready": [1.0] * 60}, title="depth"))
    assert ">10:05<" in svg and ">11:04<" in svg


def test_a_chart_of_a_few_minutes_labels_its_seconds() -> None:
    samples = [START + timedelta(seconds=10 * n) for n in range(7)]
    svg = str(charts.lines(samples, {"ready": [1.0] * 7}, title="depth"))
    assert ">10:05:00<" in svg and ">10:05:30<" in svg and ">10:06:00<" in svg
