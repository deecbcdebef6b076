"""The protocol families and storage backends that ship with tsnet; third
parties declare theirs alike, in their own ``tsnet/plugins/`` folder."""

from tsnet.console.plugin import ConsolePlugin
from tsnet.http.plugin import HttpPlugin, MetricsPlugin
from tsnet.protocols.atsd.plugin import AtsdPlugin
from tsnet.protocols.opentsdb.plugin import OpenTSDBPlugin
from tsnet.protocols.tsstore.plugin import TsstorePlugin
from tsnet.storage.redis_backend import RedisBackend
from tsnet.storage.sqlite_backend import SqliteBackend

opentsdb = OpenTSDBPlugin()
atsd = AtsdPlugin()
tsstore = TsstorePlugin()
http = HttpPlugin()
metrics = MetricsPlugin()
console = ConsolePlugin()
sqlite = SqliteBackend()
redis = RedisBackend()
