"""The zope interfaces of the plugin API: what a protocol family, a storage
backend and the core they plug into promise each other.

Third parties import them from `tsnet.plugin`, the one public module; every
plugin and backend is checked against them with `verifyObject` when it is
loaded, so each attribute and method declared here is required (the base
classes `tsnet.plugin.ProtocolPlugin` and `tsnet.plugin.StorageBackend` give
defaults for the optional ones).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IProtocolPlugin(Interface):
    """A protocol family, found with ``getPlugins(IProtocolPlugin, tsnet.plugins)``.

    A plugin may provide listeners (``protocol = NAME`` in a ``[listener:*]``
    section), HTTP routes (``apis = NAME`` on an ``http`` listener), or both.
    """

    name = Attribute("str: the name used by `protocol =` and `apis =` in the config.")
    description = Attribute("str: one line for `--help` and config errors.")
    transports = Attribute(
        "frozenset of endpoint kinds it can listen on: 'stream' (tcp/ssl/unix) and/or"
        " 'udp'.  Empty for an API-only plugin (no `protocol = NAME` listener).")
    listener_keys = Attribute(
        "dict: the family's own listener keys, key -> tsnet.plugin.Key.  Their values"
        " are in `listener.options`.")
    config_sections = Attribute(
        "dict: top-level sections the family owns, section name -> {key: Key}"
        " (e.g. {'tsstore': {...}}).  Parsed values are in `config.sections[name]`.")
    provides_api = Attribute(
        "bool: `resources` mounts HTTP routes, so `apis = NAME` may name this plugin.")
    http_errors = Attribute(
        "IHTTPErrors: how this family's routes answer errors the shared site raises"
        " for them (an oversized body, a crash); None for the neutral plain text.")

    def check(listener, config, plugins):
        """Called for every listener that uses this plugin, as its ``protocol``
        or as one of its ``apis`` (``listener.protocol`` tells which), once the
        whole file is parsed.  Raise ValueError with a message naming the key;
        it becomes a config error naming the file and the section."""

    def makeService(listener, core):
        """Return an IService that listens as the `tsnet.plugin.Listener` says.

        The service must log ``listener NAME bound ENDPOINT`` once bound
        (`StreamListenerService` and `DatagramListenerService` do) and may have
        ``whenListening() -> Deferred``, awaited before the server reports
        itself started.  Those two bind in ``privilegedStartService``, before
        storage opens (so a taken port fails the start at once, and a port
        under 1024 binds before twistd sheds privileges), and accept only in
        ``whenListening``; a subclass that must prepare its endpoint (a
        socket's folder) does it in ``listen``."""

    def makeFamilyService(core):
        """Return an IService of the whole family, or None: what outlives one
        listener (ts-store's outbound connections).  Called once per server for
        every plugin a listener uses; started after storage and auth, before the
        listeners, and stopped after them, before the last writes commit."""

    def addCommands(subparsers):
        """Add the family's `tsnet` subcommands to ``subparsers`` (argparse's)
        and return ``{(command, action): async run(args, storages, reactor)}``
        (action None for a command without one).  ``storages`` is the opened
        `IStorages`; raise ``tsnet.cli.CommandError`` for a user error."""

    def resources(core):
        """Return ``{b"/full/path": IResource}`` to mount on http listeners.

        Paths are matched whole, case-insensitively as a fallback, a trailing
        slash ignored; a path ending in ``/*`` (``b"/api/v1/entities/*"``)
        mounts every path below it, the rest in ``request.postpath``.  A
        resource may also provide `IFastPost`."""


class IHTTPErrors(Interface):
    """A family's error dialect, for errors the shared site answers on its routes."""

    def error_reply(code, message, details=None):
        """``(content_type, body)`` bytes for an error: ``message`` is the
        site's short text (``Endpoint not found``, ``Request Entity Too
        Large``, ``Unexpected exception``), ``details`` an optional longer one."""


class IFastPost(Interface):
    """An HTTP resource with a fast path for its hot ``POST`` (`tsnet.http.lean`).

    A plain keep-alive POST with a Content-Length body, no query string and no
    content coding is offered to `fast_post` before twisted.web sees it."""

    def fast_post(site, target, headers, body):
        """Return a Deferred of ``(status, [(name, value), ...], body)``, or None
        to leave this request to the resource's ``render``.  It must answer
        exactly as ``render`` would; it only saves twisted.web's per-request cost.
        ``headers`` maps lower-case header names to values (bytes)."""


class IStorageBackend(Interface):
    """A kind of storage (``[storage:NAME] backend = KIND``), found with
    ``getPlugins(IStorageBackend, tsnet.plugins)`` like protocol families."""

    name = Attribute("str: the `backend =` value.")
    description = Attribute("str: one line for config errors.")
    storage_keys = Attribute(
        "dict: the backend's own keys in a [storage:*] section, key -> Key.  Their"
        " values are in `StorageConfig.options`.")

    def check(storage, config):
        """Validate a parsed `StorageConfig` (raise ValueError naming the key) and
        normalise its options in place (e.g. make a path absolute)."""

    def makeStorage(storage, reactor):
        """Build (not open) the `IStorage` (and, for ``default``, `ICatalog`)."""


class IStorage(Interface):
    """A storage backend.  Every method that touches data returns a Deferred.

    All backends pass the same conformance suite (`tsnet.testing.conformance`).
    Rules of the data model (tag and meta merging, entity tags) are in
    `tsnet.storage.rules`, for every backend to reuse.
    """

    name = Attribute("The [storage:NAME] section this backend serves.")

    def open():
        """Open or create the store.  Deferred."""

    def close():
        """Commit what is in flight, release files and connections.  Deferred."""

    def write(batch):
        """Commit a `tsnet.model.WriteBatch` in one transaction.  Deferred[None].

        Fail with TypeError or ValueError only when the batch itself cannot be
        written (ingest drops it); any other failure is a fault, and ingest
        retries the same batch object later, so a failed write must leave none
        of it committed and the batch as it was handed over."""

    def read_series(solution, metric, start_ns, end_ns):
        """Deferred[list of (SeriesKey, times, values, texts)], merged and sorted by
        time, last write winning on duplicate times.  ``metric`` None means all."""

    def list_series(solution, metric=None):
        """Deferred[list of SeriesKey]: every series the solution has (of one
        metric when ``metric`` is given), without reading samples, in
        `read_series` order (metric, entity with none first, tags).  What read
        APIs list metrics, tag keys and tag values from."""

    def count_points(solution):
        """Deferred[int]: distinct (series, time) pairs stored for the solution."""

    def read_properties(solution, entity=None, type=None):
        """Deferred[list[Property]]: the solution's properties as stored (tags
        merged, the time of the last write), sorted by entity, type, then key as
        sorted compact JSON (the export's order).  ``entity`` and ``type``, when
        given, match exactly: names are stored as written, so a caller that
        matches case-insensitively folds case itself.  ``$entity_tags`` is not
        a property (see `read_meta`).  The caller owns the returned objects."""

    def read_messages(solution, entity=None, start_ns=None, end_ns=None, type=None,
                      limit=None):
        """Deferred[list[Message]] in time order, messages of equal time in write
        order.  ``start_ns`` is inclusive and ``end_ns`` EXCLUSIVE (ATSD's
        endDate; unlike `read_series`, whose end is inclusive); None leaves that
        side open.  ``entity`` and ``type`` match exactly when given.  ``limit``
        (an int >= 0; None: no limit) keeps the FIRST ``limit`` messages of that
        order, the oldest; a negative one fails with ValueError."""

    def read_meta(solution, kind, name=None):
        """Deferred[list[Meta]]: every ``kind`` record (``"metric"`` or
        ``"entity"``; any other fails with ValueError) with its fields as stored
        (merged upserts; ``{}`` for one registered only implicitly; no export
        defaults), sorted by name.  With ``name`` the list holds that record or
        nothing, so a lookup needs no second method.  ``$entity_tags`` shows as
        an entity's ``tags`` field."""

    def read_records(solution, start_ns=None, end_ns=None, limit=None, descending=False,
                     include_deleted=False):
        """Deferred[list[Record]]: the solution's records with ``start_ns <=
        time_ns <= end_ns`` (both inclusive; None leaves that side open) in time
        order, newest first when ``descending``; ``limit`` (an int >= 0, None:
        no limit) keeps the first ``limit`` of that order.  Soft-deleted records
        are left out unless ``include_deleted``; reclaimed ones are gone.  A
        batch's ``reclaim_ns`` removes, in the same commit and after the
        batch's records are written, every record at or before that time."""

    def delete_record(solution, time_ns):
        """Soft-delete the solution's records at ``time_ns``: Deferred[bool],
        True when a visible record was there.  Reads and the export no longer
        show it; ``read_records(include_deleted=True)`` still does."""

    def export(solution, emit):
        """Call ``emit(dict)`` for every stored item of the solution (every
        solution when None), in the export format of DESIGN §7.  Deferred[None].
        (`IExportText` is the same as text, for ``tsnet export``.)"""

    def solution_has_data(solution):
        """Deferred[bool]."""

    def delete_solution_data(solution):
        """Remove every item of the solution.  Deferred."""

    def compact(solution=None, max_series=None):
        """Deferred[int]: background upkeep, a step of at most ``max_series``
        series (None: all); returns how many series it worked on (0 when there
        was nothing to do, or nothing to compact in this kind of store)."""


class IBoundedReads(Interface):
    """An `IStorage` whose series reads stop at a point budget, so a query over
    too much data fails before it is all in memory.  Optional: the read APIs
    check ``IBoundedReads.providedBy(backend)``, and count the points of a
    backend without it after its read returns."""

    def read_series(solution, metric, start_ns, end_ns, max_points=None):
        """As `IStorage.read_series`; with ``max_points``, fail with
        `tsnet.errors.TooManyPoints` once more samples than that are to be
        returned (merged, in range), checked as it reads (a series, or a chunk
        of series, at a time), so it never holds much more than that."""


class ISeriesByKey(Interface):
    """An `IStorage` that reads given series by key, touching no other series'
    samples.  Optional: a query that selects some series of a metric reads
    just those from a backend with it (from one without, it reads the whole
    metric and selects afterwards).  A key names one series, so a backend
    that keeps a series where its key hashes (Redis) needs no index for it."""

    def read_series_of(solution, keys, start_ns, end_ns, max_points=None):
        """As `IStorage.read_series` and `IBoundedReads.read_series`, for the
        series ``keys`` names (SeriesKeys as `list_series` returns them, of
        any metrics; a key that is not stored, or has no point in range, is
        left out; a key given twice is read once), in `read_series` order."""


class ITagIndex(Interface):
    """An `IStorage` with an index of its series' tags, so the read APIs find
    a few of many series, and list names, without listing every series.
    Optional: without it they list the series (`list_series`) and filter.

    Matching is on the tags an OpenTSDB read sees (`tsnet.model.series_tags`:
    a series' tags, and its entity as the tag ``entity`` unless it has a tag of
    that name) and exact (case and all).  Keep the index in the transaction
    that creates the series it describes."""

    def list_series_where(solution, metric, tags):
        """Deferred[list[SeriesKey]]: the series of ``metric`` that have every
        key of ``tags`` (a dict: tag key -> frozenset of the values it may
        have; an empty set matches nothing) with one of its values, in
        `list_series` order; ``tags`` empty: every series of the metric.  It
        is there to cost what the series that match one of the keys cost,
        not what the metric's do."""

    def suggest_names(solution, kind, prefix, limit):
        """Deferred[list[str]]: the distinct names of ``kind`` -- ``"metrics"``
        (of the solution's series), ``"tagk"`` or ``"tagv"`` (of any key; the
        tags as written, no entity) -- that start with ``prefix``, sorted by
        code point, the first ``limit`` (an int >= 0) of them: what OpenTSDB's
        ``/api/suggest`` answers.  Any other kind fails with ValueError."""


class IExpiringStorage(Interface):
    """An `IStorage` that removes expired data in the background (retention,
    `tsnet.retention`).  Optional: on a backend without it expired data is
    still left out of every read, and is only never removed.

    Removal is in bounded steps, each a short transaction (or one script per
    shard), so writes go on between them; a step only removes what is wholly
    before its cutoff (a whole chunk or blob), so a point at or after the cutoff
    is never touched and last-write-wins between the points kept still holds."""

    def metric_retention(solution):
        """Deferred[dict]: metric name -> the ``retention_days`` field of its
        meta as stored (merged upserts), for the metrics whose meta has one;
        without the cost of listing implicit meta."""

    def expire_series(solution, cutoffs, cursor=None, max_series=256):
        """One step over at most ``max_series`` series of the solution, from
        ``cursor`` (None: the first step): remove the stored pieces (chunks,
        blobs) of each series whose every point is before
        ``cutoffs.series(metric)`` (a `tsnet.retention.Cutoffs`; None keeps the
        series whole).  Deferred[(pieces removed, cursor)]; the cursor to pass
        to the next step, None when every series was visited."""

    def expire_messages(solution, cutoff_ns, cursor=None, limit=4096):
        """One step: remove up to about ``limit`` of the solution's messages
        whose time is before ``cutoff_ns``.  Deferred[(removed, cursor)], the
        cursor None when nothing is left to remove."""


class ICatalog(Interface):
    """Where solutions and tokens are kept (the default storage's database).

    Every node of a deployment reads the same catalog, so token changes made by
    any node or by the `tsnet` command reach all of them.
    """

    def create_solution(solution):
        """Deferred; fails with tsnet.errors.Conflict if the name exists."""

    def update_solution(solution):
        """Deferred; replaces a solution's description and attributes."""

    def get_solution(name):
        """Deferred[SolutionRecord | None]."""

    def list_solutions():
        """Deferred[list[SolutionRecord]]."""

    def delete_solution(name):
        """Deferred; removes the solution and its tokens (not its data)."""

    def save_token(token):
        """Insert or replace a `tsnet.auth.TokenRecord` and its credentials.  Deferred."""

    def get_token(token_id):
        """Deferred[TokenRecord | None]."""

    def list_tokens(solution):
        """Deferred[list[TokenRecord]]."""

    def find_credential(credential_id, secret_hash):
        """Deferred[TokenRecord | None]: the token owning a credential, looked up by
        its id when given, else by the hash of its secret."""

    def catalog_generation():
        """Deferred[int]: a number that changes whenever a solution or token does."""


class IExportText(Interface):
    """An `IStorage` that renders its export as text itself (`tsnet.export_text`),
    without a dict per line: what makes ``tsnet export`` stream millions of
    lines a second.  Optional: ``tsnet export`` renders what `IStorage.export`
    emits for a backend without it."""

    def export_text(solution, write):
        """Call ``write(str)`` with the export of the solution (every solution
        when None) as text: whole lines, each exactly
        `tsnet.export_text.line_text` of the line `IStorage.export` emits, in
        the same order, a page at a time (about a MiB).  Deferred[None]."""


class IImporter(Interface):
    """Restores the export lines of some kinds (``tsnet import``)."""

    def load(lines):
        """``lines``: (line number, dict) of the importer's kinds, in file order,
        consecutive in the file, at most a batch of them.  Deferred[(batches,
        unchanged, refused)] (a `tsnet.import_lines.ImportStep`): the
        ``(solution, Batch)`` pairs to write through ingest, the number of lines
        stored as they are already (an import must be idempotent), and the
        lines refused as ``(line number, message)``.  Catalog changes a line
        needs (a store line creates its store) are made before it answers."""


class IImportKinds(Interface):
    """A protocol family that restores export lines of kinds of its own (ts-store:
    ``store`` and ``record``).  Optional: ``tsnet import`` refuses a line of a
    kind that neither the core nor an installed family restores."""

    import_kinds = Attribute("frozenset of the ``kind`` values it restores.")

    def importer(storages, storage):
        """An `IImporter` for one import run: ``storages`` is the opened
        `IStorages`, ``storage`` the ``[storage:NAME]`` where solutions the
        import creates go."""


class IStorages(Interface):
    """The storage backends of one server, and which solution lives in which
    (``core.storage``): the read side for protocols."""

    catalog = Attribute("The ICatalog (the default storage).")
    backends = Attribute("dict: storage name -> IStorage (the stores themselves: writes "
                         "and upkeep; no retention applied).")
    retention = Attribute("tsnet.retention.Retention: the rule of what is expired.")

    def backend_for(solution):
        """The IStorage holding ``solution``, as reads see it: its series and
        message reads and its export leave out what retention expired
        (`tsnet.retained`), the rest passes through; raises
        tsnet.errors.NotFound."""

    def retained(name):
        """Storage ``name`` as reads see it (what `backend_for` hands out)."""

    def storage_name_for(solution):
        """The name of that storage; raises tsnet.errors.NotFound."""

    def solution(name):
        """The cached SolutionRecord, or None (call `refresh` when it may be new)."""

    def refresh():
        """Deferred: reload the solution list from the catalog."""

    def add_series_view(view):
        """Register ``view(solution_record, backend) -> reader | None``: a family
        that shows its own items as series (a reader has `list_series` and
        `read_series` as IStorage has them)."""

    def series_reader(solution):
        """The reader series queries of ``solution`` use: a view's (over the
        `backend_for` read side), or that read side; raises
        tsnet.errors.NotFound."""

    def ensure_solution(name, description="", now_ns=0):
        """Deferred[SolutionRecord]: create the solution unless it exists."""


class IAuthenticator(Interface):
    """Turns a secret a client sent into a `tsnet.model.Principal`."""

    def authenticate(secret, scope):
        """Deferred[Principal]; fails with tsnet.errors.Unauthorized when the secret
        is unknown, expired or revoked, and tsnet.errors.Forbidden when the token
        lacks ``scope``."""

    def authenticate_any(candidates, scope):
        """Like `authenticate` for several readings of one credential (HTTP
        Basic's joined and password-only forms): the first known token decides."""

    def cached(secret, scope):
        """The Principal for a secret verified recently, with no Deferred (for hot
        paths), or None when it must go through `authenticate`.  Raises
        Unauthorized or Forbidden as `authenticate` fails."""


class IPointSink(Interface):
    """One connection's stream of unacknowledged points into the write queue
    (`IIngest.sink`): the hot path of line protocols, with no object per point.

    Use::

        cols = sink.columns()          # series key -> tsnet.model.Column
        ...append n points into cols...
        sink.added(n)                  # counted, queued, committed within flush_interval

    Points appended between `columns` and `added` are never split from their
    count: the write queue does not hand those columns to storage until `added`.
    Call `added` before returning to the reactor."""

    principal = Attribute("The Principal the points are written for.")

    def columns():
        """The dict to append into (may be the write queue's own columns)."""

    def samples():
        """The `tsnet.model.SampleSet` whose ``columns`` `columns` gives: a
        parser may append rows (``keys``, ``times``, ``values``) to it instead,
        for points of series it holds once or twice (`SampleSet` says when rows
        cost less).  Rows come after the columns for storage: a series' points
        must not go to its column after some went to rows."""

    def added(n):
        """Account for ``n`` points appended since `columns`: they are counted as
        received and committed within the flush interval, or retried until the
        storage writes again if it is failing (logged once per outage)."""


class IIngest(Interface):
    """The one write path: every protocol hands its parsed items here."""

    queued = Attribute("int: items accepted and not yet committed.")
    paused = Attribute("bool: the queue is past its high watermark, or a storage is "
                       "failing (streams paused).")

    def submit(batch, principal, protocol=""):
        """Queue a `tsnet.model.Batch` for the principal's solution.  Returns a
        Deferred that fires once every item of the batch is committed: what an
        ack waits for.  ``protocol`` labels the metrics.  While a storage is
        failing it fails with tsnet.errors.StorageUnavailable after
        ``storage_wait`` seconds (``kept``: the items stay queued and are
        retried) or at once when the queue is past ``max_queue`` (nothing
        queued); answer it with the protocol's "unavailable, retry" error."""

    def offer(batch, principal, protocol=""):
        """Queue without an ack, for inputs that cannot be paused (UDP).  Returns
        False, and stores nothing, when the queue is past ``max_queue``."""

    def sink(principal, protocol=""):
        """A new `IPointSink` for one connection's unacknowledged points."""

    def registerProducer(producer):
        """Pause ``producer`` (pauseProducing/resumeProducing) while the write queue
        is above its high watermark or a storage is failing."""

    def unregisterProducer(producer):
        """Forget a producer registered before."""

    def flush():
        """Deferred: write everything queued now; fires when the queue is empty."""


class IMetrics(Interface):
    """The server's counters (DESIGN §7 metrics); bump them with counts, once
    per batch, never once per point."""

    registry = Attribute("The server's prometheus_client CollectorRegistry, for a"
                         " family's own counters.")

    def received(protocol, n):
        """``n`` points parsed from clients."""

    def rejected(protocol, reason, n=1):
        """``n`` points refused, by reason (``invalid``, ``line_too_long``, ...)."""

    def written(protocol, points, items):
        """Committed: ``points`` samples and ``items`` {kind: count} (ingest calls it)."""

    def connection_opened(protocol, listener):
        """A client connection was admitted."""

    def connection_closed(protocol, listener):
        """It closed."""


class ICore(Interface):
    """What every plugin is handed: the shared services, nothing global."""

    config = Attribute("tsnet.plugin.Config: the whole parsed config file.")
    reactor = Attribute("The reactor: plugins schedule and listen through it only.")
    ingest = Attribute("IIngest: the one write path.")
    auth = Attribute("IAuthenticator.")
    storage = Attribute("IStorages: the read side.")
    catalog = Attribute("ICatalog: solutions and tokens.")
    metrics = Attribute("IMetrics.")
    plugins = Attribute("dict: name -> IProtocolPlugin, every installed family.")
