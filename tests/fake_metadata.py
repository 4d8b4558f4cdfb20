"""Fakes of the CVM metadata service and of STS AssumeRole, as real aiohttp servers on loopback ports.

FakeMetadata lists one CAM role and hands out temporary keys for it: new ones on every fetch (or fixed ones),
expiring `lifetime` seconds after the fetch by the shared `clock`. FakeSts checks each AssumeRole request's
TC3-HMAC-SHA256 signature with exporter.signing (the functions the simulator uses) and answers with
temporary keys. Every secret either hands out is added to `secrets`, so tests can prove none leaks.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from exporter.signing import (
    SIGNED_HEADERS,
    Credentials,
    canonical_request,
    parse_authorization,
    signature,
    string_to_sign,
    utc_date,
)

CREDENTIALS_PATH = "/latest/meta-data/cam/security-credentials/"


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

    async def __aenter__(self) -> _Server:
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
    secret_id: str  # the base key pair that signed the request
    token: str  # its X-TC-Token header, "" when absent
    params: dict[str, Any]
    region: str


class FakeSts(_Server):
    """STS AssumeRole (version 2018-08-13, service `sts`) for the key pairs it knows."""

    def __init__(
        self,
        known: list[Credentials],
        clock: Callable[[], float] = time.time,
        secrets: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.known = {c.secret_id: c for c in known}
        self.clock = clock
        self.secrets = secrets if secrets is not None else set()
        self.calls: list[StsCall] = []
        self.rejected: list[str] = []  # error codes sent
        self.error_code: str | None = None  # answer every request with this error
        self.issued: list[Credentials] = []
        self._serial = itertools.count(1)

    @property
    def endpoint(self) -> str:
        return self.base

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._assume_role)
        return app

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
        n = next(self._serial)
        keys = Credentials(
            f"AKIDsts{n}x{uuid.uuid4().hex[:8]}", f"stskey-{uuid.uuid4().hex}", f"ststok-{uuid.uuid4().hex}"
        )
        self.issued.append(keys)
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
