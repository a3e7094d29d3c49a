"""The rules a rating record must pass, defined once for every consumer.

The streaming job builds its Spark columns from this module
(``streaming.ingest.validation``), and whatever validates an event outside Spark (the
HTTP ingest) calls :func:`record_problem` or :func:`event_problem`; a unit test runs
both over the same records and requires the same answers.

A record gets at most one reason, the first that applies, in this order: empty or
oversized message, no key, not a JSON object, a missing field, a field of the wrong
type, unknown schema version, unknown source, an id out of range, a rating off its
source's scale, an implausible timestamp, a key that is not the user id.

"Wrong type" follows Spark's JSON reader, which the job uses: an integer field takes a
JSON integer that fits its width (not ``1.0``, not ``"1"``, not ``true``), the rating
takes any JSON number or one of the strings Spark reads as a special double (``"NaN"``,
``"Infinity"``…), and a text field takes anything (a number arrives as its text).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from producer.events import RATING_SCALES, SCHEMA_VERSION
from recstream_base.ids import MAX_ID

__all__ = [
    "DUPLICATE_REASON",
    "EVENT_FIELDS",
    "FUTURE_TOLERANCE_S",
    "INTEGER_BITS",
    "MAX_MESSAGE_BYTES",
    "REASONS",
    "TEXT_FIELDS",
    "double_text",
    "event_problem",
    "record_problem",
]

MAX_MESSAGE_BYTES = 64 * 1024
FUTURE_TOLERANCE_S = 86_400
DUPLICATE_REASON = "duplicate event (its user, movie and timestamp arrived before)"

# The event's fields in contract order, and how wide each integer field is.
EVENT_FIELDS = ("schema_version", "event_id", "source", "user_id", "movie_id", "rating",
                "timestamp")  # fmt: skip
INTEGER_BITS = {"schema_version": 32, "user_id": 64, "movie_id": 64, "timestamp": 64}
TEXT_FIELDS = ("event_id", "source")

# Every reason's text; ``{…}`` marks a value the reason names (Spark fills them with
# ``concat``, Python with ``str.format``).
REASONS = {
    "empty": "empty message",
    "too_large": f"message larger than {MAX_MESSAGE_BYTES} bytes",
    "no_key": "message has no key (it must be the user id)",
    "not_object": "not a JSON object",
    "missing": "missing field {field}",
    "wrong_type": "field {field} has the wrong type",
    "schema_version": "unknown schema version {schema_version}",
    "source": "unknown source {source}",
    "user_id": f"user_id outside 1..{MAX_ID}",
    "movie_id": f"movie_id outside 1..{MAX_ID}",
    "rating": "rating {rating} is off the scale of source {source}",
    "timestamp": "timestamp before 1970 or more than a day in the future",
    "key": "message key is not the user id",
}

# The strings Spark's JSON reader takes for a double field.
_SPECIAL_DOUBLES = {
    "NaN": math.nan, "+NaN": math.nan, "-NaN": math.nan,
    "Infinity": math.inf, "+Infinity": math.inf, "+INF": math.inf, "INF": math.inf,
    "-Infinity": -math.inf, "-INF": -math.inf,
}  # fmt: skip
_WRONG = object()


def double_text(value: float) -> str:
    """A double as Spark (Java) writes it: ``4.0``, ``1.0E7``, ``NaN``, ``Infinity``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return repr(float(value))
    mantissa, exponent = f"{value:.17e}".split("e")
    digits = repr(float(mantissa))  # shortest form of the mantissa, e.g. '1.0', '2.5'
    return f"{digits}E{int(exponent)}"


def _typed(name: str, value: Any) -> Any:
    """``value`` as Spark reads field ``name`` from JSON, or ``_WRONG``."""
    if name in TEXT_FIELDS:
        if isinstance(value, str):
            return value
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bool):
        return _WRONG
    if name == "rating":
        if isinstance(value, int):
            try:
                return float(value)
            except OverflowError:
                return math.inf if value > 0 else -math.inf
        if isinstance(value, float):
            return value
        return _SPECIAL_DOUBLES.get(value, _WRONG) if isinstance(value, str) else _WRONG
    bound = 2 ** (INTEGER_BITS[name] - 1)
    return value if isinstance(value, int) and -bound <= value < bound else _WRONG


def _rules(event: Mapping[str, Any], latest_s: int) -> str | None:
    """The first rule a typed event breaks, from its schema version on."""
    if event["schema_version"] != SCHEMA_VERSION:
        return REASONS["schema_version"].format(schema_version=event["schema_version"])
    if event["source"] not in RATING_SCALES:
        return REASONS["source"].format(source=event["source"])
    for name in ("user_id", "movie_id"):
        if not 1 <= event[name] <= MAX_ID:
            return REASONS[name]
    if not RATING_SCALES[event["source"]].contains(event["rating"]):  # NaN is on no scale
        return REASONS["rating"].format(rating=double_text(event["rating"]), source=event["source"])
    if not 0 <= event["timestamp"] <= latest_s:
        return REASONS["timestamp"]
    return None


def _missing(fields: Mapping[str, Any]) -> str | None:
    name = next((name for name in EVENT_FIELDS if fields.get(name) is None), None)
    return None if name is None else REASONS["missing"].format(field=name)


def _untyped(event: Mapping[str, Any]) -> str | None:
    name = next((name for name in EVENT_FIELDS if event.get(name, _WRONG) is _WRONG), None)
    return None if name is None else REASONS["wrong_type"].format(field=name)


def event_problem(fields: Mapping[str, Any], *, latest_s: int) -> str | None:
    """The reason a decoded event (a JSON object) is refused, or None when it is valid.

    ``latest_s`` is the latest plausible rating timestamp (epoch seconds), normally
    now + ``FUTURE_TOLERANCE_S``. The checks from "missing field" on; the message's
    own checks (size, key, JSON) are :func:`record_problem`'s.
    """
    problem = _missing(fields)
    if problem is not None:
        return problem
    event = {name: _typed(name, fields[name]) for name in EVENT_FIELDS}
    return _untyped(event) or _rules(event, latest_s)


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's members in order, repeated names included."""


_DECODER = json.JSONDecoder(object_pairs_hook=_Pairs)


def _plain(value: Any) -> Any:
    if isinstance(value, _Pairs):
        return {name: _plain(member) for name, member in value}
    if isinstance(value, list):
        return [_plain(member) for member in value]
    return value


def _spark_views(members: _Pairs) -> tuple[dict[str, Any], dict[str, Any]]:
    """What Spark's two parses of one object see: the string map and the typed event.

    A name given twice counts once in the map, with its first value; in the event each
    occurrence overwrites the last, except one of the wrong type, which leaves it as is.
    """
    first: dict[str, Any] = {}
    event: dict[str, Any] = {}
    for name, value in members:
        first.setdefault(name, value)
        if name not in EVENT_FIELDS:
            continue
        if value is None:
            event[name] = _WRONG  # a null clears what an earlier occurrence set
            continue
        typed = _typed(name, _plain(value))
        if typed is not _WRONG:  # one of the wrong type leaves the field as it was
            event[name] = typed
    return first, event


def record_problem(key: bytes | None, value: bytes | None, *, latest_s: int) -> str | None:
    """The reason a Kafka record (key and value bytes) is refused, or None when valid."""
    if not value:
        return REASONS["empty"]
    if len(value) > MAX_MESSAGE_BYTES:
        return REASONS["too_large"]
    if key is None:
        return REASONS["no_key"]
    text = value.decode("utf-8", errors="replace")
    try:
        # Like Spark's reader, the first JSON value counts and what follows is ignored.
        members = _DECODER.raw_decode(text, len(text) - len(text.lstrip(" \t\n\r")))[0]
    except ValueError:
        return REASONS["not_object"]
    if not isinstance(members, _Pairs):
        return REASONS["not_object"]
    first, event = _spark_views(members)
    problem = _missing(first) or _untyped(event) or _rules(event, latest_s)
    if problem is not None:
        return problem
    if key.decode("utf-8", errors="replace") != str(event["user_id"]):
        return REASONS["key"]
    return None
