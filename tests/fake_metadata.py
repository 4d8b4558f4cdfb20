"""Fakes of the CVM metadata service and of STS, as real aiohttp servers on loopback ports.

FakeMetadata lists one CAM role and hands out temporary keys for it: new ones on every fetch (or fixed ones),
expiring `lifetime` seconds after the fetch by the shared `clock`. FakeSts checks each AssumeRole request's
TC3-HMAC-SHA256 signature with exporter.signing (the functions the simulator uses) and answers with
temporary keys. Given an OidcTrust, it also answers AssumeRoleWithWebIdentity (TKE workload identity) as
the SDKs send it: unsigned (`Authorization: SKIP`), the token being the proof, which must be what the token
file holds at that moment. Every secret either hands out is added to `secrets`, so tests can prove none leaks.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from exporter.credentials.signing import (
    SIGNED_HEADERS,
    Credentials,
    canonical_request,
    parse_authorization,
    signature,
    string_to_sign,
    utc_date,
)

CREDENTIALS_PATH = "/latest/meta-data/cam/security-credentials/"
STS_VERSION = "2018-08-13"
OIDC_PARAMS = {"ProviderId", "WebIdentityToken", "RoleArn", "RoleSessionName", "DurationSeconds"}
_SESSION_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{2,128}")


class _Server:
    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.base = ""

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> str:
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        return self.base

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class FakeMetadata(_Server):
    """`GET .../security-credentials/` lists `role` (404 when None); `GET .../<role>` returns its keys."""

    def __init__(
        self,
        role: str | None = "exporter-role",
        lifetime: float = 600.0,
        clock: Callable[[], float] = time.time,
        fixed: Credentials | None = None,
        secrets: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.role = role
        self.lifetime = lifetime
        self.clock = clock
        self.fixed = fixed
        self.secrets = secrets if secrets is not None else set()
        self.delay = 0.0  # seconds before each answer
        self.fail_status: int | None = None  # answer key fetches with this HTTP status
        self.listings = 0
        self.fetches = 0  # key requests received, failed ones included
        self.issued: list[Credentials] = []
        self._serial = itertools.count(1)

    @property
    def url(self) -> str:
        """What open_provider takes as `metadata_url`."""
        return self.base + CREDENTIALS_PATH

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(CREDENTIALS_PATH, self._list)
        app.router.add_get(CREDENTIALS_PATH + "{role}", self._keys)
        return app

    async def _list(self, request: web.Request) -> web.Response:
        self.listings += 1
        await asyncio.sleep(self.delay)
        if self.role is None:
            return web.Response(status=404, text="not found")
        return web.Response(text=self.role)

    async def _keys(self, request: web.Request) -> web.Response:
        self.fetches += 1
        await asyncio.sleep(self.delay)
        if request.match_info["role"] != self.role:
            return web.Response(status=404, text="not found")
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="metadata service unavailable")
        if self.fixed is not None:
            keys = self.fixed
        else:
            n = next(self._serial)
            keys = Credentials(
                f"AKIDtmp{n}x{uuid.uuid4().hex[:8]}",
                f"tmpkey-{uuid.uuid4().hex}",
                f"tok-{n}-{uuid.uuid4().hex}",
            )
        self.issued.append(keys)
        self.secrets.update((keys.secret_id, keys.secret_key, keys.token))
        expired = int(self.clock() + self.lifetime)
        document = {
            "TmpSecretId": keys.secret_id,
            "TmpSecretKey": keys.secret_key,
            "ExpiredTime": expired,
            "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expired)),
            "Token": keys.token,
            "Code": "Success",
        }
        return web.json_response(document)


@dataclass(frozen=True)
class StsCall:
    secret_id: str  # the base key pair that signed the request ("" for AssumeRoleWithWebIdentity)
    token: str  # its X-TC-Token header, "" when absent
    params: dict[str, Any]
    region: str
    action: str = "AssumeRole"


@dataclass(frozen=True)
class OidcTrust:
    """What FakeSts trusts for AssumeRoleWithWebIdentity: one identity provider and role, and as the token
    whatever `token_file` holds when the request arrives (so a token rotated away is refused)."""

    provider_id: str
    role_arn: str
    token_file: Path
    region: str


class FakeSts(_Server):
    """STS (version 2018-08-13, service `sts`): AssumeRole for the key pairs it knows (and every pair it
    issued), AssumeRoleWithWebIdentity for the `oidc` trust when given."""

    def __init__(
        self,
        known: list[Credentials],
        clock: Callable[[], float] = time.time,
        secrets: set[str] | None = None,
        oidc: OidcTrust | None = None,
    ) -> None:
        super().__init__()
        self.known = {c.secret_id: c for c in known}
        self.clock = clock
        self.secrets = secrets if secrets is not None else set()
        self.oidc = oidc
        self.calls: list[StsCall] = []
        self.rejected: list[str] = []  # error codes sent
        self.error_code: str | None = None  # answer every request with this error
        self.raw_answer: tuple[int, bytes] | None = None  # answer with this HTTP status and body instead
        self.delay = 0.0  # seconds before each answer
        self.requests = 0  # requests received, refused ones included
        self.issued: list[Credentials] = []
        self._serial = itertools.count(1)

    @property
    def endpoint(self) -> str:
        return self.base

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._dispatch)
        return app

    async def _dispatch(self, request: web.Request) -> web.Response:
        self.requests += 1
        await asyncio.sleep(self.delay)
        if self.raw_answer is not None:
            status, body = self.raw_answer
            return web.Response(status=status, body=body, content_type="application/json")
        if request.headers.get("X-TC-Action") == "AssumeRoleWithWebIdentity":
            return await self._assume_role_with_web_identity(request)
        return await self._assume_role(request)

    def _error(self, code: str, message: str) -> web.Response:
        self.rejected.append(code)
        return web.json_response(
            {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": str(uuid.uuid4())}}
        )

    async def _assume_role(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = request.headers
        auth = parse_authorization(headers.get("Authorization", ""))
        if auth is None:
            return self._error("AuthFailure.SignatureFailure", "malformed Authorization")
        if headers.get("X-TC-Action") != "AssumeRole" or headers.get("X-TC-Version") != "2018-08-13":
            return self._error("InvalidAction", "expected AssumeRole 2018-08-13")
        try:
            timestamp = int(headers.get("X-TC-Timestamp", ""))
        except ValueError:
            return self._error("MissingParameter", "X-TC-Timestamp")
        if abs(timestamp - self.clock()) > 300:
            return self._error("AuthFailure.SignatureExpire", "timestamp too far off")
        if auth.service != "sts" or auth.date != utc_date(timestamp) or auth.signed_headers != SIGNED_HEADERS:
            return self._error("AuthFailure.SignatureFailure", "wrong credential scope")
        base = self.known.get(auth.secret_id)
        if base is None:
            return self._error("AuthFailure.SecretIdNotFound", "unknown SecretId")
        canonical = canonical_request("POST", headers.get("Host", ""), headers.get("Content-Type", ""), body)
        expected = signature(base.secret_key, timestamp, "sts", string_to_sign(timestamp, "sts", canonical))
        if not hmac.compare_digest(expected, auth.signature):
            return self._error("AuthFailure.SignatureFailure", "signature mismatch")
        if not hmac.compare_digest(headers.get("X-TC-Token", ""), base.token):
            return self._error("AuthFailure.TokenFailure", "token mismatch")
        params = json.loads(body)
        self.calls.append(
            StsCall(auth.secret_id, headers.get("X-TC-Token", ""), params, headers.get("X-TC-Region", ""))
        )
        if self.error_code is not None:
            return self._error(self.error_code, "simulated failure")
        duration = params.get("DurationSeconds", 7200)
        if not isinstance(params.get("RoleArn"), str) or not isinstance(duration, int):
            return self._error("InvalidParameter", "RoleArn or DurationSeconds")
        return self._answer(duration)

    async def _assume_role_with_web_identity(self, request: web.Request) -> web.Response:
        headers, trust = request.headers, self.oidc
        if trust is None:
            return self._error("InvalidAction", "no OIDC identity provider configured")
        # Unsigned, exactly as the SDKs send it (SkipSign): a TC3 signature would need keys there are not yet.
        if headers.get("Authorization") != "SKIP" or "X-TC-Token" in headers:
            return self._error("AuthFailure.SignatureFailure", "expected Authorization: SKIP and no token")
        if headers.get("X-TC-Version") != STS_VERSION or headers.get("Content-Type") != "application/json":
            return self._error("InvalidParameter", "expected version 2018-08-13 and a JSON body")
        try:
            timestamp = int(headers.get("X-TC-Timestamp", ""))
        except ValueError:
            return self._error("MissingParameter", "X-TC-Timestamp")
        if abs(timestamp - self.clock()) > 300:
            return self._error("AuthFailure.SignatureExpire", "timestamp too far off")
        if headers.get("X-TC-Region") != trust.region:
            return self._error("InvalidParameter", f"region {headers.get('X-TC-Region')!r} is not the IdP's")
        try:
            params = json.loads(await request.read())
        except ValueError:
            return self._error("InvalidParameter", "body is not JSON")
        if not isinstance(params, dict) or set(params) != OIDC_PARAMS:
            return self._error("InvalidParameter", f"expected exactly {sorted(OIDC_PARAMS)}")
        token = params["WebIdentityToken"]
        self.calls.append(StsCall("", "", params, trust.region, "AssumeRoleWithWebIdentity"))
        if self.error_code is not None:
            # Echoes the token, as a careless service might: the client must not repeat it.
            return self._error(self.error_code, f"simulated failure for WebIdentityToken {token}")
        if params["ProviderId"] != trust.provider_id:
            return self._error("ResourceNotFound.IdentityProviderNotExist", "unknown ProviderId")
        if params["RoleArn"] != trust.role_arn:
            return self._error("InvalidParameter.RoleNotExist", "no such role trusts this provider")
        try:
            current = trust.token_file.read_text().strip()
        except OSError:
            current = ""  # no token file: no token is current
        if (
            not isinstance(token, str)
            or not current
            or not hmac.compare_digest(token.encode(), current.encode())
        ):
            return self._error("InvalidParameter.WebIdentityTokenError", "token is not the current one")
        name, duration = params["RoleSessionName"], params["DurationSeconds"]
        if not isinstance(name, str) or not _SESSION_NAME.fullmatch(name):
            return self._error("InvalidParameter", "RoleSessionName")
        if not isinstance(duration, int) or isinstance(duration, bool) or not 0 < duration <= 43200:
            return self._error("InvalidParameter", "DurationSeconds")
        return self._answer(duration)

    def _answer(self, duration: int) -> web.Response:
        n = next(self._serial)
        keys = Credentials(
            f"AKIDsts{n}x{uuid.uuid4().hex[:8]}", f"stskey-{uuid.uuid4().hex}", f"ststok-{uuid.uuid4().hex}"
        )
        self.issued.append(keys)
        self.known[keys.secret_id] = keys  # temporary keys may call AssumeRole in turn
        self.secrets.update((keys.secret_id, keys.secret_key, keys.token))
        expired = int(self.clock()) + duration
        return web.json_response(
            {
                "Response": {
                    "Credentials": {
                        "Token": keys.token,
                        "TmpSecretId": keys.secret_id,
                        "TmpSecretKey": keys.secret_key,
                    },
                    "ExpiredTime": expired,
                    "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expired)),
                    "RequestId": str(uuid.uuid4()),
                }
            }
        )
