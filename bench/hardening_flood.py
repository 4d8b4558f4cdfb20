"""Hardening part: a flood of malformed requests (issue 19, finding 1). Each carries the task API's token or a
basic-auth password in the header line the parser refuses (a token ending in `\\r`, a space before the
colon), as a token file with Windows line endings or a hand-written header would. Measured: the requests
answered, the bytes the HTTP server's own lines (loggers `aiohttp.*`, `exporter.httpserver`) add to the
exporter's log per 1,000 of them at `--log.level debug` (at info they add none), whether any credential or
traceback reached the log, and each API's quota utilisation and throttled requests without and with it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

from bench import workload as wl
from bench.common import Settings
from bench.hardening_stage import Log, Row, Sizes, Stage, quota_rows, quota_use

_PASSWORD = "flood-password-3c9e"


def bad_requests(token: str) -> tuple[bytes, ...]:
    basic = base64.b64encode(f"prometheus:{_PASSWORD}".encode()).decode()
    return (
        f"GET /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\r\n\r\n".encode(),
        f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization : Basic {basic}\r\n\r\n".encode(),
    )


async def flood(address: str, clients: int, seconds: float, requests: tuple[bytes, ...]) -> dict[str, int]:
    """`clients` loops each sending one malformed request per connection and reading until the close."""
    host, port = address.rsplit(":", 1)
    counts = {"sent": 0, "answered_400": 0, "failed": 0}
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        while time.monotonic() < deadline:
            raw = requests[(index + counts["sent"]) % len(requests)]
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(raw)
                answer = await asyncio.wait_for(reader.read(), 10)
                writer.close()
            except (OSError, TimeoutError):
                counts["failed"] += 1
                continue
            counts["sent"] += 1
            counts["answered_400"] += answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))

    await asyncio.gather(*(client(index) for index in range(clients)))
    return counts


_SERVER_LOGGERS = ('"logger": "aiohttp', '"logger": "exporter.httpserver"')


def _log_bytes(lines: list[str], server_only: bool = False) -> int:
    chosen = [line for line in list(lines) if not server_only or any(s in line for s in _SERVER_LOGGERS)]
    return sum(len(line.encode()) + 1 for line in chosen)


def bad_request_flood(settings: Settings, sizes: Sizes, workdir: Path, flag: str, log: Log) -> dict[str, Any]:
    work = wl.build(sizes.scrape_tasks, (1e6, 1e6 + 1), seed=settings.seed, quotas=settings.quotas)
    with Stage("flood", workdir, settings, flag) as stage:
        stage.simulator(work)
        exporter, address, _ = stage.exporter(work.watch(), log_level="debug")
        time.sleep(sizes.warmup_s)
        log(f"bad-request flood: {work.size} tasks, {sizes.scrape_s:g} s without it")
        quiet = (time.time(), time.time() + sizes.scrape_s)
        time.sleep(sizes.scrape_s)
        log(f"bad-request flood: {sizes.scrape_s:g} s with {sizes.flood_clients} clients")
        stage.stats.sample()
        requests = bad_requests(stage.token)
        before, server_before = _log_bytes(exporter.lines), _log_bytes(exporter.lines, server_only=True)
        started = time.time()
        counts = asyncio.run(flood(address, sizes.flood_clients, sizes.scrape_s, requests))
        ended = time.time()
        stage.stats.sample()
        time.sleep(0.5)  # lines the exporter wrote at the end of the flood reach the reader thread
        grown = _log_bytes(exporter.lines) - before
        server_grown = _log_bytes(exporter.lines, server_only=True) - server_before
        text = "\n".join(exporter.lines)
        basic = base64.b64encode(f"prometheus:{_PASSWORD}".encode()).decode()
        out: dict[str, Any] = {
            "tasks": {s: work.count(s) for s in wl.PRODUCTS},
            "clients": sizes.flood_clients,
            "log_level": "debug",
            "quiet": {},
            "flood": {**counts, "seconds": ended - started, "per_s": counts["sent"] / (ended - started)},
            "log_bytes": grown,  # polling's debug lines too
            "server_log_bytes": server_grown,
            "server_log_bytes_per_1000": server_grown * 1000 / max(1, counts["sent"]),
            "credentials_in_log": sum(secret in text for secret in (stage.token, _PASSWORD, basic)),
            "tracebacks_in_log": text.count("Traceback"),
            "exporter_alive": exporter.proc.poll() is None,
        }
        quota_use(stage, settings, {"quiet": quiet, "flood": (started, ended)}, out)
        return out


def flood_rows(part: dict[str, Any]) -> list[Row]:
    fl = part["flood"]
    rows = quota_rows(part, (("quiet", "no flood"), ("flood", "bad-request flood")))
    rows.append((f"bad requests/s, {part['clients']} clients", fl["per_s"], "", None))
    rows.append(
        (
            "  answered 400 / sent",
            f"{fl['answered_400']:,} / {fl['sent']:,}",
            "",
            fl["answered_400"] == fl["sent"],
        )
    )
    rows.append(
        (
            "  server log bytes per 1,000 bad requests (debug)",
            part["server_log_bytes_per_1000"],
            "< 1,000",
            part["server_log_bytes_per_1000"] < 1000,
        )
    )
    rows.append(
        (
            "  credentials / tracebacks in the log",
            f"{part['credentials_in_log']} / {part['tracebacks_in_log']}",
            "0 / 0",
            part["credentials_in_log"] == part["tracebacks_in_log"] == 0,
        )
    )
    return rows
