"""The protocol families that ship with tsnet; third parties add theirs alike."""

from tsnet.http.plugin import HttpPlugin, MetricsPlugin
from tsnet.protocols.opentsdb.plugin import OpenTSDBPlugin

opentsdb = OpenTSDBPlugin()
http = HttpPlugin()
metrics = MetricsPlugin()
