"""The ts-store family: stores (= solutions) of json, schema, text and binary
records over REST, WebSocket and a Unix socket, outbound WebSocket pull and
push connections, and reads (shared/specs/tsstore.md).

Pure modules (no Twisted, no I/O), tested as plain functions: `ring` (the
fixed footprint's block bookkeeping), `schema` (schema versions, compact and
full forms), `gojson` (JSON with Go's semantics and texts), `durations`,
`aggregate` (windowed aggregation) and `objects` (records as ts-store answers
them).  The Twisted side: `stores` (creation, keys, opening, the one write
routine), `rest` and `reads` (the HTTP API), `ws_write` (WebSocket input),
`unix` (the socket input), `connections` (outbound pull and push) and `plugin`.
"""
