"""Local GroupLens files in all three layouts, from folders and zips, good and bad lines."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from producer.errors import BadInputError, DatasetUnavailableError, UnknownLayoutError
from producer.grouplens import load_grouplens

_FLAGS_COMEDY = "|".join("1" if i == 5 else "0" for i in range(19))


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def _ml100k(folder: Path) -> Path:
    return _write(folder, {
        "u.data": b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n",
        "u.item": f"242|Kolya (1996)|24-Jan-1997||http://x|{_FLAGS_COMEDY}\n".encode()
        + f"302|Caf\xe9 Society (1997)|01-Jan-1997||http://y|{_FLAGS_COMEDY}\n".encode("latin-1"),
    })  # fmt: skip


def test_ml100k_folder(tmp_path: Path) -> None:
    dataset = load_grouplens(_ml100k(tmp_path / "ml-100k"))
    assert dataset.name == "ml-100k"
    assert len(dataset.ratings) == 3
    assert dataset.ratings.user_ids.tolist() == [196, 186, 22]
    assert [(m.movie_id, m.title, m.genres) for m in dataset.movies] == [
        (242, "Kolya (1996)", ("Comedy",)),
        (302, "Café Society (1997)", ("Comedy",)),  # latin-1 decoded
    ]
    assert dataset.bad_records == []


def test_ml1m_layout_with_double_colons(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ml-1m", {
        "ratings.dat": b"1::1193::5::978300760\n1::661::3::978302109\n",
        "movies.dat": "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::Am\xe9lie (2001)::Comedy|Romance\n".encode("latin-1"),
    })  # fmt: skip
    dataset = load_grouplens(folder)
    assert dataset.name == "ml-1m"
    assert dataset.ratings.movie_ids.tolist() == [1193, 661]
    assert dataset.movies[1].title == "Amélie (2001)"
    assert dataset.movies[1].genres == ("Comedy", "Romance")


def test_ml_latest_small_csv_with_half_stars_and_quoted_titles(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ml-latest-small", {
        "ratings.csv": b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n",
        "movies.csv": b'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
        b'3,"American President, The (1995)",(no genres listed)\n',
    })  # fmt: skip
    dataset = load_grouplens(folder)
    assert dataset.name == "ml-latest-small"
    assert dataset.ratings.ratings.tolist() == [4.0, 3.5]
    assert dataset.movies[1].title == "American President, The (1995)"
    assert dataset.movies[1].genres == ()


def test_zip_with_a_top_folder(tmp_path: Path) -> None:
    source = _ml100k(tmp_path / "src")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in ("u.data", "u.item"):
            zipped.write(source / name, f"ml-100k/{name}")
    dataset = load_grouplens(archive)
    assert (dataset.name, len(dataset.ratings), len(dataset.movies)) == ("ml-100k", 3, 2)


BAD_LINES = (
    b"1\t10\t4\t881250949\n"  # 1: good
    b"not a line\n"  # 2: one field
    b"abc\t10\t4\t881250949\n"  # 3: user id not numeric
    b"1\t-5\t4\t881250949\n"  # 4: negative movie id
    b"1\t10\t9\t881250949\n"  # 5: rating off the scale
    b"1\t10\t3.5\t881250949\n"  # 6: half star on a 1-5 integer scale
    b"1\t10\t4\tyesterday\n"  # 7: timestamp not a number
    b"99999999999\t10\t4\t881250949\n"  # 8: id beyond int range
    b"2\t11\t5\t881250950\n"  # 9: good
)


def test_bad_lines_are_counted_with_file_and_line(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ml-100k", {"u.data": BAD_LINES})
    dataset = load_grouplens(folder)
    assert len(dataset.ratings) == 2
    reasons = {record.line: record.reason for record in dataset.bad_records}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8]
    assert "expected 4 fields" in reasons[2]
    assert "user id 'abc'" in reasons[3]
    assert "movie id '-5'" in reasons[4]
    assert "rating 9 is outside 1-5 in steps of 1" in reasons[5]
    assert "rating 3.5 is outside" in reasons[6]
    assert "timestamp 'yesterday'" in reasons[7]
    assert "user id '99999999999'" in reasons[8]
    assert dataset.bad_records[0].describe().startswith(f"{folder / 'u.data'}:2: ")


def test_strict_fails_on_the_first_bad_line(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ml-100k", {"u.data": BAD_LINES})
    with pytest.raises(BadInputError, match=r"u\.data:2: expected 4 fields.*--strict"):
        load_grouplens(folder, strict=True)


def test_unknown_folder_lists_the_expected_files(tmp_path: Path) -> None:
    folder = _write(tmp_path / "random", {"notes.txt": b"hello"})
    with pytest.raises(UnknownLayoutError, match=r"u\.data.*ratings\.dat.*ratings\.csv"):
        load_grouplens(folder)


def test_missing_path_and_non_zip_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="no such folder or zip"):
        load_grouplens(tmp_path / "nope")
    not_zip = tmp_path / "ratings.txt"
    not_zip.write_text("x")
    with pytest.raises(UnknownLayoutError, match="neither a folder nor a zip"):
        load_grouplens(not_zip)
