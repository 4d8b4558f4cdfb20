"""The HTTP endpoints, served by a real aiohttp server on a free port."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path

from aiohttp.test_utils import TestClient

from exporter import __version__
from exporter.catalogue.products import MARIADB
from exporter.config.parser import parse_config
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.daemon.core import API_TOKEN_ENV, Daemon, Options
from exporter.store.database import Store
from exporter.web.app import create_app
from tests.helpers import Samples


async def client_for(aiohttp_client: object) -> TestClient:  # type: ignore[type-arg]
    config = parse_config({}, "empty.yaml", {})
    app = create_app(Daemon(config, StaticProvider(Credentials("id", "key"), "test")))
    return await aiohttp_client(app)  # type: ignore[operator,no-any-return]


async def test_metrics_text_by_default(aiohttp_client: object) -> None:
    client = await client_for(aiohttp_client)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = Samples(await response.text())
    assert samples.get("tencentcloud_exporter_build_info", version=__version__) == 1


async def test_metrics_openmetrics_when_asked(aiohttp_client: object) -> None:
    client = await client_for(aiohttp_client)
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")


async def test_metrics_gzip_when_accepted(aiohttp_client: object) -> None:
    client = await client_for(aiohttp_client)
    response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    body = gzip.decompress(await response.read()).decode()
    assert "tencentcloud_exporter_build_info" in body
    plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers


async def test_landing_health_and_readiness(aiohttp_client: object) -> None:
    client = await client_for(aiohttp_client)
    landing = await client.get("/")
    page = await landing.text()
    assert landing.headers["Content-Type"].startswith("text/html")
    assert __version__ in page
    assert 'href="metrics"' in page
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200
    assert (await client.get("/nope")).status == 404


async def test_config_page_hides_secrets(aiohttp_client: object) -> None:
    config = parse_config(
        {
            "credentials": {"secret_id": "AKIDshown", "secret_key": "s3cr3t-key", "token": "t0ken"},
            "region": "ap-guangzhou",
            "watch": {"mariadb_flows": [3340]},
        },
        "c.yaml",
        {},
    )
    app = create_app(Daemon(config, StaticProvider(Credentials("id", "key"), "test")))
    client = await aiohttp_client(app)  # type: ignore[operator]
    page = await (await client.get("/-/config")).text()
    assert "s3cr3t-key" not in page
    assert "t0ken" not in page
    assert page.count("<secret>") == 2
    assert "AKIDshown" in page
    assert "id: '3340'" in page


async def test_registration_that_cannot_be_saved_answers_503_and_keeps_watching(
    aiohttp_client: object, tmp_path: Path
) -> None:
    path = tmp_path / "store.db"
    config = parse_config({"region": "ap-guangzhou"}, "c.yaml", {})
    options = Options(storage_path=path)
    daemon = Daemon(config, StaticProvider(Credentials("id", "key"), "test"), options, {API_TOKEN_ENV: "tok"})
    daemon.db = Store(path, busy_timeout=0.05)  # give up on a locked file at once rather than after 5 s
    client = await aiohttp_client(create_app(daemon))  # type: ignore[operator]
    auth = {"Authorization": "Bearer tok"}
    # Another process holds the file's write lock, as a backup tool or a stuck writer might.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        answer = await client.post("/api/v1/tasks", json={"product": MARIADB.name, "id": 5}, headers=auth)
        assert answer.status == 503
        assert "not yet saved" in (await answer.json())["error"]
        listed = await (await client.get("/api/v1/tasks", headers=auth)).json()
        assert [t["id"] for t in listed["tasks"]] == ["5"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    await daemon.db.flush()  # the store tries again once the lock is gone
    saved = sqlite3.connect(path).execute("SELECT count(*) FROM registrations").fetchone()
    assert saved == (1,)
