"""The hybrid list score: long-term taste (ALS), short-term transitions, popularity.

A listed movie's score for a user is

    score = als + prior + transition_weight · transitions / max(transitions)

- ``als``: the user's folded-in ALS factor times the movie's factor (0 for a user the
  model cannot fold in: none of their movies is known to it);
- ``prior``: the model's popularity prior of the movie
  (``streaming.model.versions.popularity_prior``, weight
  ``RECSTREAM_MODEL_POPULARITY_WEIGHT``), which also ranks the fill-in for users with
  neither of the two personal signals;
- ``transitions``: the user's transition score of the movie
  (``streaming.model.transitions.TransitionCounts.scores``), divided by the user's largest so
  that the weight reads the same for a user with three ratings and one with three
  hundred: the best transition candidate gains exactly ``transition_weight``.

Another signal (genres, say) joins the same way: one more term with its own weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streaming.ids import sorted_lookup
from streaming.model.transitions import TransitionCounts
from streaming.settings import ModelSettings

__all__ = ["ShortTerm", "blend", "transition_counts"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ShortTerm:
    """The transition part of the lists: the counts and how they are read and weighed."""

    counts: TransitionCounts
    weight: float
    decay: float = 0.85
    source_norm: float = 0.0

    @classmethod
    def of(cls, counts: TransitionCounts, settings: ModelSettings) -> ShortTerm:
        """The short-term part the settings describe, over ``counts``."""
        return cls(counts, settings.transition_weight, settings.transition_decay,
                   settings.transition_source_norm)  # fmt: skip

    _last: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def __getstate__(self) -> dict[str, object]:
        """Pickled (broadcast to executors) without the kept answer."""
        return {**self.__dict__, "_last": {}}

    def scores(self, users: npt.NDArray[np.int64], movie_ids: npt.NDArray[np.int64]) -> FloatArray:
        """Transition scores of ``users`` (rows) over ``movie_ids`` (ascending; columns).

        The last answer is kept: asked again for the same users before the counts
        change, over the same movies or a subset of them, it is read, not recomputed
        (a micro-batch's lists and its check ask for the same users).
        """
        key = (self.counts.observed, np.asarray(users, dtype=np.int64).tobytes())
        held = self._last.get("entry")  # one tuple, replaced whole: safe across threads
        if isinstance(held, tuple) and held[0] == key:
            rows, known = sorted_lookup(held[1], movie_ids)
            if known.all():
                taken: FloatArray = held[2][:, rows]
                return taken
        fresh = self.counts.scores(users, movie_ids, self.decay, self.source_norm)
        self._last["entry"] = (key, np.array(movie_ids, dtype=np.int64), fresh)
        return fresh


def transition_counts(settings: ModelSettings) -> TransitionCounts:
    """Empty counts kept the way the settings say (window, reverse weight, memory, followers)."""
    return TransitionCounts(settings.transition_window, settings.transition_memory,
                            reverse=settings.transition_reverse,
                            followers=settings.transition_followers)  # fmt: skip


def blend(
    als: FloatArray,
    prior: FloatArray,
    transitions: FloatArray | None = None,
    transition_weight: float = 0.0,
    *,
    in_place: bool = False,
) -> FloatArray:
    """The hybrid score of every (user, movie): ``users × movies`` (see the module doc).

    Args:
        als: ALS scores, ``users × movies``; rows of users without a factor are zeros.
        prior: the popularity prior of each movie.
        transitions: transition scores, ``users × movies`` (non-negative), or None.
        transition_weight: what the user's best transition candidate gains.
        in_place: write the scores into ``als`` (it is returned) instead of a new array;
            the same values to the last bit, without two more ``users × movies`` arrays.
    """
    score: FloatArray = np.add(als, prior, out=als if in_place else None)
    if transitions is None or transition_weight == 0:
        return score
    top = transitions.max(axis=1, initial=0.0, keepdims=True)
    share = np.divide(transitions, top, out=np.zeros_like(transitions), where=top > 0)
    share *= transition_weight
    score += share
    return score
