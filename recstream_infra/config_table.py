"""The configuration reference: every setting as a markdown table row.

``python -m recstream_infra.config_table`` prints the table that docs/configuration.md carries
between its ``config-table`` markers; a test keeps the two identical.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic.fields import FieldInfo

from producer.settings import KafkaSettings, ProducerSettings
from recstream_base.settings import StrictSettings
from recstream_infra.settings import LocalServicesSettings
from serving.settings import ApiSettings, RedisSettings
from streaming.settings import ModelSettings, SparkSettings, StreamSettings

__all__ = ["SETTINGS_CLASSES", "render_table"]

SETTINGS_CLASSES: tuple[type[StrictSettings], ...] = (
    KafkaSettings,
    ProducerSettings,
    RedisSettings,
    ApiSettings,
    SparkSettings,
    StreamSettings,
    ModelSettings,
    LocalServicesSettings,
)


def render_table(classes: tuple[type[StrictSettings], ...] = SETTINGS_CLASSES) -> str:
    """A markdown table: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for settings_class in classes:
        prefix = str(settings_class.model_config.get("env_prefix", "")).upper()
        for name, field in settings_class.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{name.upper()}` | {_default(field)} | {description} |")
    return "\n".join(rows) + "\n"


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, bool):
        value = str(value).lower()
    if isinstance(value, tuple | list):  # set as JSON, so shown as JSON
        value = json.dumps(list(value))
    return f"`{value}`"


if __name__ == "__main__":
    print(render_table(), end="")
