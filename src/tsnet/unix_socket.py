"""A Unix stream listener whose connections send a reply at once.

Twisted's transports only buffer in ``write``: the bytes go out on the next
reactor turn, after an ``epoll_ctl`` to watch the socket for writing and before
another to stop.  A request/response client on a local socket (ts-store's
``AUTH`` / ``OK <timestamp>`` protocol, spec tsstore §7) pays those two system
calls and a reactor turn on every round trip, a third of what the server
spends on it.  `EagerServer` tries ``send`` first when nothing is buffered,
and leaves whatever the socket did not take to Twisted's buffer, so ordering,
back-pressure (``pauseProducing`` when the buffer fills) and closing behave as
they do in Twisted.  It reads with ``recv``: no file descriptors are accepted,
so ``recvmsg``'s ancillary data would only be parsed to be dropped.

`UnixReactor` hands Twisted's ``unix:`` endpoint parser (``mode=``,
``backlog=``, ``lockfile=``) a reactor whose ``listenUNIX`` makes such a port.
"""

from __future__ import annotations

from errno import EAGAIN, ENOBUFS, EWOULDBLOCK
from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.interfaces import IListeningPort

_RETRY_LATER = (EAGAIN, EWOULDBLOCK, ENOBUFS)


class EagerServer(unix.Server):
    """A Unix connection that sends at once what it can (see the module)."""

    doRead = tcp.Connection.doRead  # (recv: no descriptors are received here)

    def write(self, data: bytes) -> None:
        if (data and self.connected and not self._writeDisconnected and not self.TLS
                and not self.dataBuffer and not self._tempDataBuffer
                and not self._sendmsgQueue):
            try:
                sent = self.socket.send(data)
            except OSError as e:
                if e.errno not in _RETRY_LATER:
                    # leave it to Twisted: its doWrite meets the same error and
                    # closes the connection the way it always does
                    super().write(data)
                    return
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)


class EagerPort(unix.Port):
    """A Unix listening port whose connections are `EagerServer`s."""

    transport = EagerServer


class UnixReactor:
    """``reactor``, with ``listenUNIX`` making an `EagerPort`."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def listenUNIX(self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666,
                   wantPID: int = 0) -> IListeningPort:
        port = EagerPort(address, factory, backlog, mode, self._reactor, wantPID)
        port.startListening()
        return port

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)
