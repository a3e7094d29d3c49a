"""Strict settings: frozen, env-prefixed, and loud about unknown keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

__all__ = ["SECRETS_DIR_VARIABLE", "StrictSettings", "secrets_dir"]

SECRETS_DIR_VARIABLE = "RECSTREAM_SECRETS_DIR"


class StrictSettings(BaseSettings):
    """Base for every recstream settings class.

    pydantic-settings ignores an environment variable that carries the class's
    prefix but names no field, so a typo such as ``RECSTREAM_KAFKA_BOOTSTRAP_SERVER``
    would silently fall back to the default. This base rejects such variables,
    listing the names that are accepted.

    Values may also come from files: with ``RECSTREAM_SECRETS_DIR`` set, a file in that
    folder named like a variable (``recstream_redis_password``, any case) holds that
    setting's value, as Docker and Kubernetes mount secrets. The environment wins
    over a file; a file with the prefix that names no field is rejected like a variable.
    """

    # Inputs are kept out of pydantic's messages because one of them may be a
    # password (a Redis URL with credentials in it); our own messages quote the
    # offending value wherever that is safe.
    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        frozen=True, extra="forbid", case_sensitive=False, hide_input_in_errors=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then files in ``RECSTREAM_SECRETS_DIR``."""
        folder = secrets_dir()
        if folder is None or not folder.is_dir():  # a bad folder is reported by the validator
            return init_settings, env_settings, dotenv_settings
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            SecretsSettingsSource(settings_cls, secrets_dir=folder),
        )

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_environment(cls, data: Any) -> Any:
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        if not prefix:
            return data
        known = {prefix + name.upper() for name in cls.model_fields}
        unknown = sorted(
            key for key in os.environ if key.upper().startswith(prefix) and key.upper() not in known
        )
        if unknown:
            msg = (
                f"unknown environment variable(s) {', '.join(unknown)} for {cls.__name__}; "
                f"accepted names are {', '.join(sorted(known))}"
            )
            raise ValueError(msg)
        folder = secrets_dir()
        if folder is None:
            return data
        if not folder.is_dir():
            msg = f"{SECRETS_DIR_VARIABLE} must name a folder of secret files, got {str(folder)!r}"
            raise ValueError(msg)
        strays = sorted(
            entry.name
            for entry in folder.iterdir()
            if entry.name.upper().startswith(prefix) and entry.name.upper() not in known
        )
        if strays:
            msg = (
                f"unknown secret file(s) {', '.join(strays)} in {folder} for {cls.__name__}; "
                f"accepted names are {', '.join(sorted(known))} (any case)"
            )
            raise ValueError(msg)
        return data


def secrets_dir() -> Path | None:
    """The folder ``RECSTREAM_SECRETS_DIR`` names, if set."""
    value = os.environ.get(SECRETS_DIR_VARIABLE, "").strip()
    return Path(value) if value else None
