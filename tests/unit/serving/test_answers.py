"""What a lookup answers, from hand-made replies: the pipeline view's totals."""

from __future__ import annotations

import pytest

from serving.answers import pipeline_view
from serving.layout import BatchStats, LayoutDecodeError, RedisLayout

LAYOUT = RedisLayout("p")


def _batch(batch_id: int, at: float, valid: int, checked: int, hits: int, popular: int) -> bytes:
    return BatchStats(
        batch_id=batch_id, committed_at=at, valid=valid, invalid=0, seconds=0.5,
        checked=checked, hits_at_10=hits, popular_hits_at_10=popular,
    ).to_json()  # fmt: skip


def test_the_window_adds_up_newest_first() -> None:
    raw = [
        _batch(3, 13.0, 40, 30, 6, 3),
        _batch(2, 12.0, 20, 10, 1, 1),
        _batch(1, 10.0, 99, 0, 0, 0),
    ]
    view = pipeline_view(LAYOUT, raw)
    assert [b.batch_id for b in view.batches] == [3, 2, 1]
    assert view.window_s == 3.0
    assert view.ratings_per_s == 20.0  # 60 stored after the oldest commit, over 3 s
    assert (view.hit_rate_at_10, view.popular_hit_rate_at_10) == (0.175, 0.1)


def test_one_batch_or_none_gives_no_rate() -> None:
    one = pipeline_view(LAYOUT, [_batch(1, 10.0, 5, 0, 0, 0)])
    assert (one.window_s, one.ratings_per_s, one.hit_rate_at_10) == (0.0, None, None)
    assert pipeline_view(LAYOUT, []).batches == []


def test_an_entry_that_is_not_a_batch_names_the_key() -> None:
    with pytest.raises(LayoutDecodeError, match=r"\{p\}:pipeline\[1\] in Redis is not a batch"):
        pipeline_view(LAYOUT, [_batch(1, 10.0, 5, 0, 0, 0), b'{"batch_id": "x"}'])
