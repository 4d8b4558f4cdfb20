"""Shard assignment, and the Kubernetes example that derives each replica's shard from its pod ordinal."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from exporter.catalogue.products import CDB, MARIADB
from exporter.cli.main import _options, build_parser
from exporter.config.sharding import Shard

ROOT = Path(__file__).resolve().parent.parent


def test_every_task_has_exactly_one_owner() -> None:
    shards = [Shard(i, 4) for i in range(4)]
    tasks = [(MARIADB.name, str(n)) for n in range(2000)] + [(CDB.name, f"req-{n}") for n in range(2000)]
    owners = Counter(sum(1 for s in shards if s.owns(*t)) for t in tasks)
    assert owners == {1: len(tasks)}
    spread = Counter(shards[0].owner(*t) for t in tasks)
    assert min(spread.values()) > 0.2 * len(tasks)


def test_assignment_is_stable_across_processes_and_versions() -> None:
    # Known answers: if these change, every sharded deployment reshuffles its tasks on upgrade. They hold in
    # any process, unlike Python's salted hash().
    assert [Shard(0, 5).owner(MARIADB.name, n) for n in ("1", "2", "3340")] == [3, 0, 2]
    cdb = ("f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7", "a", "b")
    assert [Shard(0, 3).owner(CDB.name, n) for n in cdb] == [2, 1, 1]


def test_single_shard_owns_everything() -> None:
    assert all(Shard().owns(CDB.name, f"x{n}") for n in range(100))


@pytest.mark.parametrize(("index", "count"), [(3, 3), (-1, 2), (0, 0)])
def test_invalid_shards_are_rejected(index: int, count: int) -> None:
    args = build_parser().parse_args(["--shard.index", str(index), "--shard.count", str(count)])
    with pytest.raises(ValueError, match=r"--shard\.index/--shard\.count"):
        _options(args, None)


def test_statefulset_replicas_match_shard_count_and_index_comes_from_the_ordinal() -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "statefulset.yaml").read_text()))
    [statefulset] = [d for d in documents if d["kind"] == "StatefulSet"]
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    count = int(next(a for a in args if a.startswith("--shard.count=")).split("=", 1)[1])
    assert statefulset["spec"]["replicas"] == count
    [env] = [e for e in container["env"] if e["name"] == "SHARD_INDEX"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    # Every pod's arguments, with its ordinal substituted, are accepted by the real command line.
    for ordinal in range(count):
        argv = [a.replace("$(SHARD_INDEX)", str(ordinal)) for a in args]
        options = _options(build_parser().parse_args(argv), Path("config.yaml"))
        assert options.shard == Shard(ordinal, count)
    probes = {container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]}
    assert probes == {"/-/ready", "/-/healthy"}
