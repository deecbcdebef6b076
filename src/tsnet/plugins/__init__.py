"""The plugin package: built-in families in builtin.py, third-party ones in any
``tsnet/plugins/`` folder (without ``__init__.py``) on ``sys.path``."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.plugin import getPlugins, pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []

log = Logger(namespace="tsnet.plugins")


def load_plugins() -> dict[str, Any]:
    """Every installed IProtocolPlugin by name.  A module that fails to import is
    logged by twisted.plugin and skipped; a second plugin with a name already
    taken is logged and ignored (the built-ins load first)."""
    import tsnet.plugins as package
    from tsnet.interfaces import IProtocolPlugin

    for path in pluginPackagePaths(package.__name__):  # sys.path may have grown
        if path not in package.__path__:
            package.__path__.append(path)
    found: dict[str, Any] = {}
    plugins = sorted(getPlugins(IProtocolPlugin, package),
                     key=lambda p: (type(p).__module__ != "tsnet.plugins.builtin", p.name))
    for p in plugins:
        if p.name in found:
            log.warn("plugin {module} also provides {name!r}: ignored",
                     module=type(p).__module__, name=p.name)
            continue
        found[p.name] = p
    return found
