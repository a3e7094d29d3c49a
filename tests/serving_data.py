"""A small publication written through the streaming side's code, for serving tests."""

from __future__ import annotations

import redis

from serving.layout import BatchStats, ModelMeta, RedisLayout, encode_list
from streaming.model.topn import ItemIndex
from streaming.publish.writes import (
    publish_catalog,
    switch_current,
    write_factors,
    write_similar,
    write_version,
)

CATALOG = [
    (10, "Toy Story (1995)", ["Animation", "Comedy"]),
    (11, "Heat (1995)", ["Action", "Crime"]),
    (12, "Clueless (1995)", ["Comedy", "Romance"]),
    (13, "Se7en (1995)", ["Crime", "Thriller"]),
    # 14 has no catalog entry on purpose
    (20, "Fargo (1996)", ["Comedy", "Crime"]),
]
META = ModelMeta(
    version=3,
    trained_at=1_700_000_000.5,
    batch_id=2,
    ratings=1234,
    users=56,
    movies=78,
    hyperparameters={"rank": 10, "reg_param": 0.1, "implicit_prefs": True, "alpha": 1.0},
    evaluation={"rmse": 0.93, "popular": {"precision": 0.05, "ndcg": 0.07}},
)


# Item factors: seen from 10, movie 14 is nearly the same, 12 at 45°, 20 at cos 0.6, 11 at
# a right angle, 13 opposite; 30 has no factors (the model learned nothing of it).
ITEMS = ItemIndex(
    [10, 11, 12, 13, 14, 20, 30],
    [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-3.0, 0.0], [1.0, 0.1], [0.6, -0.8], [0.0, 0.0]],
)


def publish(client: redis.Redis, layout: RedisLayout, version: int = 3) -> None:
    """A version as the streaming job writes it: lists, popular, meta, then the switch."""
    first = [(10, 4.9), (11, 4.5), (14, 4.4), (12, 4.1), (13, 3.9)]
    lists = [
        # explained: the first three (10 by 20, nothing raised 11, 14 by 30: not in the catalog)
        (1, encode_list(first, 1_700_000_100.0, "model", because=[20, -1, 30])),
        (2, encode_list([(13, 4.0), (12, 3.5)], 1_700_000_200.0, "fold-in", [4.26, float("nan")])),
    ]
    popular = encode_list([(20, 500.0), (10, 400.0), (11, 300.0)], 1_700_000_000.0, "popular")
    write_version(
        client, layout, version, lists, popular, META.model_copy(update={"version": version})
    )
    write_similar(client, layout, version, ITEMS, k=5)
    write_factors(client, layout, version, ITEMS)
    publish_catalog(client, layout, CATALOG)
    switch_current(client, layout, version, now=1_700_000_050.0)


def record_batches(client: redis.Redis, layout: RedisLayout) -> list[BatchStats]:
    """Three micro-batches' figures in ``p:pipeline``, as the job pushes them (oldest first)."""
    batches = [
        BatchStats(batch_id=7, committed_at=100.0, valid=300, invalid=0, seconds=0.8, lag=0,
                   model_version=3, checked=280, hits_at_10=14, popular_hits_at_10=9),
        BatchStats(batch_id=8, committed_at=101.0, valid=310, invalid=2, seconds=0.9, lag=5,
                   model_version=3, retrain="every 1000 ratings", building=True, checked=300,
                   hits_at_10=18, popular_hits_at_10=10, freshness_p50_s=1.2),
        BatchStats(batch_id=9, committed_at=102.0, valid=290, invalid=0, seconds=0.7, lag=0,
                   model_version=4, switched_to=4, fold_in_lists=120, checked=290,
                   hits_at_10=20, popular_hits_at_10=11, freshness_p50_s=1.1),
    ]  # fmt: skip
    for batch in batches:
        client.lpush(layout.pipeline, batch.to_json())
    return batches
