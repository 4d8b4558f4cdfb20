"""What the simulator's test modules share: keys, a fake clock, simulators on free ports, and each product's
official SDK client, which is the judge of whether the simulator speaks the real protocol.

The SDK table (tests/products.py) is written from the SDKs themselves (client class, action, ID parameter),
not from the exporter's catalogue, so a mistake in the catalogue shows up as a disagreement instead of being
copied.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from bench.measure import favour
from exporter.catalogue.products import CDB, MARIADB
from exporter.credentials import signing
from exporter.credentials.signing import Credentials
from exporter.simulator import SimTask, Simulator, SimulatorThread, task_to_dict
from tests.helpers import FakeClock, wait_for
from tests.products import FACTS, LIST_SDKS, SDKS

KEY = Credentials("AKIDsimulatortest0000000000000000001", "simulator-test-secret-key")
TEMP_KEY = Credentials("AKIDsimulatortemp0000000000000000002", "temporary-secret-key", "session-token-1")
REGION = "ap-guangzhou"


@contextlib.contextmanager
def simulators(clock: FakeClock) -> Iterator[Callable[..., SimulatorThread]]:
    """Starts simulators on free ports, accepting KEY and TEMP_KEY; every one is stopped on exit."""
    with contextlib.ExitStack() as stack:

        def start_simulator(*tasks: SimTask, **options: Any) -> SimulatorThread:
            simulator = Simulator([KEY, TEMP_KEY], clock=clock, **options)
            simulator.add_tasks(list(tasks))
            return stack.enter_context(SimulatorThread(simulator))

        yield start_simulator


def sdk_client(product: str, url: str, key: Credentials = KEY, region: str = REGION) -> Any:
    http = HttpProfile(protocol="http", endpoint=url.removeprefix("http://"), reqTimeout=5)
    cred = credential.Credential(key.secret_id, key.secret_key, key.token or None)
    return SDKS[product].client(cred, region, ClientProfile(httpProfile=http))


def sdk_call(client: Any, product: str, task_id: str) -> Any:
    """The product's status action for one ID, through its official client; returns the SDK's model."""
    sdk = SDKS[product]
    request = getattr(sdk.models, f"{sdk.action}Request")()
    if FACTS[product].instance_tasks:
        # The instance's task list; the task is the item with its Id (None when the list lacks it).
        instance, number = task_id.rsplit(":", 1)
        request.InstanceId, request.Limit = instance, 100
        answer = getattr(client, sdk.action)(request)
        return next((t for t in answer.InstanceTaskSet if t.Id == int(number)), None)
    setattr(request, sdk.id_param, int(task_id) if sdk.integer_id else task_id)
    return getattr(client, sdk.action)(request)


def sdk_clients(thread: SimulatorThread, key: Credentials = KEY) -> tuple[Any, Any]:
    """Clients of MariaDB (integer flow IDs) and CDB (string async request IDs), the tests' usual two."""
    return sdk_client(MARIADB.name, thread.url, key), sdk_client(CDB.name, thread.url, key)


def describe_flow(client: Any, flow_id: int) -> Any:
    return sdk_call(client, MARIADB.name, str(flow_id))


def describe_async(client: Any, request_id: str) -> Any:
    return sdk_call(client, CDB.name, request_id)


def sdk_error(call: Callable[[], object]) -> str:
    with pytest.raises(TencentCloudSDKException) as raised:
        call()
    return str(raised.value.code)


def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    status, _, raw = post_for_headers(url, headers, body)
    return status, raw


def post_for_headers(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def signed(
    thread: SimulatorThread,
    payload: dict[str, Any] | bytes,
    *,
    action: str = "DescribeFlow",
    service: str = MARIADB.name,  # the credential scope's
    version: str = "2017-03-12",
    key: Credentials = KEY,
    timestamp: int | None = None,
) -> tuple[dict[str, str], bytes]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = signing.sign_headers(
        key,
        service=service,
        host=thread.url.removeprefix("http://"),
        action=action,
        version=version,
        region=REGION,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        payload=body,
    )
    return headers, body


def error_code(thread: SimulatorThread, headers: dict[str, str], body: bytes) -> str | None:
    status, raw = post(thread.url, headers, body)
    assert status == 200
    response = json.loads(raw)["Response"]
    assert response["RequestId"]
    return response.get("Error", {}).get("Code")


# --------------------------------------------------------------------------- the list actions (discovery)


def sdk_list(client: Any, product: str, **params: Any) -> Any:
    """The product's list action through its official client; returns the SDK's response model."""
    sdk = LIST_SDKS[product]
    request = getattr(SDKS[product].models, f"{sdk.action}Request")()
    request.from_json_string(json.dumps(params))
    return getattr(client, sdk.action)(request)


def sdk_list_items(client: Any, product: str, **params: Any) -> tuple[int, list[Any]]:
    """TotalCount and the items of one page of the product's list action."""
    response = sdk_list(client, product, **params)
    return response.TotalCount, list(getattr(response, LIST_SDKS[product].items) or [])


def sdk_list_raw(client: Any, product: str, params: dict[str, Any]) -> dict[str, Any]:
    """The list action's `Response` as the JSON the simulator sent, through the client's `call_json`."""
    response: dict[str, Any] = client.call_json(LIST_SDKS[product].action, params)["Response"]
    return response


# --------------------------------------------------------------------------- the simulator as a process


class SimulatorProcess:
    """`python -m exporter.simulator` (or `bench.simserver`) as a subprocess on a port it picks itself.

    A context manager: on entry it waits, by polling, until the process has said where it listens and its
    `/_sim/stats` answers; on exit it is stopped with SIGTERM (killed if that does not end it). `lines` is
    everything it wrote on stdout and stderr.
    """

    def __init__(
        self,
        args: list[str],
        module: str = "exporter.simulator",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,  # where `-m` finds the module first
    ) -> None:
        self.args, self.module, self.env, self.cwd = args, module, env, cwd
        self.lines: list[str] = []
        self.url = ""
        self.returncode: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []

    def __enter__(self) -> SimulatorProcess:
        listen = ["--listen", "127.0.0.1:0"] if self.module == "exporter.simulator" else []
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *listen, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.cwd,
        )
        favour(self._proc.pid)
        for stream in (self._proc.stdout, self._proc.stderr):
            reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
            reader.start()
            self._readers.append(reader)
        try:
            wait_for(
                lambda: self._found_url() or self._proc is None or self._proc.poll() is not None, 30, "url"
            )
            if not self.url:
                raise AssertionError(f"{self.module} did not start:\n" + "\n".join(self.lines))
            wait_for(self._answers, 30, f"{self.url}/_sim/stats to answer", interval=0.05)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def _found_url(self) -> bool:
        for line in list(self.lines):
            match = re.search(r"listening on (http://\S+)", line)
            if match is None and line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and event.get("msg") == "listening":
                        self.url = str(event["url"])
            elif match is not None:
                self.url = match.group(1)
        return bool(self.url)

    def _answers(self) -> bool:
        try:
            self.stats()
        except OSError:  # urllib.error.URLError is one
            return False
        return True

    def add_tasks(self, tasks: list[SimTask]) -> None:
        """Adds tasks through the control API, as `Simulator.add_tasks` does in-process."""
        body = json.dumps({"tasks": [task_to_dict(t) for t in tasks]}).encode()
        request = urllib.request.Request(
            self.url + "/_sim/tasks", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"added": len(tasks)}

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_sim/stats", timeout=5) as response:
            stats: dict[str, Any] = json.loads(response.read())
        return stats

    def stop(self) -> int:
        """SIGTERM, then the exit status (killed after 10 s)."""
        proc = self._proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in self._readers:
            reader.join(5)
        self.returncode = proc.returncode
        return proc.returncode

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self.returncode is None:
            self.stop()
        for stream in (self._proc.stdout, self._proc.stderr) if self._proc is not None else ():
            if stream is not None:
                stream.close()
