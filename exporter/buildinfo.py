"""Where this copy of the exporter comes from: version, VCS revision and branch, who built it and when.

The answer, in this order:

1. `exporter/_build_info.json`, written when the container image is built (`python -m exporter.buildinfo`,
   from the build arguments REVISION, BRANCH, BUILD_DATE and BUILD_USER), when its version is this one's;
2. the git checkout the package sits in (an editable install, or running from a clone): `.git/HEAD` and the
   ref it names, loose or in `packed-refs`, read as files (no `git` needed, nothing run);
3. "unknown".

Reading never fails: a file that is missing, unreadable or odd reads as "unknown", field by field.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from exporter import __version__

PROGRAM = "tencentcloud-task-exporter"
UNKNOWN = "unknown"
BUILD_INFO_FILE = "_build_info.json"
PACKAGE_DIR = Path(__file__).resolve().parent
# The build date as Prometheus programs print it (`date +%Y%m%d-%H:%M:%S`, UTC).
DATE_FORMAT = "%Y%m%d-%H:%M:%S"

_REVISION = re.compile(r"[0-9a-f]{7,64}")
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 repositories
_DATE = re.compile(r"\d{8}-\d{2}:\d{2}:\d{2}")
_MAX_FIELD = 200
_MAX_SMALL_FILE = 64 * 1024  # HEAD, a loose ref, the build info file
_MAX_PACKED_REFS = 64 * 1024 * 1024
_MAX_SYMREF_DEPTH = 5
_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "386",
    "i686": "386",
    "armv6l": "arm",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


@dataclass(frozen=True)
class BuildInfo:
    version: str
    revision: str = UNKNOWN
    branch: str = UNKNOWN
    build_user: str = UNKNOWN
    build_date: str = UNKNOWN


@functools.cache
def current() -> BuildInfo:
    """This process's build information, read once."""
    return read()


def read(package_dir: Path = PACKAGE_DIR, version: str = __version__) -> BuildInfo:
    """The build information of the package in `package_dir` (whose version is `version`)."""
    from_file = read_build_info_file(package_dir / BUILD_INFO_FILE, version)
    if from_file is not None:
        return from_file
    revision, branch = git_head(package_dir.parent)
    return BuildInfo(version, revision, branch)


def read_build_info_file(path: Path, version: str) -> BuildInfo | None:
    """The file's build information; None when there is no usable file or it belongs to another version."""
    try:
        data = json.loads(_read_small(path))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("version") != version:
        return None  # a file left from another build says nothing about this one
    return BuildInfo(
        version,
        revision=_field(data.get("revision"), _REVISION),
        branch=_field(data.get("branch"), None),
        build_user=_field(data.get("build_user"), None),
        build_date=_field(data.get("build_date"), _DATE),
    )


def _field(value: object, pattern: re.Pattern[str] | None) -> str:
    if not isinstance(value, str):
        return UNKNOWN
    text = value.strip()
    if not text or len(text) > _MAX_FIELD or not text.isprintable():
        return UNKNOWN
    if pattern is not None and not pattern.fullmatch(text):
        return UNKNOWN
    return text


# --- git, read as files -----------------------------------------------------------------------------------


def git_head(root: Path) -> tuple[str, str]:
    """(revision, branch) of the checkout at `root`: ("unknown", "unknown") when it is none or looks odd.

    A detached HEAD has the branch "HEAD", as `git rev-parse --abbrev-ref HEAD` says; a branch without a
    commit yet has an unknown revision.
    """
    try:
        git_dir = _git_dir(root)
        if git_dir is None:
            return UNKNOWN, UNKNOWN
        head = _read_small(git_dir / "HEAD").strip()
        if _OBJECT_ID.fullmatch(head):
            return head, "HEAD"
        if not head.startswith("ref:"):
            return UNKNOWN, UNKNOWN
        ref = head.removeprefix("ref:").strip()
        if not _valid_ref(ref):
            return UNKNOWN, UNKNOWN
        common = _common_dir(git_dir)
    except (OSError, ValueError, RecursionError):
        return UNKNOWN, UNKNOWN
    branch = ref.removeprefix("refs/heads/")
    try:
        return _resolve(ref, git_dir, common), branch
    except (OSError, ValueError, RecursionError):
        return UNKNOWN, branch


def _git_dir(root: Path) -> Path | None:
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = _read_small(dot_git).strip()
        if text.startswith("gitdir:"):
            target = Path(text.removeprefix("gitdir:").strip())
            git_dir = target if target.is_absolute() else root / target
            if git_dir.is_dir():
                return git_dir
    return None


def _common_dir(git_dir: Path) -> Path:
    """Where a worktree's branches live: its `commondir`, else the git directory itself."""
    pointer = git_dir / "commondir"
    if pointer.is_file():
        target = Path(_read_small(pointer).strip())
        common = target if target.is_absolute() else git_dir / target
        if common.is_dir():
            return common
    return git_dir


def _valid_ref(ref: str) -> bool:
    """A ref name git would accept (check-ref-format), and one that cannot leave the git directory."""
    if not ref.startswith("refs/") or len(ref) > 1024 or not ref.isprintable():
        return False
    if any(c in ref for c in " ~^:?*[\\") or ".." in ref or "@{" in ref or "//" in ref:
        return False
    if ref.endswith(("/", ".", ".lock")):
        return False
    return not any(part.startswith(".") for part in ref.split("/"))


def _resolve(ref: str, git_dir: Path, common: Path, depth: int = 0) -> str:
    for base in dict.fromkeys((git_dir, common)):
        path = base / ref
        if path.is_file():
            text = _read_small(path).strip()
            if _OBJECT_ID.fullmatch(text):
                return text
            target = text.removeprefix("ref:").strip()
            if text.startswith("ref:") and _valid_ref(target) and depth < _MAX_SYMREF_DEPTH:
                return _resolve(target, git_dir, common, depth + 1)
            return UNKNOWN
    return _packed(ref, common)


def _packed(ref: str, common: Path) -> str:
    path = common / "packed-refs"
    if not path.is_file():
        return UNKNOWN
    with path.open("rb") as file:
        data = file.read(_MAX_PACKED_REFS)
    wanted = ref.encode()
    for line in data.splitlines():
        if line.startswith((b"#", b"^")):
            continue
        object_id, _, name = line.partition(b" ")
        if name.strip() == wanted:
            text = object_id.decode("ascii")
            return text if _OBJECT_ID.fullmatch(text) else UNKNOWN
    return UNKNOWN


def _read_small(path: Path) -> str:
    with path.open("rb") as file:
        data = file.read(_MAX_SMALL_FILE + 1)
    if len(data) > _MAX_SMALL_FILE:
        raise ValueError(f"{path}: larger than {_MAX_SMALL_FILE} bytes")
    return data.decode("utf-8")


# --- printing ---------------------------------------------------------------------------------------------


def platform_name() -> str:
    """GOOS/GOARCH-style, as Prometheus programs print it: linux/amd64, darwin/arm64."""
    system = sys.platform.rstrip("0123456789")  # freebsd14 -> freebsd
    system = {"win32": "windows", "cygwin": "windows"}.get(system, system)
    machine = platform.machine().lower()
    return f"{system}/{_GOARCH.get(machine, machine or UNKNOWN)}"


def version_text(info: BuildInfo | None = None) -> str:
    """`--version`'s answer, in the layout of github.com/prometheus/common/version."""
    info = info or current()
    return (
        f"{PROGRAM}, version {info.version} (branch: {info.branch}, revision: {info.revision})\n"
        f"  build user:       {info.build_user}\n"
        f"  build date:       {info.build_date}\n"
        f"  python version:   {platform.python_version()}\n"
        f"  platform:         {platform_name()}\n"
    )


# --- writing, at image build time -------------------------------------------------------------------------


def build_date(value: str) -> str:
    """BUILD_DATE as Prometheus prints it: from RFC 3339 (`date -u +%Y-%m-%dT%H:%M:%SZ`, what the OCI label
    `created` wants) or already `YYYYMMDD-HH:MM:SS` (UTC). Raises ValueError for anything else."""
    text = value.strip()
    if not text or text == UNKNOWN:
        return UNKNOWN
    if _DATE.fullmatch(text):
        datetime.strptime(text, DATE_FORMAT)  # a real date and time, or ValueError
        return text
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"BUILD_DATE: expected RFC 3339 (2026-11-23T10:00:00Z), got {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"BUILD_DATE: expected a time zone (Z or +HH:MM), got {value!r}")
    return moment.astimezone(UTC).strftime(DATE_FORMAT)


def from_environment(env: dict[str, str], version: str = __version__) -> BuildInfo:
    """The build information the image build passes as environment (its build arguments).

    Raises ValueError naming the variable when one is set to something unusable, so a bad build argument
    fails the build rather than producing an image that says "unknown".
    """
    expected = env.get("VERSION", "").strip()
    if expected and expected != version:
        raise ValueError(f"VERSION: the build argument says {expected!r}, the package is {version}")
    revision = env.get("REVISION", "").strip().lower() or UNKNOWN
    if revision != UNKNOWN and not _REVISION.fullmatch(revision):
        raise ValueError(f"REVISION: expected a commit ID (hex), got {revision!r}")
    fields = {}
    for name in ("BRANCH", "BUILD_USER"):
        text = env.get(name, "").strip() or UNKNOWN
        if len(text) > _MAX_FIELD or not text.isprintable():
            raise ValueError(f"{name}: expected up to {_MAX_FIELD} printable characters, got {text!r}")
        fields[name] = text
    return BuildInfo(
        version,
        revision=revision,
        branch=fields["BRANCH"],
        build_user=fields["BUILD_USER"],
        build_date=build_date(env.get("BUILD_DATE", "")),
    )


def write(info: BuildInfo, path: Path) -> None:
    document = {
        "version": info.version,
        "revision": info.revision,
        "branch": info.branch,
        "build_user": info.build_user,
        "build_date": info.build_date,
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """`python -m exporter.buildinfo [PATH]`: writes the build information from the environment (REVISION,
    BRANCH, BUILD_DATE, BUILD_USER; VERSION, if set, must be the package's) beside the installed package,
    or to PATH; prints what `--version` will say."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m exporter.buildinfo [PATH]", file=sys.stderr)
        return 2
    path = Path(args[0]) if args else PACKAGE_DIR / BUILD_INFO_FILE
    try:
        info = from_environment(dict(os.environ))
        write(info, path)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(version_text(info), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
