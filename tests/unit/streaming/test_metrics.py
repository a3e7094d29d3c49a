"""Ranking and rating metrics against figures worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streaming.model.metrics import RankingFigures, mae, rank_figures, rmse
from streaming.model.topn import ItemIndex, top_k


def test_one_list_worked_by_hand() -> None:
    # hits at ranks 2 and 4 of 4; three relevant movies, one of them never listed
    figures = rank_figures([[1, 2, 3, 4]], [{2, 4, 9}], k=4)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert figures.users == 1
    assert figures.precision == pytest.approx(2 / 4)
    assert figures.recall == pytest.approx(2 / 3)
    assert figures.ndcg == pytest.approx(dcg / ideal, abs=1e-6)
    assert figures.map == pytest.approx((1 / 2 + 2 / 4) / 3, abs=1e-6)


def test_a_list_shorter_than_k_still_divides_precision_by_k() -> None:
    figures = rank_figures([[5]], [{5}], k=10)
    assert (figures.precision, figures.recall, figures.ndcg, figures.map) == (0.1, 1.0, 1.0, 1.0)


def test_users_without_relevant_movies_are_counted_and_left_out() -> None:
    figures = rank_figures([[1, 2], [3, 4]], [set(), {3}], k=2)
    assert (figures.users, figures.skipped) == (1, 1)
    assert figures.precision == 0.5
    assert rank_figures([[1]], [set()], k=1) == RankingFigures(0, 1, 0.0, 0.0, 0.0, 0.0)


def test_means_over_users() -> None:
    figures = rank_figures([[1, 2], [3, 4]], [{1}, {9}], k=2)
    assert figures.precision == pytest.approx((0.5 + 0.0) / 2)
    assert figures.recall == pytest.approx(0.5)
    assert figures.ndcg == pytest.approx(0.5)


def test_only_the_top_k_counts() -> None:
    assert rank_figures([[1, 2, 3]], [{3}], k=2).precision == 0.0


def test_ties_are_broken_by_movie_id_before_scoring() -> None:
    # four movies with the same score: the ranking is by ascending id, so 10 and 20 lead
    items = ItemIndex([40, 10, 30, 20], np.ones((4, 1)))
    listed, _ = top_k(np.ones((1, 1)), items, [np.zeros(0, dtype=np.intp)], 2)
    assert listed[0].tolist() == [10, 20]
    assert rank_figures([listed[0].tolist()], [{20, 30}], k=2).precision == 0.5


def test_bad_k() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        rank_figures([[1]], [{1}], k=0)


def test_rmse_and_mae() -> None:
    assert rmse([3.0, 4.0], [1.0, 4.0]) == pytest.approx(math.sqrt(2))
    assert mae([3.0, 4.0, 2.0], [1.0, 4.0, 3.0]) == pytest.approx(1.0)
