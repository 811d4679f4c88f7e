"""SPDY/3.1 framing and a server-side session, as much of it as Kubernetes streaming uses.

kubectl and the kubelet speak SPDY through moby/spdystream; this follows its reader and writer
(``spdy/types.go``, ``read.go``, ``write.go``, ``connection.go``, ``stream.go``) and the SPDY Protocol Draft 3.1.

Frames, big-endian. Control: ``0x80 0x03`` | type (2) | flags (1) | length (3) | payload.
Data: stream id (4, top bit 0) | flags (1) | length (3) | payload. Flag 0x01 is FIN in both.
Header blocks (SYN_STREAM, SYN_REPLY, HEADERS): u32 pair count, then per pair u32 length + name and u32 length
+ value (several values of a name joined by NUL), compressed with zlib primed with the SPDY/3 dictionary; one
compressor per direction for the whole connection, sync-flushed after every block.

The session is the server side: the peer opens streams (odd ids), the server answers each with SYN_REPLY
(``accept``) or RST_STREAM CANCEL (``refuse``), as k8s.io/apimachinery ``httpstream/spdy/connection.go`` does.
PINGs are echoed; GOAWAY or the end of the byte stream ends the session; SETTINGS, WINDOW_UPDATE and HEADERS are
ignored (spdystream has no flow control); any other control type ends the session, as the Go reader fails on it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib

log = logging.getLogger("asgardlab.kubelet")

# SPDY/3 header dictionary (SPDY Protocol Draft 3, 2.6.10.1; spdystream spdy/dictionary.go): 65 length-prefixed
# words, then a run of status codes, reason phrases, dates and content types. 1,423 bytes, SHA-256 51d27341...
_DICT_WORDS = (
    "options,head,post,put,delete,trace,accept,accept-charset,accept-encoding,accept-language,accept-ranges,age,"
    "allow,authorization,cache-control,connection,content-base,content-encoding,content-language,content-length,"
    "content-location,content-md5,content-range,content-type,date,etag,expect,expires,from,host,if-match,"
    "if-modified-since,if-none-match,if-range,if-unmodified-since,last-modified,location,max-forwards,pragma,"
    "proxy-authenticate,proxy-authorization,range,referer,retry-after,server,te,trailer,transfer-encoding,upgrade,"
    "user-agent,vary,via,warning,www-authenticate,method,get,status,200 OK,version,HTTP/1.1,url,public,set-cookie,"
    "keep-alive,origin"
).split(",")
_DICT_TAIL = (
    b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    b"203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    b"403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    b"Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    b"chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    b"text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(len(w).to_bytes(4, "big") + w.encode() for w in _DICT_WORDS) + _DICT_TAIL

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
CANCEL = 5  # RST_STREAM status
MAX_DATA = 32 * 1024  # bytes per DATA frame we send (what Go's io.Copy writes at most)


class ProtocolError(Exception):
    """The peer sent something the Go reader would refuse: the session ends."""


def encode_headers(headers: dict[str, str]) -> bytes:
    """The uncompressed header block: lowercase names, as spdystream writes them."""
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        n, v = name.lower().encode(), value.encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def decode_headers(block: bytes) -> dict[str, str]:
    """Parse an uncompressed header block; upper-case or repeated names are errors (spdystream read.go)."""
    try:
        (count,), pos, headers = struct.unpack_from(">I", block), 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            (n,) = struct.unpack_from(">I", block, pos)
            value = block[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            if name != name.lower() or name in headers:
                raise ProtocolError(f"invalid header name {name!r}")
            headers[name] = value
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed header block: {exc}") from None
    if pos != len(block):
        raise ProtocolError("header block longer than its pairs")
    return headers


def control_frame(ftype: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">HHI", 0x8003, ftype, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


class Stream:
    """One stream the peer opened. ``read()`` returns its next DATA payload, b"" once the peer half-closed it,
    reset it or the session ended."""

    def __init__(self, session: Session, stream_id: int, headers: dict[str, str]) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._eof = False
        self.closed = False  # we sent FIN or RST_STREAM: no more writes
        self.remote_closed = False  # the peer sent FIN or RST_STREAM

    async def accept(self) -> None:
        """SYN_REPLY with an empty header block, as spdystream replies."""
        await self.session.send(SYN_REPLY, struct.pack(">I", self.id), headers={})

    async def refuse(self) -> None:
        await self.reset()

    async def read(self) -> bytes:
        if self._eof:
            return b""
        chunk = await self._inbox.get()
        self._eof = not chunk
        return chunk

    async def write(self, data: bytes) -> None:
        for i in range(0, len(data), MAX_DATA):
            if self.closed:
                return
            await self.session.send_data(data_frame(self.id, data[i:i + MAX_DATA]))

    async def close(self) -> None:
        """Half-close: an empty DATA frame with FIN."""
        if not self.closed:
            self.closed = True
            await self.session.send_data(data_frame(self.id, b"", fin=True))
            self.session.forget(self)

    async def reset(self, status: int = CANCEL) -> None:
        if not self.closed:
            self.closed = True
            await self.session.send(RST_STREAM, struct.pack(">II", self.id, status))
        self._end()

    def _end(self) -> None:
        """The peer is done with the stream (FIN, RST_STREAM or the session's end)."""
        self.remote_closed = True
        self._inbox.put_nowait(b"")
        self.session.forget(self)


class Session:
    """The server side of one SPDY/3.1 connection. ``reader`` yields the peer's bytes (raw socket or the
    payloads of WebSocket messages), ``write`` sends bytes. Iterate the session for the streams the peer opens;
    the iteration ends with the session."""

    def __init__(self, reader: asyncio.StreamReader, write) -> None:
        self._reader = reader
        self._write = write
        self._lock = asyncio.Lock()
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._streams: dict[int, Stream] = {}
        self._new: asyncio.Queue[Stream | None] = asyncio.Queue()
        self._last_id = 0
        self.done = asyncio.Event()

    def compress(self, headers: dict[str, str]) -> bytes:
        return self._deflate.compress(encode_headers(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    async def send(self, ftype: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """One control frame; ``headers`` are compressed onto the payload under the write lock, so header blocks
        leave in the order the compressor made them."""
        if self.done.is_set():
            return
        async with self._lock:
            if headers is not None:
                payload += self.compress(headers)
            await self._write_frame(control_frame(ftype, payload))

    async def send_data(self, frame: bytes) -> None:
        if self.done.is_set():
            return
        async with self._lock:
            await self._write_frame(frame)

    async def _write_frame(self, frame: bytes) -> None:
        try:
            await self._write(frame)
        except (ConnectionError, RuntimeError):
            self._finish()

    async def goaway(self) -> None:
        await self.send(GOAWAY, struct.pack(">II", self._last_id, 0))
        self._finish()

    def forget(self, stream: Stream) -> None:
        """Drop a stream closed both ways; DATA for it is ignored from now on."""
        if stream.closed and stream.remote_closed:
            self._streams.pop(stream.id, None)

    def __aiter__(self):
        return self

    async def __anext__(self) -> Stream:
        stream = await self._new.get()
        if stream is None:
            self._new.put_nowait(None)
            raise StopAsyncIteration
        return stream

    async def run(self) -> None:
        """Read frames until the peer goes away, the bytes end or the peer breaks the protocol."""
        try:
            while not self.done.is_set():
                head = await self._reader.readexactly(8)
                word, flags_len = struct.unpack(">II", head)
                flags, length = flags_len >> 24, flags_len & 0xFFFFFF
                payload = await self._reader.readexactly(length)
                if word & 0x80000000:
                    await self._control(word >> 16 & 0x7FFF, word & 0xFFFF, flags, payload)
                else:
                    self._data(word, flags, payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as exc:
            log.info("spdy session ended: %s", exc)
        finally:
            self._finish()

    async def _control(self, version: int, ftype: int, flags: int, payload: bytes) -> None:
        if version != 3:
            raise ProtocolError(f"unsupported SPDY version {version}")
        if ftype == SYN_STREAM:
            stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            try:
                block = self._inflate.decompress(payload[10:])
            except zlib.error as exc:
                raise ProtocolError(f"header block: {exc}") from None
            stream = Stream(self, stream_id, decode_headers(block))
            self._last_id = max(self._last_id, stream_id)
            self._streams[stream_id] = stream
            if flags & FLAG_FIN:
                stream._end()
            await self._new.put(stream)
        elif ftype == RST_STREAM:
            stream = self._streams.get(struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF)
            if stream is not None:
                stream.closed = True
                stream._end()
        elif ftype == PING:
            await self.send(PING, payload)
        elif ftype == GOAWAY:
            self._finish()
        elif ftype not in (SETTINGS, HEADERS, WINDOW_UPDATE, SYN_REPLY):
            raise ProtocolError(f"unknown control frame type {ftype}")

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolError("data frame on stream 0")
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # unknown or closed both ways: dropped, as spdystream does
        if payload:
            stream._inbox.put_nowait(payload)
        if flags & FLAG_FIN:
            stream._end()

    def _finish(self) -> None:
        if self.done.is_set():
            return
        self.done.set()
        for stream in list(self._streams.values()):
            stream._end()
        self._new.put_nowait(None)
