"""The Redis key layout: the contract between the streaming job (writer) and serving (reader).

With prefix ``p`` (``RECSTREAM_REDIS_KEY_PREFIX``, default ``recstream``) and model
version ``v`` (an integer that only grows):

=========================  ======  ==========================================================
key                        type    value
=========================  ======  ==========================================================
``p:current``              string  the current model version, e.g. ``7``
``p:versions``             zset    every published version, scored by its publish time
``p:v{v}:lists``           hash    user id -> that user's list (JSON, see ``encode_list``)
``p:v{v}:meta``            string  model metadata (JSON object)
``p:v{v}:popular``         string  the popularity list of that model (JSON, as a user list)
``p:catalog``              hash    movie id -> ``{"title": …, "genres": […]}`` (JSON)
=========================  ======  ==========================================================

A version's keys are written in full before ``p:current`` points at it, so a reader
that resolves ``p:current`` first never sees two versions mixed; fold-in updates
write into the current version's hash. A user list is
``{"items":[[movie_id,score],…],"updated_at":<epoch s>,"source":"model"|"fold-in"}``
with the best movie first and scores rounded to 4 decimals. With a rating model, each
item carries a third value, the stars the user is predicted to give the movie (1-5,
2 decimals; ``null`` when the rating model does not know the movie).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from serving.errors import ServingError

__all__ = [
    "LayoutDecodeError",
    "ListSource",
    "RedisLayout",
    "UserList",
    "decode_list",
    "decode_meta",
    "decode_movie",
    "encode_list",
    "encode_movie",
]

ListSource = Literal["model", "fold-in", "popular"]
_SOURCES = ("model", "fold-in", "popular")


class LayoutDecodeError(ServingError):
    """A value in Redis does not follow the layout (written by something else, or corrupt)."""


@dataclass(frozen=True)
class RedisLayout:
    """Key names for one prefix."""

    prefix: str

    @property
    def current(self) -> str:
        """Pointer to the current model version."""
        return f"{self.prefix}:current"

    @property
    def versions(self) -> str:
        """Sorted set of published versions."""
        return f"{self.prefix}:versions"

    @property
    def catalog(self) -> str:
        """Hash of movie id -> title and genres."""
        return f"{self.prefix}:catalog"

    def lists(self, version: int) -> str:
        """Hash of user id -> list, for one model version."""
        return f"{self.prefix}:v{version}:lists"

    def meta(self, version: int) -> str:
        """Metadata of one model version."""
        return f"{self.prefix}:v{version}:meta"

    def popular(self, version: int) -> str:
        """Popularity list of one model version."""
        return f"{self.prefix}:v{version}:popular"

    def version_keys(self, version: int) -> list[str]:
        """Every key that belongs to one version (what deleting it removes)."""
        return [self.lists(version), self.meta(version), self.popular(version)]


@dataclass(frozen=True)
class UserList:
    """A decoded list: ranked (movie id, score) pairs and where they came from."""

    items: tuple[tuple[int, float], ...]
    updated_at: float
    source: ListSource
    stars: tuple[float | None, ...] = ()  # aligned with items; empty without a rating model


def encode_list(
    items: Sequence[tuple[int, float]],
    updated_at: float,
    source: ListSource,
    stars: Sequence[float] | None = None,
) -> bytes:
    """The stored form of a list (compact JSON); ``stars`` (``nan``: none) align with items."""
    movies = [int(movie) for movie, _ in items]
    scores = np.round(np.asarray([score for _, score in items], dtype=np.float64), 4).tolist()
    rows: list[list[Any]] = [[movie, score] for movie, score in zip(movies, scores, strict=True)]
    if stars is not None:
        rounded = np.round(np.asarray(stars, dtype=np.float64), 2).tolist()
        for row, value in zip(rows, rounded, strict=True):
            row.append(None if value != value else value)  # nan -> null
    document = {"items": rows, "updated_at": round(updated_at, 3), "source": source}
    return json.dumps(document, separators=(",", ":")).encode()


def decode_list(raw: bytes | str, *, key: str = "a list") -> UserList:
    """Parse a stored list.

    Raises:
        LayoutDecodeError: the value is not a list in this layout; the message names the key.
    """
    try:
        document = json.loads(raw)
        rows = [_item(row) for row in document["items"]]
        starred = any(len(row) == 3 for row in document["items"])
        updated_at = float(document["updated_at"])
        source = document["source"]
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"{key} in Redis is not a recommendation list ({type(exc).__name__})"
        raise LayoutDecodeError(msg) from exc
    items = tuple((movie, score) for movie, score, _ in rows)
    stars = tuple(star for _, _, star in rows) if starred else ()
    if source not in _SOURCES:
        msg = f"{key} in Redis has unknown source {source!r}"
        raise LayoutDecodeError(msg)
    return UserList(items, updated_at, cast(ListSource, source), stars)


def _item(row: Sequence[Any]) -> tuple[int, float, float | None]:
    """(movie, score, stars or None) of one stored item: two or three values."""
    if len(row) == 2:
        movie, score = row
        return int(movie), float(score), None
    movie, score, star = row  # a wrong length raises ValueError
    return int(movie), float(score), None if star is None else float(star)


def encode_movie(title: str, genres: Sequence[str]) -> bytes:
    """The stored form of a catalog entry."""
    return json.dumps({"title": title, "genres": list(genres)}, ensure_ascii=False).encode()


def decode_movie(raw: bytes | str, *, key: str = "a catalog entry") -> tuple[str, tuple[str, ...]]:
    """Parse a catalog entry into (title, genres).

    Raises:
        LayoutDecodeError: the value is not a catalog entry.
    """
    try:
        document = json.loads(raw)
        title = document["title"]
        genres = tuple(document["genres"])
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"{key} in Redis is not a catalog entry ({type(exc).__name__})"
        raise LayoutDecodeError(msg) from exc
    if not isinstance(title, str) or not all(isinstance(g, str) for g in genres):
        msg = f"{key} in Redis has a title or genre that is not text"
        raise LayoutDecodeError(msg)
    return title, genres


def decode_meta(raw: bytes | str, *, key: str = "model metadata") -> dict[str, Any]:
    """Parse a version's metadata: a JSON object with at least an integer ``version``
    and a numeric ``trained_at``.

    Raises:
        LayoutDecodeError: the value is not metadata in this layout.
    """
    try:
        document = json.loads(raw)
    except ValueError as exc:
        msg = f"{key} in Redis is not JSON ({type(exc).__name__})"
        raise LayoutDecodeError(msg) from exc
    if not isinstance(document, dict):
        msg = f"{key} in Redis is not a JSON object"
        raise LayoutDecodeError(msg)
    version, trained_at = document.get("version"), document.get("trained_at")
    if isinstance(version, bool) or not isinstance(version, int):
        msg = f"{key} in Redis has no integer version"
        raise LayoutDecodeError(msg)
    if isinstance(trained_at, bool) or not isinstance(trained_at, int | float):
        msg = f"{key} in Redis has no numeric trained_at"
        raise LayoutDecodeError(msg)
    return document
