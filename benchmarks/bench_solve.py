"""The batched per-user solve (``streaming.linalg.add_grouped``) against the alternative.

Both build the same normal equations for every user: the shipped way is one matrix
product per user's run of ratings; the alternative (what ``streaming.model.lists`` did
before) builds a ``d × d`` outer product per rating and sums each user's run with
``np.add.reduceat``. Measured side by side, best of ``--repeats``, on the two shapes the
job solves: the list model's ALS user step (rank 20, every user of an ML-1M-shaped
history) and the rating model's user side (25 draws × rank 11). Same inputs, and the
figures check that both give the same sums.

    .venv/bin/python benchmarks/bench_solve.py [--users 6040] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from streaming.linalg import add_grouped

FloatArray = npt.NDArray[np.float64]


def by_outer_products(
    normal: FloatArray, rhs: FloatArray, owner: npt.NDArray[np.int64],
    x: FloatArray, weight: FloatArray, target: FloatArray, chunk: int = 20_000,
) -> None:  # fmt: skip
    """The alternative: ratings on axis 0, a reduce over stacked outer products."""
    for first in range(0, len(owner), chunk):
        part = slice(first, first + chunk)
        present, starts = np.unique(owner[part], return_index=True)
        xs = x[part]
        outer = (xs * weight[part][..., None])[..., :, None] * xs[..., None, :]
        normal[present] += np.add.reduceat(outer, starts, axis=0)
        rhs[present] += np.add.reduceat(xs * target[part][..., None], starts, axis=0)


def best_of(repeats: int, run: Callable[[], None]) -> float:
    """The fastest of ``repeats`` runs, seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(name: str, owner: npt.NDArray[np.int64], users: int, lead: tuple[int, ...],
            d: int, repeats: int, rng: np.random.Generator) -> None:  # fmt: skip
    """Time both ways on ``len(owner)`` ratings of ``users`` users, ``lead`` axes side by side."""
    # Each way gets its inputs in the layout it reads best (contiguous).
    x = rng.normal(size=(*lead, len(owner), d))
    weight = rng.uniform(0.5, 2.0, size=(*lead, len(owner)))
    target = rng.normal(size=(*lead, len(owner)))
    moved = [np.ascontiguousarray(np.moveaxis(a, len(lead), 0)) for a in (x, weight, target)]
    results = {}

    def shipped() -> None:
        normal, rhs = np.zeros((users, *lead, d, d)), np.zeros((users, *lead, d))
        add_grouped(
            normal, rhs, owner, lambda at: (x[..., at, :], weight[..., at], target[..., at])
        )
        results["shipped"] = (normal, rhs)

    def outer() -> None:
        normal, rhs = np.zeros((users, *lead, d, d)), np.zeros((users, *lead, d))
        by_outer_products(normal, rhs, owner, moved[0], moved[1], moved[2])
        results["outer"] = (normal, rhs)

    fast, slow = best_of(repeats, shipped), best_of(repeats, outer)
    same = all(np.allclose(a, b) for a, b in zip(results["shipped"], results["outer"], strict=True))
    print(f"{name}: {len(owner):,} ratings, {users:,} users: per-user products {fast:.2f} s, "
          f"outer products {slow:.2f} s, ratio {slow / fast:.1f}x, same sums: {same}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=6_040)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 330, args.users)  # ~1M ratings at 6,040 users
    owner = np.repeat(np.arange(args.users), counts)
    measure("list model, rank 20", owner, args.users, (), 20, args.repeats, rng)
    fewer = owner[owner < args.users // 3]  # the rating model's draws make each rating 25×
    measure("rating model, 25 draws x rank 11", fewer, args.users // 3, (25,), 11,
            args.repeats, rng)  # fmt: skip


if __name__ == "__main__":
    main()
