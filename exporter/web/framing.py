"""HTTP/1.1 request framing, followed only far enough to know when a connection owes request headers.

`Framing` is fed the bytes a connection receives (under TLS, the decrypted ones) and says whether the
current request's headers are still pending; `exporter.web.httpserver` runs its header deadline on that.
Nothing is parsed beyond what the deadline needs, and bodies are skipped, never buffered.
"""

from __future__ import annotations

import re

# Longer lines are refused by aiohttp (max_line_size, max_field_size 8190); this only bounds memory.
_MAX_LINE = 16 * 1024
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Framing:
    """Follows one connection's request stream (RFC 9112 framing) only to tell whether request headers are
    pending: bodies are skipped by Content-Length or chunk sizes, never buffered."""

    _HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _LOST = range(7)

    def __init__(self) -> None:
        self._state = self._HEAD
        self._line = bytearray()
        self._request_line = False  # the current request's request line has been read
        self._lengths: list[bytes] = []
        self._codings: list[bytes] = []
        self._remaining = 0
        # A connection starts waiting for its first request's headers.
        self.pending = True
        self.started = 1  # requests whose first byte arrived (the first one counts from the accept)

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and self._state != self._LOST:
            if self._state in (self._BODY, self._CHUNK_DATA):
                step = min(self._remaining, end - pos)
                pos += step
                self._remaining -= step
                if self._remaining == 0:
                    self._state = self._HEAD if self._state == self._BODY else self._CHUNK_END
                continue
            if self._state == self._HEAD and not self._request_line and not self._line:
                # Empty lines before a request line are ignored (RFC 9112 2.2), so they start no request.
                while pos < end and data[pos] in b"\r\n":
                    pos += 1
                if pos == end:
                    break
                if not self.pending:
                    self.pending = True
                    self.started += 1
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline
            if len(self._line) < _MAX_LINE:
                self._line += data[pos : min(stop, pos + _MAX_LINE - len(self._line))]
            pos = stop + 1 if newline >= 0 else end
            if newline >= 0:
                line = bytes(self._line).rstrip(b"\r")
                self._line.clear()
                self._on_line(line)
        if self._state == self._LOST:
            self.pending = True  # framing unknown: the clock runs until aiohttp or the deadline closes it

    def _on_line(self, line: bytes) -> None:
        if self._state == self._HEAD:
            if not self._request_line:
                self._request_line = True
            elif line:
                if line[:1] in b" \t":  # obsolete line folding: aiohttp refuses it, nothing to note
                    return
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name in (b"content-length", b"transfer-encoding"):
                    # aiohttp takes at most 128 header lines (max_headers), which bounds these lists.
                    (self._lengths if name == b"content-length" else self._codings).append(value)
            else:
                self._end_of_headers()
        elif self._state == self._CHUNK_SIZE:
            size = line.partition(b";")[0].strip()
            if not _CHUNK_SIZE.fullmatch(size):  # int() alone would take "0x1", "-1" or "1_0"
                self._state = self._LOST
                return
            self._remaining = int(size, 16)
            self._state = self._CHUNK_DATA if self._remaining else self._TRAILERS
        elif self._state == self._CHUNK_END:
            self._state = self._CHUNK_SIZE if not line else self._LOST
        elif self._state == self._TRAILERS and not line:
            self._state = self._HEAD

    def _end_of_headers(self) -> None:
        self.pending = False
        self._request_line = False
        lengths, codings = self._lengths, self._codings
        self._lengths, self._codings = [], []
        if codings:
            names = [c.strip().lower() for value in codings for c in value.split(b",") if c.strip()]
            self._state = self._CHUNK_SIZE if names and names[-1] == b"chunked" else self._LOST
            return
        values = {v.strip() for value in lengths for v in value.split(b",")}
        if not values:
            self._state = self._HEAD
        elif len(values) == 1 and (value := values.pop()).isdigit() and len(value) <= 18:
            self._remaining = int(value)
            self._state = self._BODY if self._remaining else self._HEAD
        else:
            self._state = self._LOST
