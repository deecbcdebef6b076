"""The console's page and static files, and the headers every console reply carries.

The files are package data under ``static/`` (the page, its one script and
its one style sheet, the vendored uPlot); they are read once, when a listener
mounts the console, and served from memory with an ETag, so a browser
revalidates cheaply and never runs a stale script after an upgrade.  Only the
files that are there can be named: a request path is a key, never a file
system path.

Every reply of the console carries a Content-Security-Policy that allows
scripts, styles, images and connections from the server itself only (no
inline script or style, no other host: the page works with no internet),
forbids framing, forms and ``<base>``, plus ``nosniff`` and ``no-referrer``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from twisted.web.resource import Resource

from tsnet.http.replies import PLAIN_ERRORS, send_error

CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

SECURITY_HEADERS = (
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
}
TEXT = b"text/plain; charset=utf-8"

#: the page, at ``/`` and ``/console``
PAGE = "index.html"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: bytes
    etag: bytes


def load_assets() -> dict[str, Asset]:
    """Every file under ``static/``, by its path relative to that folder."""
    out: dict[str, Asset] = {}
    todo = [("", resources.files("tsnet.console").joinpath("static"))]
    while todo:
        prefix, folder = todo.pop()
        for entry in folder.iterdir():
            name = prefix + entry.name
            if entry.is_dir():
                todo.append((name + "/", entry))
            elif entry.is_file():
                body = entry.read_bytes()
                suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
                etag = b'"%s"' % hashlib.sha256(body).hexdigest()[:20].encode()
                out[name] = Asset(body, CONTENT_TYPES.get(suffix, TEXT), etag)
    return out


def secure(request: Any) -> None:
    """The headers of every console reply."""
    for name, value in SECURITY_HEADERS:
        request.setHeader(name, value)


class ConsoleResource(Resource):
    """A console route: GET and HEAD only (405 otherwise), secured headers."""

    isLeaf = True

    def render(self, request: Any) -> Any:
        secure(request)
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return send_error(request, PLAIN_ERRORS, 405, "Method Not Allowed",
                              "the console only reads")
        return self.get(request)

    def get(self, request: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


def send_asset(request: Any, asset: Asset) -> bytes:
    """``asset`` as the reply (304 when the client has it already)."""
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"etag", asset.etag)
    known = request.getHeader(b"if-none-match")
    if known and asset.etag in [t.strip() for t in known.split(b",")]:
        request.setResponseCode(304)
        return b""
    request.setHeader(b"content-type", asset.content_type)
    return asset.body


class PageResource(ConsoleResource):
    """The console's one page."""

    def __init__(self, page: Asset) -> None:
        super().__init__()
        self.page = page

    def get(self, request: Any) -> bytes:
        return send_asset(request, self.page)


class StaticResource(ConsoleResource):
    """``/console/static/NAME``: one of the files the package ships."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        super().__init__()
        self.assets = assets

    def get(self, request: Any) -> bytes:
        asset = self.assets.get(b"/".join(request.postpath).decode("latin-1"))
        if asset is None:
            return send_error(request, PLAIN_ERRORS, 404, "Not Found")
        return send_asset(request, asset)
