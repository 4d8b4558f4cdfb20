"""Where the API keys come from: the config file first, then the environment (the SDKs' order).

What is tried is recorded, so "no credentials" names every source that was looked at.
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.config import Config
from exporter.signing import Credentials

ENV_SECRET_ID = "TENCENTCLOUD_SECRET_ID"
ENV_SECRET_KEY = "TENCENTCLOUD_SECRET_KEY"
ENV_TOKEN = "TENCENTCLOUD_SESSION_TOKEN"


class CredentialsError(Exception):
    pass


def _pair(secret_id: str, secret_key: str, token: str, where: str) -> Credentials | None:
    if secret_id and secret_key:
        return Credentials(secret_id, secret_key, token)
    if secret_id or secret_key:
        missing = "secret_key" if secret_id else "secret_id"
        raise CredentialsError(f"{where}: {missing} is empty while the other half of the key pair is set")
    return None


def resolve(config: Config, env: Mapping[str, str]) -> Credentials:
    """The first complete key pair among the sources; raises CredentialsError naming all sources tried."""
    c = config.credentials
    found = _pair(c.secret_id, c.secret_key, c.token, f"{config.source}: credentials")
    if found is not None:
        return found
    found = _pair(
        env.get(ENV_SECRET_ID, ""),
        env.get(ENV_SECRET_KEY, ""),
        env.get(ENV_TOKEN, ""),
        f"environment {ENV_SECRET_ID}/{ENV_SECRET_KEY}",
    )
    if found is not None:
        return found
    raise CredentialsError(
        "no Tencent Cloud credentials found; tried: "
        f"{config.source}: credentials.secret_id/secret_key (empty or absent), "
        f"environment {ENV_SECRET_ID}/{ENV_SECRET_KEY} (unset)"
    )
