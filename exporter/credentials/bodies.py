"""Reading an answer from the cloud within a size limit, on the wire and once inflated.

Everything the exporter receives from Tencent Cloud (status and list APIs, STS, the metadata service) is read
here, in chunks, and cut off as soon as it passes its limit: a huge answer, a slow endless one or a small
gzip answer inflating to hundreds of megabytes costs at most the limit in memory, never the whole body.
aiohttp's own decompression is turned off for these requests (`auto_decompress=False`) and the body is
inflated here with zlib's `max_length`, so both counts are ours. The polling wing reads through this module
too (it sits below polling in the layering).
"""

from __future__ import annotations

import zlib

import aiohttp

# What the exporter offers to accept; anything else sent back is refused (never inflated by a library).
ACCEPT_ENCODING = "gzip, deflate"
_GZIP = ("gzip", "x-gzip")
_IDENTITY = ("", "identity")


class AnswerTooLarge(Exception):
    """The answer passed its size limit; the message says which count (wire or inflated) and the limit."""


class AnswerUnreadable(Exception):
    """The answer's encoding is unknown or its compressed data is corrupt."""


def _inflater(encoding: str, first: bytes) -> zlib._Decompress | None:
    if encoding in _IDENTITY:
        return None
    if encoding in _GZIP:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        # HTTP's deflate is zlib-wrapped, but some servers send a raw stream: tell them apart by the header.
        zlib_header = len(first) >= 1 and first[0] & 0x0F == 8
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
    raise AnswerUnreadable(f"Content-Encoding {encoding[:40]!r} is not one the exporter asked for")


def _limit_text(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of `response`, inflated if it was compressed, of at most `limit` bytes both as sent and as
    inflated. Raises AnswerTooLarge (having closed the connection, so the rest is never read) or
    AnswerUnreadable; the request must have been sent with `auto_decompress=False`."""
    try:
        return await _read(response, limit)
    except (AnswerTooLarge, AnswerUnreadable):
        response.close()  # the connection goes, with whatever the peer still has to send
        raise


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit:
        raise AnswerTooLarge(f"Content-Length {declared} is over the limit of {_limit_text(limit)}")
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _IDENTITY + _GZIP + ("deflate",):
        _inflater(encoding, b"")  # raises
    inflate: zlib._Decompress | None = None
    parts: list[bytes] = []
    sent = size = 0
    while chunk := await response.content.readany():
        sent += len(chunk)
        if sent > limit:
            raise AnswerTooLarge(f"more than {_limit_text(limit)} sent")
        if encoding not in _IDENTITY:
            if inflate is None:
                inflate = _inflater(encoding, chunk)
                assert inflate is not None
            if inflate.eof:
                continue  # bytes after the end of the compressed stream: ignored, as zlib does
            try:
                # max_length caps what one call may produce: a bomb stops at the limit, never inflates whole.
                chunk = inflate.decompress(chunk, limit + 1 - size)
            except zlib.error as exc:
                raise AnswerUnreadable(f"{encoding} data is corrupt: {exc}") from None
            if inflate.unconsumed_tail:
                raise AnswerTooLarge(f"more than {_limit_text(limit)} once inflated")
        size += len(chunk)
        if size > limit:
            what = "once inflated" if encoding not in _IDENTITY else "sent"
            raise AnswerTooLarge(f"more than {_limit_text(limit)} {what}")
        parts.append(chunk)
    if inflate is not None and not inflate.eof:
        raise AnswerUnreadable(f"{encoding} data ends before its end mark")
    return b"".join(parts)
