"""The HTTP room: the shared site every family mounts its routes on.

`site` routes whole paths to the resources plugins mount and caps bodies;
`lean` is the small HTTP/1.1 front for hot keep-alive POSTs; `credentials`
reads the token sources of DESIGN §5 from a request; `plugin` declares the
`http` listener and the `metrics` API.
"""
