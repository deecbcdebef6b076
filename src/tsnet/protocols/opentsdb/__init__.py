"""OpenTSDB compatibility: telnet put and the HTTP API on one port, with the reply
texts clients match on (spec: shared/specs/opentsdb.md).

Parsing lives in `telnet_parse` and `json_put`, free of Twisted so it is tested
and timed on its own; `telnet`, `http_put` and `http_read` do the I/O; `switch`
picks the protocol by the first byte.
"""

#: the OpenTSDB release whose behaviour this family follows (its `version` replies)
OPENTSDB_VERSION = "2.4.0"
#: when this "build" was made, for `version` and /api/version (2026/11/22 00:00 UTC)
BUILD_TIMESTAMP = 1795305600
