"""A visitor's list: the job's fold-in for the same ratings, and the factor table's bytes."""

from __future__ import annotations

import numpy as np
import pytest

from serving.anonymous import ItemTable, VisitorLists, anonymous_list, visitor_factor
from serving.layout import (
    FACTORS_MAGIC,
    LayoutDecodeError,
    ModelMeta,
    RedisLayout,
    decode_factors,
    encode_factors,
)
from streaming.ingest.history import UserRatings
from streaming.model.lists import FoldIn, fold_in_users, lists_for
from streaming.model.topn import ItemIndex

RNG = np.random.default_rng(7)
MOVIES = np.arange(10, 410, 2, dtype=np.int64)  # 200 movies, ids with gaps
FACTORS = RNG.normal(0, 0.5, (len(MOVIES), 6))
PRIOR = RNG.normal(0, 0.1, len(MOVIES))


def _table(*, implicit: bool) -> ItemTable:
    return ItemTable(3, MOVIES, FACTORS, PRIOR, reg_param=0.05, implicit=implicit, alpha=2.0)


def _one_user(movies: list[int], ratings: list[float]) -> UserRatings:
    return UserRatings(np.array([1]), np.array([0, len(movies)]), np.array(movies),
                       np.array(ratings, dtype=np.float64))  # fmt: skip


@pytest.mark.parametrize("implicit", [True, False])
def test_a_visitor_gets_the_list_the_job_would_give_the_same_ratings(implicit: bool) -> None:
    movies = [12, 50, 88, 300, 999]  # 999: a movie the model does not know
    ratings = [5.0, 4.0, 1.0, 3.5, 5.0]
    model = FoldIn(ItemIndex(MOVIES, FACTORS, PRIOR), 0.05, implicit=implicit, alpha=2.0)
    job_factor, solvable = fold_in_users(_one_user(movies, ratings), model)
    factor, known = visitor_factor(_table(implicit=implicit), np.array(movies),
                                   np.array(ratings))  # fmt: skip
    assert solvable[0] and factor is not None
    np.testing.assert_allclose(factor, job_factor[0], rtol=1e-12, atol=1e-12)
    assert known.tolist() == [True, True, True, True, False]

    job = lists_for(_one_user(movies, ratings), model, 20)
    listed, _ = anonymous_list(_table(implicit=implicit), np.array(movies), np.array(ratings), 20)
    assert [movie for movie, _ in listed] == job.movies[0].tolist()
    np.testing.assert_allclose([score for _, score in listed], job.scores[0], rtol=1e-12)
    assert not {movie for movie, _ in listed} & set(movies)


def test_a_visitor_the_model_cannot_fold_in_gets_nothing() -> None:
    nothing, known = anonymous_list(_table(implicit=True), np.array([999, 1001]),
                                    np.array([5.0, 4.0]), 10)  # fmt: skip
    assert (nothing, known.tolist()) == ([], [False, False])
    dislikes, _ = anonymous_list(_table(implicit=True), np.array([12]), np.array([-1.0]), 10)
    assert dislikes == []  # implicit feedback: no positive rating, no factor


def test_the_factor_table_round_trips_and_is_pinned() -> None:
    raw = encode_factors(MOVIES, FACTORS, PRIOR)
    ids, factors, prior = decode_factors(raw)
    assert ids.tolist() == MOVIES.tolist()
    assert np.array_equal(factors, FACTORS) and np.array_equal(prior, PRIOR)
    tiny = encode_factors(np.array([7]), np.array([[1.0, -2.0]]), np.array([0.5]))
    assert tiny == (
        FACTORS_MAGIC + b"\x01\x00\x00\x00\x02\x00\x00\x00" + b"\x07" + b"\x00" * 7
        + np.array([1.0, -2.0, 0.5], dtype="<f8").tobytes()
    )  # fmt: skip
    with pytest.raises(LayoutDecodeError, match="is not a factor table"):
        decode_factors(b"{}", key="p:v3:factors")
    with pytest.raises(LayoutDecodeError, match="has 40 bytes, not those of 1 movies of rank 2"):
        decode_factors(tiny[:-4], key="p:v3:factors")


def test_a_reply_for_the_version_before_the_newest_still_finds_its_table() -> None:
    """An answer computed while another request switched the held table to a newer one."""
    visitors = VisitorLists(RedisLayout("p"))
    meta = ModelMeta(version=3, trained_at=1.0, hyperparameters={
        "reg_param": 0.05, "implicit_prefs": True, "alpha": 2.0})  # fmt: skip
    table = encode_factors(MOVIES, FACTORS, PRIOR)
    ids, stars = np.array([12, 50]), np.array([5.0, 4.0])
    for version in (3, 4):
        meta_v = meta.model_copy(update={"version": version}).to_json()
        visitors.listed([str(version).encode(), meta_v, table, None], ids, stars, 5)
    assert visitors.held == 4
    # the script ran when version 3 was current and the client held 3: no table sent
    meta_3 = meta.to_json()
    version, _, listed, source, _ = visitors.listed([b"3", meta_3, None, None], ids, stars, 5)
    assert (version, source, len(listed)) == (3, "anonymous", 5)
    for version in (5, 6):  # only the two newest tables are kept
        meta_v = meta.model_copy(update={"version": version}).to_json()
        visitors.listed([str(version).encode(), meta_v, table, None], ids, stars, 5)
    assert sorted(visitors.tables) == [5, 6]
    with pytest.raises(LayoutDecodeError, match=r"\{p\}:v3:factors is missing"):
        visitors.listed([b"3", meta_3, None, None], ids, stars, 5)
