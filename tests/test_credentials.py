"""The credential chain: config, environment, profile file, CVM role (metadata service), STS AssumeRole.

The metadata service and STS are real aiohttp servers on loopback ports (tests/fake_metadata.py); time is a
FakeClock shared by the providers and the fakes, so expiry is stepped through without sleeping. Every test
also proves that no key, token or secret id reaches a log record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from exporter.catalogue.products import BY_NAME, CDB, MARIADB
from exporter.config.parser import ConfigError, CredentialsConfig, parse_config
from exporter.credentials.chain import CredentialProvider, CredentialsError, open_provider, refresh_time
from exporter.credentials.signing import Credentials
from exporter.polling.client import ApiClient
from exporter.simulator import Phase, SimTask, Simulator
from tests.fake_metadata import FakeMetadata, FakeSts
from tests.helpers import DaemonProcess, FakeClock

ROLE_ARN = "qcs::cam::uin/100000000001:roleName/task-exporter"


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
def nowhere(tmp_path: Path) -> dict[str, Any]:
    """open_provider arguments under which no profile file exists."""
    return {"home": tmp_path / "home", "system_profile": tmp_path / "etc" / "credentials"}


WHERE = "c.yaml: credentials"  # where open_provider says the section is


def config(**credentials: object) -> CredentialsConfig:
    """The `credentials:` section of a config file `c.yaml`."""
    return parse_config({"credentials": credentials, "region": "ap-guangzhou"}, "c.yaml", {}).credentials


def write_profile(path: Path, secret_id: str, secret_key: str, section: str = "default") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"[other]\nsecret_id = x\n\n[{section}]\nsecret_id = {secret_id}\nsecret_key = {secret_key}\n"
    )
    return path


@asynccontextmanager
async def opened(*args: Any, **kwargs: Any) -> AsyncIterator[CredentialProvider]:
    """open_provider (for the default account's section at WHERE unless told), closed afterwards."""
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


async def eventually(predicate: Callable[[], Awaitable[bool]], within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------------ the chain


async def test_sources_are_tried_in_the_sdk_order(
    tmp_path: Path, secrets: set[str], clock: FakeClock, nowhere: dict[str, Any]
) -> None:
    secrets.update({"AKIDcfg", "cfgkey", "AKIDenv", "envkey", "envtoken", "AKIDprof", "profkey"})
    home = nowhere["home"]
    write_profile(home / ".tencentcloud" / "credentials", "AKIDprof", "profkey")
    env = {"TENCENTCLOUD_SECRET_ID": "AKIDenv", "TENCENTCLOUD_SECRET_KEY": "envkey"}
    env["TENCENTCLOUD_SESSION_TOKEN"] = "envtoken"
    async with FakeMetadata(clock=clock, secrets=secrets) as fake:
        kwargs = {**nowhere, "metadata_url": fake.url, "clock": clock}
        async with opened(config(secret_id="AKIDcfg", secret_key="cfgkey"), env, **kwargs) as p:
            assert (p.source, await p.get()) == ("config file", Credentials("AKIDcfg", "cfgkey"))
        async with opened(config(), env, **kwargs) as p:
            assert (p.source, await p.get()) == ("environment", Credentials("AKIDenv", "envkey", "envtoken"))
        async with opened(config(), {}, **kwargs) as p:
            assert p.source == f"profile file {home / '.tencentcloud' / 'credentials'} [default]"
            assert await p.get() == Credentials("AKIDprof", "profkey")
            assert p.identity == f"profile:{home / '.tencentcloud' / 'credentials'}[default]"
        assert fake.listings == fake.fetches == 0  # never asked while an earlier source had keys
        (home / ".tencentcloud" / "credentials").unlink()
        async with opened(config(), {}, **kwargs) as p:
            assert p.source == "CVM role exporter-role (metadata service)"
            assert p.identity == "cvm-role:exporter-role"
            assert await p.get() == fake.issued[-1]
            assert (await p.get()).token
        assert (fake.listings, fake.fetches) == (1, 1)


async def test_profile_file_locations_sections_and_quotes(
    tmp_path: Path, secrets: set[str], nowhere: dict[str, Any]
) -> None:
    secrets.update({"AKIDa", "keya", "AKIDb", "keyb", "AKIDc", "keyc", "AKIDd", "keyd"})
    off = {**nowhere, "metadata_url": "http://127.0.0.1:9/unused/"}
    # /etc/tencentcloud/credentials when there is none in the home directory
    write_profile(nowhere["system_profile"], "AKIDa", "keya")
    async with opened(config(cvm_role=False), {}, **off) as p:
        assert await p.get() == Credentials("AKIDa", "keya")
    # TENCENTCLOUD_CREDENTIALS_FILE replaces the default locations
    env_file = write_profile(tmp_path / "env.ini", "AKIDb", "keyb")
    async with opened(config(cvm_role=False), {"TENCENTCLOUD_CREDENTIALS_FILE": str(env_file)}, **off) as p:
        assert await p.get() == Credentials("AKIDb", "keyb")
    # credentials.profile and profile_section win over both; "~" is the home from the environment
    write_profile(tmp_path / "h" / "prof.ini", "AKIDc", "keyc", section="prod")
    cfg = config(profile="~/prof.ini", profile_section="prod", cvm_role=False)
    env = {"HOME": str(tmp_path / "h"), "TENCENTCLOUD_CREDENTIALS_FILE": str(env_file)}
    async with opened(cfg, env, system_profile=None, metadata_url=off["metadata_url"]) as p:
        assert p.source == f"profile file {tmp_path / 'h' / 'prof.ini'} [prod]"
        assert await p.get() == Credentials("AKIDc", "keyc")
    # quoted values, as the SDKs' documentation writes them
    quoted = tmp_path / "quoted.ini"
    quoted.write_text("[default]\nsecret_id = \"AKIDd\"\nsecret_key = 'keyd'\n")
    async with opened(config(profile=str(quoted), cvm_role=False), {}, **off) as p:
        assert await p.get() == Credentials("AKIDd", "keyd")
    # a file without the section is skipped, and said so
    message = await failure(
        open_provider(config(profile_section="nope", cvm_role=False), {}, where=WHERE, **off), secrets
    )
    assert f"profile file {nowhere['system_profile']} (no [nope] section)" in message


async def test_broken_profile_files_are_errors_that_quote_no_line(
    tmp_path: Path, secrets: set[str], nowhere: dict[str, Any]
) -> None:
    secrets.update({"AKIDleak", "leakkey"})
    off = {**nowhere, "metadata_url": "http://127.0.0.1:9/unused/"}
    broken = tmp_path / "broken.ini"
    broken.write_text("secret_id = AKIDleak\nsecret_key = leakkey\n")  # no section header
    message = await failure(open_provider(config(profile=str(broken)), {}, where=WHERE, **off), secrets)
    assert f"profile file {broken}: not a valid INI file (line 1)" in message
    half = tmp_path / "half.ini"
    half.write_text("[default]\nsecret_id = AKIDleak\n")
    message = await failure(open_provider(config(profile=str(half)), {}, where=WHERE, **off), secrets)
    assert "secret_key is empty while the other half of the key pair is set" in message
    message = await failure(
        open_provider(config(profile=str(tmp_path / "gone.ini")), {}, where=WHERE, **off), secrets
    )
    assert (
        f"profile file {tmp_path / 'gone.ini'} (set by c.yaml: credentials.profile): file not found"
        in message
    )


async def test_profile_rotation_needs_no_restart(
    tmp_path: Path,
    secrets: set[str],
    clock: FakeClock,
    nowhere: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets.update({"AKIDold", "oldkey", "AKIDnew", "newkey-rotated", "AKIDbad"})
    path = write_profile(tmp_path / "p.ini", "AKIDold", "oldkey")
    async with opened(config(profile=str(path)), {}, **nowhere, clock=clock) as p:
        identity = p.identity
        assert await p.get() == Credentials("AKIDold", "oldkey")
        write_profile(path, "AKIDnew", "newkey-rotated")
        clock.advance(0.5)
        assert await p.get() == Credentials("AKIDold", "oldkey")  # checked at most once a second
        clock.advance(1)
        assert await p.get() == Credentials("AKIDnew", "newkey-rotated")
        assert "profile file changed, new keys loaded" in caplog.messages
        # a file that vanishes or is half-written keeps the keys read last
        path.unlink()
        clock.advance(1)
        assert await p.get() == Credentials("AKIDnew", "newkey-rotated")
        clock.advance(1)
        assert await p.get() == Credentials("AKIDnew", "newkey-rotated")
        path.write_text("[default]\nsecret_id = AKIDbad\n")
        clock.advance(1)
        assert await p.get() == Credentials("AKIDnew", "newkey-rotated")
        assert caplog.messages.count("profile file unusable, keeping the keys read before") == 2  # once each
        write_profile(path, "AKIDold", "oldkey")
        clock.advance(1)
        assert await p.get() == Credentials("AKIDold", "oldkey")
        assert p.identity == identity


# ------------------------------------------------------------------------------------------- CVM role


async def test_cvm_role_keys_refresh_ahead_of_expiry_without_blocking(
    secrets: set[str], clock: FakeClock, nowhere: dict[str, Any]
) -> None:
    fake = FakeMetadata(clock=clock, lifetime=600, secrets=secrets)
    async with fake, opened(config(), {}, **nowhere, metadata_url=fake.url, clock=clock) as p:
        first = await p.get()
        assert first == fake.issued[0]
        clock.advance(refresh_time(0, 600) - 1)
        assert await p.get() == first
        assert fake.fetches == 1  # fresh: no request at all

        clock.advance(2)  # inside the refresh window, keys still valid
        fake.delay = 0.3
        loop = asyncio.get_running_loop()
        started = loop.time()
        got = await asyncio.gather(*(p.get() for _ in range(20)))
        assert loop.time() - started < 0.2, "a poll waited for the refresh"
        assert set(got) == {first}

        async def renewed() -> bool:
            return await p.get() != first

        await eventually(renewed)
        assert fake.fetches == 2  # twenty callers, one fetch
        second = await p.get()
        assert second == fake.issued[1]
        assert p.identity == "cvm-role:exporter-role"

        # expired (nothing refreshed it in time): callers wait, and share one fetch
        fake.delay = 0.05
        clock.advance(601)
        got = await asyncio.gather(*(p.get() for _ in range(20)))
        assert set(got) == {fake.issued[2]}
        assert fake.fetches == 3


async def test_failing_metadata_service_keeps_old_keys_until_they_expire(
    secrets: set[str], clock: FakeClock, nowhere: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeMetadata(clock=clock, lifetime=600, secrets=secrets) as fake:
        kwargs = {**nowhere, "metadata_url": fake.url, "clock": clock, "retry_delay": 10.0}
        async with opened(config(), {}, **kwargs) as p:
            first = await p.get()
            fake.fail_status = 500
            clock.advance(301)
            assert await p.get() == first

            def tried(n: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return fake.fetches == n and caplog.messages.count("credentials refresh failed") == n - 1

                return check

            await eventually(tried(2))
            clock.advance(5)
            assert await p.get() == first
            # A window for a wrong early retry to show (an absence needs one; nothing waits on it).
            await asyncio.sleep(0.05)
            assert fake.fetches == 2  # no retry before retry_delay
            clock.advance(10)
            assert await p.get() == first
            await eventually(tried(3))

            clock.advance(300)  # past ExpiredTime
            results = await asyncio.gather(*(p.get() for _ in range(10)), return_exceptions=True)
            assert all(isinstance(r, CredentialsError) for r in results)
            assert fake.fetches == 4  # ten callers, one try
            message = await failure(p.get(), secrets)
            assert (
                "CVM role exporter-role (metadata service): temporary keys expired and not renewed" in message
            )
            assert "HTTP status 500" in message

            fake.fail_status = None  # the service is back
            clock.advance(10)
            assert await p.get() == fake.issued[-1] != first


async def test_configured_discovered_and_disabled_cvm_role(
    secrets: set[str], clock: FakeClock, nowhere: dict[str, Any]
) -> None:
    async with FakeMetadata(clock=clock, secrets=secrets) as fake:
        kwargs = {**nowhere, "metadata_url": fake.url, "clock": clock}
        async with opened(config(cvm_role="exporter-role"), {}, **kwargs) as p:
            assert p.identity == "cvm-role:exporter-role"
            await p.get()
        assert fake.listings == 0  # a configured role is not looked up
        message = await failure(
            open_provider(config(cvm_role="someone-else"), {}, where=WHERE, **kwargs), secrets
        )
        assert f"{fake.url}someone-else: no such role bound to this instance (HTTP 404)" in message
        message = await failure(open_provider(config(cvm_role=False), {}, where=WHERE, **kwargs), secrets)
        assert "CVM role (metadata service disabled by c.yaml: credentials.cvm_role: false)" in message
        assert fake.listings == 0
        fake.role = None
        message = await failure(open_provider(config(), {}, where=WHERE, **kwargs), secrets)
        assert "no CAM role is bound to this instance (HTTP 404)" in message


async def test_nothing_found_names_every_source(
    tmp_path: Path, secrets: set[str], nowhere: dict[str, Any]
) -> None:
    fake = FakeMetadata()
    url = (await fake.start()) + "/latest/meta-data/cam/security-credentials/"
    await fake.stop()  # a closed port: no metadata service here
    message = await failure(
        open_provider(
            config(role_arn=ROLE_ARN),
            {"HOME": str(tmp_path / "home")},
            where=WHERE,
            metadata_url=url,
            system_profile=nowhere["system_profile"],
        ),
        secrets,
    )
    assert message.startswith("no Tencent Cloud credentials found; tried: ")
    for part in (
        "c.yaml: credentials.secret_id/secret_key (empty or absent)",
        "environment TENCENTCLOUD_SECRET_ID/TENCENTCLOUD_SECRET_KEY (unset)",
        f"profile file {tmp_path / 'home' / '.tencentcloud' / 'credentials'} (not found)",
        f"profile file {nowhere['system_profile']} (not found)",
        f"CVM role (metadata service {url}: ClientConnectorError",
        "TKE OIDC (TKE_REGION/TKE_PROVIDER_ID/TKE_WEB_IDENTITY_TOKEN_FILE/TKE_ROLE_ARN unset)",
        "(c.yaml: credentials.role_arn needs base credentials from one of them)",
    ):
        assert part in message
    message = await failure(
        open_provider(config(), {}, where=WHERE, metadata_url=url, system_profile=None), secrets
    )
    assert "profile file ~/.tencentcloud/credentials (HOME unset)" in message


async def test_a_silent_metadata_service_fails_fast(secrets: set[str], nowhere: dict[str, Any]) -> None:
    async with FakeMetadata(secrets=secrets) as fake:
        fake.delay = 3.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        message = await failure(
            open_provider(config(), {}, where=WHERE, **nowhere, metadata_url=fake.url, probe_timeout=0.2),
            secrets,
        )
        assert loop.time() - started < 1.0
        assert f"CVM role (metadata service {fake.url}: no answer within 0.2s)" in message


# ------------------------------------------------------------------------------------------------ STS


async def test_sts_assume_role_is_signed_with_the_base_keys(
    secrets: set[str], clock: FakeClock, nowhere: dict[str, Any]
) -> None:
    base = Credentials("AKIDbase", "base-secret-key")
    secrets.update({base.secret_id, base.secret_key})
    async with FakeSts([base], clock=clock, secrets=secrets) as sts:
        cfg = config(
            secret_id=base.secret_id,
            secret_key=base.secret_key,
            role_arn=ROLE_ARN,
            role_duration="1h",
            sts_endpoint=sts.endpoint,
        )
        async with opened(cfg, {}, **nowhere, clock=clock) as p:
            assert p.source == f"STS AssumeRole {ROLE_ARN} (base credentials: config file)"
            assert p.identity == f"sts:{ROLE_ARN}"
            keys = await p.get()
            assert keys == sts.issued[0]
            assert keys.token
            assert sts.rejected == []
            [call] = sts.calls
            assert (call.secret_id, call.token, call.region) == (base.secret_id, "", "ap-guangzhou")
            assert call.params == {
                "RoleArn": ROLE_ARN,
                "RoleSessionName": "tencentcloud-task-exporter",
                "DurationSeconds": 3600,
            }
            clock.advance(refresh_time(0, 3600) + 1)
            assert await p.get() == keys  # refreshed in the background

            async def renewed() -> bool:
                return await p.get() == sts.issued[-1] != keys

            await eventually(renewed)
            assert len(sts.calls) == 2
            assert p.identity == f"sts:{ROLE_ARN}"


async def test_sts_on_top_of_the_cvm_role_sends_its_token(
    secrets: set[str], clock: FakeClock, nowhere: dict[str, Any]
) -> None:
    role_keys = Credentials("AKIDrole", "role-secret-key", "role-session-token")
    secrets.update({role_keys.secret_id, role_keys.secret_key, role_keys.token})
    async with (
        FakeMetadata(clock=clock, fixed=role_keys, secrets=secrets) as fake,
        FakeSts([role_keys], clock=clock, secrets=secrets) as sts,
    ):
        cfg = config(role_arn=ROLE_ARN, sts_endpoint=sts.endpoint)
        async with opened(cfg, {}, **nowhere, metadata_url=fake.url, clock=clock) as p:
            assert p.source.endswith("(base credentials: CVM role exporter-role (metadata service))")
            assert await p.get() == sts.issued[0]
            assert sts.calls[0].token == role_keys.token
            assert sts.calls[0].params["DurationSeconds"] == 7200


async def test_sts_refusal_at_start_is_reported(
    secrets: set[str], clock: FakeClock, nowhere: dict[str, Any]
) -> None:
    base = Credentials("AKIDbase", "base-secret-key")
    secrets.update({base.secret_id, base.secret_key})
    async with FakeSts([base], clock=clock, secrets=secrets) as sts:
        sts.error_code = "AuthFailure.UnauthorizedOperation"
        cfg = config(
            secret_id=base.secret_id, secret_key=base.secret_key, role_arn=ROLE_ARN, sts_endpoint=sts.endpoint
        )
        message = await failure(open_provider(cfg, {}, where=WHERE, **nowhere, clock=clock), secrets)
        assert (
            f"STS {sts.endpoint} AssumeRole: AuthFailure.UnauthorizedOperation: simulated failure" in message
        )
        wrong = config(
            secret_id="AKIDother", secret_key="other-key", role_arn=ROLE_ARN, sts_endpoint=sts.endpoint
        )
        secrets.update({"AKIDother", "other-key"})
        message = await failure(open_provider(wrong, {}, where=WHERE, **nowhere, clock=clock), secrets)
        assert "AuthFailure.SecretIdNotFound" in message


# --------------------------------------------------------------------------------------------- config


def test_credentials_config_keys_and_their_errors() -> None:
    cfg = parse_config(
        yaml.safe_load(
            "credentials:\n"
            "  profile: /srv/creds.ini\n"
            "  profile_section: prod\n"
            "  cvm_role: off\n"
            f"  role_arn: '{ROLE_ARN}'\n"
            "  role_session_name: exporter@host-1\n"
            "  role_duration: 2h30m\n"
            "  sts_endpoint: https://STS.intl.tencentcloudapi.com\n"
        ),
        "c.yaml",
        {},
    ).credentials
    assert (cfg.profile, cfg.profile_section, cfg.cvm_role, cfg.cvm_role_enabled) == (
        "/srv/creds.ini",
        "prod",
        "",
        False,
    )
    assert (cfg.role_arn, cfg.role_session_name, cfg.role_duration) == (ROLE_ARN, "exporter@host-1", 9000)
    assert cfg.sts_endpoint == "https://sts.intl.tencentcloudapi.com"
    defaults = parse_config({}, "c.yaml", {}).credentials
    assert (defaults.cvm_role_enabled, defaults.role_session_name, defaults.role_duration) == (
        True,
        "tencentcloud-task-exporter",
        7200,
    )
    assert (
        parse_config({"credentials": {"cvm_role": "ops-role"}}, "c.yaml", {}).credentials.cvm_role
        == "ops-role"
    )

    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "credentials": {
                    "cvm_role": "a/b",
                    "role_arn": "arn:aws:iam::1:role/x",
                    "role_session_name": "x",
                    "role_duration": "13h",
                    "sts_endpoint": "ftp://sts",
                    "profile_section": "",
                    "profile": 3,
                    "rol_arn": "typo",
                }
            },
            "c.yaml",
            {},
        )
    problems = "\n".join(caught.value.problems)
    for path in (
        "c.yaml: credentials.cvm_role: expected a CAM role name",
        "c.yaml: credentials.role_arn: expected a role ARN like qcs::cam::",
        "c.yaml: credentials.role_session_name: expected 2-128 of",
        "c.yaml: credentials.role_duration: expected whole seconds from 5m to 12h",
        "c.yaml: credentials.sts_endpoint: expected a URL",
        "c.yaml: credentials.profile_section: expected an INI section name",
        "c.yaml: credentials.profile: expected a string",
        "c.yaml: credentials.rol_arn: unknown key",
    ):
        assert path in problems
    with pytest.raises(ConfigError, match=r"credentials.role_duration: expected at least 300s"):
        parse_config({"credentials": {"role_duration": "1m"}}, "c.yaml", {})


# ---------------------------------------------------------------------------------------- end to end


async def test_metadata_keys_sign_a_real_call_to_the_simulator(
    secrets: set[str], nowhere: dict[str, Any]
) -> None:
    role_keys = Credentials("AKIDe2e", "e2e-secret-key", "e2e-session-token")
    secrets.update({role_keys.secret_id, role_keys.secret_key, role_keys.token})
    simulator = Simulator([role_keys])
    simulator.add_task(SimTask(MARIADB.name, "4242", (Phase(0, 2),)))
    endpoint = await simulator.start()
    try:
        async with FakeMetadata(fixed=role_keys, lifetime=3600, secrets=secrets) as fake:
            cfg = parse_config(
                {"region": "ap-guangzhou", "apis": {MARIADB.name: {"endpoint": endpoint}}}, "c.yaml", {}
            )
            async with opened(cfg.credentials, {}, **nowhere, metadata_url=fake.url) as provider:
                keys = await provider.get()
                async with aiohttp.ClientSession() as session:
                    client = ApiClient(session, timeout=5.0)
                    outcome = await client.describe(
                        BY_NAME[MARIADB.name], endpoint, "ap-guangzhou", keys, "4242"
                    )
                    assert outcome.ok, outcome
                    assert outcome.observation is not None
                    unsigned = Credentials(role_keys.secret_id, role_keys.secret_key)  # the token matters
                    refused = await client.describe(
                        BY_NAME[MARIADB.name], endpoint, "ap-guangzhou", unsigned, "4242"
                    )
                    assert refused.code == "AuthFailure.TokenFailure"
    finally:
        await simulator.stop()


async def test_the_real_daemon_polls_with_cvm_role_keys_from_the_metadata_service(tmp_path: Path) -> None:
    """End to end in a subprocess: no keys in the config or the environment, only a CAM role."""
    temporary = Credentials("AKIDcvmrole", "cvm-role-temporary-key", "cvm-role-token")
    simulator = Simulator([temporary])
    simulator.add_task(SimTask(MARIADB.name, "3340", (Phase(0, 2),)))
    sim_url = await simulator.start()
    metadata = FakeMetadata(fixed=temporary)
    try:
        async with metadata:
            document = {
                "credentials": {"metadata_url": metadata.url},
                "region": "ap-guangzhou",
                "apis": {MARIADB.name: {"endpoint": sim_url}, CDB.name: {"endpoint": sim_url}},
                "polling": {"interval": "200ms"},
                "watch": {"mariadb_flows": [3340]},
            }
            (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
            # HOME without a profile file, and no keys in the environment: the CAM role is all there is.
            env = {"HOME": str(tmp_path), "TENCENTCLOUD_SECRET_ID": "", "TENCENTCLOUD_SECRET_KEY": ""}
            daemon = DaemonProcess(["--config.file", str(tmp_path / "config.yaml")], env=env)
            # The daemon is a subprocess; the fakes answer on this event loop while blocking calls run aside.
            await asyncio.to_thread(daemon.__enter__)
            try:

                async def polled() -> bool:
                    samples = await asyncio.to_thread(daemon.scrape)
                    return samples.status(MARIADB.name, "3340") == "running"

                for _ in range(100):
                    if await polled():
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("no successful poll with the CVM role's keys")
                lines = list(daemon.lines)
            finally:
                await asyncio.to_thread(daemon.__exit__, None, None, None)
    finally:
        await simulator.stop()
    assert metadata.fetches >= 1
    chosen = [line for line in lines if "credentials source chosen" in line]
    assert chosen
    assert "CVM role" in chosen[0]
    assert all(temporary.secret_key not in line and temporary.token not in line for line in lines)
