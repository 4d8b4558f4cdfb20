"""TKE workload identity (OIDC): STS AssumeRoleWithWebIdentity with the pod's service account token.

STS and the metadata service are real aiohttp servers on free loopback ports (tests/fake_metadata.py), started
and stopped by the fixtures here; the token sits in a directory laid out as the kubelet writes a projected
volume, so rotation is the same atomic symlink swap. Time is a FakeClock shared by the providers and the
fakes: expiry is stepped through without sleeping. No key, token or web identity token may reach a log
record or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from exporter.config.parser import CredentialsConfig
from exporter.credentials.chain import CredentialProvider, CredentialsError, open_provider, refresh_time
from tests.fake_metadata import FakeMetadata, FakeSts, OidcTrust
from tests.helpers import FakeClock

WHERE = "config.yaml: accounts[1].credentials"
REGION = "ap-shanghai"
PROVIDER_ID = "tke-oidc-provider-cls-7f3k2m9q"
POD_ROLE = "qcs::cam::uin/100000000001:roleName/tke-task-exporter"
WRAPPED_ROLE = "qcs::cam::uin/100000000002:roleName/task-exporter-reader"
OIDC_SOURCE = f"TKE OIDC role {POD_ROLE} (STS AssumeRoleWithWebIdentity, provider {PROVIDER_ID})"


def service_account_token() -> str:
    """A fresh JWT-shaped token (header.payload.signature), as Kubernetes projects one."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"aud": "sts.cloud.tencent.com", "sub": "system:serviceaccount:monitoring:exporter"}
    claims["jti"] = uuid.uuid4().hex
    header = json.dumps({"alg": "RS256", "kid": uuid.uuid4().hex[:12]}).encode()
    return f"{part(header)}.{part(json.dumps(claims).encode())}.{part(os.urandom(64))}"


class TokenVolume:
    """A projected service account token as the kubelet writes it: `token` -> `..data/token`, `..data` ->
    a timestamped directory, and rotation swaps `..data` by renaming a new link over it (atomic)."""

    def __init__(self, directory: Path, secrets: set[str]) -> None:
        self.directory = directory
        self.secrets = secrets
        self.current = ""
        self._versions = 0
        directory.mkdir(parents=True)
        (directory / "token").symlink_to(Path("..data") / "token")

    @property
    def path(self) -> Path:
        """What TKE_WEB_IDENTITY_TOKEN_FILE names."""
        return self.directory / "token"

    def write(self, token: str | bytes) -> None:
        self._versions += 1
        version = self.directory / f"..2024_05_01_12_00_{self._versions:02d}.{uuid.uuid4().hex[:6]}"
        version.mkdir()
        if isinstance(token, bytes):
            (version / "token").write_bytes(token)
            token = token.decode("utf-8", "replace")
        else:
            (version / "token").write_text(token)
        link = self.directory / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, self.directory / "..data")
        self.current = token
        if token.strip():
            self.secrets.add(token.strip())

    def rotate(self) -> str:
        self.write(service_account_token())
        return self.current

    def unmount(self) -> None:
        """`token` dangles: reading it fails with ENOENT."""
        (self.directory / "..data").unlink()


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def secrets(caplog: pytest.LogCaptureFixture) -> Iterator[set[str]]:
    """Secrets a test handed out; after it, none may appear in any log record."""
    caplog.set_level(logging.DEBUG)
    found: set[str] = set()
    yield found
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        text = " ".join(
            (record.getMessage(), repr(getattr(record, "fields", "")), str(record.exc_info or ""))
        )
        leaked = [s for s in found if s and s in text]
        assert not leaked, f"secret in log record {record.name}: {record.getMessage()}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def volume(tmp_path: Path, secrets: set[str]) -> TokenVolume:
    """The pod's token volume, holding a first token."""
    token_volume = TokenVolume(tmp_path / "var" / "run" / "secrets" / "tke" / "serviceaccount", secrets)
    token_volume.rotate()
    return token_volume


@pytest.fixture
def tke_env(volume: TokenVolume) -> dict[str, str]:
    """The variables TKE sets in a pod whose service account is bound to POD_ROLE."""
    return {
        "TKE_REGION": REGION,
        "TKE_PROVIDER_ID": PROVIDER_ID,
        "TKE_WEB_IDENTITY_TOKEN_FILE": str(volume.path),
        "TKE_ROLE_ARN": POD_ROLE,
    }


@pytest.fixture
async def sts(clock: FakeClock, secrets: set[str], volume: TokenVolume) -> AsyncIterator[FakeSts]:
    """STS trusting PROVIDER_ID for POD_ROLE with whatever token the volume holds; stopped afterwards."""
    fake = FakeSts(
        [], clock=clock, secrets=secrets, oidc=OidcTrust(PROVIDER_ID, POD_ROLE, volume.path, REGION)
    )
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def not_cvm(clock: FakeClock, secrets: set[str]) -> AsyncIterator[FakeMetadata]:
    """A metadata service without a CAM role (HTTP 404), as on a node with none bound; stopped afterwards."""
    fake = FakeMetadata(role=None, clock=clock, secrets=secrets)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def chain(tmp_path: Path, not_cvm: FakeMetadata, clock: FakeClock) -> dict[str, Any]:
    """open_provider arguments with no profile file and no CVM role: TKE OIDC is what is left."""
    return {
        "home": tmp_path / "home",
        "system_profile": tmp_path / "etc" / "credentials",
        "metadata_url": not_cvm.url,
        "clock": clock,
    }


@asynccontextmanager
async def opened(*args: Any, **kwargs: Any) -> AsyncIterator[CredentialProvider]:
    """open_provider for the account at WHERE (unless told), closed afterwards."""
    provider = await open_provider(*args, **{"where": WHERE, **kwargs})
    try:
        yield provider
    finally:
        await provider.close()


async def failure(awaitable: Awaitable[object], secrets: set[str]) -> str:
    """The CredentialsError message, checked to hold no secret."""
    with pytest.raises(CredentialsError) as caught:
        await awaitable
    message = str(caught.value)
    assert not [s for s in secrets if s and s in message], message
    return message


async def until(predicate: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Waits for a condition that needs awaiting (a provider's get()); polls it, never guesses a delay."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def chosen(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The fields of the last "credentials source chosen" record."""
    records = [r for r in caplog.records if r.getMessage() == "credentials source chosen"]
    assert records
    fields: dict[str, Any] = getattr(records[-1], "fields")  # noqa: B009 (set through `extra`)
    return fields


# ------------------------------------------------------------------------------------------------ tests


async def test_keys_come_from_assume_role_with_web_identity(
    sts: FakeSts,
    volume: TokenVolume,
    tke_env: dict[str, str],
    chain: dict[str, Any],
    not_cvm: FakeMetadata,
    caplog: pytest.LogCaptureFixture,
) -> None:
    creds = CredentialsConfig(role_duration=3600, sts_endpoint=sts.endpoint)
    async with opened(creds, tke_env, **chain) as p:
        assert p.source == OIDC_SOURCE
        assert p.identity == f"tke-oidc:{POD_ROLE}"
        keys = await p.get()
        assert keys == sts.issued[0]
        assert keys.token
        assert sts.rejected == []
        [call] = sts.calls
        assert (call.action, call.region, call.secret_id, call.token) == (
            "AssumeRoleWithWebIdentity",
            REGION,
            "",
            "",
        )
        assert call.params == {
            "ProviderId": PROVIDER_ID,
            "WebIdentityToken": volume.current,
            "RoleArn": POD_ROLE,
            "RoleSessionName": "tencentcloud-task-exporter",
            "DurationSeconds": 3600,
        }
        assert all(s not in repr(p) for s in (keys.secret_key, keys.token, volume.current))
    fields = chosen(caplog)
    assert fields["for"] == WHERE
    assert fields["credentials"] == OIDC_SOURCE
    assert (
        f"CVM role (metadata service {not_cvm.url}: no CAM role is bound to this instance"
        in fields["skipped"]
    )
    assert f"{WHERE}.secret_id/secret_key (empty or absent)" in fields["skipped"]

    # The account's session name and duration are used, as for AssumeRole.
    named = CredentialsConfig(
        role_session_name="exporter@pod-7", role_duration=900, sts_endpoint=sts.endpoint
    )
    async with opened(named, tke_env, **chain) as p:
        assert await p.get() == sts.issued[1]
    assert (sts.calls[1].params["RoleSessionName"], sts.calls[1].params["DurationSeconds"]) == (
        "exporter@pod-7",
        900,
    )


async def test_keys_are_renewed_ahead_of_expiry_by_one_call_nobody_waits_for(
    sts: FakeSts, tke_env: dict[str, str], chain: dict[str, Any], clock: FakeClock
) -> None:
    creds = CredentialsConfig(role_duration=3600, sts_endpoint=sts.endpoint)
    async with opened(creds, tke_env, **chain) as p:
        first = await p.get()
        clock.advance(refresh_time(0, 3600) - 1)
        assert await p.get() == first
        assert sts.requests == 1  # fresh: no request at all

        clock.advance(2)  # inside the refresh window, keys still valid
        sts.delay = 0.3
        loop = asyncio.get_running_loop()
        started = loop.time()
        got = await asyncio.gather(*(p.get() for _ in range(20)))
        assert loop.time() - started < 0.2, "a poll waited for the refresh"
        assert set(got) == {first}

        async def renewed() -> bool:
            return await p.get() != first

        await until(renewed)
        assert sts.requests == 2  # twenty callers, one call
        assert await p.get() == sts.issued[1]
        assert p.identity == f"tke-oidc:{POD_ROLE}"

        # expired before anything renewed them: callers wait, and share one call
        sts.delay = 0.05
        clock.advance(3601)
        got = await asyncio.gather(*(p.get() for _ in range(20)))
        assert set(got) == {sts.issued[2]}
        assert sts.requests == 3
        assert sts.rejected == []


async def test_the_token_file_is_read_again_after_the_kubelet_rotates_it(
    sts: FakeSts, volume: TokenVolume, tke_env: dict[str, str], chain: dict[str, Any], clock: FakeClock
) -> None:
    creds = CredentialsConfig(role_duration=3600, sts_endpoint=sts.endpoint)
    async with opened(creds, tke_env, **chain) as p:
        first = await p.get()
        old_token = volume.current
        new_token = volume.rotate()  # STS now refuses the old token
        clock.advance(refresh_time(0, 3600) + 1)
        assert await p.get() == first

        async def renewed() -> bool:
            return await p.get() == sts.issued[-1] != first

        await until(renewed)
        assert [c.params["WebIdentityToken"] for c in sts.calls] == [old_token, new_token]
        assert sts.rejected == []


async def test_a_failed_renewal_keeps_the_keys_until_they_expire(
    sts: FakeSts,
    volume: TokenVolume,
    tke_env: dict[str, str],
    chain: dict[str, Any],
    clock: FakeClock,
    secrets: set[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    creds = CredentialsConfig(role_duration=3600, sts_endpoint=sts.endpoint)
    async with opened(creds, tke_env, **chain, retry_delay=10.0) as p:
        first = await p.get()
        volume.unmount()
        clock.advance(refresh_time(0, 3600) + 1)
        assert await p.get() == first

        async def failed_once() -> bool:
            return caplog.messages.count("credentials refresh failed") == 1

        await until(failed_once)
        assert await p.get() == first
        assert sts.requests == 1  # no token, no call

        clock.advance(3600)  # past ExpiredTime
        message = await failure(p.get(), secrets)
        assert f"{OIDC_SOURCE}: temporary keys expired and not renewed" in message
        assert (
            f"web identity token file {volume.path} (TKE_WEB_IDENTITY_TOKEN_FILE): cannot read: "
            "No such file or directory" in message
        )

        volume.rotate()  # mounted again
        clock.advance(10)
        assert await p.get() == sts.issued[-1] != first
        assert sts.requests == 2


async def test_part_of_the_tke_environment_is_an_error_naming_what_is_missing(
    tke_env: dict[str, str], chain: dict[str, Any], secrets: set[str]
) -> None:
    partial = {"TKE_REGION": REGION, "TKE_ROLE_ARN": POD_ROLE, "TKE_PROVIDER_ID": ""}  # empty is unset
    message = await failure(open_provider(CredentialsConfig(), partial, where=WHERE, **chain), secrets)
    assert message.startswith("no Tencent Cloud credentials found; tried: ")
    assert (
        "TKE OIDC (environment TKE_PROVIDER_ID, TKE_WEB_IDENTITY_TOKEN_FILE unset while TKE_REGION, "
        "TKE_ROLE_ARN are set: TKE workload identity needs all four)"
    ) in message
    message = await failure(open_provider(CredentialsConfig(), {}, where=WHERE, **chain), secrets)
    assert "TKE OIDC (TKE_REGION/TKE_PROVIDER_ID/TKE_WEB_IDENTITY_TOKEN_FILE/TKE_ROLE_ARN unset)" in message
    # a region that could not be a header value is refused before anything is sent
    bad = {**tke_env, "TKE_REGION": "ap-shanghai\r\nX-Injected: 1"}
    message = await failure(open_provider(CredentialsConfig(), bad, where=WHERE, **chain), secrets)
    assert "TKE OIDC (environment TKE_REGION: expected a region like ap-guangzhou)" in message


async def test_refusals_broken_answers_and_bad_token_files_are_clear_and_secret_free(
    sts: FakeSts,
    volume: TokenVolume,
    tke_env: dict[str, str],
    chain: dict[str, Any],
    secrets: set[str],
) -> None:
    creds = CredentialsConfig(sts_endpoint=sts.endpoint)
    what = f"TKE OIDC (STS {sts.endpoint} AssumeRoleWithWebIdentity: "

    async def refused() -> str:
        return await failure(open_provider(creds, tke_env, where=WHERE, **chain), secrets)

    sts.error_code = "InvalidParameter.WebIdentityTokenError"  # the fake echoes the token in its message
    assert (
        f"{what}InvalidParameter.WebIdentityTokenError: simulated failure for WebIdentityToken <token>)"
        in (await refused())
    )
    sts.error_code = None

    wrong_provider = {**tke_env, "TKE_PROVIDER_ID": "someone-elses-provider"}
    message = await failure(open_provider(creds, wrong_provider, where=WHERE, **chain), secrets)
    assert f"{what}ResourceNotFound.IdentityProviderNotExist: unknown ProviderId)" in message

    keys = {"TmpSecretId": "AKIDhalf", "TmpSecretKey": "half-secret-key"}
    secrets.update(keys.values())
    for status, body, expected in (
        (502, b"bad gateway", "HTTP status 502"),
        (200, b"<html>maintenance</html>", "the answer is not JSON"),
        (200, b"[]", "the answer is not a JSON object"),
        (200, json.dumps({"Response": {}}).encode(), "the answer has no Credentials object"),
        (
            200,
            json.dumps({"Response": {"Credentials": keys, "ExpiredTime": 2000000000}}).encode(),
            "the answer lacks Token",
        ),
        (
            200,
            json.dumps({"Response": {"Credentials": {**keys, "Token": "tok-x"}}}).encode(),
            "the answer has no numeric ExpiredTime",
        ),
    ):
        sts.raw_answer = (status, body)
        assert f"{what}{expected})" in await refused()
    sts.raw_answer = None
    secrets.add("tok-x")

    volume.write("\n")
    message = await refused()
    assert f"TKE OIDC (web identity token file {volume.path} (TKE_WEB_IDENTITY_TOKEN_FILE): empty)" in message
    volume.write(b"eyJ\xff\xfe.not-utf-8")
    message = await refused()
    assert (
        f"TKE OIDC (web identity token file {volume.path} (TKE_WEB_IDENTITY_TOKEN_FILE): not UTF-8 text)"
        in message
    )
    volume.unmount()
    message = await refused()
    assert f"web identity token file {volume.path} (TKE_WEB_IDENTITY_TOKEN_FILE): cannot read" in message
    assert sts.requests == 1 + 1 + 6  # the token file problems never reached STS


async def test_a_cvm_role_found_first_wins_as_in_the_sdks(
    sts: FakeSts,
    tke_env: dict[str, str],
    chain: dict[str, Any],
    clock: FakeClock,
    secrets: set[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeMetadata(clock=clock, secrets=secrets) as metadata:
        on_cvm = {**chain, "metadata_url": metadata.url}
        creds = CredentialsConfig(sts_endpoint=sts.endpoint)
        async with opened(creds, tke_env, **on_cvm) as p:
            assert p.source == "CVM role exporter-role (metadata service)"
            assert await p.get() == metadata.issued[0]
        assert sts.requests == 0
        assert (
            "the CVM role answered first, TKE workload identity in the environment is not used"
            in caplog.messages
        )
        # `cvm_role: false` leaves the node's role alone and takes the pod's
        pod_only = CredentialsConfig(sts_endpoint=sts.endpoint, cvm_role_enabled=False)
        async with opened(pod_only, tke_env, **on_cvm) as p:
            assert p.source == OIDC_SOURCE
            assert await p.get() == sts.issued[0]
        assert metadata.fetches == 1


async def test_use_env_false_leaves_the_environment_keys_to_the_default_account(
    sts: FakeSts,
    tke_env: dict[str, str],
    chain: dict[str, Any],
    secrets: set[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {**tke_env, "TENCENTCLOUD_SECRET_ID": "AKIDenv", "TENCENTCLOUD_SECRET_KEY": "env-secret-key"}
    secrets.update({"AKIDenv", "env-secret-key"})
    creds = CredentialsConfig(sts_endpoint=sts.endpoint)
    async with opened(creds, env, **chain, where="config.yaml: credentials") as p:
        assert p.source == "environment"  # the default account: the environment comes before TKE
    assert sts.requests == 0
    async with opened(creds, env, **chain, use_env=False) as p:
        assert p.source == OIDC_SOURCE
        assert await p.get() == sts.issued[0]
    skipped = "environment TENCENTCLOUD_SECRET_ID/TENCENTCLOUD_SECRET_KEY (only for the default account)"
    assert skipped in chosen(caplog)["skipped"]
    only_env = {k: v for k, v in env.items() if k.startswith("TENCENTCLOUD_")}
    message = await failure(open_provider(creds, only_env, where=WHERE, use_env=False, **chain), secrets)
    assert message.startswith("no Tencent Cloud credentials found; tried: ")
    assert skipped in message
    # keys in the account's own section still come first
    own = CredentialsConfig(secret_id="AKIDown", secret_key="own-secret-key", sts_endpoint=sts.endpoint)
    secrets.update({"AKIDown", "own-secret-key"})
    async with opened(own, env, **chain, use_env=False) as p:
        assert p.source == "config file"
    assert sts.requests == 1


async def test_role_arn_assumes_a_role_with_the_pods_keys(
    sts: FakeSts, tke_env: dict[str, str], chain: dict[str, Any], clock: FakeClock
) -> None:
    creds = CredentialsConfig(role_arn=WRAPPED_ROLE, role_duration=3600, sts_endpoint=sts.endpoint)
    async with opened(creds, tke_env, **chain) as p:
        assert p.source == f"STS AssumeRole {WRAPPED_ROLE} (base credentials: {OIDC_SOURCE})"
        assert p.identity == f"sts:{WRAPPED_ROLE}"
        keys = await p.get()
        web_identity, assume_role = sts.calls
        pod_keys = sts.issued[0]
        assert web_identity.action == "AssumeRoleWithWebIdentity"
        assert assume_role.action == "AssumeRole"
        assert (assume_role.secret_id, assume_role.token) == (pod_keys.secret_id, pod_keys.token)
        assert assume_role.params == {
            "RoleArn": WRAPPED_ROLE,
            "RoleSessionName": "tencentcloud-task-exporter",
            "DurationSeconds": 3600,
        }
        assert keys == sts.issued[1] != pod_keys

        clock.advance(refresh_time(0, 3600) + 1)  # both leases in their refresh window

        async def renewed() -> bool:
            got = await p.get()  # starts the refresh, then sees its result
            return len(sts.issued) == 4 and got not in (keys, pod_keys)

        await until(renewed)
        assert sts.rejected == []
        assert [c.action for c in sts.calls].count("AssumeRoleWithWebIdentity") == 2
