"""When to retrain: after N new ratings or T seconds, whichever comes first, once M exist."""

from __future__ import annotations

from dataclasses import dataclass

from streaming.settings import ModelSettings

__all__ = ["RetrainPolicy"]


@dataclass(frozen=True)
class RetrainPolicy:
    """The retrain rule of ``ModelSettings``: N new ratings, T seconds, at least M ratings."""

    every_ratings: int
    every_s: float
    min_ratings: int

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> RetrainPolicy:
        """The policy the settings describe."""
        return cls(settings.retrain_every_ratings, settings.retrain_every_s, settings.min_ratings)

    def reason(
        self, *, stored: int, new_since: int, seconds_since: float | None, has_model: bool
    ) -> str | None:
        """Why a retrain is due now, or None when it is not.

        Args:
            stored: distinct (user, movie) ratings in the store.
            new_since: valid ratings received since the current model was trained.
            seconds_since: seconds since the current model was trained (None: no model).
            has_model: a model exists.
        """
        if stored < self.min_ratings:
            return None
        if not has_model:
            return f"first model ({stored} ratings >= {self.min_ratings})"
        if new_since >= self.every_ratings:
            return f"{new_since} new ratings >= {self.every_ratings}"
        if new_since > 0 and seconds_since is not None and seconds_since >= self.every_s:
            return f"{seconds_since:.0f} s since the last retrain >= {self.every_s:g} s"
        return None
