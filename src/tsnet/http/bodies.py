"""Request bodies: undoing ``Content-Encoding`` under a size cap.

Every HTTP family reads compressed bodies the same way, never holding more
than the cap of decompressed bytes, so a gzip bomb costs a few MiB, not what it
expands to.  Errors carry an HTTP status, a message and details for the
family to render in its own dialect.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Any

#: the message of a body whose compressed data is corrupt or cut short; the
#: details name the coding (``invalid gzip body``, ``truncated deflate body``)
UNDECOMPRESSABLE = "Unable to decompress the request content"


class BodyError(ValueError):
    """The whole request body is refused: HTTP ``code``, a short ``message``
    and optional ``details``."""

    def __init__(self, message: str, details: str = "", code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.code = code


class BodyTooLarge(BodyError):
    """The body, once decompressed, is over the cap."""

    def __init__(self, cap: int) -> None:
        super().__init__("Request Entity Too Large", f"the body is over {cap} bytes", 413)


def inflate_body(chunks: Iterable[bytes], encoding: str, cap: int) -> bytes:
    """Undo a ``Content-Encoding`` (``gzip``, ``x-gzip``, ``deflate``, ``identity``,
    or a comma list of them, applied in order) without ever holding more than
    ``cap + 1`` decompressed bytes.

    ``deflate`` is zlib-wrapped per RFC 9110, but many clients send raw deflate, so
    both are accepted.  Concatenated gzip members are read as one stream, as
    Java's GZIPInputStream does.  Raises `BodyTooLarge` past ``cap``, and
    `BodyError` for an unknown coding (415) or corrupt or truncated data (400,
    with a fixed text: never zlib's)."""
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    data: Iterable[bytes] = chunks
    for coding in reversed(codings):  # the last coding applied is undone first
        if coding == "identity":
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise BodyError("Unsupported Content-Encoding", coding, 415)
        data = [_inflate(data, coding != "deflate", cap)]
    out = bytearray()
    for c in data:
        out += c
        if len(out) > cap:
            raise BodyTooLarge(cap)
    return bytes(out)


def _inflate(chunks: Iterable[bytes], gzip: bool, cap: int) -> bytes:
    out = bytearray()
    d: Any = None
    trailing = False  # bytes after the last stream: ignored, as Java does
    try:
        for chunk in chunks:
            while chunk and not trailing:
                if d is None:
                    d = zlib.decompressobj(_wbits(chunk, gzip))
                elif d.eof:
                    if not gzip or not b"\x1f\x8b".startswith(chunk[:2]):
                        trailing = True
                        break
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the next gzip member
                # max_length bounds this call's output, so at most cap + 1 bytes exist
                out += d.decompress(chunk, cap + 1 - len(out))
                if len(out) > cap:
                    raise BodyTooLarge(cap)
                chunk = d.unused_data if d.eof else b""
    except zlib.error:  # (zlib's own text says nothing a client can use)
        raise BodyError(UNDECOMPRESSABLE, f"invalid {_name(gzip)} body") from None
    if d is not None and not d.eof:
        raise BodyError(UNDECOMPRESSABLE, f"truncated {_name(gzip)} body")
    return bytes(out)


def _name(gzip: bool) -> str:
    return "gzip" if gzip else "deflate"


def _wbits(head: bytes, gzip: bool) -> int:
    """gzip; or deflate, zlib-wrapped when the first two bytes are a zlib header."""
    if gzip:
        return 16 + zlib.MAX_WBITS
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS


def read_chunks(f: Any, size: int = 65536) -> Iterator[bytes]:
    """A file's content in blocks, from where it is positioned."""
    while True:
        b = f.read(size)
        if not b:
            return
        yield b



def request_body(request: Any, cap: int) -> bytes:
    """The body of a twisted.web ``request``, its ``Content-Encoding`` undone,
    at most ``cap`` bytes: `BodyTooLarge` past it, `BodyError` (415 or 400)
    for an unknown coding or corrupt data."""
    content = request.content
    content.seek(0)
    encoding = request.getHeader(b"content-encoding") or b""
    return inflate_body(read_chunks(content), encoding.decode("latin-1"), cap)
