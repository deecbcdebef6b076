"""tsnet-lineproto's plugins, found by tsnet through ``twisted.plugin``.

This folder has no ``__init__.py``: it adds modules to tsnet's plugin package
(``tsnet.plugins``) without being a package of its own.  Keep this module
cheap to import; the code lives in ``tsnet_lineproto``.
"""

from tsnet_lineproto.graphite import GraphitePlugin
from tsnet_lineproto.influx import InfluxPlugin
from tsnet_lineproto.memory_store import MemoryBackend

graphite = GraphitePlugin()
influx = InfluxPlugin()
memory = MemoryBackend()
