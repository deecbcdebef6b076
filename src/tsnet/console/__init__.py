"""The web console: one page, served by the shared HTTP site, that shows the
server's status and draws what any family wrote through OpenTSDB's read API.

- `tsnet.console.plugin`: the ``console`` API (``apis = console``; the
  ``opentsdb`` port serves it too, at ``/``).
- `tsnet.console.assets`: the page and its static files (package data under
  ``static/``, read once), behind a strict Content-Security-Policy.
- `tsnet.console.status`: ``/console/api/status``, built from the metric
  objects that render ``/metrics`` (no second set of counters) and the
  solutions the caller may see.

Nothing in the console writes: its page reads ``/console/api/status``,
``/api/suggest``, ``/api/aggregators``, ``/api/config/filters`` and
``/api/query``, with the READ token the user typed (HTTP Basic) on an ``auth =
token`` listener.
"""
