"""OpenTSDB compatibility: the telnet line protocol, with the reply texts clients match on.

The parsing rules live in `telnet_parse`, kept free of Twisted so they can be tested
and timed on their own (spec: shared/specs/opentsdb.md §1 and §6).
"""
