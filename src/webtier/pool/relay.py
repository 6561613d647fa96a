"""The relay of session clustering: fan every message out to every other worker.

In ``--mode clustered`` each worker keeps all sessions in memory and replicates
every change to its peers (see :mod:`webtier.stores.clustered`). Rather than a
full mesh of N x (N - 1) connections, every worker opens one Unix-domain socket
to this relay, run by the supervisor's process; whatever one worker sends, the
relay writes to all the others, never back to the sender. The traffic is the
same as a mesh's (one copy per peer), which is the cost being demonstrated.

Wire format, both directions: frames of a 4-byte big-endian length and that many
payload bytes. Payloads are opaque to the relay. The one exception is the empty
frame: the relay sends it to a worker once that worker is registered (from then
on, every peer's message reaches it), and it never forwards empty frames.

The relay does not queue for slow peers beyond ``max_buffer`` bytes: a worker
that stops reading is disconnected (``evicted``) rather than allowed to stall or
bloat the whole cluster. It loses those messages; so does a worker that is not
connected at all. Nothing is retransmitted: the relay is a baseline, not a
reliable broadcast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct

from webtier.exceptions import ConfigError, StoreError

__all__ = ["HEADER", "MAX_FRAME", "WELCOME", "ClusterRelay", "check_socket_path", "frame", "read_frame"]

log = logging.getLogger("webtier.pool.relay")

HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024
#: The empty frame: "you are registered; from now on your peers' messages reach you".
WELCOME = HEADER.pack(0)
# sun_path is 108 bytes on Linux and 104 on macOS, including the terminating NUL.
_MAX_PATH = 103


def check_socket_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a string, if it fits in a Unix socket address; ``ConfigError`` otherwise."""
    text = os.fspath(path)
    if not text or len(os.fsencode(text)) > _MAX_PATH:
        raise ConfigError(f"Unix socket path {text!r} must be 1 to {_MAX_PATH} bytes long")
    return text


def frame(payload: bytes) -> bytes:
    """``payload`` with its length header."""
    return HEADER.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader, max_size: int = MAX_FRAME) -> bytes:
    """The next frame's payload; ``IncompleteReadError`` at end of stream, ``StoreError`` if too large."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > max_size:
        raise StoreError(f"cluster frame of {size} bytes exceeds the {max_size}-byte limit")
    return await reader.readexactly(size) if size else b""


class ClusterRelay:
    """A Unix-socket server that copies each frame from one worker to all the others."""

    def __init__(self, path: str | os.PathLike[str], *, max_frame: int = MAX_FRAME, max_buffer: int = 64 << 20) -> None:
        self._path = check_socket_path(path)
        self._max_frame = max_frame
        self._max_buffer = max_buffer
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._peers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._counts = dict.fromkeys(("messages_in", "bytes_in", "messages_out", "bytes_out", "evicted"), 0)

    @property
    def path(self) -> str:
        return self._path

    def stats(self) -> dict[str, int]:
        """Messages and bytes (headers included) received from and written to workers."""
        return {"peers": len(self._peers), **self._counts}

    async def start(self) -> None:
        """Listen on :attr:`path`; a stale socket file is replaced, a live relay's is not."""
        if self._server is not None:
            return
        with contextlib.suppress(OSError):  # nothing there, or a stale socket file
            _, writer = await asyncio.open_unix_connection(self._path)
            writer.close()
            raise ConfigError(f"another relay is already listening on {self._path}")
        try:  # asyncio itself replaces a stale socket file; anything else at the path is an error
            self._server = await asyncio.start_unix_server(self._serve, path=self._path)
        except OSError as exc:
            raise ConfigError(f"relay cannot listen on {self._path}: {exc}") from exc
        self._inode = os.stat(self._path).st_ino

    async def stop(self) -> None:
        """Stop listening, disconnect every worker and remove the socket file."""
        server, self._server = self._server, None
        if server is None:
            return
        # A connection accepted just now attaches to the server on the next loop iteration; closing the
        # server before that makes CPython 3.11 leak its socket. One iteration lets it attach.
        await asyncio.sleep(0)
        server.close()
        peers = list(self._peers)
        for peer in peers:
            peer.close()  # flushes what is buffered first ...
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=1.0)
        for peer in peers:
            peer.transport.abort()  # ... unless the worker is not reading
        await server.wait_closed()
        with contextlib.suppress(OSError):  # only our own socket: a successor may already own the path
            if os.stat(self._path).st_ino == self._inode:
                os.unlink(self._path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before stop() and only now handed over
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._peers.add(writer)  # registered before the welcome, so the welcome is a promise
        try:
            writer.write(WELCOME)
            while True:
                payload = await read_frame(reader, self._max_frame)
                if payload:
                    self._fan_out(writer, frame(payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker left
        except StoreError as exc:
            log.warning("relay: disconnecting a worker: %s", exc)
        finally:
            self._peers.discard(writer)
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    def _fan_out(self, sender: asyncio.StreamWriter, data: bytes) -> None:
        self._counts["messages_in"] += 1
        self._counts["bytes_in"] += len(data)
        for peer in list(self._peers):
            if peer is sender or peer.is_closing():
                continue
            if peer.transport.get_write_buffer_size() > self._max_buffer:
                log.warning("relay: evicting a worker that fell %d bytes behind", self._max_buffer)
                self._counts["evicted"] += 1
                self._peers.discard(peer)
                peer.transport.abort()  # close() would wait, forever, to flush what it will not read
                continue
            peer.write(data)
            self._counts["messages_out"] += 1
            self._counts["bytes_out"] += len(data)
