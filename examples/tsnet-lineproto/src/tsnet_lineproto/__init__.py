"""Graphite plaintext and InfluxDB line protocol for tsnet, on its public API.

`graphite_parse` and `influx_parse` are pure functions over text, tested on
their own; `graphite` and `influx` do the I/O and declare the plugins, which
``tsnet/plugins/lineproto.py`` instantiates for tsnet to find.
"""
