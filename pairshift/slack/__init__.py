"""Slack for pairshift (PRODUCT §10): notices as Block Kit messages, approval buttons safe to click.

- :mod:`pairshift.slack.messages` builds the messages (pure, within Slack's limits);
- :mod:`pairshift.slack.posting` posts them, threaded per migration (the ``post_slack_notice`` activity);
- :mod:`pairshift.slack.interactions` handles button clicks (``POST /slack/interactions``);
- :mod:`pairshift.slack.socket_mode` receives the same clicks over Socket Mode.

Settings follow Slack's names and come from the environment only. Tokens are ``SecretStr`` so that no log
line, repr or settings dump can show them, and nothing here ever stores one.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr
from slack_sdk import WebClient

SLACK_API_URL = "https://slack.com/api/"
SLACK_HOOKS_HOST = "hooks.slack.com"


class SlackSettings(BaseModel):
    """Slack configuration; unset tokens mean "Slack not configured" (notices go to the log only)."""

    bot_token: SecretStr | None = Field(
        None, description="SLACK_BOT_TOKEN (xoxb-…): posts and updates messages."
    )
    signing_secret: SecretStr | None = Field(None, description="SLACK_SIGNING_SECRET: verifies interactions.")
    app_token: SecretStr | None = Field(None, description="SLACK_APP_TOKEN (xapp-…): Socket Mode.")
    api_url: str | None = Field(
        None, description="PAIRSHIFT_SLACK_API_URL: Web API base URL (tests: a fake Slack)."
    )

    @property
    def base_url(self) -> str:
        url = self.api_url or SLACK_API_URL
        return url if url.endswith("/") else url + "/"

    def response_url_allowed(self, url: str) -> bool:
        """Only post to Slack's own hooks (or the configured fake): a response_url is never a free target."""
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname == SLACK_HOOKS_HOST:
            return True
        if self.api_url:
            own = urlsplit(self.api_url)
            return (parts.scheme, parts.hostname, parts.port) == (own.scheme, own.hostname, own.port)
        return False


ENV_NAMES = {
    "bot_token": "SLACK_BOT_TOKEN",
    "signing_secret": "SLACK_SIGNING_SECRET",
    "app_token": "SLACK_APP_TOKEN",
    "api_url": "PAIRSHIFT_SLACK_API_URL",
}


def slack_settings() -> SlackSettings:
    """Read fresh from the environment each time (cheap), so a worker picks up a token without a restart.

    Only these exact variable names are read (an unrelated ``API_URL`` or ``BOT_TOKEN`` never leaks in); an
    empty variable counts as unset.
    """
    return SlackSettings(**{field: os.environ.get(name) or None for field, name in ENV_NAMES.items()})


def web_client(settings: SlackSettings | None = None) -> WebClient:
    """A WebClient with no retry handlers of its own: Temporal's retry policy is the one place that retries,
    so a rate-limited post is not retried 3 x N times and Slack's ``Retry-After`` decides the next attempt."""
    settings = settings or slack_settings()
    token = settings.bot_token.get_secret_value() if settings.bot_token else None
    return WebClient(token=token, base_url=settings.base_url, timeout=10, retry_handlers=[])


__all__ = ["SlackSettings", "slack_settings", "web_client"]
