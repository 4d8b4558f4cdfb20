"""The simulator tests take their wall clock when each test starts (the `wall` fixture), not at import:
run with the import-time clock ten minutes behind, they still pass. A module-level `WALL = time.time()`
would be ten minutes old and the simulator would answer AuthFailure.SignatureExpire to every SDK call."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

# Tests that pin the simulator's wall clock to `wall` and read times and signatures through the SDKs.
PINNED = [
    "tests/test_simulator_products.py::test_mongodb_start_and_end_times_are_china_standard_time",
    "tests/test_simulator_products.py::test_redis_task_info_fields",
    "tests/test_simulator_products.py::test_postgres_task_set_item",
    "tests/test_simulator_discovery.py::test_cdb_task_list_fields",
    "tests/test_simulator_discovery.py::test_start_time_bounds_are_inclusive",
    "tests/test_simulator_list_parsing.py::test_the_exporters_parser_reads_the_simulators_list_answers",
    "tests/test_simulator_accounts.py::test_quotas_are_counted_per_secret_id",
]


def test_the_wall_fixture_is_near_the_real_clock_when_the_test_starts(wall: float) -> None:
    assert wall == int(wall)
    assert 0 <= time.time() - wall < 5


def test_simulator_tests_pass_when_the_clock_at_import_was_ten_minutes_behind() -> None:
    root = Path(__file__).resolve().parent.parent
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:xdist",
        "-p",
        "no:cacheprovider",
        "-p",
        "tests.shifted_import_clock",
        *PINNED,
    ]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    # Every selected test ran (the parametrised ones once per product), none was skipped or deselected.
    assert passed is not None, result.stdout[-2000:]
    assert int(passed.group(1)) >= len(PINNED)
    assert "skipped" not in result.stdout
    assert "SignatureExpire" not in result.stdout
