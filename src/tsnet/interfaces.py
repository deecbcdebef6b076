"""The public plugin API: what a protocol family, a storage backend and the
authenticator promise each other.  Third-party plugins depend on this module only.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IProtocolPlugin(Interface):
    """A protocol family, found with ``getPlugins(IProtocolPlugin, tsnet.plugins)``.

    A plugin may provide listeners (``protocol = NAME`` in a ``[listener:*]``
    section), HTTP resources (``apis = NAME`` on an ``http`` listener), or both.
    """

    name = Attribute("The name used by `protocol =` and `apis =` in the config.")
    description = Attribute("One line for `--help` and config errors.")
    listener_keys = Attribute(
        "dict of extra listener keys this family accepts: key -> tsnet.config.Key."
    )
    transports = Attribute(
        "frozenset of endpoint kinds it can listen on: 'stream' (tcp/ssl/unix) and/or 'udp'."
        " Empty for an API-only plugin."
    )

    def makeService(listener, core):
        """Return an IService that listens as the `tsnet.config.Listener` says.

        The service must log ``listener NAME bound ENDPOINT`` once bound.
        """

    def resources(core):
        """Return ``{b"/full/path": IResource}`` to mount on http listeners.

        Paths are matched exactly (a trailing slash is ignored)."""


class IStorage(Interface):
    """A storage backend.  Every method that touches data returns a Deferred.

    All backends pass the same conformance suite (tsnet.testing.conformance).
    """

    name = Attribute("The [storage:NAME] section this backend serves.")

    def open():
        """Open or create the store.  Deferred."""

    def close():
        """Commit what is in flight, release files and connections.  Deferred."""

    def write(batch):
        """Commit a `tsnet.model.WriteBatch` in one transaction.  Deferred[None]."""

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

    def export(solution, emit):
        """Call ``emit(dict)`` for every stored item of the solution, in the export
        format of DESIGN §7.  Deferred[None] when done."""

    def solution_has_data(solution):
        """Deferred[bool]."""

    def delete_solution_data(solution):
        """Remove every item of the solution.  Deferred."""


class ICatalog(Interface):
    """Where solutions and tokens are kept (the default storage's database).

    Every node of a deployment reads the same catalog, so token changes made by
    any node or by the `tsnet` command reach all of them.
    """

    def create_solution(solution):
        """Deferred; fails with tsnet.errors.Conflict if the name exists."""

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


class IAuthenticator(Interface):
    """Turns a secret a client sent into a `tsnet.model.Principal`."""

    def authenticate(secret, scope):
        """Deferred[Principal]; fails with tsnet.errors.Unauthorized when the secret
        is unknown, expired or revoked, and tsnet.errors.Forbidden when the token
        lacks ``scope``."""


class IIngest(Interface):
    """The one write path: every protocol hands its parsed items here."""

    def submit(batch, principal):
        """Queue a `tsnet.model.Batch` for the principal's solution.  Returns a
        Deferred that fires once every item of the batch is committed."""

    def registerProducer(producer):
        """Pause ``producer`` (pauseProducing/resumeProducing) while the write queue
        is above its high watermark."""

    def unregisterProducer(producer):
        """Forget a producer registered before."""
