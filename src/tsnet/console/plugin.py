"""The ``console`` API: the web console's routes, for the shared HTTP site.

Mounted on ``http`` listeners that name it in ``apis`` (or name none), and by
the ``opentsdb`` family on its own port (its ``console`` key), as OpenTSDB
serves its UI there.  The page is at ``/`` and ``/console``; everything else
it needs is under ``/console/``.
"""

from __future__ import annotations

from twisted.web.resource import IResource

from tsnet.core import Core
from tsnet.plugin import ProtocolPlugin


def console_resources(core: Core) -> dict[bytes, IResource]:
    """The console's routes; the static files are read here, once per site."""
    from tsnet.console.assets import PAGE, PageResource, StaticResource, load_assets
    from tsnet.console.status import AccessResource, StatusResource

    assets = load_assets()
    page = PageResource(assets[PAGE])
    return {
        b"/": page,
        b"/console": page,
        b"/console/static/*": StaticResource(assets),
        b"/console/api/access": AccessResource(),
        b"/console/api/status": StatusResource(core),
    }


class ConsolePlugin(ProtocolPlugin):
    name = "console"
    description = "the web console: status and charts (GET /), read-only"
    provides_api = True

    def resources(self, core: Core) -> dict[bytes, IResource]:
        return console_resources(core)
