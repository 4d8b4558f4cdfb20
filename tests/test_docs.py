"""The README and the manual in docs/: the site builds with `mkdocs build --strict`, the README stays short
and links only to what exists, and every shell command they show runs as written.

The convention for command blocks (docs/development.md, "How the docs are tested"):

- fenced blocks marked `sh` or `console` are commands (in `console`, the lines after `$ `); others are not;
- `<!-- not run here: REASON -->` right above a fence: the block cannot run on a developer's machine;
- `<!-- serves until stopped: URL -->`: the block's last command serves; it is started, URL is asked until
  it answers 200, it keeps serving while the rest of its page runs, then it gets SIGINT (Ctrl-C);
- `<!-- needs: BINARY -->`: run when BINARY is on PATH, else skipped (failed under CI=true).

Each page runs in a scratch copy of the repository's files (what a fresh clone has) whose `.venv` is the venv
these tests run in, with its bin first on PATH, as after `. .venv/bin/activate`. The ports the manual names
are replaced by free ones, so a running exporter or another test never collides with these.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from tests.helpers import in_ci

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 300
# Ports the README and the manual name: the exporter, two simulators, `mkdocs serve`.
DOCUMENTED_PORTS = (10123, 8080, 8081, 8000)
COMMAND_DEADLINE = 60.0  # one non-serving block
READY_DEADLINE = 30.0  # a serving block until its URL answers
STOP_DEADLINE = 30.0  # a serving block after SIGINT (mkdocs serve takes seconds on a busy machine)

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
_MARKER = re.compile(
    r"^\s*<!--\s*(?P<kind>not run here|serves until stopped|needs):\s*(?P<value>.*?)\s*-->\s*$"
)
_ANY_COMMENT = re.compile(r"^\s*<!--.*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page, with the marker comment right above it, if any."""

    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    marker: tuple[str, str] | None  # (kind, value)
    stray_comment: str | None  # a comment above the fence that is no marker (a typo, say)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def script(self) -> str:
        """The commands: the whole body of an `sh` block; in a `console` block the `$ ` lines, with the lines
        a trailing backslash continues."""
        if self.lang == "sh":
            return self.body
        commands: list[str] = []
        continued = False
        for line in self.body.splitlines():
            if line.startswith("$ ") or continued:
                commands.append(line.removeprefix("$ "))
                continued = line.endswith("\\")
        return "\n".join(commands)


def blocks_of(page: Path, text: str | None = None) -> list[Block]:
    lines = (page.read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None or not opening["lang"]:
            index += 1
            continue
        indent = opening["indent"]
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(line.removeprefix(indent) for line in lines[index + 1 : end])
        above = index - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        comment = lines[above] if above >= 0 and _ANY_COMMENT.match(lines[above]) else None
        marker = _MARKER.match(comment) if comment else None
        found.append(
            Block(
                page=page,
                line=index + 1,
                lang=opening["lang"],
                body=body,
                marker=(marker["kind"], marker["value"]) if marker else None,
                stray_comment=comment if comment and not marker else None,
            )
        )
        index = end + 1
    return found


def command_blocks(page: Path) -> list[Block]:
    return [b for b in blocks_of(page) if b.lang in ("sh", "console")]


# --- the site ---------------------------------------------------------------------------------------------


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_manual_builds_with_strict_link_and_anchor_checks(tmp_path: Path) -> None:
    result = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    # Every page is in the navigation, and the alerts' runbook URLs land on their sections.
    for page in DOCS.glob("*.md"):
        built = tmp_path / "site" / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.is_file(), page.name
    runbook = (tmp_path / "site" / "runbook" / "index.html").read_text(encoding="utf-8")
    assert 'id="tencentcloudtaskfailed"' in runbook


def test_a_broken_link_or_anchor_fails_the_strict_build(tmp_path: Path) -> None:
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    index = tmp_path / "docs" / "index.md"
    index.write_text(
        index.read_text(encoding="utf-8")
        + "\n[gone](no-such-page.md) and [moved](runbook.md#no-such-section)\n",
        encoding="utf-8",
    )
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr
    assert "#no-such-section" in result.stderr


# --- the README ---------------------------------------------------------------------------------------------


def heading_anchors(page: Path) -> set[str]:
    """Anchors of a page's headings, as MkDocs (Python-Markdown's toc) makes them. A heading whose GitHub
    anchor would differ counts for neither, so a link to it is reported instead of broken on one of the
    two."""
    anchors = set()
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line) or line.strip() == "```":
            in_fence = not in_fence
            continue
        heading = re.match(r"^#{1,6}\s+(.+?)\s*#*$", line)
        if heading and not in_fence:
            text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.group(1))
            mkdocs = slugify(text, "-")
            github = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
            if mkdocs == github:
                anchors.add(mkdocs)
    return anchors


def broken_links(page: Path, text: str) -> list[str]:
    """Relative links of a Markdown text (read as if it were `page`) whose file or heading anchor is
    missing."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        missing_anchor = bool(anchor) and (file.suffix != ".md" or anchor not in heading_anchors(file))
        if not file.exists() or missing_anchor:
            broken.append(target)
    return broken


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move detail into docs/"


def test_the_readme_links_only_to_pages_and_anchors_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    assert broken_links(README, text) == []
    # It is the front door: every page of the manual is one click away.
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", text))
    assert linked == {p.name for p in DOCS.glob("*.md")} - {"index.md"}


def test_the_link_check_reports_missing_files_and_anchors() -> None:
    text = "[a](docs/install.md#install-with-pip) [b](docs/nowhere.md) [c](docs/install.md#nowhere)"
    text += " [d](#nowhere) [e](LICENSE#nowhere)"
    assert broken_links(README, text) == [
        "docs/nowhere.md",
        "docs/install.md#nowhere",
        "#nowhere",
        "LICENSE#nowhere",
    ]


# --- the commands ---------------------------------------------------------------------------------------


def test_every_command_block_runs_or_says_why_not() -> None:
    runnable = 0
    for page in PAGES:
        for block in command_blocks(page):
            assert block.stray_comment is None, f"{block.where}: not a marker: {block.stray_comment}"
            assert block.script.strip(), f"{block.where}: a command block without commands"
            if block.marker is None:
                runnable += 1
                continue
            kind, value = block.marker
            if kind == "not run here":
                assert len(value.split()) >= 3, f"{block.where}: say why it cannot run here, got {value!r}"
            elif kind == "serves until stopped":
                assert re.fullmatch(r"http://(localhost|127\.0\.0\.1):\d+/\S*", value), (
                    f"{block.where}: {value!r}"
                )
            else:
                runnable += 1
    # The README's own blocks, the demo first: a reader's first command must be one this file runs.
    readme = command_blocks(README)
    assert readme[0].script.startswith("python3 dev.py demo")
    assert readme[0].marker is not None
    assert readme[0].marker[0] == "serves until stopped"
    assert runnable >= 10


def test_the_block_parser_reads_markers_and_console_prompts() -> None:
    text = "\n".join(
        [
            "<!-- not run here: needs a Docker engine -->",
            "```sh",
            "docker run x",
            "```",
            "<!-- not run here -->",
            "```console",
            "$ one \\",
            "  --flag",
            "output",
            "$ two",
            "```",
        ]
    )
    first, second = blocks_of(README, text)
    assert first.marker == ("not run here", "needs a Docker engine")
    assert second.marker is None
    assert second.stray_comment == "<!-- not run here -->"
    assert second.script == "one \\\n  --flag\ntwo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fresh_clone(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked, plus new files not ignored, from the working
    tree), with `.venv` being the venv these tests run in."""
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=False,
    )
    if listing.returncode != 0:  # not a git checkout: everything but what a clone never has
        junk = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".*_cache", "data")
        shutil.copytree(ROOT, dest, ignore=junk, symlinks=True)
    for name in filter(None, listing.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return dest


def venv_is_dev_pys() -> bool:
    """Whether dev.py would use this venv as it is; otherwise `python3 dev.py demo` would reinstall into
    it."""
    stamp = Path(sys.prefix) / ".pyproject-sha256"
    wanted = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (ROOT / "requirements.lock").read_bytes()
    )
    return stamp.is_file() and stamp.read_text() == wanted.hexdigest()


def with_ports(text: str, ports: dict[int, int]) -> str:
    for documented, free in ports.items():
        text = re.sub(rf"(?<=:){documented}(?!\d)", str(free), text)
    return text


def listen_on(script: str, port: int) -> str:
    """The block's serving command told to listen on `port`, when it relies on the default port."""
    lines = script.rstrip().splitlines()
    command, _, comment = lines[-1].partition(" #")
    flag = (
        f"--dev-addr 127.0.0.1:{port}"
        if "mkdocs serve" in command
        else f"--web.listen-address=127.0.0.1:{port}"
    )
    lines[-1] = f"{command.rstrip()} {flag}" + (f"  #{comment}" if comment else "")
    return "\n".join(lines)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Server:
    block: Block
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


def page_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENCENTCLOUD_")}  # never real keys
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = sys.prefix
    return env


def start_server(block: Block, script: str, url: str, clone: Path, env: dict[str, str], log: Path) -> Server:
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so SIGINT reaches everything it started
        )
    server = Server(block, process, log)
    deadline = time.monotonic() + READY_DEADLINE
    while not answers(url):
        if process.poll() is not None:
            raise AssertionError(
                f"{block.where}: exited {process.returncode} before {url} answered:\n{server.output()}"
            )
        if time.monotonic() > deadline:
            stop_server(server)
            raise AssertionError(
                f"{block.where}: {url} did not answer within {READY_DEADLINE}s:\n{server.output()}"
            )
        time.sleep(0.1)
    return server


def stop_server(server: Server) -> None:
    """SIGINT, as Ctrl-C sends; the test fails when the server does not stop from it."""
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGINT)
    try:
        server.process.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
        raise AssertionError(f"{server.block.where}: did not stop on Ctrl-C:\n{server.output()}") from None


def pages_with_commands() -> Iterator[Path]:
    for page in PAGES:
        if any(b.marker is None or b.marker[0] != "not run here" for b in command_blocks(page)):
            yield page


@pytest.mark.parametrize("page", list(pages_with_commands()), ids=lambda p: p.name)
def test_the_commands_of_a_page_run_as_written(page: Path, tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path / "clone")
    env = page_env()
    ports = {documented: free_port() for documented in DOCUMENTED_PORTS}
    servers: list[Server] = []
    ran = 0
    try:
        for number, block in enumerate(command_blocks(page)):
            kind, value = block.marker or ("", "")
            if kind == "not run here":
                continue
            if kind == "needs" and shutil.which(value, path=env["PATH"]) is None:
                if in_ci():
                    pytest.fail(f"{block.where}: `{value}` is not installed; CI=true, so this is a failure")
                continue
            if "dev.py" in block.script and not venv_is_dev_pys():
                # dev.py would first reinstall into this venv, which it did not make (or made from another
                # pyproject.toml): run `python3 dev.py test` to test this block too.
                warnings.warn(f"{block.where}: not run: this venv is not dev.py's", stacklevel=1)
                continue
            script = with_ports(block.script, ports)
            if kind == "serves until stopped":
                url = with_ports(value, ports).replace("//localhost:", "//127.0.0.1:")
                port = int(re.findall(r":(\d+)/", url)[0])
                if str(port) not in re.sub(r"(^|\s)#.*", "", script):  # a port in a comment serves nothing
                    script = listen_on(script, port)
                servers.append(
                    start_server(block, script, url, clone, env, tmp_path / f"server-{number}.log")
                )
            else:
                result = subprocess.run(
                    ["bash", "-e", "-o", "pipefail", "-c", script],
                    cwd=clone,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=COMMAND_DEADLINE,
                    check=False,
                )
                assert result.returncode == 0, (
                    f"{block.where}: exit {result.returncode}\n$ {script}\n"
                    f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
                )
            ran += 1
    finally:
        errors = []
        for server in reversed(servers):
            try:
                stop_server(server)
            except AssertionError as exc:
                errors.append(str(exc))
        assert not errors, "\n".join(errors)
    assert ran, f"{page.name}: no block ran"
