"""Process settings, read from the environment (PRODUCT §11): where state lives and how to reach Temporal.

Secrets are not settings of this module: provider keys are read by name at call time (``api_key_env``) and
Slack tokens by the Slack module, so no settings dump can ever contain one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

TASK_QUEUE = "pairshift"
ADDRESS = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$"  # host:port to bind a metrics endpoint on


class Settings(BaseSettings):
    """Where state lives and how to reach Temporal and the registry (``PAIRSHIFT_*``)."""

    model_config = SettingsConfigDict(env_prefix="PAIRSHIFT_", extra="ignore")

    home: Path = Field(
        Path(".pairshift"), description="State folder: registry SQLite file, Temporal state, reports."
    )
    database_url: str | None = Field(
        None,
        repr=False,  # it carries the password: never in a repr, a log line or a traceback's locals
        description="SQLAlchemy URL of the registry; default sqlite:///$PAIRSHIFT_HOME/registry.db.",
    )
    temporal_address: str = Field("localhost:7233", description="Temporal frontend host:port.")
    namespace: str = Field("default", description="Temporal namespace.")
    task_queue: str = Field(TASK_QUEUE, description="Task queue of the pairshift worker.")
    ui_url: str = Field(
        "http://localhost:8233", description="Temporal Web UI base URL, for links in notices."
    )
    api_url: str = Field(
        "http://localhost:8080", description="Base URL of `pairshift api`, for links in notices."
    )

    api_max_body_bytes: int = Field(
        1_000_000, gt=0, description="Largest request body `pairshift api` reads on JSON routes (413 above)."
    )
    api_observe_rows_per_minute: float = Field(
        600_000, ge=0, description="Observations one API token may send per minute (429 above; 0 = no limit)."
    )

    worker_metrics_address: str | None = Field(
        None,
        pattern=ADDRESS,
        description="host:port where `pairshift worker` serves Prometheus /metrics (e.g. 127.0.0.1:9464); "
        "unset = not served.",
    )
    temporal_metrics_address: str | None = Field(
        None,
        pattern=ADDRESS,
        description="host:port where the worker's Temporal SDK runtime serves its own Prometheus metrics "
        "(e.g. 127.0.0.1:9465); unset = not served.",
    )
    retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="Observations older than this many days are folded into daily rollups and deleted (the "
        "daily `pairshift-retention` Schedule, `pairshift observations prune`); a running migration's stay.",
    )

    @property
    def registry_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'registry.db').resolve()}"


def masked_url(url: str) -> str:
    """``url`` with its password as ``***``: the only form of a database URL that is printed or logged."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (cached; tests that change the environment call ``cache_clear()``)."""
    return Settings()
