"""One daemon per store file: a second is refused (exit 2, naming the holder's PID), and the lock goes with
the process that held it, however it ended."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.store.database import Store, StoreError
from tests.helpers import ENV, DaemonProcess, wait_for


async def test_a_second_store_on_one_file_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    first = Store(path)
    await first.open()
    second = Store(path)
    with pytest.raises(StoreError) as caught:
        await second.open()
    assert str(caught.value).startswith(f"{path}: in use by another exporter process (PID {os.getpid()}, ")
    await second.close()
    await first.close()
    again = Store(path)
    await again.open()  # closed: the lock is free
    await again.close()


def test_two_daemons_on_one_store_the_second_exits_2_naming_the_first(tmp_path: Path) -> None:
    """Before: both ran, polling the same tasks twice, each blind to the other's registrations."""
    store = tmp_path / "data" / "store.db"
    config = tmp_path / "config.yaml"
    config.write_text("region: ap-guangzhou\ncredentials: {cvm_role: false}\n")
    args = ["--config.file", str(config), "--storage.path", str(store)]
    with DaemonProcess(args, env=ENV) as first:
        second = subprocess.run(
            [sys.executable, "-m", "exporter", *args, "--web.listen-address", "127.0.0.1:0"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **ENV},
        )
        assert second.returncode == 2, second.stderr
        assert f"error: {store}: in use by another exporter process (PID {first.pid}, " in second.stderr
        assert first.returncode is None  # the first goes on
        first.kill()  # no chance to unlock: the kernel drops the lock with the process
    with DaemonProcess(args, env=ENV) as third:
        wait_for(lambda: third.get("/-/ready")[0] == 200, 10, "the next daemon to start on the store")
