"""The sources of temporary keys: the CVM instance's CAM role, STS AssumeRole and TKE workload identity.

Each is an ExpiringProvider (`expiring`), so its keys are renewed ahead of expiry. HTTP runs on
the event loop, the web identity token file is read in a worker thread. No key, token or web identity token
ever reaches a log record, an exception message or a repr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from exporter.credentials.base import CredentialProvider, CredentialsError, clip, read_regular_file
from exporter.credentials.expiring import ExpiringProvider, http, json_object, temporary_keys
from exporter.credentials.signing import CONTENT_TYPE, Credentials, sign_headers

log = logging.getLogger("exporter.credentials")  # one logger for the whole chain, as before the split

STS_SERVICE = "sts"
STS_ACTION = "AssumeRole"
OIDC_ACTION = "AssumeRoleWithWebIdentity"
STS_VERSION = "2018-08-13"
STS_REGION = "ap-guangzhou"  # STS is global; the SDKs send this region for AssumeRole

# TKE injects these into a pod whose service account is bound to a CAM role (the SDKs' names).
TKE_REGION = "TKE_REGION"
TKE_PROVIDER_ID = "TKE_PROVIDER_ID"
TKE_TOKEN_FILE = "TKE_WEB_IDENTITY_TOKEN_FILE"
TKE_ROLE_ARN = "TKE_ROLE_ARN"
TKE_ENV = (TKE_REGION, TKE_PROVIDER_ID, TKE_TOKEN_FILE, TKE_ROLE_ARN)

_ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,128}")
_REGION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_JWT = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")
_MAX_TOKEN_BYTES = 64 * 1024  # a service account token is a JWT of a few kilobytes


# ------------------------------------------------------------------------------------------- CVM role


async def discover_role(session: aiohttp.ClientSession, url: str, seconds: float) -> str:
    """The CAM role bound to this CVM instance, as the metadata service lists it."""
    what = f"metadata service {url}"
    status, body = await http(session, "GET", url, seconds, what)
    if status == 404:
        raise CredentialsError(f"{what}: no CAM role is bound to this instance (HTTP 404)")
    if status != 200:
        raise CredentialsError(f"{what}: HTTP status {status}")
    lines = body.decode("utf-8", "replace").split()
    if not lines or not _ROLE_NAME.fullmatch(lines[0]):
        raise CredentialsError(f"{what}: the answer is not a CAM role name")
    return lines[0]


class CvmRoleProvider(ExpiringProvider):
    """Temporary keys of the instance's CAM role, from `<metadata_url><role>`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        metadata_url: str,
        role: str,
        discovered: bool,
        clock: Callable[[], float],
        timeout: float,
        retry_delay: float,
    ) -> None:
        super().__init__(f"CVM role {role} (metadata service)", f"cvm-role:{role}", clock, retry_delay)
        self._session = session
        self._url = metadata_url
        self._role = role
        self._discovered = discovered
        self.timeout = timeout

    async def _fetch(self) -> tuple[Credentials, float]:
        what = f"metadata service {self._url}{self._role}"
        status, body = await http(self._session, "GET", self._url + self._role, self.timeout, what)
        if status == 404 and self._discovered:
            # The instance was given another role: follow it (the quota identity stays the first one's).
            role = await discover_role(self._session, self._url, self.timeout)
            if role != self._role:
                fields = {"credentials": self._source, "new_role": role}
                log.info("CVM role changed", extra={"fields": fields})
                self._role = role
                what = f"metadata service {self._url}{role}"
                status, body = await http(self._session, "GET", self._url + role, self.timeout, what)
        if status == 404:
            raise CredentialsError(f"{what}: no such role bound to this instance (HTTP 404)")
        if status != 200:
            raise CredentialsError(f"{what}: HTTP status {status}")
        document = json_object(body, what)
        code = document.get("Code")
        if code != "Success":
            shown = clip(code) if isinstance(code, str) else type(code).__name__
            raise CredentialsError(f"{what}: Code is {shown!r}, expected 'Success'")
        return temporary_keys(document, document.get("ExpiredTime"), what)


# ------------------------------------------------------------------------------------------------ STS


def _unchanged(text: str) -> str:
    return text


def sts_keys(
    status: int, body: bytes, what: str, scrub: Callable[[str], str] = _unchanged
) -> tuple[Credentials, float]:
    """The keys of an STS answer (AssumeRole and AssumeRoleWithWebIdentity answer alike), or why not.

    `scrub` cleans the error text STS sends before it is quoted.
    """
    if status != 200:
        raise CredentialsError(f"{what}: HTTP status {status}")
    response = json_object(body, what).get("Response")
    if not isinstance(response, dict):
        raise CredentialsError(f"{what}: the answer has no Response object")
    error = response.get("Error")
    if isinstance(error, dict):
        code, message = error.get("Code"), error.get("Message")
        code_text = clip(scrub(code)) if isinstance(code, str) and code else "no code"
        message_text = f": {clip(scrub(message))}" if isinstance(message, str) and message else ""
        raise CredentialsError(f"{what}: {code_text}{message_text}")
    keys = response.get("Credentials")
    if not isinstance(keys, dict):
        raise CredentialsError(f"{what}: the answer has no Credentials object")
    return temporary_keys(keys, response.get("ExpiredTime"), what)


class StsProvider(ExpiringProvider):
    """Temporary keys of `role_arn` from STS AssumeRole, signed with the base provider's current keys."""

    def __init__(
        self,
        base: CredentialProvider,
        session: aiohttp.ClientSession,
        endpoint: str,
        role_arn: str,
        session_name: str,
        duration: int,
        clock: Callable[[], float],
        timeout: float,
        retry_delay: float,
    ) -> None:
        super().__init__(
            f"STS AssumeRole {role_arn} (base credentials: {base.source})",
            f"sts:{role_arn}",
            clock,
            retry_delay,
        )
        self._base = base
        self._session = session
        self._endpoint = endpoint.rstrip("/")
        self._role_arn = role_arn
        self._session_name = session_name
        self._duration = duration
        self.timeout = timeout
        self.on_close(base.close)

    async def _fetch(self) -> tuple[Credentials, float]:
        what = f"STS {self._endpoint} {STS_ACTION}"
        try:
            base = await self._base.get()
        except CredentialsError as exc:
            raise CredentialsError(f"{what}: no base credentials: {exc}") from None
        payload = json.dumps(
            {
                "RoleArn": self._role_arn,
                "RoleSessionName": self._session_name,
                "DurationSeconds": self._duration,
            },
            separators=(",", ":"),
        ).encode("utf-8")
        headers = sign_headers(
            base,
            service=STS_SERVICE,
            host=urlsplit(self._endpoint).netloc,
            action=STS_ACTION,
            version=STS_VERSION,
            region=STS_REGION,
            timestamp=int(self._clock()),
            payload=payload,
        )
        status, body = await http(
            self._session, "POST", self._endpoint + "/", self.timeout, what, data=payload, headers=headers
        )
        return sts_keys(status, body, what)


# ---------------------------------------------------------------------------- TKE workload identity


@dataclass(frozen=True)
class TkeIdentity:
    """What TKE tells a pod about its OIDC identity; the token itself stays in its file."""

    region: str
    provider_id: str
    token_file: Path
    role_arn: str


def tke_identity(env: Mapping[str, str]) -> TkeIdentity | None:
    """The pod's TKE identity; None when no TKE_* variable is set.

    Raises CredentialsError when only some are set, naming the missing ones (empty counts as unset).
    """
    missing = [name for name in TKE_ENV if not env.get(name)]
    if len(missing) == len(TKE_ENV):
        return None
    if missing:
        present = [name for name in TKE_ENV if name not in missing]
        raise CredentialsError(
            f"environment {', '.join(missing)} unset while {', '.join(present)} "
            f"{'is' if len(present) == 1 else 'are'} set: TKE workload identity needs all four"
        )
    region = env[TKE_REGION]
    if not _REGION.fullmatch(region) or len(region) > 64:
        raise CredentialsError(f"environment {TKE_REGION}: expected a region like ap-guangzhou")
    return TkeIdentity(region, env[TKE_PROVIDER_ID], Path(env[TKE_TOKEN_FILE]), env[TKE_ROLE_ARN])


def read_token(path: Path) -> str:
    """The web identity token in `path`, without surrounding whitespace. Runs in a worker thread."""
    what = f"web identity token file {path} ({TKE_TOKEN_FILE})"
    try:
        data = read_regular_file(path, _MAX_TOKEN_BYTES)
    except OSError as exc:
        raise CredentialsError(f"{what}: cannot read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > _MAX_TOKEN_BYTES:
        raise CredentialsError(f"{what}: larger than {_MAX_TOKEN_BYTES // 1024} KiB, not a token")
    try:
        token = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise CredentialsError(f"{what}: not UTF-8 text") from None
    if not token:
        raise CredentialsError(f"{what}: empty")
    return token


def _scrubber(token: str) -> Callable[[str], str]:
    """Removes the token, and anything shaped like a JWT, from text STS sends back."""

    def scrub(text: str) -> str:
        return _JWT.sub("<token>", text.replace(token, "<token>"))

    return scrub


class OidcProvider(ExpiringProvider):
    """Temporary keys of the pod's CAM role from STS AssumeRoleWithWebIdentity (TKE workload identity).

    The request is not signed (there are no keys yet: the web identity token is the proof), as the SDKs send
    it: `Authorization: SKIP`. The token file is read afresh for every fetch, since Kubernetes rotates it.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        tke: TkeIdentity,
        session_name: str,
        duration: int,
        clock: Callable[[], float],
        timeout: float,
        retry_delay: float,
    ) -> None:
        super().__init__(
            f"TKE OIDC role {tke.role_arn} (STS {OIDC_ACTION}, provider {tke.provider_id})",
            f"tke-oidc:{tke.role_arn}",
            clock,
            retry_delay,
        )
        self._session = session
        self._endpoint = endpoint.rstrip("/")
        self._tke = tke
        self._session_name = session_name
        self._duration = duration
        self.timeout = timeout

    async def _fetch(self) -> tuple[Credentials, float]:
        what = f"STS {self._endpoint} {OIDC_ACTION}"
        token = await asyncio.to_thread(read_token, self._tke.token_file)
        payload = json.dumps(
            {
                "ProviderId": self._tke.provider_id,
                "WebIdentityToken": token,
                "RoleArn": self._tke.role_arn,
                "RoleSessionName": self._session_name,
                "DurationSeconds": self._duration,
            },
            separators=(",", ":"),
        ).encode("utf-8")
        headers = {
            "Content-Type": CONTENT_TYPE,
            "X-TC-Action": OIDC_ACTION,
            "X-TC-Version": STS_VERSION,
            "X-TC-Timestamp": str(int(self._clock())),
            "X-TC-Region": self._tke.region,
            "Authorization": "SKIP",
        }
        status, body = await http(
            self._session, "POST", self._endpoint + "/", self.timeout, what, data=payload, headers=headers
        )
        return sts_keys(status, body, what, _scrubber(token))
