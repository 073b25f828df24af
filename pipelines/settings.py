"""Settings of the dealcast jobs, from the environment (``DEALCAST_*``) and the CLI."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Where dealcast keeps its data.

    ``data`` defaults to ``./dealcast-data``; ``DEALCAST_DATA`` or ``--data`` override it.
    """

    model_config = SettingsConfigDict(env_prefix="DEALCAST_", extra="ignore")

    data: Path = Path("dealcast-data")


@lru_cache
def get_settings() -> Settings:
    return Settings()
