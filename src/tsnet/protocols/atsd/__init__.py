"""The ATSD protocol family: network commands over TCP, UDP and HTTP.

Pure modules (no Twisted, no I/O), tested as plain functions:

* `framing`: bytes or text to logical commands (TCP stream, UDP datagram,
  HTTP body), each by its own rules (shared/specs/atsd.md §2, §6.2);
* `parse`: one logical command to a typed command object, or a `CommandError`
  whose text is the ``debug`` reply (§3, §4).

The Twisted side uses them: `tcp`, `udp` and `http_command` (the channels),
`http_read` (the read-back API), `items` (commands to one ingest batch),
`meta` (what metric and entity meta discards), `append` (``a:true``),
`commandlog` (the command logs) and `plugin`.
"""

#: The database revision the ``version`` command answers (a bare integer, §4.6).
ATSD_REVISION = 19320
