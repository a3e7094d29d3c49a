"""Stage timings and the job's bounded report history: pure logic, no services."""

from __future__ import annotations

import time

import pytest

from streaming.pipeline import BatchReport, keep_newest
from streaming.publish.publisher import PublishOutcome
from streaming.timing import timed


def test_timed_adds_the_block_time_even_when_it_raises() -> None:
    timings: dict[str, float] = {}
    with timed(timings, "fit"):
        time.sleep(0.01)
    with pytest.raises(ValueError, match="boom"), timed(timings, "fit"):
        time.sleep(0.01)
        failed = "boom"
        raise ValueError(failed)
    assert list(timings) == ["fit"]
    assert 0.02 <= timings["fit"] < 1.0  # both blocks, summed


def _report(batch_id: int) -> BatchReport:
    return BatchReport(batch_id, 1, 1, 0, 0, None, None, 0, PublishOutcome(), {})


def test_the_report_history_keeps_the_newest_and_stays_bounded() -> None:
    reports: list[BatchReport] = []
    for batch_id in range(25):
        keep_newest(reports, _report(batch_id), kept=5)
        assert len(reports) <= 10
    # trimmed to the newest 5 whenever it passed 10 (after batches 10, 16 and 22)
    assert [r.batch_id for r in reports] == list(range(18, 25))
