"""The short-term counts on the driver by feed size: rows bounded by movies, or every pair.

The hybrid lists' movie → next-movie counts (``streaming.model.transitions``) are kept in
the driver's Python process. Per synthetic feed shaped like a MovieLens release
(``--sizes``), its first ratings of a movie observed in arrival order in micro-batches of
``--batch`` as the job does, for the shipped bound on each movie's followers
(``RECSTREAM_MODEL_TRANSITION_FOLLOWERS``) and for none (0: every pair kept), this prints:

- the time the counting takes on the driver (per batch and in all);
- the distinct movie pairs held, the bytes of their arrays and the driver's RSS growth
  (the rows and every user's recent movies);
- the deep copy a retrain takes of them (``BatchPipeline._start_retrain``): its time
  and RSS growth.

Side by side, each size's growth against the first size's, and bounded against all.

    .venv/bin/python benchmarks/bench_short_term.py [--sizes 1m,10m,25m] [--batch 100000]
"""

from __future__ import annotations

import argparse
import copy
import gc
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

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
    bounds = (ModelSettings().transition_followers, 0)
    rows = []
    spawn = multiprocessing.get_context("spawn")  # a fresh process each: RSS growth is its own
    for size in args.sizes.split(","):
        for followers in bounds:
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as fresh:
                measured = fresh.submit(_measure, size, followers, args.batch).result()
            rows.append((size, followers, *measured))
            _, _, rated, count_s, per_batch, pairs, held, grown, copy_s, copy_mb = rows[-1]
            print(f"{size}, followers {followers or 'all'}: {rated:,} first ratings counted in "
                  f"{count_s:.1f} s ({per_batch:.2f} s per batch of {args.batch:,}); "
                  f"{pairs:,} pairs, {held / 2**20:,.0f} MB of arrays, driver RSS "
                  f"+{grown:,.0f} MB; a retrain's copy {copy_s:.1f} s, +{copy_mb:,.0f} MB",
                  flush=True)  # fmt: skip

    print(
        "\n| feed | followers kept | ratings counted | counting (per batch) | pairs | arrays "
        "| driver RSS growth (× first size) | a retrain's copy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    first_size = rows[0][0]
    firsts = {row[1]: row[7] for row in rows if row[0] == first_size}  # followers → growth
    for size, followers, rated, count_s, per_batch, pairs, held, grown, copy_s, copy_mb in rows:
        base = firsts.get(followers, 0.0)
        ratio = f" ({grown / base:.1f}×)" if base else ""
        print(f"| {size} | {followers or 'all'} | {rated:,} | {count_s:.1f} s ({per_batch:.2f} s)"
              f" | {pairs:,} | {held / 2**20:,.0f} MB | +{grown:,.0f} MB{ratio} | "
              f"{copy_s:.1f} s, +{copy_mb:,.0f} MB |")  # fmt: skip


def _measure(
    size: str, followers: int, batch: int
) -> tuple[int, float, float, int, int, float, float, float]:
    """Count the ``size`` feed's first ratings in batches, in this (fresh) process.

    (ratings, s, s per batch, pairs, bytes of rows, RSS growth MB, copy s, copy MB).
    """
    events, users, movies = SHAPES[size]
    table = synthetic_dataset(events, users=users, movies=movies, seed=42).ratings
    table = table.in_replay_order()
    pair = table.user_ids * (int(table.movie_ids.max()) + 1) + table.movie_ids
    _, first = np.unique(pair, return_index=True)  # each user's first rating of a movie
    first.sort()
    who, what = table.user_ids[first], table.movie_ids[first]
    del table, pair, first
    gc.collect()
    settings = ModelSettings().model_copy(update={"transition_followers": followers})
    before = rss_mb()
    counts = transition_counts(settings)
    began = time.perf_counter()
    for start in range(0, len(who), batch):
        counts.observe(who[start : start + batch], what[start : start + batch])
    count_s = time.perf_counter() - began
    held_pairs, held_bytes = counts.footprint()
    grown = rss_mb() - before
    began = time.perf_counter()
    copied = copy.deepcopy(counts)
    copy_s = time.perf_counter() - began
    copy_mb = rss_mb() - before - grown
    del copied
    batches = -(-len(who) // batch)
    return (len(who), count_s, count_s / batches, held_pairs, held_bytes, grown, copy_s,
            copy_mb)  # fmt: skip


if __name__ == "__main__":
    main()
