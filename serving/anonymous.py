"""A list for a visitor without a user id: their ratings folded in on the request path.

The visitor's factor is the ALS user step against the current version's item factors
(published by the job as ``p:v{v}:factors``), with the regularisation, feedback kind
and alpha the version was fitted with (its metadata): the job's fold-in
(``streaming.model.foldin``) for the same ratings, which a unit test checks. The list is
ranked by ALS score plus the version's popularity prior, the visitor's movies left out;
the short-term part and the stars need a user's history in the job and are not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from recstream_base.ids import MAX_ID
from serving.answers import MAX_N, check_whole, current
from serving.layout import LayoutDecodeError, RedisLayout, decode_factors, decode_list, decode_meta

__all__ = [
    "DEFAULT_STARS",
    "MAX_VISITOR_MOVIES",
    "ItemTable",
    "VisitorLists",
    "VisitorMovie",
    "VisitorRequest",
    "anonymous_list",
    "check_visitor",
    "visitor_factor",
]

DEFAULT_STARS = 4.0  # a movie given without a rating counts as liked at 4 of 5 stars


@dataclass(frozen=True)
class ItemTable:
    """One version's item factors (movie ids ascending) and how its users are folded in."""

    version: int
    movie_ids: npt.NDArray[np.int64]
    factors: npt.NDArray[np.float64]
    prior: npt.NDArray[np.float64]
    reg_param: float
    implicit: bool
    alpha: float
    gramian: npt.NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gramian", self.factors.T @ self.factors)


def visitor_factor(
    table: ItemTable, movies: npt.NDArray[np.int64], ratings: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.bool_]]:
    """The visitor's factor, and which of ``movies`` the model knows.

    The factor is None when none of the known movies counts (a positive rating, for
    implicit feedback). Implicit: ``(YᵀY + Σ c y yᵀ + λ n⁺ I) x = Σ_{r>0} (1 + c) y``
    with ``c = α |r|``; explicit: ``(Σ y yᵀ + λ n I) x = Σ r y``.
    """
    if not len(table.movie_ids):
        return None, np.zeros(len(movies), dtype=np.bool_)
    rows = np.minimum(np.searchsorted(table.movie_ids, movies), len(table.movie_ids) - 1)
    known = table.movie_ids[rows] == movies
    y, r = table.factors[rows[known]], ratings[known]
    rank = table.factors.shape[1]
    if table.implicit:
        confidence = table.alpha * np.abs(r)
        normal = table.gramian + (y.T * confidence) @ y
        rhs = y.T @ np.where(r > 0, 1.0 + confidence, 0.0)
        counted = float((r > 0).sum())
    else:
        normal = y.T @ y
        rhs = y.T @ r
        counted = float(len(r))
    if counted == 0:
        return None, known
    normal = normal + table.reg_param * counted * np.eye(rank)
    return np.linalg.solve(normal, rhs), known


def anonymous_list(
    table: ItemTable, movies: npt.NDArray[np.int64], ratings: npt.NDArray[np.float64], n: int
) -> tuple[list[tuple[int, float]], npt.NDArray[np.bool_]]:
    """The visitor's best ``n`` movies (id, score), and which of their movies the model knows.

    Best first, equal scores by ascending id; empty when none of their movies can be
    folded in.
    """
    factor, known = visitor_factor(table, movies, ratings)
    if factor is None:
        return [], known
    scores = table.factors @ factor + table.prior
    scores[np.isin(table.movie_ids, movies)] = -np.inf
    order = np.lexsort((table.movie_ids, -scores))[:n]  # best first, equal scores by id
    chosen = order[np.isfinite(scores[order])]
    return list(zip(table.movie_ids[chosen].tolist(), scores[chosen].tolist(), strict=True)), known


MAX_VISITOR_MOVIES = 200


def check_visitor(
    movies: Sequence[tuple[int, float | None]], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The visitor's movie ids and stars as arrays (stars left out count ``DEFAULT_STARS``)."""
    check_whole("n", n, MAX_N)
    if not 1 <= len(movies) <= MAX_VISITOR_MOVIES:
        msg = f"give 1..{MAX_VISITOR_MOVIES} movies, got {len(movies)}"
        raise ValueError(msg)
    seen: set[int] = set()
    for movie, stars in movies:
        check_whole("movie_id", movie, MAX_ID)
        if movie in seen:
            msg = f"movie {movie} is given twice"
            raise ValueError(msg)
        seen.add(movie)
        if stars is not None and not 0.5 <= stars <= 5:
            msg = f"the rating of movie {movie} must be 0.5..5 stars, got {stars!r}"
            raise ValueError(msg)
    ids = np.array([movie for movie, _ in movies], dtype=np.int64)
    given = np.array([DEFAULT_STARS if value is None else float(value) for _, value in movies])
    return ids, given


class VisitorLists:
    """The visitor lists' part of a client: the current version's item table, kept."""

    def __init__(self, layout: RedisLayout) -> None:
        self.layout = layout
        # The newest tables by version: a request whose script ran just before another
        # one replaced the newest still finds the version it was answered for.
        self.tables: dict[int, ItemTable] = {}

    @property
    def held(self) -> int:
        """The newest version whose table is held (-1: none yet)."""
        return max(self.tables, default=-1)

    def listed(
        self, reply: Sequence[Any], ids: np.ndarray, stars: np.ndarray, n: int
    ) -> tuple[int, float, list[tuple[int, float]], Literal["anonymous", "popular"], list[int]]:
        """(version, trained_at, list, source, unknown movies) from the script's reply."""
        version, raw_meta, trained_at = current(self.layout, reply)
        _, _, raw_factors, raw_popular = reply
        table = self.tables.get(version)
        if table is None:
            key = self.layout.factors(version)
            if raw_factors is None:
                msg = f"{key} is missing: the job that published version {version} writes none"
                raise LayoutDecodeError(msg)
            movie_ids, factors, prior = decode_factors(raw_factors, key=key)
            found = decode_meta(raw_meta, key=self.layout.meta(version)).hyperparameters
            try:
                table = ItemTable(version, movie_ids, factors, prior, float(found["reg_param"]),
                                  bool(found["implicit_prefs"]), float(found["alpha"]))  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                msg = f"{self.layout.meta(version)} lacks the fold-in's hyperparameters"
                raise LayoutDecodeError(msg) from exc
            # the two newest versions' tables, swapped in whole for readers on other threads
            self.tables = dict(sorted({**self.tables, version: table}.items())[-2:])
        listed, known = anonymous_list(table, ids, stars, n)
        unknown = ids[~known].tolist()
        if listed:
            return version, trained_at, listed, "anonymous", unknown
        if raw_popular is None:
            msg = f"{self.layout.popular(version)} is missing although version {version} is current"
            raise LayoutDecodeError(msg)
        given = set(ids.tolist())
        popular = decode_list(raw_popular, key=self.layout.popular(version)).items
        return (
            version,
            trained_at,
            [i for i in popular if i[0] not in given][:n],
            "popular",
            unknown,
        )


class VisitorMovie(BaseModel):
    """A movie a visitor gives, with their stars when they have some."""

    model_config = ConfigDict(extra="forbid")

    movie_id: int = Field(ge=1, le=MAX_ID, description="The movie's id.")
    rating: float | None = Field(
        None, ge=0.5, le=5, description="Stars, 0.5-5; left out, the movie counts as liked (4)."
    )


class VisitorRequest(BaseModel):
    """The body of ``POST /recommendations``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "movies": [{"movie_id": 50, "rating": 5}, {"movie_id": 172}], "n": 10,
        }]},
    )  # fmt: skip

    movies: list[VisitorMovie] = Field(min_length=1, max_length=MAX_VISITOR_MOVIES)
    n: int = Field(10, ge=1, le=MAX_N, description="How many movies.")
