"""Where the API keys come from, in the official SDKs' order: the config file, then the environment.

A provider hands out the current key pair on every call, so sources whose keys expire can refresh them
without the scheduler knowing. What was tried is recorded, so "no credentials" names every source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from exporter.config import Config
from exporter.signing import Credentials

ENV_SECRET_ID = "TENCENTCLOUD_SECRET_ID"
ENV_SECRET_KEY = "TENCENTCLOUD_SECRET_KEY"
ENV_TOKEN = "TENCENTCLOUD_SESSION_TOKEN"


class CredentialsError(Exception):
    pass


class CredentialProvider(Protocol):
    @property
    def source(self) -> str:
        """Where the keys come from, for logs (never the keys themselves)."""
        ...

    @property
    def identity(self) -> str:
        """Stable across refreshes: requests signed by the same identity share one quota."""
        ...

    async def get(self) -> Credentials:
        """The key pair to sign the next request with; raises CredentialsError when none can be had."""
        ...

    async def close(self) -> None: ...


class StaticProvider:
    def __init__(self, credentials: Credentials, source: str) -> None:
        self._credentials = credentials
        self._source = source

    @property
    def source(self) -> str:
        return self._source

    @property
    def identity(self) -> str:
        return self._credentials.secret_id

    async def get(self) -> Credentials:
        return self._credentials

    async def close(self) -> None:
        return None


def _pair(secret_id: str, secret_key: str, token: str, where: str) -> Credentials | None:
    if secret_id and secret_key:
        return Credentials(secret_id, secret_key, token)
    if secret_id or secret_key:
        missing = "secret_key" if secret_id else "secret_id"
        raise CredentialsError(f"{where}: {missing} is empty while the other half of the key pair is set")
    return None


async def open_provider(config: Config, env: Mapping[str, str]) -> CredentialProvider:
    """The first source that yields a key pair; raises CredentialsError naming every source tried."""
    c = config.credentials
    where = f"{config.source}: credentials"
    found = _pair(c.secret_id, c.secret_key, c.token, where)
    if found is not None:
        return StaticProvider(found, "config file")
    env_names = f"environment {ENV_SECRET_ID}/{ENV_SECRET_KEY}"
    found = _pair(env.get(ENV_SECRET_ID, ""), env.get(ENV_SECRET_KEY, ""), env.get(ENV_TOKEN, ""), env_names)
    if found is not None:
        return StaticProvider(found, "environment")
    raise CredentialsError(
        "no Tencent Cloud credentials found; tried: "
        f"{config.source}: credentials.secret_id/secret_key (empty or absent), {env_names} (unset)"
    )
