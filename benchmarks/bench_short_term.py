"""The short-term counts on the driver, by feed size: what is left to move into Spark.

The hybrid lists' movie → next-movie counts (``streaming.model.transitions``) are the
one state of the job still kept in the driver's Python process. Per synthetic feed
shaped like a MovieLens release (``--sizes``), its ratings observed in arrival order in
micro-batches of ``--batch`` as the job does, this prints:

- the time the counting takes on the driver (per batch and in all);
- the distinct movie pairs held, the bytes of their arrays and the driver's RSS growth;
- the deep copy a retrain takes of them (``BatchPipeline._start_retrain``): its time
  and RSS growth.

Side by side, the ratio of each size to the first.

    .venv/bin/python benchmarks/bench_short_term.py [--sizes 1m,10m] [--batch 100000]
"""

from __future__ import annotations

import argparse
import copy
import gc
import time

import numpy as np
from harness import SHAPES, rss_mb

from producer.synthetic import synthetic_dataset
from streaming.model.blend import transition_counts
from streaming.settings import ModelSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1m,10m", help="of " + ",".join(SHAPES))
    parser.add_argument("--batch", type=int, default=100_000)
    args = parser.parse_args()
    settings = ModelSettings()
    rows = []
    for size in args.sizes.split(","):
        events, users, movies = SHAPES[size]
        table = synthetic_dataset(events, users=users, movies=movies, seed=42).ratings
        table = table.in_replay_order()
        pair = table.user_ids * (int(table.movie_ids.max()) + 1) + table.movie_ids
        _, first = np.unique(pair, return_index=True)  # each user's first rating of a movie
        first.sort()
        who, what = table.user_ids[first], table.movie_ids[first]
        del table, pair
        gc.collect()
        before = rss_mb()
        counts = transition_counts(settings)
        began = time.perf_counter()
        for start in range(0, len(who), args.batch):
            counts.observe(who[start : start + args.batch], what[start : start + args.batch])
        count_s = time.perf_counter() - began
        held_pairs, held_bytes = counts.footprint()
        grown = rss_mb() - before
        began = time.perf_counter()
        copied = copy.deepcopy(counts)
        copy_s = time.perf_counter() - began
        copy_mb = rss_mb() - before - grown
        batches = -(-len(who) // args.batch)
        rows.append((size, len(who), count_s, count_s / batches, held_pairs, held_bytes, grown,
                     copy_s, copy_mb))  # fmt: skip
        print(f"{size}: {len(who):,} first ratings counted in {count_s:.1f} s "
              f"({count_s / batches:.2f} s per batch of {args.batch:,}); {held_pairs:,} pairs, "
              f"{held_bytes / 2**20:,.0f} MB of arrays, driver RSS +{grown:,.0f} MB; "
              f"a retrain's copy {copy_s:.1f} s, +{copy_mb:,.0f} MB", flush=True)  # fmt: skip
        del counts, copied
        gc.collect()

    first_row = rows[0]
    print(
        "\n| feed | ratings counted | counting (per batch) | pairs | arrays | driver RSS "
        "growth | a retrain's copy |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, rated, count_s, per_batch, pairs, held, grown, copy_s, copy_mb in rows:
        ratio = grown / first_row[6] if first_row[6] else 0.0
        print(f"| {size} | {rated:,} | {count_s:.1f} s ({per_batch:.2f} s) | {pairs:,} | "
              f"{held / 2**20:,.0f} MB | +{grown:,.0f} MB ({ratio:.1f}×) | "
              f"{copy_s:.1f} s, +{copy_mb:,.0f} MB |")  # fmt: skip


if __name__ == "__main__":
    main()
