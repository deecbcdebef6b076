"""The plugin package: built-in families and backends in builtin.py, third-party
ones in any ``tsnet/plugins/`` folder (without ``__init__.py``) on ``sys.path``.

Every plugin found is checked with `zope.interface.verify.verifyObject` against
its interface; one that fails is logged with its name and what is missing, and
skipped, so a broken third-party distribution never stops the server.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.plugin import getPlugins, pluginPackagePaths
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []

log = Logger(namespace="tsnet.plugins")


def _found(interface: Any) -> list[Any]:
    """Every provider of ``interface`` in the plugin package, built-ins first."""
    import tsnet.plugins as package
    from tsnet.plugins import builtin

    for path in pluginPackagePaths(package.__name__):  # sys.path may have grown
        if path not in package.__path__:
            package.__path__.append(path)
    builtins = {id(v) for v in vars(builtin).values()}
    return sorted(getPlugins(interface, package),
                  key=lambda p: (id(p) not in builtins, str(getattr(p, "name", ""))))


def _load(interface: Any, what: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for p in _found(interface):
        module = type(p).__module__
        try:
            verifyObject(interface, p)
        except Invalid as e:
            log.error("{what} {name!r} from {module} skipped: {why}", what=what,
                      name=getattr(p, "name", type(p).__name__), module=module,
                      why=" ".join(str(e).split()))
            continue
        if p.name in found:
            log.warn("{what} {name!r} from {module} is installed already: ignored",
                     what=what, module=module, name=p.name)
            continue
        found[p.name] = p
    return found


def load_plugins() -> dict[str, Any]:
    """Every installed `IProtocolPlugin` by name (the built-ins win a name)."""
    from tsnet.interfaces import IProtocolPlugin

    return _load(IProtocolPlugin, "protocol plugin")


def load_storage_backends() -> dict[str, Any]:
    """Every installed `IStorageBackend` by name (the built-ins win a name)."""
    from tsnet.interfaces import IStorageBackend

    return _load(IStorageBackend, "storage backend")
