"""The scenario behind `--demo`: a simulator full of realistic tasks and the config that watches them.

Every status the two APIs document shows up at least once, plus the awkward cases a dashboard must survive:
a null CDB status, a status value the docs never mention, and IDs the API does not know at all. Phase times
are seconds at speed 1; the simulator's `speed` compresses them.
"""

from __future__ import annotations

from typing import Final

from exporter.config import Config, parse_config
from exporter.signing import Credentials
from exporter.simulator import Phase, SimTask

# Shaped like a real key pair so it exercises the same code paths, but plainly not one.
DEMO_CREDENTIALS: Final = Credentials(
    secret_id="AKIDDEMO0000000000000000NOTAREALKEY",
    secret_key="demo-secret-key-not-valid-anywhere",
)
DEMO_REGION: Final = "ap-guangzhou"
DEMO_OTHER_REGION: Final = "ap-shanghai"

# Watched by the demo config but unknown to the simulator: they must surface as "not found".
DEMO_UNKNOWN_FLOW_ID: Final = 3399
DEMO_UNKNOWN_ASYNC_REQUEST_ID: Final = "5b0d7e21-4c3a9f08-a16e2d5b-0f9c8e73"

_MINUTE: Final = 60.0


def _mariadb_flows() -> list[SimTask]:
    running, succeeded, failed = 2, 0, 1
    return [
        SimTask("mariadb", "3340", (Phase(0, succeeded),)),
        SimTask("mariadb", "3341", (Phase(0, failed),)),
        SimTask("mariadb", "3342", (Phase(0, running), Phase(45, succeeded))),
        SimTask("mariadb", "3343", (Phase(0, running), Phase(90, failed))),
        # A large instance resize: still running long after everything else has settled.
        SimTask("mariadb", "3344", (Phase(0, running), Phase(40 * _MINUTE, succeeded))),
        # Watched in the other region; the API looks flows up by ID alone.
        SimTask("mariadb", "3345", (Phase(0, running), Phase(2 * _MINUTE, succeeded))),
    ]


def _cdb_async_requests() -> list[SimTask]:
    return [
        SimTask(
            "cdb",
            "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7",
            (Phase(0, "SUCCESS", "Dropped the database table successfully."),),
        ),
        SimTask(
            "cdb",
            "a3c1e8d2-5b7f4a90-c2e6d1f8-7e4b9a03",
            (
                Phase(
                    0, "FAILED", "Failed to modify the parameters: innodb_buffer_pool_size is out of range."
                ),
            ),
        ),
        SimTask(
            "cdb",
            "2d8f6b1e-93a4c7d0-5e1f8b2a-c6d3e9f4",
            (
                Phase(0, "INITIAL", "The task has been created."),
                Phase(20, "RUNNING", "Upgrading the instance specification."),
                Phase(4 * _MINUTE, "SUCCESS", "The instance specification has been upgraded."),
            ),
        ),
        SimTask(
            "cdb",
            "7c4e2a9b-1f6d8e3c-b5a07d4f-e2c9b6a1",
            (
                Phase(0, "RUNNING", "Creating a physical backup."),
                Phase(30, "PAUSED", "The backup task is being terminated."),
            ),
        ),
        SimTask(
            "cdb",
            "e1b7d4c9-6a2f0e8b-3d9c5a1e-84f6b2d7",
            (Phase(0, "UNDEFINED", "Waiting for the maintenance window to start the switch."),),
        ),
        SimTask(
            "cdb",
            "9f3a6c2e-d8b14e7a-0c5f9d3b-a7e2c6f1",
            (Phase(0, "KILLED", "The task was terminated by the user."),),
        ),
        SimTask("cdb", "4b8e1d6a-c3f79a2e-e6d04b8c-1a5f7c3d", (Phase(0, None, None),)),
        # A status value no documentation lists: the exporter must report it rather than drop it.
        SimTask(
            "cdb",
            "c6a9f2d4-7e3b1c8f-9d2a6e4b-3f8c1a7e",
            (
                Phase(0, "RUNNING", "Switching the primary instance."),
                Phase(75, "ROLLBACK", "The switch failed and is being rolled back."),
            ),
        ),
    ]


def demo_tasks() -> list[SimTask]:
    """Fresh task objects on every call, so callers can tweak their copy."""
    return _mariadb_flows() + _cdb_async_requests()


def demo_watch() -> dict[str, list[object]]:
    """The `watch` section of the demo config (the region default is DEMO_REGION)."""
    return {
        "mariadb_flows": [
            3340,
            {"id": 3341, "labels": {"team": "dba"}},
            3342,
            3343,
            {"id": 3344, "labels": {"team": "dba", "change": "resize-prod-db"}},
            {"id": 3345, "region": DEMO_OTHER_REGION},
            DEMO_UNKNOWN_FLOW_ID,
        ],
        "cdb_async_requests": [
            "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7",
            {"id": "a3c1e8d2-5b7f4a90-c2e6d1f8-7e4b9a03", "labels": {"team": "app"}},
            "2d8f6b1e-93a4c7d0-5e1f8b2a-c6d3e9f4",
            "7c4e2a9b-1f6d8e3c-b5a07d4f-e2c9b6a1",
            "e1b7d4c9-6a2f0e8b-3d9c5a1e-84f6b2d7",
            "9f3a6c2e-d8b14e7a-0c5f9d3b-a7e2c6f1",
            "4b8e1d6a-c3f79a2e-e6d04b8c-1a5f7c3d",
            "c6a9f2d4-7e3b1c8f-9d2a6e4b-3f8c1a7e",
            DEMO_UNKNOWN_ASYNC_REQUEST_ID,
        ],
    }


def demo_config(url: str, speed: float = 1.0) -> Config:
    """The exporter config for `--demo`: both APIs at the simulator on `url`, polling sped up like its tasks.

    Credentials stay empty here; demo mode hands DEMO_CREDENTIALS to the daemon directly.
    """
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    # Intervals short enough that the 45 s and 90 s flows visibly change state on a dashboard.
    document = {
        "region": DEMO_REGION,
        "apis": {"mariadb": {"endpoint": url}, "cdb": {"endpoint": url}},
        "polling": {
            "interval": max(10.0 / speed, 0.05),
            "finished_interval": max(60.0 / speed, 0.05),
            "timeout": 5.0,
            "max_backoff": max(120.0 / speed, 0.1),
        },
        "watch": demo_watch(),
    }
    return parse_config(document, "<demo>", env={})
