"""Nearest movies by item factors: cosine, best first, ties by movie id, itself left out."""

from __future__ import annotations

import numpy as np

from streaming.model.similar import similar_movies
from streaming.model.topn import ItemIndex


def _all(items: ItemIndex, k: int, block: int = 2) -> dict[int, list[tuple[int, float]]]:
    found: dict[int, list[tuple[int, float]]] = {}
    for movies, neighbours, cosines in similar_movies(items, k, block=block):
        for movie, ids, values in zip(movies, neighbours, cosines, strict=True):
            found[int(movie)] = [(int(i), float(c)) for i, c in zip(ids, values, strict=True)]
    return found


def test_cosines_of_hand_made_factors() -> None:
    # Movie 10 points along x, 20 along y, 30 halfway, 40 the opposite of x, 50 twice 10.
    factors = [[1.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-2.0, 0.0], [2.0, 0.0]]
    items = ItemIndex([50, 20, 30, 40, 10], [factors[4], factors[1], factors[2], factors[3],
                                             factors[0]])  # fmt: skip
    found = _all(items, k=3)
    half = 1 / np.sqrt(2)
    assert found[10] == [(50, 1.0), (30, half), (20, 0.0)]
    assert found[50] == [(10, 1.0), (30, half), (20, 0.0)]
    assert found[30] == [(10, half), (20, half), (50, half)]  # a tie ranks by movie id
    assert found[20] == [(30, half), (10, 0.0), (40, 0.0)]  # 10, 40 and 50 tie at 0
    assert found[40] == [(20, 0.0), (30, -half), (10, -1.0)]


def test_blocks_do_not_change_the_answer_and_short_lists_are_padded() -> None:
    rng = np.random.default_rng(3)
    items = ItemIndex(np.arange(1, 41) * 7, rng.normal(size=(40, 5)))
    whole = _all(items, k=5, block=1000)
    blocked = _all(items, k=5, block=3)
    assert blocked.keys() == whole.keys()
    for movie, neighbours in whole.items():  # the same movies; cosines to the last bits or so
        assert [n for n, _ in blocked[movie]] == [n for n, _ in neighbours]
        assert np.allclose([c for _, c in blocked[movie]], [c for _, c in neighbours])
    for movie, neighbours in whole.items():
        assert movie not in [n for n, _ in neighbours]
        assert [c for _, c in neighbours] == sorted((c for _, c in neighbours), reverse=True)
    few = _all(ItemIndex([1, 2], [[1.0, 0.0], [0.5, 0.5]]), k=3)
    assert few[1] == [(2, 1 / np.sqrt(2)), (-1, -np.inf), (-1, -np.inf)]


def test_a_movie_without_factors_has_no_neighbours_and_is_nobodys() -> None:
    items = ItemIndex([1, 2, 3], [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    found = _all(items, k=2)
    assert found[2] == [(-1, -np.inf), (-1, -np.inf)]
    assert found[1] == [(3, 1 / np.sqrt(2)), (-1, -np.inf)]
