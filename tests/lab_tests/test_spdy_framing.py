"""The lab's SPDY/3.1 framing (asgardlab/kubelet/spdy.py) byte for byte, without a lab.

Facts from /work/shared/reference/kubernetes-ingress-awx-facts.md section 1.a (moby/spdystream ``spdy/types.go``,
``read.go``, ``write.go``, ``dictionary.go``)."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib

import pytest
from asgardlab.kubelet import spdy


def test_dictionary_is_the_spdy3_dictionary():
    """1,423 bytes, Adler-32 0xE3C6A7C2 (the zlib DICTID), SHA-256 51d27341... (spdystream spdy/dictionary.go)."""
    d = spdy.DICTIONARY
    assert len(d) == 1423
    assert zlib.adler32(d) == 0xE3C6A7C2
    assert hashlib.sha256(d).hexdigest() == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def test_header_blocks_compress_with_the_dictionary_across_frames():
    """One compressor per direction, never reset, a sync flush after every block; a block starts with the zlib
    header naming the dictionary (78 f9 e3 c6 a7 c2) and ends 00 00 ff ff; names go lowercase."""
    s = spdy.Session(None, None)  # only its compressor is used
    first = s.compress({"streamType": "error", "port": "8080", "requestID": "0"})
    second = s.compress({})
    assert first[:6] == bytes.fromhex("78f9e3c6a7c2") and first.endswith(b"\x00\x00\xff\xff")
    assert second.endswith(b"\x00\x00\xff\xff") and not second.startswith(b"\x78")
    inflate = zlib.decompressobj(zdict=spdy.DICTIONARY)
    assert spdy.decode_headers(inflate.decompress(first)) == {"streamtype": "error", "port": "8080", "requestid": "0"}
    assert spdy.decode_headers(inflate.decompress(second)) == {}


@pytest.mark.parametrize("pairs", [[(b"Port", b"1")], [(b"port", b"1"), (b"port", b"2")]])
def test_header_block_rejects_uppercase_and_repeated_names(pairs):
    """spdystream read.go parseHeaderValueBlock fails the session on either."""
    block = struct.pack(">I", len(pairs)) + b"".join(
        struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v for n, v in pairs)
    with pytest.raises(spdy.ProtocolError):
        spdy.decode_headers(block)


def test_frame_layout():
    """Control: 80 03 | type | flags | 24-bit length. Data: stream id | flags (01 = FIN) | 24-bit length."""
    assert spdy.control_frame(spdy.PING, b"\x00\x00\x00\x01") == bytes.fromhex("800300060000000400000001")
    assert spdy.data_frame(3, b"hi", fin=True) == bytes.fromhex("00000003010000026869")


def test_session_replies_echoes_pings_delivers_data_and_ends_on_goaway():
    async def scenario():
        reader, sent = asyncio.StreamReader(), []

        async def write(b):
            sent.append(b)

        session = spdy.Session(reader, write)
        runner = asyncio.create_task(session.run())
        deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
        block = deflate.compress(spdy.encode_headers({"streamtype": "data", "port": "80"})) + deflate.flush(zlib.Z_SYNC_FLUSH)
        reader.feed_data(spdy.control_frame(spdy.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + block))
        stream = await anext(aiter(session))
        assert (stream.id, stream.headers) == (1, {"streamtype": "data", "port": "80"})
        await stream.accept()
        reader.feed_data(spdy.data_frame(1, b"abc") + spdy.data_frame(1, b"", fin=True))
        assert [await stream.read(), await stream.read()] == [b"abc", b""]
        reader.feed_data(spdy.control_frame(spdy.PING, struct.pack(">I", 1)))
        reader.feed_data(spdy.control_frame(spdy.GOAWAY, struct.pack(">II", 1, 0)))
        await asyncio.wait_for(runner, 5)
        assert session.done.is_set()
        reply, ping = sent
        assert reply[:8] == spdy.control_frame(spdy.SYN_REPLY, b"\x00" * (len(reply) - 8))[:8]
        assert reply[8:12] == struct.pack(">I", 1)
        assert spdy.decode_headers(zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(reply[12:])) == {}
        assert ping == spdy.control_frame(spdy.PING, struct.pack(">I", 1))

    asyncio.run(scenario())


def test_unknown_control_frame_ends_the_session():
    """Any control type the Go reader does not know (e.g. 5) kills the session (spdystream read.go)."""
    async def scenario():
        reader = asyncio.StreamReader()
        session = spdy.Session(reader, None)
        reader.feed_data(spdy.control_frame(5, b""))
        await asyncio.wait_for(session.run(), 5)
        assert session.done.is_set()

    asyncio.run(scenario())
