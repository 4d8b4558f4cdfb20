"""Where the API keys of one account come from, in the official SDKs' order.

1. the config file (`credentials.secret_id/secret_key/token`),
2. the environment (`TENCENTCLOUD_SECRET_ID/SECRET_KEY/SESSION_TOKEN`), for the default account only,
3. a profile file (INI, `secret_id`/`secret_key` in `[default]`): `credentials.profile`, else
   `$TENCENTCLOUD_CREDENTIALS_FILE`, else `~/.tencentcloud/credentials`, else `/etc/tencentcloud/credentials`,
4. the CAM role of the CVM instance, from the metadata service (temporary keys with a token),
5. TKE workload identity (OIDC): with `TKE_REGION`, `TKE_PROVIDER_ID`, `TKE_WEB_IDENTITY_TOKEN_FILE` and
   `TKE_ROLE_ARN` in the environment, STS AssumeRoleWithWebIdentity with the pod's service account token,

and, when `credentials.role_arn` is set, STS AssumeRole signed with the keys the chain found.

This module is the chain; the sources are in `profile` (profile file), `sources` (CVM role, STS, TKE OIDC)
and `expiring` (renewal of keys that expire), on the shared types of `base`, which are re-exported here.

A provider hands out the current key pair on every call, so sources whose keys expire refresh them without
the scheduler knowing: ahead of expiry in the background (a poll never waits for it while the old keys are
still valid), one refresh at a time however many polls ask, and on failure the old keys stay in use until
they really expire. The profile file is re-read when it changes, so rotating it needs no restart; so is the
web identity token file, on every renewal. File access (stat and read) runs in a worker thread, HTTP on the
event loop: nothing here blocks the loop.

No key, token or profile line ever reaches a log record, an exception message or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp

from exporter.config.parser import CredentialsConfig
from exporter.credentials.base import (
    USER_AGENT,
    CredentialProvider,
    CredentialsError,
    StaticProvider,
    key_pair,
)
from exporter.credentials.expiring import REFRESH_MARGIN, ExpiringProvider, refresh_time
from exporter.credentials.profile import ProfileProvider, read_profile
from exporter.credentials.sources import (
    TKE_ENV,
    CvmRoleProvider,
    OidcProvider,
    StsProvider,
    discover_role,
    tke_identity,
)

__all__ = [
    "REFRESH_MARGIN",
    "CredentialProvider",
    "CredentialsError",
    "CvmRoleProvider",
    "OidcProvider",
    "ProfileProvider",
    "StaticProvider",
    "StsProvider",
    "check_chain",
    "open_provider",
    "refresh_time",
]

log = logging.getLogger("exporter.credentials")

ENV_SECRET_ID = "TENCENTCLOUD_SECRET_ID"
ENV_SECRET_KEY = "TENCENTCLOUD_SECRET_KEY"
ENV_TOKEN = "TENCENTCLOUD_SESSION_TOKEN"
ENV_CREDENTIALS_FILE = "TENCENTCLOUD_CREDENTIALS_FILE"  # the Go SDK's override of the profile path

HOME_PROFILE = Path(".tencentcloud") / "credentials"
SYSTEM_PROFILE = Path("/etc/tencentcloud/credentials")


class _Sessions:
    """HTTP sessions for the metadata service and STS, created on first use, closed with the provider.

    The metadata service is link-local and must never go through a proxy; STS may need one.
    """

    def __init__(self, given: aiohttp.ClientSession | None) -> None:
        self._given = given
        self._owned: dict[bool, aiohttp.ClientSession] = {}

    def get(self, trust_env: bool) -> aiohttp.ClientSession:
        if self._given is not None:
            return self._given
        if trust_env not in self._owned:
            self._owned[trust_env] = aiohttp.ClientSession(
                trust_env=trust_env, headers={"User-Agent": USER_AGENT}
            )
        return self._owned[trust_env]

    async def close(self) -> None:
        owned, self._owned = self._owned, {}
        for session in owned.values():
            await session.close()


def check_chain(
    credentials: CredentialsConfig,
    env: Mapping[str, str],
    *,
    where: str,
    use_env: bool = True,
    home: Path | None = None,
    system_profile: Path | None = SYSTEM_PROFILE,
) -> None:
    """What no retry can mend, found from the config and the environment alone: half a key pair (in the
    section or the environment), or a chain with no source that could ever give keys (no key pair, no
    profile file named or present, the metadata service disabled, no complete TKE identity). Raises
    CredentialsError naming every source it looked at, as open_provider() does.

    Nothing here calls the network or reads a file (it only asks whether the default profile files exist):
    what those give can change without a new config, so the daemon retries an account whose open_provider()
    fails after this check passes, while failing this check stops the start (exit 2) and the reload;
    `--check-config` runs the same check.
    """
    c = credentials
    if key_pair(c.secret_id, c.secret_key, c.token, where) is not None:
        return
    tried = [f"{where}.secret_id/secret_key (empty or absent)"]
    env_names = f"environment {ENV_SECRET_ID}/{ENV_SECRET_KEY}"
    if use_env:
        pair = (env.get(ENV_SECRET_ID, ""), env.get(ENV_SECRET_KEY, ""), env.get(ENV_TOKEN, ""))
        if key_pair(*pair, env_names) is not None:
            return
        tried.append(f"{env_names} (unset)")
    else:
        tried.append(f"{env_names} (only for the default account)")
    if c.profile or env.get(ENV_CREDENTIALS_FILE):
        return  # named: it may be mounted after the start; open_provider() says what is wrong with it
    home_dir = home if home is not None else (Path(env["HOME"]) if env.get("HOME") else None)
    for path in (home_dir / HOME_PROFILE if home_dir else None, system_profile):
        if path is not None and path.exists():
            return
        if path is not None:
            tried.append(f"profile file {path} (not found)")
    if c.cvm_role_enabled:
        return  # only asking the metadata service tells
    tried.append(f"CVM role (metadata service disabled by {where}.cvm_role: false)")
    try:
        if tke_identity(env) is not None:
            return
        tried.append(f"TKE OIDC ({'/'.join(TKE_ENV)} unset)")
    except CredentialsError as exc:
        tried.append(f"TKE OIDC ({exc})")
    after = f" ({where}.role_arn needs base credentials from one of them)" if c.role_arn else ""
    raise CredentialsError(f"no Tencent Cloud credentials found; tried: {'; '.join(tried)}{after}")


async def open_provider(
    credentials: CredentialsConfig,
    env: Mapping[str, str],
    *,
    where: str,
    use_env: bool = True,
    home: Path | None = None,
    system_profile: Path | None = SYSTEM_PROFILE,
    metadata_url: str | None = None,
    session: aiohttp.ClientSession | None = None,
    clock: Callable[[], float] = time.time,
    probe_timeout: float = 1.0,
    refresh_timeout: float = 5.0,
    retry_delay: float = 10.0,
    profile_check_interval: float = 1.0,
) -> CredentialProvider:
    """The first source that yields keys for one account (wrapped in STS AssumeRole when `role_arn` is set).

    `credentials` is the account's section and `where` its place in messages (`config.yaml: credentials`,
    `config.yaml: accounts[1].credentials`). `use_env=False` skips the environment's key pair, which belongs
    to the default account only. Raises CredentialsError naming every source tried and why it gave nothing.
    `home` defaults to `$HOME` from `env` (no home profile without one); `session` (for tests) is used and
    left open; `clock` is Unix time. The metadata service gets `probe_timeout` at start, so a machine
    without one fails fast.
    """
    sessions = _Sessions(session)
    try:
        tried: list[str] = []
        base = await _first_source(
            credentials,
            env,
            tried,
            sessions,
            where=where,
            use_env=use_env,
            home=home,
            system_profile=system_profile,
            metadata_url=credentials.metadata_url if metadata_url is None else metadata_url,
            clock=clock,
            probe_timeout=probe_timeout,
            refresh_timeout=refresh_timeout,
            retry_delay=retry_delay,
            profile_check_interval=profile_check_interval,
        )
        c = credentials
        if base is None:
            after = f" ({where}.role_arn needs base credentials from one of them)" if c.role_arn else ""
            raise CredentialsError(f"no Tencent Cloud credentials found; tried: {'; '.join(tried)}{after}")
        provider: CredentialProvider = base
        if c.role_arn:
            sts = StsProvider(
                base,
                sessions.get(trust_env=True),
                c.sts_endpoint,
                c.role_arn,
                c.role_session_name,
                c.role_duration,
                clock,
                refresh_timeout,
                retry_delay,
            )
            try:
                await sts.prime()
            except BaseException:
                await sts.close()
                raise
            provider = sts
        if isinstance(provider, ExpiringProvider):
            provider.on_close(sessions.close)
        else:
            await sessions.close()
    except BaseException:
        await sessions.close()
        raise
    fields: dict[str, object] = {"credentials": provider.source, "for": where}
    if tried:
        fields["skipped"] = "; ".join(tried)
    log.info("credentials source chosen", extra={"fields": fields})
    return provider


async def _first_source(
    c: CredentialsConfig,
    env: Mapping[str, str],
    tried: list[str],
    sessions: _Sessions,
    *,
    where: str,
    use_env: bool,
    home: Path | None,
    system_profile: Path | None,
    metadata_url: str,
    clock: Callable[[], float],
    probe_timeout: float,
    refresh_timeout: float,
    retry_delay: float,
    profile_check_interval: float,
) -> CredentialProvider | None:
    found = key_pair(c.secret_id, c.secret_key, c.token, where)
    if found is not None:
        return StaticProvider(found, "config file")
    tried.append(f"{where}.secret_id/secret_key (empty or absent)")

    env_names = f"environment {ENV_SECRET_ID}/{ENV_SECRET_KEY}"
    if use_env:
        found = key_pair(
            env.get(ENV_SECRET_ID, ""), env.get(ENV_SECRET_KEY, ""), env.get(ENV_TOKEN, ""), env_names
        )
        if found is not None:
            return StaticProvider(found, "environment")
        tried.append(f"{env_names} (unset)")
    else:
        tried.append(f"{env_names} (only for the default account)")

    profile = await _profile(c, env, tried, where, home, system_profile, clock, profile_check_interval)
    if profile is not None:
        return profile

    if not c.cvm_role_enabled:
        tried.append(f"CVM role (metadata service disabled by {where}.cvm_role: false)")
    else:
        cvm = await _cvm_role(c, sessions, metadata_url, clock, probe_timeout, refresh_timeout, retry_delay)
        if isinstance(cvm, CvmRoleProvider):
            if any(env.get(name) for name in TKE_ENV):
                log.warning(
                    "the CVM role answered first, TKE workload identity in the environment is not used",
                    extra={
                        "fields": {"for": where, "hint": f"{where}.cvm_role: false prefers the pod's role"}
                    },
                )
            return cvm
        tried.append(f"CVM role ({cvm})")

    try:
        tke = tke_identity(env)
        if tke is None:
            tried.append(f"TKE OIDC ({'/'.join(TKE_ENV)} unset)")
            return None
        oidc = OidcProvider(
            sessions.get(trust_env=True),
            c.sts_endpoint,
            tke,
            c.role_session_name,
            c.role_duration,
            clock,
            refresh_timeout,
            retry_delay,
        )
        await oidc.prime()
    except CredentialsError as exc:
        tried.append(f"TKE OIDC ({exc})")
        return None
    return oidc


async def _profile(
    c: CredentialsConfig,
    env: Mapping[str, str],
    tried: list[str],
    where: str,
    home: Path | None,
    system_profile: Path | None,
    clock: Callable[[], float],
    check_interval: float,
) -> ProfileProvider | None:
    home_dir = home if home is not None else (Path(env["HOME"]) if env.get("HOME") else None)
    explicit: tuple[Path, str] | None = None
    if c.profile:
        explicit = (_expand_home(c.profile, home_dir), f"{where}.profile")
    elif env.get(ENV_CREDENTIALS_FILE):
        explicit = (_expand_home(env[ENV_CREDENTIALS_FILE], home_dir), ENV_CREDENTIALS_FILE)
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit[0])
    else:
        if home_dir is not None:
            candidates.append(home_dir / HOME_PROFILE)
        else:
            tried.append(f"profile file ~/{HOME_PROFILE} (HOME unset)")
        if system_profile is not None:
            candidates.append(system_profile)
    for path in candidates:
        read = await asyncio.to_thread(read_profile, path, c.profile_section, None)
        assert read is not None
        if read.signature is None:
            if explicit is not None:
                raise CredentialsError(f"profile file {path} (set by {explicit[1]}): file not found")
            tried.append(f"profile file {path} (not found)")
        elif read.credentials is None:
            tried.append(f"profile file {path} ({read.reason})")
        else:
            return ProfileProvider(path, c.profile_section, read, clock, check_interval)
    return None


async def _cvm_role(
    c: CredentialsConfig,
    sessions: _Sessions,
    metadata_url: str,
    clock: Callable[[], float],
    probe_timeout: float,
    refresh_timeout: float,
    retry_delay: float,
) -> CvmRoleProvider | CredentialsError:
    """The instance's role with its first keys, or why there is none."""
    metadata = sessions.get(trust_env=False)
    try:
        role, discovered = c.cvm_role, False
        if not role:
            role, discovered = await discover_role(metadata, metadata_url, probe_timeout), True
        provider = CvmRoleProvider(
            metadata, metadata_url, role, discovered, clock, probe_timeout, retry_delay
        )
        await provider.prime()
    except CredentialsError as exc:
        return exc
    provider.timeout = refresh_timeout
    return provider


def _expand_home(text: str, home: Path | None) -> Path:
    if home is not None and (text == "~" or text.startswith("~/")):
        return home / text[2:]
    return Path(os.path.expanduser(text))
