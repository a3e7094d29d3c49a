"""The job's ALS fit on native BLAS (OpenBLAS, as ``make setup`` installs it) against
Spark's pure-Java fallback, side by side.

Each variant fits in its own Spark session (a fresh process: the BLAS is chosen when
the JVM starts); the fallback is forced by naming a native library that does not exist
(``-Ddev.ludovic.netlib.{blas,lapack}.nativeLib``). Per fit: the shipped ALS settings
(implicit, rank 20, 15 iterations) on an ML-1M-shaped synthetic feed, after one small
warm-up fit; variants take turns going first, best of ``--rounds``.

    .venv/bin/python benchmarks/bench_blas.py [--events 1000000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_FALLBACK = (
    "-Ddev.ludovic.netlib.blas.nativeLib=librecstream-none.so "
    "-Ddev.ludovic.netlib.lapack.nativeLib=librecstream-none.so"
)


def child(events: int) -> None:
    """Fit in this process and print one JSON line: the BLAS class and the seconds."""
    import pandas as pd
    from harness import bench_spark

    from producer.synthetic import synthetic_dataset
    from streaming.model.versions import fit_als
    from streaming.session import linear_algebra
    from streaming.settings import ModelSettings

    spark = bench_spark()
    settings = ModelSettings()
    table = synthetic_dataset(events, users=6_040, movies=3_706, seed=1).ratings
    frame = pd.DataFrame({"user_id": table.user_ids.astype("int32"),
                          "movie_id": table.movie_ids.astype("int32"),
                          "rating": table.ratings})  # fmt: skip
    ratings = spark.createDataFrame(frame).cache()
    ratings.count()
    fit_als(ratings.limit(20_000), settings)  # warm-up: JIT, the session's first jobs
    began = time.perf_counter()
    fit_als(ratings, settings)
    seconds = time.perf_counter() - began
    print(json.dumps({"blas": linear_algebra(spark), "fit_s": round(seconds, 2)}))
    spark.stop()


def run(variant: str, events: int) -> dict[str, object]:
    """One fit in a fresh process; its JSON line."""
    env = dict(os.environ)
    if variant == "java":
        env["JAVA_TOOL_OPTIONS"] = f"{env.get('JAVA_TOOL_OPTIONS', '')} {_FALLBACK}".strip()
    done = subprocess.run(  # noqa: S603 - our own interpreter and this script
        [sys.executable, __file__, "--child", "--events", str(events)],
        env=env, capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        msg = f"{variant} fit failed:\n{done.stderr[-3000:]}"
        raise SystemExit(msg)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.events)
        return
    fits: dict[str, list[float]] = {"native": [], "java": []}
    names: dict[str, object] = {}
    for round_ in range(args.rounds):
        order = ("native", "java") if round_ % 2 == 0 else ("java", "native")
        for variant in order:
            result = run(variant, args.events)
            fits[variant].append(float(str(result["fit_s"])))
            names[variant] = result["blas"]
            print(f"round {round_ + 1}, {variant}: {result['blas']}, fit {result['fit_s']} s",
                  flush=True)  # fmt: skip
    native, java = min(fits["native"]), min(fits["java"])
    print(f"ALS fit, {args.events:,} ratings (implicit, rank 20, 15 iterations, local[2]), "
          f"best of {args.rounds}: native {native:.2f} s ({names['native']}), "
          f"Java fallback {java:.2f} s ({names['java']}), ratio {java / native:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
