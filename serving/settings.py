"""Settings of the API server, from the environment (``DEALCAST_*``) and ``dealcast serve``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServeSettings", "get_settings"]


class ServeSettings(BaseSettings):
    """Where the published results and the API keys are, and how to authenticate.

    ``api_keys`` (``DEALCAST_API_KEYS``) is a JSON object of SHA-256 key hashes to roles, for
    deployments that keep secrets in the environment; it adds to the keys file. ``dev_mode``
    (``DEALCAST_DEV_MODE=1`` or ``dealcast serve --dev-mode``) lets requests without a key in
    as ``ops``: for a laptop, never for a shared server (a warning is logged at start).
    """

    model_config = SettingsConfigDict(env_prefix="DEALCAST_", extra="ignore")

    data: Path = Path("dealcast-data")
    keys_file: Path | None = Field(
        default=None, description="Default: <data>/api-keys.json (written by `dealcast keys`)."
    )
    api_keys: dict[str, str] = Field(default_factory=dict)
    dev_mode: bool = False
    reload_interval: float = Field(default=1.0, gt=0, description="Seconds between checks.")

    @property
    def keys_path(self) -> Path:
        return self.keys_file or self.data / "api-keys.json"


@lru_cache
def get_settings() -> ServeSettings:
    return ServeSettings()
