"""Users' ratings in the driver: compressed rows, a whole history, and the recent users'.

The streaming job keeps no whole history: Spark's state holds every user's ratings
(``streaming.ingest.state``), and the driver sees only the users of the batch at hand
(``latest_ratings``), keeping those whose lists wait to be published (``RecentRatings``).
``RatingHistory`` is the whole-history mirror the offline evaluation and benchmarks use:
one slot per (user, movie), latest rating wins by (timestamp, batch id, offset), columns
in numpy arrays that grow by doubling.

Memory: about 200 bytes per (user, movie) pair, most of it the Python dictionaries
that index the slots: 1M ratings took 205 MB of driver memory (measured).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "HISTORY_COLUMNS",
    "RatingHistory",
    "RecentRatings",
    "UserRatings",
    "compressed_rows",
    "latest_ratings",
    "newest_per_pair",
    "whole_user_frames",
    "whole_users",
]

HISTORY_COLUMNS = ("user_id", "movie_id", "rating", "timestamp", "batch_id", "offset")
IntArray = npt.NDArray[np.int64]
_CHUNK_ROWS = 200_000  # ratings gathered from Arrow batches before they are cut by user


@dataclass(frozen=True)
class UserRatings:
    """Ratings of many users in compressed rows: user ``u``'s are ``[start[u], start[u+1])``."""

    users: npt.NDArray[np.int64]
    start: npt.NDArray[np.int64]
    movies: npt.NDArray[np.int64]
    ratings: npt.NDArray[np.float64]

    def of(self, position: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Movies and ratings of the user at ``position`` in ``users``."""
        window = slice(int(self.start[position]), int(self.start[position + 1]))
        return self.movies[window], self.ratings[window]

    def subset(self, positions: npt.ArrayLike) -> UserRatings:
        """The users at ``positions`` (in that order) with their ratings."""
        chosen = np.asarray(positions, dtype=np.int64)
        lengths = self.start[chosen + 1] - self.start[chosen]
        start = np.zeros(len(chosen) + 1, dtype=np.int64)
        np.cumsum(lengths, out=start[1:])
        take = np.concatenate(
            [np.arange(self.start[p], self.start[p + 1]) for p in chosen.tolist()]
            or [np.zeros(0, dtype=np.int64)]
        )
        return UserRatings(self.users[chosen], start, self.movies[take], self.ratings[take])

    def for_users(self, users: npt.ArrayLike) -> UserRatings:
        """``users`` (ascending, distinct) with their ratings here; one not here has none."""
        wanted = np.asarray(users, dtype=np.int64)
        at = np.searchsorted(self.users, wanted)
        found = at < len(self.users)
        found[found] = self.users[at[found]] == wanted[found]
        chosen = self.subset(at[found])
        lengths = np.zeros(len(wanted), dtype=np.int64)
        lengths[found] = np.diff(chosen.start)
        start = np.zeros(len(wanted) + 1, dtype=np.int64)
        np.cumsum(lengths, out=start[1:])
        return UserRatings(wanted, start, chosen.movies, chosen.ratings)


def compressed_rows(
    users: npt.ArrayLike, movies: npt.ArrayLike, ratings: npt.ArrayLike
) -> UserRatings:
    """Aligned rating columns (one rating per user and movie) as compressed rows.

    Users ascending, each user's movies ascending; the columns are not changed.
    """
    user = np.asarray(users, dtype=np.int64)
    movie = np.asarray(movies, dtype=np.int64)
    rating = np.asarray(ratings, dtype=np.float64)
    order = np.lexsort((movie, user))
    ids, first = np.unique(user[order], return_index=True)
    start = np.append(first, len(user)).astype(np.int64)
    return UserRatings(ids, start, movie[order], rating[order])


def whole_user_frames(
    frames: Iterable[pd.DataFrame], chunk_rows: int = _CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """Frames sorted by ``user_id`` (as ``mapInPandas`` hands them), re-cut at user bounds.

    A user's rows may straddle two frames; each chunk (about ``chunk_rows`` rows) holds
    every row of its users.
    """
    gathered: list[pd.DataFrame] = []
    rows = 0
    for frame in frames:
        gathered.append(frame)
        rows += len(frame)
        if rows < chunk_rows:
            continue
        joined = pd.concat(gathered, ignore_index=True)
        last = joined["user_id"].iat[-1]
        done = (joined["user_id"] != last).to_numpy()
        gathered, rows = [joined[~done]], int((~done).sum())
        if done.any():
            yield joined[done]
    if rows:
        yield pd.concat(gathered, ignore_index=True)


def whole_users(
    frames: Iterable[pd.DataFrame], chunk_rows: int = _CHUNK_ROWS
) -> Iterator[UserRatings]:
    """Ratings sorted by user (user_id, movie_id, rating frames), as chunks of whole users."""
    for chunk in whole_user_frames(frames, chunk_rows):
        yield compressed_rows(chunk["user_id"].to_numpy(), chunk["movie_id"].to_numpy(),
                              chunk["rating"].to_numpy())  # fmt: skip


class RatingHistory:
    """Latest rating per (user, movie), growable, with per-user lookup."""

    def __init__(self, capacity: int = 1024) -> None:
        self._user = np.zeros(capacity, dtype=np.int64)
        self._movie = np.zeros(capacity, dtype=np.int64)
        self._rating = np.zeros(capacity, dtype=np.float64)
        self._order = np.zeros((capacity, 3), dtype=np.int64)  # timestamp, batch id, offset
        self._slot: dict[int, int] = {}
        self._by_user: dict[int, list[int]] = {}
        # (user/movie key, timestamp) -> batch id of ratings a newer one outranks: rare
        # (a user re-rating a movie), kept so a late copy of them is still a duplicate.
        self._outranked: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._slot)

    @classmethod
    def from_arrays(
        cls,
        users: npt.ArrayLike,
        movies: npt.ArrayLike,
        ratings: npt.ArrayLike,
        timestamps: npt.ArrayLike,
    ) -> RatingHistory:
        """A history of aligned rating columns, as if one batch had read them in order."""
        frame = pd.DataFrame(
            {"user_id": users, "movie_id": movies, "rating": ratings, "timestamp": timestamps}
        )
        history = cls(capacity=max(1024, len(frame)))
        history.add(frame.assign(batch_id=0, offset=np.arange(len(frame))))
        return history

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> RatingHistory:
        """``from_arrays`` of a frame's user_id, movie_id, rating and timestamp columns."""
        return cls.from_arrays(
            frame["user_id"].to_numpy(), frame["movie_id"].to_numpy(),
            frame["rating"].to_numpy(), frame["timestamp"].to_numpy(),
        )  # fmt: skip

    def add(self, frame: pd.DataFrame) -> npt.NDArray[np.int64]:
        """Merge ratings (``HISTORY_COLUMNS``); the users whose history changed, sorted."""
        if frame.empty:
            return np.zeros(0, dtype=np.int64)
        self._reserve(len(self._slot) + len(frame))
        changed: set[int] = set()
        rows: Iterable[tuple[int, int, float, int, int, int]] = zip(
            *(frame[name].astype("int64" if name != "rating" else "float64").tolist()
              for name in HISTORY_COLUMNS),
            strict=True,
        )  # fmt: skip
        for user, movie, rating, timestamp, batch_id, offset in rows:
            key = (user << 32) | movie
            order = (timestamp, batch_id, offset)
            slot = self._slot.get(key)
            if slot is None:
                slot = len(self._slot)
                self._slot[key] = slot
                self._by_user.setdefault(user, []).append(slot)
                self._user[slot], self._movie[slot] = user, movie
            else:
                held = tuple(self._order[slot].tolist())
                if order[0] != held[0]:  # a re-rating: remember the one that loses
                    loser = min(order, held)
                    self._outranked.setdefault((key, loser[0]), loser[1])
                if order <= held:
                    continue
            self._rating[slot] = rating
            self._order[slot] = order
            changed.add(user)
        return np.array(sorted(changed), dtype=np.int64)

    def repeats(self, frame: pd.DataFrame, batch_id: int) -> npt.NDArray[np.bool_]:
        """Which rows of ``frame`` (batch ``batch_id``, in Kafka order) repeat an event.

        A repeat has the user, movie and timestamp (hence the event id) of an earlier row
        of ``frame`` or of a rating merged from an earlier batch. Ratings merged from
        ``batch_id`` itself do not count: they are this batch's own first attempt.
        """
        keys = ["user_id", "movie_id", "timestamp"]
        found: npt.NDArray[np.bool_] = frame.duplicated(keys).to_numpy(dtype=bool, copy=True)
        columns = (frame[name].astype("int64").tolist() for name in keys)
        for row, (user, movie, timestamp) in enumerate(zip(*columns, strict=True)):
            if found[row]:
                continue
            key = (user << 32) | movie
            slot = self._slot.get(key)
            if slot is not None:
                held, held_batch = int(self._order[slot, 0]), int(self._order[slot, 1])
                if held == timestamp and held_batch < batch_id:
                    found[row] = True
                    continue
            found[row] = self._outranked.get((key, timestamp), batch_id) < batch_id
        return found

    def unseen(self, frame: pd.DataFrame) -> npt.NDArray[np.bool_]:
        """Which rows of ``frame`` are a user's first rating of the movie.

        That is: not held yet, and the first such row of ``frame``.
        """
        users = frame["user_id"].astype("int64").tolist()
        movies = frame["movie_id"].astype("int64").tolist()
        keys = [(user << 32) | movie for user, movie in zip(users, movies, strict=True)]
        first = ~pd.Series(keys, dtype="int64").duplicated().to_numpy(dtype=bool)
        held = np.array([key in self._slot for key in keys], dtype=np.bool_)
        return first & ~held if len(keys) else np.zeros(0, dtype=np.bool_)

    def arrival_order(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(users, movies) of every held rating by (batch id, offset).

        Each user's in the order they arrived (a re-rated movie at its latest rating).
        """
        count = len(self._slot)
        order = np.lexsort((self._order[:count, 2], self._order[:count, 1]))
        return self._user[:count][order], self._movie[:count][order]

    def users(self) -> npt.NDArray[np.int64]:
        """Every user with at least one rating, sorted."""
        return np.array(sorted(self._by_user), dtype=np.int64)

    def of_users(self, users: npt.ArrayLike) -> UserRatings:
        """The ratings of the given users (unknown users have none), movies ascending."""
        wanted = np.asarray(users, dtype=np.int64)
        slots = [np.asarray(self._by_user.get(int(u), []), dtype=np.int64) for u in wanted]
        lengths = np.array([len(s) for s in slots], dtype=np.int64)
        start = np.zeros(len(wanted) + 1, dtype=np.int64)
        np.cumsum(lengths, out=start[1:])
        flat = np.concatenate(slots) if slots else np.zeros(0, dtype=np.int64)
        # Sort each user's slots by movie id, keeping users in the given order.
        owner = np.repeat(np.arange(len(wanted)), lengths)
        flat = flat[np.lexsort((self._movie[flat], owner))]
        return UserRatings(wanted, start, self._movie[flat], self._rating[flat])

    def everyone(self) -> UserRatings:
        """All users' ratings (for publishing a whole model)."""
        count = len(self._slot)
        return compressed_rows(self._user[:count], self._movie[:count], self._rating[:count])

    def frame(self) -> pd.DataFrame:
        """Every rating as columns (user_id, movie_id, rating, timestamp).

        A copy (pandas copies the arrays of a dict), which later merges do not change.
        """
        count = len(self._slot)
        return pd.DataFrame(
            {
                "user_id": self._user[:count],
                "movie_id": self._movie[:count],
                "rating": self._rating[:count],
                "timestamp": self._order[:count, 0],
            }
        )

    def _reserve(self, size: int) -> None:
        capacity = len(self._user)
        if size <= capacity:
            return
        while capacity < size:
            capacity *= 2
        self._user = np.resize(self._user, capacity)
        self._movie = np.resize(self._movie, capacity)
        self._rating = np.resize(self._rating, capacity)
        self._order = np.resize(self._order, (capacity, 3))


def newest_per_pair(
    users: npt.NDArray[np.generic], movies: npt.NDArray[np.generic], *later: npt.NDArray[np.generic]
) -> IntArray:
    """Positions of the last row per (user, movie) when ordered by ``later`` (first key first).

    Sorted by user, then movie.
    """
    order = np.lexsort((*reversed(later), movies, users))
    user, movie = users[order], movies[order]
    last = np.ones(len(order), dtype=np.bool_)
    last[:-1] = (user[1:] != user[:-1]) | (movie[1:] != movie[:-1])
    return np.asarray(order[last], dtype=np.int64)


def latest_ratings(held: pd.DataFrame, batch: pd.DataFrame) -> tuple[UserRatings, IntArray]:
    """The batch's users' ratings after it, and the users whose ratings it changed.

    ``held`` (user_id, movie_id, rating, timestamp) is what the users had before the
    batch, the latest per movie; ``batch`` their new ratings. The latest rating per
    (user, movie) by timestamp wins, so a late copy of an older rating changes nothing.
    """

    def column(name: str, kind: type) -> npt.NDArray[np.generic]:
        return np.concatenate([held[name].to_numpy(kind), batch[name].to_numpy(kind)])

    user, movie = column("user_id", np.int64), column("movie_id", np.int64)
    new = np.repeat([False, True], [len(held), len(batch)])
    kept = newest_per_pair(user, movie, column("timestamp", np.int64), new)
    changed = np.unique(user[kept][new[kept]])
    return compressed_rows(user[kept], movie[kept], column("rating", np.float64)[kept]), changed


class RecentRatings:
    """The ratings of users who rated lately, kept until their new lists are published.

    Only the users of recent micro-batches whose lists still wait (for the next flush,
    for a Redis that is down, or for a version being built) are here; the job clears it
    once nothing waits, and publishes from the store instead when it grows past a bound.
    """

    def __init__(self) -> None:
        self._users: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}

    def __len__(self) -> int:
        return len(self._users)

    def update(self, ratings: UserRatings) -> None:
        """Keep these users' ratings (replacing what was kept of them)."""
        for position, user in enumerate(ratings.users.tolist()):
            movies, stars = ratings.of(position)
            self._users[int(user)] = (movies.copy(), stars.copy())

    def of_users(self, users: npt.ArrayLike) -> UserRatings:
        """The kept ratings of ``users`` (none for a user not kept), in the given order."""
        wanted = np.asarray(users, dtype=np.int64)
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float64))
        parts = [self._users.get(int(user), empty) for user in wanted.tolist()]
        start = np.zeros(len(wanted) + 1, dtype=np.int64)
        np.cumsum([len(movies) for movies, _ in parts], out=start[1:])
        movies = np.concatenate([m for m, _ in parts]) if parts else empty[0]
        stars = np.concatenate([r for _, r in parts]) if parts else empty[1]
        return UserRatings(wanted, start, movies.astype(np.int64), stars.astype(np.float64))

    def clear(self) -> None:
        """Forget every user."""
        self._users.clear()
