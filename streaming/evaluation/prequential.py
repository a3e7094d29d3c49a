"""The prequential protocol: test-then-learn over a whole feed, in micro-batches.

The feed is replayed in timestamp order, in micro-batches as the streaming job sees
them: every rating of one ``window_s`` of dataset time (the job's trigger interval when
the feed arrives at its real pace), or ``batch_size`` ratings (a feed faster than real
time). Before a batch updates anything, each of its ratings is checked against the
list its user had then, from each list maker:

- ``recstream``: what the job publishes: the current model (retrained every
  ``retrain_every`` ratings once ``min_ratings`` are in), the user folded in from every
  earlier rating, the short-term transitions as of the batch before, blended
  (``streaming.model.blend``); the model's popular list for a user it has nothing on, and the
  all-time popular list before the first model;
- ``popular``: the most-rated movies so far (all-time counts);
- ``recent-popular``: the same with each rating weighted ``2^(-age / half-life)``
  (``popularity_half_life_days``), refreshed every micro-batch;
- ``transitions``: the plain transition list (a rating follows each of the user's
  previous 5 movies; their last 20 movies weighted 0.85^k; raw counts), popular fill;
- ``short-term``: the shipped settings' own transition part alone, popular fill.

A user's rated movies are never listed. Hit rate@10 and NDCG@10 of the next rating,
overall, per day of dataset time, per half of the timeline, and apart for returning
users (some rating before the batch) and new users (none: every list maker can only
show them a list made without them, so they bound what any personal list can add).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from streaming.ingest.history import UserRatings
from streaming.model.blend import ShortTerm, transition_counts
from streaming.model.holdout import CUTOFF
from streaming.model.transitions import TransitionCounts
from streaming.model.versions import ModelVersion
from streaming.settings import ModelSettings
from streaming.timing import timed

__all__ = ["LIST_MAKERS", "PrequentialReport", "batch_bounds", "prequential_protocol"]

LIST_MAKERS = ("recstream", "popular", "recent-popular", "transitions", "short-term")
Fit = Callable[[pd.DataFrame], ModelVersion]
Progress = Callable[[int, int], None]  # (ratings done, ratings in all)
IntArray = npt.NDArray[np.int64]
_PLAIN_WINDOW, _PLAIN_MEMORY, _PLAIN_DECAY = 5, 20, 0.85  # the transition list


@dataclass
class PrequentialReport:
    """Test-then-learn figures of the replay: overall, per half and per day of dataset time."""

    ratings: int
    batching: str
    batches: int
    retrain_every: int
    retrains: int
    hit_rate: dict[str, float]
    ndcg: dict[str, float]
    halves: list[dict[str, Any]]
    days: list[dict[str, Any]]
    seconds: float
    users: list[dict[str, Any]] = field(default_factory=list)
    fit_seconds: float = 0.0  # of ``seconds``, in the retrains

    def needed_on_returning(self, target: float, figure: str = "hit_rate") -> float:
        """The hit rate needed on returning users' ratings for ``target`` × popular overall.

        A new user's list can only be what ``recstream`` served them, so the whole gap
        falls on the returning users (nan without both groups).
        """
        groups = {group["users"]: group for group in self.users}
        if set(groups) != {"returning", "new"} or not self.ratings:
            return float("nan")
        share = float(groups["returning"]["ratings"]) / self.ratings
        if share == 0:
            return float("nan")
        new_part = (1 - share) * float(groups["new"][figure]["recstream"])
        overall: dict[str, float] = getattr(self, figure)
        return (target * overall["popular"] - new_part) / share

    def ratio(self, name: str, baseline: str = "popular", figure: str = "hit_rate") -> float:
        """``name``'s figure over ``baseline``'s (nan when the baseline scored 0)."""
        values = getattr(self, figure)
        return values[name] / values[baseline] if values[baseline] else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"protocol": "prequential", **asdict(self)}


def batch_bounds(stamps: IntArray, batch_size: int | None, window_s: float | None) -> IntArray:
    """Start rows of the micro-batches (plus the end): by count, or by dataset time."""
    if (batch_size is None) == (window_s is None):
        msg = "give exactly one of batch_size (ratings per batch) and window_s (seconds)"
        raise ValueError(msg)
    if batch_size is not None:
        if batch_size < 1:
            msg = f"batch_size must be at least 1, got {batch_size}"
            raise ValueError(msg)
        return np.append(np.arange(0, len(stamps), batch_size), len(stamps))
    if window_s is None or window_s <= 0:
        msg = f"window_s must be > 0, got {window_s}"
        raise ValueError(msg)
    slot = np.floor((stamps - stamps[0]) / window_s).astype(np.int64) if len(stamps) else stamps
    changes = np.flatnonzero(np.diff(slot)) + 1
    return np.concatenate([[0], changes, [len(stamps)]]).astype(np.int64)


class _Popularity:
    """All-time and recency-weighted counts per movie, updated per batch.

    The recency weight 2^((t - t_ref) / h) grows with t; ranking by it equals ranking by
    2^(-age / h). The reference moves forward (all weights rescaled) before it overflows.
    """

    def __init__(self, movies: int, half_life_days: float) -> None:
        self.counts = np.zeros(movies)
        self.recent = np.zeros(movies)
        self._half_life_s = 86_400.0 * half_life_days if half_life_days > 0 else 0.0
        self._reference: float | None = None

    def add(self, rows: IntArray, stamps: IntArray) -> None:
        np.add.at(self.counts, rows, 1.0)
        if not self._half_life_s:
            np.add.at(self.recent, rows, 1.0)
            return
        if self._reference is None:
            self._reference = float(stamps[0])
        exponent = (stamps - self._reference) / self._half_life_s
        if exponent.max() > 500:  # rescale long before float64 runs out (2^1023)
            shift = float(exponent.max())
            self.recent *= 2.0**-shift
            self._reference += shift * self._half_life_s
            exponent = (stamps - self._reference) / self._half_life_s
        np.add.at(self.recent, rows, np.exp2(exponent))


def _best_unrated(order: IntArray, rated: npt.NDArray[np.bool_], k: int) -> IntArray:
    """The first ``k`` of ``order`` whose ``rated`` flag is off."""
    head = order[: k + int(rated.sum())] if len(order) > 4 * k else order
    return head[~rated[head]][:k]


def _ranked(score: npt.NDArray[np.float64], counts: npt.NDArray[np.float64]) -> IntArray:
    """Rows with a positive score, best first, ties by popularity then by row."""
    rows = np.flatnonzero(score > 0)
    order = np.lexsort((rows, -counts[rows], -score[rows]))
    return rows[order]


def prequential_protocol(
    ratings: pd.DataFrame,
    settings: ModelSettings,
    fit: Fit,
    *,
    window_s: float | None = None,
    batch_size: int | None = None,
    retrain_every: int = 10_000,
    progress: Progress | None = None,
) -> PrequentialReport:
    """Replay ``ratings`` (user_id, movie_id, rating, timestamp) test-then-learn.

    ``fit`` trains the model on every rating so far (the job's retrain:
    ``streaming.evaluation.protocols.fit_for_evaluation``); exactly one of ``window_s`` and
    ``batch_size`` is given.
    """
    began = time.perf_counter()
    ordered = ratings.sort_values(["timestamp", "user_id", "movie_id"], kind="stable")
    users_col = ordered["user_id"].to_numpy(dtype=np.int64)
    movies_col = ordered["movie_id"].to_numpy(dtype=np.int64)
    ratings_col = ordered["rating"].to_numpy(dtype=np.float64)
    stamps = ordered["timestamp"].to_numpy(dtype=np.int64)
    bounds = batch_bounds(stamps, batch_size, window_s)
    movie_ids = np.unique(movies_col)  # an index space only: a movie is a candidate once rated
    rows_col = np.searchsorted(movie_ids, movies_col)
    popularity = _Popularity(len(movie_ids), settings.popularity_half_life_days)
    shipped = ShortTerm.of(transition_counts(settings), settings)
    plain = TransitionCounts(_PLAIN_WINDOW, _PLAIN_MEMORY)
    rated_rows: dict[int, list[int]] = {}
    rated_values: dict[int, list[float]] = {}
    rated_sets: dict[int, set[int]] = {}
    model: ModelVersion | None = None
    since_retrain, retrains = 0, 0
    timings: dict[str, float] = {}
    hits = np.zeros((len(ordered), len(LIST_MAKERS)))
    gains = np.zeros_like(hits)
    returning = np.zeros(len(ordered), dtype=np.bool_)
    for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        users = np.unique(users_col[first:last])
        known = [np.asarray(rated_rows.get(user, []), dtype=np.int64) for user in users.tolist()]
        lists = _lists(users, known, rated_values, movie_ids, popularity, shipped, plain,
                       model, settings)  # fmt: skip
        for row in range(first, last):
            returning[row] = int(users_col[row]) in rated_rows
            for maker, listed in enumerate(lists[int(users_col[row])]):
                found = np.flatnonzero(listed == rows_col[row])
                if len(found):
                    hits[row, maker] = 1.0
                    gains[row, maker] = 1.0 / np.log2(found[0] + 2.0)
        # learn: the batch joins every state, first ratings of a movie only for transitions
        batch_users, batch_rows = users_col[first:last], rows_col[first:last]
        fresh, pairs = [], set()  # first ratings of a movie, as RatingHistory.unseen finds
        for row in range(first, last):
            pair = (int(users_col[row]), int(rows_col[row]))
            if pair not in pairs and pair[1] not in rated_sets.get(pair[0], ()):
                fresh.append(row)
            pairs.add(pair)
        for counts in (shipped.counts, plain):
            counts.observe(users_col[fresh], movies_col[fresh])
        for user, row, value in zip(batch_users.tolist(), batch_rows.tolist(),
                                    ratings_col[first:last].tolist(), strict=True):  # fmt: skip
            held = rated_rows.setdefault(user, [])
            if row in rated_sets.setdefault(user, set()):  # a re-rating: the latest counts
                rated_values[user][held.index(row)] = value
            else:
                held.append(row)
                rated_sets[user].add(row)
                rated_values.setdefault(user, []).append(value)
        popularity.add(batch_rows, stamps[first:last])
        since_retrain += last - first
        if last >= settings.min_ratings and (model is None or since_retrain >= retrain_every):
            with timed(timings, "fit"):
                model = fit(ordered.iloc[:last])
            since_retrain, retrains = 0, retrains + 1
        if progress is not None:
            progress(last, len(ordered))
    report = _report(ordered, stamps, hits, gains, returning, bounds, batch_size, window_s,
                     retrain_every, retrains, time.perf_counter() - began)  # fmt: skip
    report.fit_seconds = round(timings.get("fit", 0.0), 1)
    return report


def _lists(
    users: IntArray,
    known: list[IntArray],
    rated_values: dict[int, list[float]],
    movie_ids: IntArray,
    popularity: _Popularity,
    shipped: ShortTerm,
    plain: TransitionCounts,
    model: ModelVersion | None,
    settings: ModelSettings,
) -> dict[int, list[IntArray]]:
    """Each user's list from every maker (rows of ``movie_ids``), in ``LIST_MAKERS`` order."""
    counts = popularity.counts
    seen = np.flatnonzero(counts > 0)
    popular_order = seen[np.lexsort((seen, -counts[seen]))]
    recent_order = seen[np.lexsort((seen, -popularity.recent[seen]))]
    plain_scores = plain.scores(users, movie_ids, _PLAIN_DECAY)
    own_scores = shipped.scores(users, movie_ids)
    ours = None
    if model is not None:
        lengths = np.array([len(rows) for rows in known], dtype=np.int64)
        start = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(lengths, out=start[1:])
        history = UserRatings(
            users, start,
            movie_ids[np.concatenate([*known, np.zeros(0, dtype=np.int64)])],
            np.array([v for user in users.tolist() for v in rated_values.get(user, [])]),
        )  # fmt: skip
        ours = model.served_lists(history, settings, CUTOFF, shipped)
    out: dict[int, list[IntArray]] = {}
    for position, user in enumerate(users.tolist()):
        rated = np.zeros(len(movie_ids), dtype=np.bool_)
        rated[known[position]] = True
        popular = _best_unrated(popular_order, rated, CUTOFF)
        made = [
            popular if ours is None else np.searchsorted(movie_ids, ours[position]),
            popular,
            _best_unrated(recent_order, rated, CUTOFF),
        ]
        for scores in (plain_scores[position], own_scores[position]):
            listed = _best_unrated(_ranked(scores, counts), rated, CUTOFF)
            if len(listed) < CUTOFF:
                taken = rated.copy()
                taken[listed] = True
                fill = _best_unrated(popular_order, taken, CUTOFF - len(listed))
                listed = np.concatenate([listed, fill])
            made.append(listed)
        out[user] = made
    return out


def _report(
    ordered: pd.DataFrame,
    stamps: IntArray,
    hits: npt.NDArray[np.float64],
    gains: npt.NDArray[np.float64],
    returning: npt.NDArray[np.bool_],
    bounds: IntArray,
    batch_size: int | None,
    window_s: float | None,
    retrain_every: int,
    retrains: int,
    seconds: float,
) -> PrequentialReport:
    names = list(LIST_MAKERS)
    table = pd.DataFrame(hits, columns=names)
    table_gain = pd.DataFrame(gains, columns=names)
    day = stamps // 86_400
    days = []
    for value in np.unique(day).tolist():
        chosen = day == value
        days.append({
            "day": int(value), "ratings": int(chosen.sum()),
            "hit_rate": round(float(hits[chosen, 0].mean()), 6),
            "ndcg": round(float(gains[chosen, 0].mean()), 6),
            "popular_hit_rate": round(float(hits[chosen, 1].mean()), 6),
            "popular_ndcg": round(float(gains[chosen, 1].mean()), 6),
        })  # fmt: skip

    def figures(chosen: npt.NDArray[np.bool_]) -> dict[str, Any]:
        return {
            "ratings": int(chosen.sum()),
            "hit_rate": {n: round(float(table[n][chosen].mean()), 6) if chosen.any() else 0.0
                         for n in names},
            "ndcg": {n: round(float(table_gain[n][chosen].mean()), 6) if chosen.any() else 0.0
                     for n in names},
        }  # fmt: skip

    middle = len(ordered) // 2
    position = np.arange(len(ordered))
    halves = [{"half": "first", **figures(position < middle)},
              {"half": "second", **figures(position >= middle)}]  # fmt: skip
    users = [{"users": "returning", **figures(returning)},
             {"users": "new", **figures(~returning)}]  # fmt: skip
    return PrequentialReport(
        ratings=len(ordered),
        batching=f"{batch_size:,} ratings" if batch_size else f"{window_s:g} s of dataset time",
        batches=len(bounds) - 1,
        retrain_every=retrain_every,
        retrains=retrains,
        hit_rate={n: round(float(table[n].mean()), 6) for n in names},
        ndcg={n: round(float(table_gain[n].mean()), 6) for n in names},
        halves=halves,
        days=days,
        seconds=round(seconds, 1),
        users=users,
    )
