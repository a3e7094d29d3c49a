"""A generated folder in MovieLens 100K's layout and shape, for the end-to-end tests.

The real ML-100K may not be redistributed, so a clone of recstream does not have it.
The end-to-end tests replay this folder instead, unless ``RECSTREAM_TEST_MOVIELENS=real``
asks for the real one (``make test-ml100k``). It holds the producer's synthetic
feed (planted taste) at ML-100K's counts: 100,000 ratings of 1,682 movies by 943 users,
each user and each movie rated at least once and no user rating a movie twice. The files
are those GroupLens ships and the TFDS builder reads: ``u.data``, ``u.item`` (titles,
genre flags), ``u.user`` (age, gender, occupation, zip code), and the ``u1``..``u5``
splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from producer.synthetic import synthetic_dataset

RATINGS, USERS, MOVIES = 100_000, 943, 1_682
_OCCUPATIONS = ("student", "engineer", "educator", "programmer", "writer", "other")


def write_ml100k_like(folder: Path, seed: int = 100) -> Path:
    """Write the folder (see the module docstring) and return it."""
    table = synthetic_dataset(RATINGS, users=USERS, movies=MOVIES, seed=seed).ratings
    users = table.user_ids - table.user_ids.min() + 1
    movies = table.movie_ids - table.movie_ids.min() + 1
    users, movies = _covering(users.copy(), movies.copy(), np.random.default_rng(seed))
    ratings = table.ratings.astype(np.int64)
    rows = np.column_stack([users, movies, ratings, table.timestamps])
    write_ml100k_files(folder, rows, MOVIES)
    people = [
        f"{user}|{18 + user % 50}|{'MF'[user % 2]}|{_OCCUPATIONS[user % 6]}|{10000 + user}"
        for user in range(1, USERS + 1)
    ]
    (folder / "u.user").write_text("\n".join(people) + "\n", encoding="latin-1")
    return folder


def write_ml100k_files(folder: Path, rows: np.ndarray, movies: int, *, splits: bool = True) -> Path:
    """Write ``rows`` (user, movie, stars, timestamp) as ``u.data`` in a new ``folder``,
    ``u.item`` for movies 1..``movies`` (a title and one genre flag each), and, with
    ``splits``, ``u1``..``u5`` like the official ones (each rating tested once)."""
    folder.mkdir(parents=True)
    _write_rows(folder / "u.data", rows)
    if splits:
        for n in range(1, 6):
            test = np.arange(len(rows)) % 5 == n - 1
            _write_rows(folder / f"u{n}.base", rows[~test])
            _write_rows(folder / f"u{n}.test", rows[test])
    items = []
    for movie in range(1, movies + 1):
        flags = ["0"] * 19
        flags[1 + movie % 18] = "1"
        year = 1930 + movie % 68
        items.append(f"{movie}|Generated movie {movie} ({year})|01-Jan-{year}||"
                     f"http://example.invalid/{movie}|{'|'.join(flags)}")  # fmt: skip
    (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    return folder


def _covering(
    users: np.ndarray, movies: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The same ratings with every user and movie present and no (user, movie) twice:
    a repeated pair, or a rating moved to someone absent, gets a movie its user lacks."""
    counts = np.bincount(users, minlength=USERS + 1)
    for missing in np.flatnonzero(counts[1:] == 0) + 1:  # the busiest user lends a rating
        busiest = int(np.argmax(counts))
        row = int(rng.choice(np.flatnonzero(users == busiest)))
        users[row], counts[busiest], counts[missing] = missing, counts[busiest] - 1, 1
    seen: dict[int, set[int]] = {}
    unrated = set(range(1, MOVIES + 1)) - set(movies.tolist())
    for row, (user, movie) in enumerate(zip(users.tolist(), movies.tolist(), strict=True)):
        taken = seen.setdefault(user, set())
        if movie in taken:
            pool = [m for m in unrated if m not in taken] or [
                m for m in range(1, MOVIES + 1) if m not in taken
            ]
            movie = pool[0] if unrated else int(rng.choice(pool))
            movies[row] = movie
            unrated.discard(movie)
        taken.add(movie)
    for movie in sorted(unrated):  # still unrated: take a rating of the most-rated movie
        popular = int(np.argmax(np.bincount(movies, minlength=MOVIES + 1)))
        for row in np.flatnonzero(movies == popular).tolist():
            if movie not in seen[int(users[row])]:
                seen[int(users[row])].discard(popular)
                seen[int(users[row])].add(movie)
                movies[row] = movie
                break
    return users, movies


def _write_rows(path: Path, rows: np.ndarray) -> None:
    path.write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in rows.tolist()))
