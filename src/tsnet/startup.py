"""Tell whoever started the server how its start went: twistd's status pipe and pidfile.

A daemonising twistd forks, and the parent it leaves in the shell waits on a
pipe for the child's word: ``b"0"`` (the parent exits 0) or ``b"1 why"`` (it
prints ``why`` and exits 1).  twistd writes that word itself right after
``startService`` returns, but tsnet's start goes on after that (storage opens
in a thread, listeners accept only once it is open), so twistd's ``b"0"``
would come before the outcome is known, and a start that fails would leave
the shell a status 0 and a stale pidfile.  `StartupReport` takes the pipe
over when twistd starts the application (twistd's own word then goes to
/dev/null) and writes the real outcome once it is known; on a failure it also
removes the pidfile, since the process then exits without returning to
twistd, which would remove it.

The pipe is found in twistd's options (``statusPipe``, which twistd's
``setupEnvironment`` sets once it has daemonised): the only way in, as twistd
has no hook for it.  Without twistd (tests, a foreground run with no
pidfile) every method does nothing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import MutableMapping
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="tsnet.startup")

#: bytes of the reason the parent reads (it reads 100: ``b"1 "`` and 98 more)
MAX_REASON = 98


class StartupReport:
    """The outcome of the start, told once to twistd's waiting parent."""

    def __init__(self, runner_options: MutableMapping[str, Any] | None = None) -> None:
        #: twistd's `ServerOptions` (the parent of tsnet's own options), or None
        self._options = runner_options
        self._pipe: int | None = None
        self._told = False

    def take_over(self) -> None:
        """Keep the status pipe for `succeeded` / `failed`, and give twistd
        /dev/null to write its early word into.  Call it after twistd has
        daemonised: in ``privilegedStartService``."""
        options = self._options
        if options is None or self._pipe is not None:
            return
        pipe = options.get("statusPipe")
        if pipe is None:  # not daemonised (twistd -n)
            return
        self._pipe = pipe
        options["statusPipe"] = os.open(os.devnull, os.O_WRONLY)

    def succeeded(self) -> None:
        """Every listener accepts: the parent may exit 0."""
        self._tell(b"0")

    def failed(self, reason: str) -> None:
        """The start failed: the parent prints ``reason`` (its first 98
        bytes) and exits 1; the pidfile goes first (the process exits with 1),
        so it is gone when the shell hears of the failure."""
        self._remove_pidfile()
        self._tell(b"1 " + reason.encode("ascii", "backslashreplace")[:MAX_REASON])

    def _tell(self, word: bytes) -> None:
        if self._told:
            return
        self._told = True
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        try:
            os.write(pipe, word)
        except OSError as e:  # the parent is gone (killed): nobody to tell
            log.warn("could not tell the starting shell how the start went: {error}",
                     error=e.strerror)
        finally:
            os.close(pipe)

    def _remove_pidfile(self) -> None:
        """Remove twistd's pidfile if it names this process."""
        path = (self._options or {}).get("pidfile")
        if not path:
            return
        try:
            with open(path, "rb") as f:
                pid = f.read().strip()
            if pid == str(os.getpid()).encode():
                os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                log.warn("could not remove the pidfile {path}: {error}", path=path,
                         error=e.strerror)
