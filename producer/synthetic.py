"""A synthetic rating feed with planted taste, for offline demos and benchmarks at any size.

Users and movies get hidden rank-``rank`` factors. Movies have Zipf-like popularity and
users lognormal activity; each rating picks a movie among a few popularity-drawn
candidates by the user's affinity, and its value is the affinity mapped onto 1-5 with
noise. Each user has a timeline: a first and a last day within the span, the first days
spread over the first ``arrivals`` share of it (0: every user starts on day one, so a
replay meets the whole population early). Everything it produces is labelled synthetic
(source ``synthetic``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from producer.dataset import Dataset, Movie, RatingTable

__all__ = ["synthetic_dataset"]

_GENRES = ("Action", "Comedy", "Drama", "Romance", "Sci-Fi", "Thriller", "Animation", "Horror")
_START = 1_577_836_800  # 2020-01-01T00:00:00Z
_DAY = 86_400
_EVENTS_PER_CHUNK = 1_000_000  # events whose planted scores are computed together


def synthetic_dataset(
    events: int,
    *,
    users: int | None = None,
    movies: int | None = None,
    rank: int = 8,
    days: int = 365,
    arrivals: float = 0.8,
    seed: int = 42,
) -> Dataset:
    """``events`` ratings with planted structure; the same seed gives the same feed."""
    if events < 1:
        msg = f"a synthetic feed needs at least 1 event, got {events}"
        raise ValueError(msg)
    if not 0.0 <= arrivals <= 1.0:
        msg = f"arrivals is the share of the span over which users arrive, 0 to 1; got {arrivals}"
        raise ValueError(msg)
    users = users or max(10, events // 150)
    movies = movies or max(10, min(20_000, events // 250))
    rng = np.random.default_rng(seed)

    user_factors = rng.normal(0.0, 1.0, (users, rank)) / np.sqrt(rank)
    movie_factors = rng.normal(0.0, 1.0, (movies, rank)) / np.sqrt(rank)
    popularity = 1.0 / np.arange(1, movies + 1) ** 1.1
    popularity /= popularity.sum()
    activity = rng.lognormal(0.0, 1.0, users)
    activity /= activity.sum()

    who = rng.choice(users, size=events, p=activity)
    candidates = rng.choice(movies, size=(events, 4), p=popularity)
    noise = rng.gumbel(0.0, 0.3, candidates.shape)
    what = np.empty(events, dtype=candidates.dtype)
    score = np.empty(events)
    for first in range(0, events, _EVENTS_PER_CHUNK):  # the factors of a chunk at a time:
        rows = slice(first, first + _EVENTS_PER_CHUNK)  # all at once, 10M events peaked at 3.9 GB
        affinity = np.einsum("er,ecr->ec", user_factors[who[rows]], movie_factors[candidates[rows]])
        pick = np.argmax(affinity + noise[rows], axis=1)
        what[rows] = candidates[rows][np.arange(len(pick)), pick]
        score[rows] = affinity[np.arange(len(pick)), pick]
    del noise, candidates
    ratings = np.clip(np.rint(3.0 + 2.5 * score + rng.normal(0.0, 0.5, events)), 1, 5)

    first_day = rng.uniform(0, days * arrivals, users)
    last_day = np.minimum(days, first_day + rng.exponential(days / 4, users) + 1)
    when = first_day[who] + rng.uniform(0, 1, events) * (last_day[who] - first_day[who])
    timestamps = _distinct_seconds(who, what, _START + (when * _DAY).astype(np.int64))

    catalog = [
        Movie(
            movie_id=index + 1,
            title=f"Synthetic movie {index + 1}",
            genres=(_GENRES[int(np.argmax(movie_factors[index])) % len(_GENRES)],),
        )
        for index in range(movies)
    ]
    table = RatingTable(
        user_ids=(who + 1).astype(np.int64),
        movie_ids=(what + 1).astype(np.int64),
        ratings=ratings.astype(np.float64),
        timestamps=timestamps,
    )
    label = (
        f"synthetic feed ({events:,} events, {users:,} users, {movies:,} movies, "
        f"planted rank {rank}, seed {seed})"
    )
    return Dataset(name="synthetic", label=label, ratings=table, movies=catalog)


def _distinct_seconds(
    users: npt.NDArray[np.int64], movies: npt.NDArray[np.int64], seconds: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """``seconds``, with a second added where a user rates the same movie twice in one.

    Two ratings of one movie by one user in the same second are one event repeated,
    and the streaming job sets the second aside as a duplicate; a feed of distinct
    events must not hold such pairs (about 7 in a million before this step).
    """
    seconds = seconds.copy()
    while True:
        order = np.lexsort((seconds, movies, users))
        same = (
            (users[order][1:] == users[order][:-1])
            & (movies[order][1:] == movies[order][:-1])
            & (seconds[order][1:] == seconds[order][:-1])
        )
        if not same.any():
            return seconds
        seconds[order[1:][same]] += 1
