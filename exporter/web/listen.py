"""The listening sockets of the HTTP server: those `bind()` opens for each --web.listen-address, and those
systemd passed by socket activation (`systemd_sockets()`, --web.systemd-socket). `exporter.web.httpserver`
serves them (and re-exports these names).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping, Sequence


class ListenError(OSError):
    """An address that cannot be listened on, or sockets from systemd that cannot be used."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")


def show_address(host: str | None, port: int) -> str:
    """`HOST:PORT` as the flags take it; IPv6 hosts in brackets, every interface as `:PORT`."""
    if not host:
        return f":{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# What creating or binding an IPv6 socket fails with where the host has no IPv6.
_NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})


def bind(addresses: Sequence[tuple[str | None, int]], backlog: int = 128) -> list[socket.socket]:
    """Listening sockets for every address, in order (several for a name with several addresses; `:PORT` is
    IPv4 and IPv6, each IPv6 socket IPv6-only, as asyncio's create_server binds them).

    All or nothing: if one address cannot be bound, the sockets already open are closed and ListenError
    names the address and the reason.
    """
    sockets: list[socket.socket] = []
    try:
        for host, port in addresses:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
                bound = 0
                for family, _, _, _, address in dict.fromkeys(infos):
                    try:
                        sockets.append(socket.create_server(address, family=family, backlog=backlog))
                    except OSError as exc:
                        # `:PORT` on a host without IPv6 (ipv6.disable=1): serve IPv4 alone, as asyncio would.
                        if host or family != socket.AF_INET6 or exc.errno not in _NO_IPV6:
                            raise
                        continue
                    sockets[-1].setblocking(False)
                    bound += 1
                if not bound:
                    raise OSError(errno.EADDRNOTAVAIL, "no address of this name could be bound")
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise ListenError(f"--web.listen-address {show_address(host, port)}", reason) from exc
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): the first descriptor systemd passes


def systemd_sockets(env: Mapping[str, str] | None = None, pid: int | None = None) -> list[socket.socket]:
    """The listening sockets systemd's socket activation passed (LISTEN_FDS descriptors from 3 on), checked to
    be meant for this process (LISTEN_PID) and to be listening TCP sockets. Raises ListenError."""
    env = os.environ if env is None else env
    pid = os.getpid() if pid is None else pid
    what = "--web.systemd-socket"
    listen_pid, listen_fds = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    if not listen_pid or not listen_fds:
        raise ListenError(
            what, "no sockets passed (LISTEN_PID and LISTEN_FDS are not set): start me from a .socket unit"
        )
    if not listen_pid.isdigit() or int(listen_pid) != pid:
        raise ListenError(
            what, f"the sockets were passed to process {listen_pid!r} (LISTEN_PID), not to this one ({pid})"
        )
    if not listen_fds.isdigit() or not 1 <= int(listen_fds) <= 1024:
        raise ListenError(what, f"expected LISTEN_FDS to be a number of sockets, got {listen_fds!r}")
    sockets: list[socket.socket] = []
    try:
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(listen_fds)):
            try:
                sock = socket.socket(fileno=fd)
            except OSError as exc:
                raise ListenError(what, f"descriptor {fd}: {exc.strerror or exc}") from exc
            sockets.append(sock)
            tcp = sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
            if not tcp or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                raise ListenError(what, f"descriptor {fd} is not a listening TCP socket")
            sock.set_inheritable(False)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
