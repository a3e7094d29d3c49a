"""MovieLens as GroupLens publishes it: a folder or zip in the ml-100k, ml-1m or ml-latest layout.

The layout is recognised by its ratings file (``u.data``, ``ratings.dat`` or
``ratings.csv``). Every line is checked; a bad one becomes a :class:`BadRecord` with
file and line number (or, with ``strict``, a :class:`BadInputError`), never a crash.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from producer.dataset import BadRecord, Dataset, Movie, RatingTable
from producer.errors import BadInputError, DatasetUnavailableError, UnknownLayoutError
from producer.events import RATING_SCALES, RatingScale
from recstream_base.ids import MAX_ID

__all__ = ["LAYOUTS", "load_grouplens"]

# ml-100k's u.item carries 19 genre flags in this order (also listed in u.genre).
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclass(frozen=True)
class _Layout:
    name: str
    ratings_file: str
    movies_file: str
    encoding: str
    separator: str


LAYOUTS = (
    _Layout("ml-100k", "u.data", "u.item", "latin-1", "\t"),
    _Layout("ml-1m", "ratings.dat", "movies.dat", "latin-1", "::"),
    _Layout("ml-latest", "ratings.csv", "movies.csv", "utf-8", ","),
)


class _Files:
    """Read access to the dataset's files, in a folder or inside a zip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        if path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile as exc:
                msg = f"{path} is neither a folder nor a zip file"
                raise UnknownLayoutError(msg) from exc
        elif not path.is_dir():
            msg = f"no such folder or zip: {path}"
            raise DatasetUnavailableError(msg)

    def names(self) -> set[str]:
        if self._zip is None:
            return {entry.name for entry in self.path.iterdir()}
        return {PurePosixPath(name).name for name in self._zip.namelist()}

    def use_folder_of(self, file_name: str) -> None:
        """Inside a zip, read from the folder that holds ``file_name`` (``ml-100k/u.data``)."""
        if self._zip is not None:
            for name in self._zip.namelist():
                if PurePosixPath(name).name == file_name:
                    self._prefix = name[: -len(file_name)]
                    return

    def label(self, name: str) -> str:
        if self._zip is None:
            return str(self.path / name)
        return f"{self.path}!{self._prefix}{name}"

    def lines(self, name: str, encoding: str) -> Iterator[str]:
        if self._zip is None:
            with (self.path / name).open(encoding=encoding, newline="") as text:
                yield from text
        else:
            with self._zip.open(self._prefix + name) as raw:
                yield from io.TextIOWrapper(raw, encoding=encoding, newline="")


def load_grouplens(path: Path | str, *, strict: bool = False) -> Dataset:
    """Load a GroupLens folder or zip.

    Raises:
        DatasetUnavailableError: the path does not exist.
        UnknownLayoutError: none of the layouts' ratings files is there; the message
            lists what each layout needs.
        BadInputError: with ``strict``, at the first malformed line.
    """
    path = Path(path)
    files = _Files(path)
    present = files.names()
    layout = next((layout for layout in LAYOUTS if layout.ratings_file in present), None)
    if layout is None:
        expected = "; ".join(
            f"{layout.name}: {layout.ratings_file} (+ {layout.movies_file})" for layout in LAYOUTS
        )
        msg = f"{path} holds no MovieLens layout recstream reads; expected one of {expected}"
        raise UnknownLayoutError(msg)
    files.use_folder_of(layout.ratings_file)
    name = layout.name
    if name == "ml-latest" and "small" in path.name:
        name = "ml-latest-small"
    bad: list[BadRecord] = []
    report = _reporter(bad, strict)
    ratings = _parse_ratings(files, layout, RATING_SCALES[name], report)
    movies = _parse_movies(files, layout, present, report)
    return Dataset(
        name=name,
        label=f"MovieLens {name} from {path}",
        ratings=ratings,
        movies=movies,
        bad_records=bad,
    )


_Report = Callable[[str, int, str, str], None]


def _reporter(bad: list[BadRecord], strict: bool) -> _Report:
    def report(file: str, line: int, reason: str, text: str) -> None:
        record = BadRecord(file, line, reason, text.rstrip("\r\n")[:200])
        if strict:
            msg = f"{record.describe()} (line: {record.text!r}); drop --strict to skip bad lines"
            raise BadInputError(msg)
        bad.append(record)

    return report


def _split(line: str, layout: _Layout) -> list[str]:
    if layout.separator == ",":
        return next(csv.reader([line]))
    return line.rstrip("\r\n").split(layout.separator)


def _parse_ratings(
    files: _Files, layout: _Layout, scale: RatingScale, report: _Report
) -> RatingTable:
    users: list[int] = []
    movies: list[int] = []
    ratings: list[float] = []
    timestamps: list[int] = []
    label = files.label(layout.ratings_file)
    has_header = layout.separator == ","
    for number, line in enumerate(files.lines(layout.ratings_file, layout.encoding), start=1):
        if (has_header and number == 1) or not line.strip():
            continue
        fields = _split(line, layout)
        if len(fields) != 4:
            reason = f"expected 4 fields separated by {layout.separator!r}, got {len(fields)}"
            report(label, number, reason, line)
            continue
        row = _rating_row(fields, scale)
        if isinstance(row, str):
            report(label, number, row, line)
            continue
        users.append(row[0])
        movies.append(row[1])
        ratings.append(row[2])
        timestamps.append(row[3])
    return RatingTable.from_columns(users, movies, ratings, timestamps)


def _positive_id(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit():
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None


def _rating_row(fields: list[str], scale: RatingScale) -> tuple[int, int, float, int] | str:
    """The parsed row, or why it is bad."""
    user, movie = _positive_id(fields[0]), _positive_id(fields[1])
    if user is None:
        return f"user id {fields[0].strip()!r} is not an integer in 1..{MAX_ID}"
    if movie is None:
        return f"movie id {fields[1].strip()!r} is not an integer in 1..{MAX_ID}"
    try:
        rating = float(fields[2])
    except ValueError:
        return f"rating {fields[2].strip()!r} is not a number"
    if not scale.contains(rating):
        return f"rating {fields[2].strip()} is outside {scale.describe()}"
    stamp = fields[3].strip()
    if not stamp.isdigit():
        return f"timestamp {stamp!r} is not epoch seconds"
    return user, movie, rating, int(stamp)


def _parse_movies(
    files: _Files, layout: _Layout, present: set[str], report: _Report
) -> list[Movie]:
    if layout.movies_file not in present:
        return []
    label = files.label(layout.movies_file)
    movies: list[Movie] = []
    lines = files.lines(layout.movies_file, layout.encoding)
    numbered: Iterator[tuple[int, list[str]]]
    if layout.separator == ",":
        rows = csv.reader(lines)
        next(rows, None)  # header
        numbered = enumerate(rows, start=2)
    else:
        separator = "|" if layout.name == "ml-100k" else layout.separator
        numbered = (
            (number, line.rstrip("\r\n").split(separator))
            for number, line in enumerate(lines, start=1)
            if line.strip()
        )
    for number, fields in numbered:
        movie = _movie(layout.name, fields)
        if movie is None:
            report(label, number, f"not a {layout.name} movie line", "|".join(fields))
            continue
        movies.append(movie)
    return movies


def _movie(layout: str, fields: list[str]) -> Movie | None:
    if layout == "ml-100k":
        if len(fields) != 5 + len(_ML100K_GENRES) or _positive_id(fields[0]) is None:
            return None
        flags = fields[5:]
        genres = tuple(g for g, flag in zip(_ML100K_GENRES, flags, strict=True) if flag == "1")
        return Movie(int(fields[0]), fields[1], genres)
    if len(fields) != 3 or _positive_id(fields[0]) is None:
        return None
    genres = tuple(g for g in fields[2].split("|") if g and g != "(no genres listed)")
    return Movie(int(fields[0]), fields[1], genres)
