"""The Redis key layout: the contract between the streaming job (writer) and serving (reader).

With prefix ``p`` (``RECSTREAM_REDIS_KEY_PREFIX``, default ``recstream``) and model
version ``v`` (an integer that only grows). Every key begins with ``{p}``, a hash tag:
on Redis Cluster all of a prefix's keys share one slot, so the version switch (one
MULTI/EXEC) and the lookup scripts, which read several keys, run on one node.

=========================  ======  ==========================================================
key                        type    value
=========================  ======  ==========================================================
``{p}:current``            string  the current model version, e.g. ``7``
``{p}:versions``           zset    every published version, scored by its publish time
``{p}:v{v}:lists``         hash    user id -> that user's list (JSON, see ``encode_list``)
``{p}:v{v}:meta``          string  model metadata (JSON object)
``{p}:v{v}:popular``       string  the popularity list of that model (JSON, as a user list)
``{p}:v{v}:similar``       hash    movie id -> its nearest movies by the model's item
                                   factors (JSON, as a user list; score = cosine)
``{p}:v{v}:factors``       string  the version's item factors and popularity prior
                                   (binary, ``encode_factors``), for lists of visitors
``{p}:catalog``            hash    movie id -> ``{"title": …, "genres": […]}`` (JSON)
``{p}:pipeline``           list    the newest micro-batches' figures, newest first
                                   (``BatchStats`` JSON; at most ``PIPELINE_KEPT``)
``{p}:building``           set     versions whose keys are written ahead of their switch
                                   (a lower one never switched in is deleted at a switch)
=========================  ======  ==========================================================

A version's keys are written in full before ``{p}:current`` points at it, so a reader
that resolves ``{p}:current`` first never sees two versions mixed; fold-in updates
write into the current version's hash. A user list is
``{"items":[[movie_id,score],…],"updated_at":<epoch s>,"source":"model"|"fold-in"}``
with the best movie first and scores rounded to 4 decimals. With a rating model, each
item carries a third value, the stars the user is predicted to give the movie (1-5,
2 decimals; ``null`` when the rating model does not know the movie). A list may also
carry ``"because":[movie_id|null,…]``, aligned with the first items (at most
``RECSTREAM_MODEL_EXPLAIN_K``): the rated movie that raised each one's score the most.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ConfigDict, Field, Strict, StrictInt, ValidationError

from serving.errors import ServingError

__all__ = [
    "FACTORS_MAGIC",
    "KEY_TEMPLATES",
    "PIPELINE_KEPT",
    "BatchStats",
    "CatalogEntry",
    "LayoutDecodeError",
    "ListSource",
    "ModelMeta",
    "RedisLayout",
    "UserList",
    "decode_factors",
    "decode_list",
    "decode_meta",
    "decode_movie",
    "encode_factors",
    "encode_list",
    "encode_lists",
    "lua_key",
    "lua_key_functions",
]

PIPELINE_KEPT = 600  # micro-batches in ``{p}:pipeline``: ten minutes at the 1 s trigger

ListSource = Literal["model", "fold-in", "popular"]
_SOURCES = ("model", "fold-in", "popular")


class LayoutDecodeError(ServingError):
    """A value in Redis does not follow the layout (written by something else, or corrupt)."""

    status_code = 502
    public_message = "the stored recommendations for this request are unreadable"
    metric_kind = "bad data"


# Every key name, once: Python formats these, and the serving scripts get them as Lua
# functions (``lua_key_functions``), so the two cannot drift apart.
KEY_TEMPLATES = {
    "current": "{prefix}:current",
    "versions": "{prefix}:versions",
    "catalog": "{prefix}:catalog",
    "lists": "{prefix}:v{version}:lists",
    "meta": "{prefix}:v{version}:meta",
    "popular": "{prefix}:v{version}:popular",
    "similar": "{prefix}:v{version}:similar",
    "pipeline": "{prefix}:pipeline",
    "factors": "{prefix}:v{version}:factors",
    "building": "{prefix}:building",
}
_PLACEHOLDER = re.compile(r"\{(prefix|version)\}")


@dataclass(frozen=True)
class RedisLayout:
    """Key names for one prefix, each under the prefix's hash tag (``tag``)."""

    prefix: str

    @property
    def tag(self) -> str:
        """``{prefix}``: the first part of every key, a Redis Cluster hash tag.

        The serving scripts get it as ARGV[1] and build their key names from it.
        """
        return "{" + self.prefix + "}"

    @property
    def pattern(self) -> str:
        """A SCAN pattern that matches every key of this prefix (and nothing else)."""
        return self.tag + ":*"

    @property
    def current(self) -> str:
        """Pointer to the current model version."""
        return KEY_TEMPLATES["current"].format(prefix=self.tag)

    @property
    def versions(self) -> str:
        """Sorted set of published versions."""
        return KEY_TEMPLATES["versions"].format(prefix=self.tag)

    @property
    def catalog(self) -> str:
        """Hash of movie id -> title and genres."""
        return KEY_TEMPLATES["catalog"].format(prefix=self.tag)

    @property
    def pipeline(self) -> str:
        """List of the newest micro-batches' figures, newest first."""
        return KEY_TEMPLATES["pipeline"].format(prefix=self.tag)

    @property
    def building(self) -> str:
        """Set of the versions whose keys are being written ahead of their switch."""
        return KEY_TEMPLATES["building"].format(prefix=self.tag)

    def lists(self, version: int) -> str:
        """Hash of user id -> list, for one model version."""
        return KEY_TEMPLATES["lists"].format(prefix=self.tag, version=version)

    def meta(self, version: int) -> str:
        """Metadata of one model version."""
        return KEY_TEMPLATES["meta"].format(prefix=self.tag, version=version)

    def popular(self, version: int) -> str:
        """Popularity list of one model version."""
        return KEY_TEMPLATES["popular"].format(prefix=self.tag, version=version)

    def similar(self, version: int) -> str:
        """Hash of movie id -> its nearest movies, for one model version."""
        return KEY_TEMPLATES["similar"].format(prefix=self.tag, version=version)

    def factors(self, version: int) -> str:
        """The item factors and prior of one model version (``encode_factors``)."""
        return KEY_TEMPLATES["factors"].format(prefix=self.tag, version=version)

    def version_keys(self, version: int) -> list[str]:
        """Every key that belongs to one version (what deleting it removes)."""
        return [
            self.lists(version), self.meta(version), self.popular(version),
            self.similar(version), self.factors(version),
        ]  # fmt: skip

    def similar_staging(self, version: int) -> str:
        """Where a version's ``similar`` hash is filled before it is renamed into place."""
        return self.similar(version) + ":staging"


def lua_key(name: str) -> str:
    """The Lua expression of key ``name`` over the variables ``prefix`` and ``version``."""
    parts = []
    for position, piece in enumerate(_PLACEHOLDER.split(KEY_TEMPLATES[name])):
        if position % 2:  # a placeholder's name
            parts.append(piece)
        elif piece:
            parts.append(f"'{piece}'")
    return " .. ".join(parts)


def lua_key_functions() -> str:
    """Lua functions ``<name>_key(prefix, version)``, one per key of ``KEY_TEMPLATES``.

    The serving scripts start with them.
    """
    return "".join(
        f"local function {name}_key(prefix, version) return {lua_key(name)} end\n"
        for name in KEY_TEMPLATES
    )


@dataclass(frozen=True)
class UserList:
    """A decoded list: ranked (movie id, score) pairs and where they came from."""

    items: tuple[tuple[int, float], ...]
    updated_at: float
    source: ListSource
    stars: tuple[float | None, ...] = ()  # aligned with items; empty without a rating model
    because: tuple[int | None, ...] = ()  # aligned with the first items; empty: not explained


def encode_list(
    items: Sequence[tuple[int, float]],
    updated_at: float,
    source: ListSource,
    stars: Sequence[float] | None = None,
    because: Sequence[int] | None = None,
) -> bytes:
    """The stored form of a list (compact JSON); ``stars`` (``nan``: none) align with items.

    ``because`` (negative: none) aligns with the first items.
    """
    movies = np.asarray([[int(movie) for movie, _ in items]], dtype=np.int64).reshape(1, -1)
    scores = np.asarray([[score for _, score in items]], dtype=np.float64).reshape(1, -1)
    predicted = None if stars is None else np.asarray([stars], dtype=np.float64).reshape(1, -1)
    behind = None if because is None else np.asarray([because], dtype=np.int64).reshape(1, -1)
    return encode_lists(movies, scores, updated_at, source, predicted, behind)[0]


def encode_lists(
    movies: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    updated_at: float,
    source: ListSource,
    stars: npt.NDArray[np.float64] | None = None,
    because: npt.NDArray[np.int64] | None = None,
) -> list[bytes]:
    """The stored form of many lists at once, one per row (as ``encode_list`` encodes each).

    ``movies``, ``scores`` and ``stars`` (``nan``: none) are ``lists × K`` arrays; a
    negative movie id is padding and is left out with its score and stars. ``because``
    is ``lists × E`` (``E ≤ K``; negative: none), aligned with the first ``E`` columns.
    The rounding and the conversion to Python numbers are done once for the whole block.
    """
    ids: list[list[int]] = movies.tolist()
    rounded: list[list[float]] = np.round(scores, 4).tolist()
    starred: list[list[float | None]] | None = None
    if stars is not None:
        kept = np.round(stars, 2)
        nullable = kept.astype(object)
        nullable[np.isnan(kept)] = None  # nan -> null
        starred = nullable.tolist()
    behind: list[list[int | None]] | None = None
    if because is not None:
        named = because.astype(object)
        named[because < 0] = None
        behind = named.tolist()
    stamp = round(updated_at, 3)
    encoded = []
    for row, (movie_row, score_row) in enumerate(zip(ids, rounded, strict=True)):
        shown = [index for index, movie in enumerate(movie_row) if movie >= 0]
        if starred is None:
            items: list[list[Any]] = [[movie_row[i], score_row[i]] for i in shown]
        else:
            items = [[movie_row[i], score_row[i], starred[row][i]] for i in shown]
        document: dict[str, Any] = {"items": items, "updated_at": stamp, "source": source}
        if behind is not None:
            document["because"] = [behind[row][i] for i in shown if i < len(behind[row])]
        # orjson writes compact JSON, floats as their shortest round trip like json.dumps,
        # about ten times faster (a retrain at ML-10M scale encodes 70,000 lists).
        encoded.append(orjson.dumps(document))
    return encoded


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
        because = tuple(None if movie is None else int(movie)
                        for movie in document.get("because", ()))  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"{key} in Redis is not a recommendation list ({type(exc).__name__})"
        raise LayoutDecodeError(msg) from exc
    items = tuple((movie, score) for movie, score, _ in rows)
    stars = tuple(star for _, _, star in rows) if starred else ()
    if source not in _SOURCES:
        msg = f"{key} in Redis has unknown source {source!r}"
        raise LayoutDecodeError(msg)
    return UserList(items, updated_at, cast(ListSource, source), stars, because)


def _item(row: Sequence[Any]) -> tuple[int, float, float | None]:
    """(movie, score, stars or None) of one stored item: two or three values."""
    if len(row) == 2:
        movie, score = row
        return int(movie), float(score), None
    movie, score, star = row  # a wrong length raises ValueError
    return int(movie), float(score), None if star is None else float(star)


@dataclass(frozen=True)
class CatalogEntry:
    """One movie of ``{p}:catalog``: its title and genres."""

    title: str
    genres: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        """The stored form: JSON, non-ASCII titles kept as UTF-8."""
        document = {"title": self.title, "genres": list(self.genres)}
        return json.dumps(document, ensure_ascii=False).encode()


def decode_movie(raw: bytes | str, *, key: str = "a catalog entry") -> CatalogEntry:
    """Parse a catalog entry.

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
    return CatalogEntry(title, genres)


class ModelMeta(BaseModel):
    """Metadata of one model version.

    What the job writes to ``{p}:v{v}:meta``(and beside the saved factors), and what serving
    reads back.

    Only ``version`` and ``trained_at`` are required of a reader's input; the job writes
    every field. Unknown keys are ignored on reading, so a newer writer's extra fields do
    not break an older reader.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: StrictInt
    trained_at: Annotated[float, Strict()] = Field(description="Epoch seconds of the fit.")
    batch_id: StrictInt | None = Field(None, description="The micro-batch that trained it.")
    reason: str | None = Field(None, description="Why the retrain was due.")
    ratings: StrictInt | None = Field(None, description="Stored ratings at the fit.")
    users: StrictInt | None = None
    movies: StrictInt | None = None
    model_movies: StrictInt | None = Field(None, description="Movies with item factors.")
    holdout_from_timestamp: StrictInt | None = Field(
        None, description="Ratings from this dataset time on were held out (None: none)."
    )
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] | None = Field(
        None, description="Held-out metrics against the popularity baseline."
    )
    stars_from_version: StrictInt | None = Field(
        None, description="The version whose training ratings fitted the predicted stars."
    )
    timings_s: dict[str, float] = Field(default_factory=dict)
    last_folded_in_batch: StrictInt | None = Field(
        None, description="The newest micro-batch folded into this version's lists."
    )

    def to_json(self) -> bytes:
        """The stored form: compact JSON, fields in definition order."""
        return self.model_dump_json().encode()


def decode_meta(
    raw: bytes | str, *, key: str = "model metadata", place: str = " in Redis"
) -> ModelMeta:
    """Parse a version's metadata (``ModelMeta``).

    At least an integer ``version`` and a numeric ``trained_at``.

    Raises:
        LayoutDecodeError: the value is not metadata in this layout; the message names
            the key and the first field that is wrong.
    """
    try:
        return ModelMeta.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            msg = f"{key}{place} is not JSON"
        elif first["type"] == "model_type":
            msg = f"{key}{place} is not a JSON object"
        elif first["loc"] == ("version",):
            msg = f"{key}{place} has no integer version"
        elif first["loc"] == ("trained_at",):
            msg = f"{key}{place} has no numeric trained_at"
        else:
            where = ".".join(str(part) for part in first["loc"])
            msg = f"{key}{place} has a bad {where} ({first['msg']})"
        raise LayoutDecodeError(msg) from exc


class BatchStats(BaseModel):
    """One micro-batch as the job reports it to ``{p}:pipeline``(for the console and ops).

    Written after the batch committed; a batch whose figures Redis did not take (down)
    is missing from the list, never retried. Unknown keys are ignored on reading.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    batch_id: StrictInt
    committed_at: float = Field(description="Epoch seconds when the batch committed.")
    valid: StrictInt = Field(description="Ratings stored.")
    invalid: StrictInt = Field(description="Records set aside with a reason.")
    seconds: float = Field(description="The whole micro-batch, seconds.")
    lag: StrictInt | None = Field(None, description="Records in the topic not read yet.")
    model_version: StrictInt | None = Field(None, description="The version lists came from.")
    building: bool = Field(False, description="A new version was being built meanwhile.")
    retrain: str | None = Field(None, description="Why a retrain started in this batch.")
    switched_to: StrictInt | None = Field(None, description="The version switched in.")
    fold_in_lists: StrictInt = Field(0, description="Users whose lists were refreshed.")
    checked: StrictInt = Field(0, description="Ratings checked against the served list.")
    hits_at_10: StrictInt = Field(0, description="Of those, rated movies in the user's top 10.")
    popular_hits_at_10: StrictInt = Field(
        0, description="Of those, rated movies in the popular top 10 (the baseline)."
    )
    freshness_p50_s: float | None = Field(
        None, description="Median seconds from a rating's Kafka append to this commit."
    )

    def to_json(self) -> bytes:
        """The stored form: compact JSON, fields in definition order."""
        return self.model_dump_json().encode()


FACTORS_MAGIC = b"RSF1"  # the factor table's format: bump it with any change of layout


def encode_factors(
    movie_ids: npt.NDArray[np.int64],
    factors: npt.NDArray[np.float64],
    prior: npt.NDArray[np.float64],
) -> bytes:
    """A version's item table as stored (no pickling: readers rebuild the arrays).

    ``FACTORS_MAGIC``, then little-endian uint32 movies and rank, int64 movie ids
    (ascending), float64 factors (movies × rank, row by row) and float64 prior (one per
    movie).
    """
    ids = np.ascontiguousarray(movie_ids, dtype="<i8")
    table = np.ascontiguousarray(factors, dtype="<f8")
    extra = np.ascontiguousarray(prior, dtype="<f8")
    count, rank = table.shape
    if ids.shape != (count,) or extra.shape != (count,):
        msg = f"{len(ids)} ids and {len(extra)} priors for {count} rows of factors"
        raise ValueError(msg)
    header = FACTORS_MAGIC + np.array([count, rank], dtype="<u4").tobytes()
    return header + ids.tobytes() + table.tobytes() + extra.tobytes()


def decode_factors(
    raw: bytes, *, key: str = "a factor table"
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(movie ids, factors, prior) of a stored item table.

    Raises:
        LayoutDecodeError: the value is not a factor table of this format.
    """
    if len(raw) < 12 or raw[:4] != FACTORS_MAGIC:
        msg = f"{key} in Redis is not a factor table ({FACTORS_MAGIC!r} expected)"
        raise LayoutDecodeError(msg)
    count, rank = (int(v) for v in np.frombuffer(raw, dtype="<u4", count=2, offset=4))
    if len(raw) != 12 + count * (8 + 8 * rank + 8):
        msg = f"{key} in Redis has {len(raw)} bytes, not those of {count} movies of rank {rank}"
        raise LayoutDecodeError(msg)
    ids = np.frombuffer(raw, dtype="<i8", count=count, offset=12).astype(np.int64)
    at = 12 + 8 * count
    factors = np.frombuffer(raw, dtype="<f8", count=count * rank, offset=at).reshape(count, rank)
    prior = np.frombuffer(raw, dtype="<f8", count=count, offset=at + 8 * count * rank)
    return ids, factors.astype(np.float64), prior.astype(np.float64)
