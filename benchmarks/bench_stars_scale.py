"""Stars at scale: the factorization machine against Spark's explicit ALS, by feed size.

Per synthetic feed shaped like a MovieLens release (``--sizes``), its ratings written as
Parquet and read back by Spark as the store's are, the newest tenth held out:

- **spark**: the stars' model the job uses past ``rating_spark_above`` ratings
  (``streaming.rating.spark_stars``): fit on the executors, then the held-out RMSE
  scored on the executors; only the movies' terms come to the driver;
- **sampler**: the factorization machine (``streaming.rating.fm``) as the fitter runs
  it below the threshold: the ratings loaded into the driver, sampled in a spawned
  process (its peak RSS measured), the held-out RMSE folded in on the driver. Run up
  to ``--sampler-up-to`` ratings;
- **biases**: mean + movie + user offsets, the strongest simple baseline.

Printed side by side: fit and scoring seconds, held-out RMSE, and the driver's Python
RSS growth (the sampler's process apart). Synthetic ratings have planted rank-8
structure, so the RMSE compares models on one feed, not with published figures; the
real-data comparison is ``python -m streaming.evaluation rating`` on ML-100K.

    .venv/bin/python benchmarks/bench_stars_scale.py [--sizes 1m,10m] [--sampler-up-to 1m]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
from harness import SHAPES, bench_spark, rss_mb

from producer.synthetic import synthetic_dataset
from streaming.evaluation.protocols import bias_baseline
from streaming.model.holdout import holdout_cutoff
from streaming.model.versions import training_split
from streaming.rating.fitter import held_out_stars, rating_model, split_at, stars_rmse
from streaming.rating.spark_stars import fit_spark_stars, held_out_rmse
from streaming.settings import ModelSettings


class _ChildPeak:
    """The peak RSS of this process's children, sampled every 0.2 s while it runs."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _ChildPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        me = str(Path("/proc/self").resolve().name)
        while not self._stop.wait(0.2):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    text = status.read_text()
                except OSError:
                    continue
                fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                if fields.get("PPid", "").strip() == me and "VmRSS" in fields:
                    self.peak_mb = max(self.peak_mb, int(fields["VmRSS"].split()[0]) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1m,10m", help="of " + ",".join(SHAPES))
    parser.add_argument("--sampler-up-to", default="1m", help="largest size the sampler fits")
    args = parser.parse_args()
    settings = ModelSettings()
    spark = bench_spark("8g")
    parallelism = spark.sparkContext.defaultParallelism
    sampler_limit = SHAPES[args.sampler_up_to][0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-stars-scale-") as scratch:
        for size in args.sizes.split(","):
            events, users, movies = SHAPES[size]
            table = synthetic_dataset(events, users=users, movies=movies, seed=11).ratings
            frame = pd.DataFrame({"user_id": table.user_ids, "movie_id": table.movie_ids,
                                  "rating": table.ratings,
                                  "timestamp": table.timestamps})  # fmt: skip
            frame = frame.drop_duplicates(["user_id", "movie_id"], keep="last")
            cutoff = holdout_cutoff(frame["timestamp"].to_numpy(), settings.holdout_fraction)
            path = Path(scratch) / size
            frame.to_parquet(path)
            training, held_out = training_split(frame, cutoff)
            baseline = stars_rmse(bias_baseline(training, held_out),
                                  held_out["rating"].to_numpy())[0]  # fmt: skip
            del frame, table
            pairs = len(training) + len(held_out)
            print(f"{size}: {pairs:,} distinct pairs, {len(held_out):,} held out; "
                  f"biases RMSE {baseline:.4f}", flush=True)  # fmt: skip

            stored = spark.read.parquet(str(path))
            fit_on, held = split_at(stored, cutoff)
            before = rss_mb()
            began = time.perf_counter()
            model = fit_spark_stars(fit_on, settings, parallelism)
            fit_s = time.perf_counter() - began
            began = time.perf_counter()
            rmse, _ = held_out_rmse(model, fit_on, held, parallelism)
            score_s = time.perf_counter() - began
            grown = rss_mb() - before
            rows.append((size, "spark", fit_s, score_s, rmse, grown, 0.0, baseline))
            print(f"  spark: fit {fit_s:.1f} s, scored {score_s:.1f} s, RMSE {rmse:.4f}, "
                  f"driver +{grown:.0f} MB", flush=True)  # fmt: skip

            if len(training) + len(held_out) <= sampler_limit:
                before = rss_mb()
                began = time.perf_counter()
                with _ChildPeak() as child:
                    fitted = rating_model(training, settings, separate_process=True)
                fit_s = time.perf_counter() - began
                assert fitted is not None  # noqa: S101 - rating_samples is above 0
                began = time.perf_counter()
                sampled, _ = stars_rmse(held_out_stars(fitted, training, held_out),
                                        held_out["rating"].to_numpy())  # fmt: skip
                score_s = time.perf_counter() - began
                grown = rss_mb() - before
                rows.append((size, "sampler", fit_s, score_s, sampled, grown, child.peak_mb,
                             baseline))  # fmt: skip
                print(f"  sampler: fit {fit_s:.1f} s (process peak {child.peak_mb:.0f} MB), "
                      f"scored {score_s:.1f} s, RMSE {sampled:.4f}", flush=True)  # fmt: skip
            del training, held_out

    print(
        "\n| feed | stars | fit | held-out scoring | RMSE | biases RMSE | driver RSS "
        "growth | sampler process peak |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, name, fit_s, score_s, rmse, grown, peak, baseline in rows:
        print(
            f"| {size} | {name} | {fit_s:.1f} s | {score_s:.1f} s | {rmse:.4f} | "
            f"{baseline:.4f} | {grown:+.0f} MB | {f'{peak:.0f} MB' if peak else '—'} |"
        )
    print(
        f"\ndriver peak RSS of this run: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    spark.stop()


if __name__ == "__main__":
    main()
