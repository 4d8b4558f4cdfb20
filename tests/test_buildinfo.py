"""--version and build information: from the image's build-info file, a git checkout read as files, or
unknown; and the build_info metric."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from exporter import __version__, buildinfo
from exporter.buildinfo import UNKNOWN, BuildInfo
from exporter.cli import main as cli
from exporter.exposition.metrics import Metrics
from tests.helpers import Samples

SHA1 = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "89abcdef0123456789abcdef0123456789abcdef"


def run_exporter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# --- --version and build information ---------------------------------------------------------------------


def test_version_prints_what_prometheus_programs_print() -> None:
    result = run_exporter("--version")
    assert result.returncode == 0, result.stderr
    info = buildinfo.read()  # the package the subprocess runs too; in a clone, read from its .git
    python = re.escape(platform.python_version())
    expected = (
        rf"tencentcloud-task-exporter, version {re.escape(__version__)} "
        rf"\(branch: {re.escape(info.branch)}, revision: {info.revision}\)\n"
        rf"  build user:       {re.escape(info.build_user)}\n"
        rf"  build date:       {re.escape(info.build_date)}\n"
        rf"  python version:   {python}\n"
        r"  platform:         [a-z]+/[a-z0-9]+\n"
    )
    assert re.fullmatch(expected, result.stdout), result.stdout
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", info.revision)
    checkout = buildinfo.PACKAGE_DIR.parent
    if shutil.which("git") and (checkout / ".git").exists():
        git = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        if git.returncode == 0:
            assert info.revision == git.stdout.strip(), "read from .git without git, the same answer"
    # The subcommand's parser has the flag too.
    assert run_exporter("healthcheck", "--version").stdout == result.stdout


def test_version_text_layout() -> None:
    info = BuildInfo("9.8.7", SHA1, "release-9.8", "ci@builder", "20261123-10:00:00")
    lines = buildinfo.version_text(info).splitlines()
    assert lines[:3] == [
        f"tencentcloud-task-exporter, version 9.8.7 (branch: release-9.8, revision: {SHA1})",
        "  build user:       ci@builder",
        "  build date:       20261123-10:00:00",
    ]
    assert lines[3] == f"  python version:   {platform.python_version()}"
    assert lines[4] == f"  platform:         {buildinfo.platform_name()}"
    assert len(lines) == 5


def fake_checkout(root: Path, head: str | bytes) -> Path:
    """A directory with a package in it and a .git beside it; returns the package directory."""
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_bytes(head if isinstance(head, bytes) else head.encode())
    package = root / "exporter"
    package.mkdir()
    return package


def test_checkout_with_a_loose_ref(tmp_path: Path) -> None:
    package = fake_checkout(tmp_path, "ref: refs/heads/feature/fleet\n")
    (tmp_path / ".git" / "refs" / "heads" / "feature").mkdir()
    (tmp_path / ".git" / "refs" / "heads" / "feature" / "fleet").write_text(SHA1 + "\n")
    (tmp_path / ".git" / "packed-refs").write_text(f"{SHA2} refs/heads/feature/fleet\n")  # older: loose wins
    assert buildinfo.read(package, "1.0.0") == BuildInfo("1.0.0", SHA1, "feature/fleet")


def test_checkout_with_packed_refs(tmp_path: Path) -> None:
    package = fake_checkout(tmp_path, "ref: refs/heads/main\n")
    (tmp_path / ".git" / "packed-refs").write_text(
        "# pack-refs with: peeled fully-peeled sorted \n"
        f"{SHA2} refs/heads/other\n"
        f"{SHA1} refs/heads/main\n"
        f"{SHA2} refs/tags/v1\n"
        f"^{SHA2}\n"
    )
    assert buildinfo.git_head(package.parent) == (SHA1, "main")


def test_detached_head_and_unborn_branch(tmp_path: Path) -> None:
    detached = fake_checkout(tmp_path / "a", SHA1 + "\n")
    assert buildinfo.git_head(detached.parent) == (SHA1, "HEAD")
    unborn = fake_checkout(tmp_path / "b", "ref: refs/heads/main\n")  # `git init`, nothing committed
    assert buildinfo.git_head(unborn.parent) == (UNKNOWN, "main")


def test_worktree_reads_branches_from_the_common_dir(tmp_path: Path) -> None:
    main = tmp_path / "main"
    fake_checkout(main, "ref: refs/heads/main\n")
    (main / ".git" / "packed-refs").write_text(f"{SHA2} refs/heads/topic\n")
    worktree_git = main / ".git" / "worktrees" / "topic"
    worktree_git.mkdir(parents=True)
    (worktree_git / "HEAD").write_text("ref: refs/heads/topic\n")
    (worktree_git / "commondir").write_text("../..\n")
    checkout = tmp_path / "topic"
    checkout.mkdir()
    (checkout / ".git").write_text(f"gitdir: {worktree_git}\n")
    assert buildinfo.git_head(checkout) == (SHA2, "topic")


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"ref: refs/heads/../../../../etc/passwd\n",
        b"ref: ../HEAD\n",
        b"ref: refs/heads/a b\n",
        b"ref: refs/heads/main.lock\n",
        b"not a ref at all\n",
        SHA1[:20].encode(),
        b"x" * 200_000,
    ],
)
def test_odd_heads_read_as_unknown(tmp_path: Path, head: bytes) -> None:
    package = fake_checkout(tmp_path, head)
    assert buildinfo.read(package, "1.0.0") == BuildInfo("1.0.0")


@pytest.mark.parametrize(
    ("ref_content", "expected"),
    [
        (b"garbage\n", UNKNOWN),
        (b"\xff\xff", UNKNOWN),
        (b"ref: refs/heads/main\n", UNKNOWN),  # a symbolic ref pointing at itself
        (b"ref: refs/heads/real\n", SHA1),  # one that leads somewhere
    ],
)
def test_odd_refs_read_as_unknown(tmp_path: Path, ref_content: bytes, expected: str) -> None:
    package = fake_checkout(tmp_path, "ref: refs/heads/main\n")
    (tmp_path / ".git" / "refs" / "heads" / "main").write_bytes(ref_content)
    (tmp_path / ".git" / "refs" / "heads" / "real").write_text(SHA1)
    assert buildinfo.git_head(package.parent) == (expected, "main")


def test_odd_checkouts_read_as_unknown(tmp_path: Path) -> None:
    no_git = tmp_path / "plain" / "exporter"
    no_git.mkdir(parents=True)
    assert buildinfo.read(no_git, "1.0.0") == BuildInfo("1.0.0")
    head_is_a_directory = fake_checkout(tmp_path / "dir", "")
    (tmp_path / "dir" / ".git" / "HEAD").unlink()
    (tmp_path / "dir" / ".git" / "HEAD").mkdir()
    assert buildinfo.git_head(head_is_a_directory.parent) == (UNKNOWN, UNKNOWN)
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / ".git").write_text("gitdir: /nonexistent/worktree\n")
    assert buildinfo.git_head(dangling) == (UNKNOWN, UNKNOWN)
    packed_garbage = fake_checkout(tmp_path / "packed", "ref: refs/heads/main\n")
    (tmp_path / "packed" / ".git" / "packed-refs").write_bytes(
        b"\xff\xfe refs/heads/main\nzz refs/heads/main\n"
    )
    assert buildinfo.git_head(packed_garbage.parent) == (UNKNOWN, "main")


def write_build_info(package: Path, **fields: object) -> None:
    (package / buildinfo.BUILD_INFO_FILE).write_text(json.dumps(fields))


def test_build_info_file_comes_before_the_checkout(tmp_path: Path) -> None:
    package = fake_checkout(tmp_path, SHA2 + "\n")
    write_build_info(
        package,
        version="1.0.0",
        revision=SHA1,
        branch="main",
        build_user="ci@builder",
        build_date="20261123-10:00:00",
    )
    assert buildinfo.read(package, "1.0.0") == BuildInfo(
        "1.0.0", SHA1, "main", "ci@builder", "20261123-10:00:00"
    )
    # A file left from another version says nothing about this one: the checkout answers.
    assert buildinfo.read(package, "2.0.0") == BuildInfo("2.0.0", SHA2, "HEAD")


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '"text"', "null", '{"version": 1}', "x" * 100_000, "[" * 100_000],
)
def test_garbage_build_info_file_is_ignored(tmp_path: Path, content: str) -> None:
    package = tmp_path / "exporter"
    package.mkdir()
    (package / buildinfo.BUILD_INFO_FILE).write_text(content)
    assert buildinfo.read(package, "1.0.0") == BuildInfo("1.0.0")


def test_odd_fields_of_the_build_info_file_read_as_unknown(tmp_path: Path) -> None:
    package = tmp_path / "exporter"
    package.mkdir()
    write_build_info(
        package, version="1.0.0", revision="not-hex", branch=["main"], build_user="a\nb", build_date="today"
    )
    assert buildinfo.read(package, "1.0.0") == BuildInfo("1.0.0")


def test_image_build_writes_the_build_info(tmp_path: Path) -> None:
    # What the Dockerfile's `python -m exporter.buildinfo` does with the build arguments.
    target = tmp_path / buildinfo.BUILD_INFO_FILE
    env = {
        "VERSION": __version__,
        "REVISION": SHA1.upper(),
        "BRANCH": "main",
        "BUILD_DATE": "2026-11-23T18:30:05+08:00",
        "BUILD_USER": "ci@builder",
    }
    result = run_exporter_module("exporter.buildinfo", str(target), env=env)
    assert result.returncode == 0, result.stderr
    expected = BuildInfo(__version__, SHA1, "main", "ci@builder", "20261123-10:30:05")
    assert buildinfo.read(tmp_path, __version__) == expected
    assert buildinfo.version_text(expected) == result.stdout
    # Nothing given: every field unknown, still a valid file.
    empty = {k: "" for k in env}
    assert run_exporter_module("exporter.buildinfo", str(target), env=empty).returncode == 0
    assert buildinfo.read(tmp_path, __version__) == BuildInfo(__version__)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("VERSION", "0.0.1", "VERSION: the build argument says '0.0.1'"),
        ("REVISION", "HEAD", "REVISION: expected a commit ID"),
        ("BUILD_DATE", "yesterday", "BUILD_DATE: expected RFC 3339"),
        ("BUILD_DATE", "2026-11-23T10:00:00", "BUILD_DATE: expected a time zone"),
        ("BRANCH", "a\tb", "BRANCH: expected up to 200 printable characters"),
    ],
)
def test_a_bad_build_argument_fails_the_build(tmp_path: Path, name: str, value: str, message: str) -> None:
    target = tmp_path / buildinfo.BUILD_INFO_FILE
    result = run_exporter_module("exporter.buildinfo", str(target), env={name: value})
    assert result.returncode == 2
    assert message in result.stderr
    assert not target.exists()


def run_exporter_module(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("VERSION", "REVISION", "BRANCH", "BUILD_DATE")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "BUILD_USER": "", **env},
    )


def test_build_info_metric_has_revision_and_branch() -> None:
    samples = Samples(generate_latest(Metrics().registry).decode())
    current = buildinfo.current()
    labels = {
        "version": __version__,
        "revision": current.revision,
        "branch": current.branch,
        "python_version": platform.python_version(),
    }
    assert samples.get("tencentcloud_exporter_build_info", **labels) == 1


@pytest.mark.parametrize("subcommand", sorted(cli.SUBCOMMANDS))
def test_every_subcommand_prints_the_version(subcommand: str) -> None:
    result = run_exporter(subcommand, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"tencentcloud-task-exporter, version {__version__} ("), result.stdout
