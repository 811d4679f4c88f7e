"""pods/{name}/exec and pods/{name}/attach over the transports kubectl and the kubernetes client speak.

- WebSocket channels (apimachinery ``pkg/util/remotecommand/constants.go``, client-go ``tools/remotecommand/
  websocket.go``): every message binary, its first byte the channel: 0 stdin, 1 stdout, 2 stderr, 3 error,
  4 resize. ``v5.channel.k8s.io`` (kubectl 1.30+) adds 255 CLOSE: ``[255, 0]`` half-closes stdin.
  ``v4.channel.k8s.io`` is chosen when offered (the kubernetes Python client offers v5 and v4 but does not
  understand CLOSE), else v5, else ``channel.k8s.io``.
- SPDY/3.1 (kubectl's fallback, or ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``): one stream per channel, named by
  its ``streamtype`` header (error, stdin, stdout, stderr, resize); the server waits up to 30 s for as many streams
  as the options ask for, then runs the command (kubelet ``pkg/kubelet/cri/streaming/remotecommand/
  httpstream.go``). kubectl offers v5 down to channel.k8s.io; the lab speaks v5 and v4 (v5 over SPDY is v4:
  client-go ``tools/remotecommand/v5.go``).
- The end: v4/v5 write one JSON ``metav1.Status`` on the error channel, ``Success`` or ``Failure`` with reason
  ``NonZeroExitCode`` and ``details.causes[{reason: ExitCode, message: "<code>"}]`` (kubelet
  ``remotecommand/exec.go``), which kubectl reports as ``command terminated with exit code N``;
  ``channel.k8s.io`` writes only a failure's message.
Options come from the query: ``stdin``, ``stdout``, ``stderr``, ``tty`` ("true" from clients, "1" after the
apiserver). The lab has no terminals: with ``tty`` the output is still a plain pipe and resize is ignored.
Attach streams the container's output from now on (from its log, as the runtime does from its pipes) and feeds
stdin to containers declared with ``stdin: true``; ``stdinOnce`` closes their stdin when the first attach does.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from ..store import ApiError
from . import httpstream
from .spdy import Session

WS_PROTOCOLS = ("v4.channel.k8s.io", "v5.channel.k8s.io", "channel.k8s.io")
SPDY_VERSIONS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STREAM_CREATION_TIMEOUT = 30.0
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


@dataclass
class Options:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def parse(cls, query) -> Options:
        def flag(k: str) -> bool:
            return query.get(k) in ("true", "1")

        opts = cls(flag("stdin"), flag("stdout"), flag("stderr") and not flag("tty"), flag("tty"))
        if not (opts.stdin or opts.stdout or opts.stderr):
            raise ApiError(400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr")
        return opts


def exit_status(rc: int, cmd: list[str]) -> dict:
    if rc == 0:
        return {"metadata": {}, "status": "Success"}
    code = rc if rc > 0 else 128 - rc
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command [{' '.join(cmd)}], exit code {code}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


class Channels:
    """What a transport gives a command: ``stdin`` chunks (b"" = closed), ``write`` for stdout/stderr,
    ``finish`` with the final status, and ``gone`` once the client left (``read`` runs meanwhile and feeds
    ``stdin`` and ``gone``)."""

    def __init__(self) -> None:
        self.stdin: asyncio.Queue[bytes] = asyncio.Queue()
        self.gone = asyncio.Event()

    async def read(self) -> None:
        raise NotImplementedError

    async def write(self, channel: int, data: bytes) -> None:
        raise NotImplementedError

    async def finish(self, status: dict) -> None:
        raise NotImplementedError


class _WebSocketChannels(Channels):
    def __init__(self, ws: web.WebSocketResponse) -> None:
        super().__init__()
        self.ws = ws
        self.json_status = ws.ws_protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io")

    async def read(self) -> None:
        async for msg in self.ws:
            data = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT) or not data:
                continue
            if data[0] == CLOSE and data[1:2] == bytes([STDIN]):
                self.stdin.put_nowait(b"")
            elif data[0] == STDIN and len(data) > 1:
                self.stdin.put_nowait(data[1:])
        self.stdin.put_nowait(b"")
        self.gone.set()

    async def write(self, channel: int, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(bytes([channel]) + data)

    async def finish(self, status: dict) -> None:
        if self.json_status:
            await self.write(ERROR, json.dumps(status).encode())
        elif status["status"] != "Success":
            await self.write(ERROR, status["message"].encode())
        await self.ws.close()


class _SpdyChannels(Channels):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.streams: dict = {}

    async def open(self, opts: Options) -> bool:
        """Accept the client's streams until the options' count arrived (error + the asked ones)."""
        want = 1 + opts.stdin + opts.stdout + opts.stderr + opts.tty
        try:
            async with asyncio.timeout(STREAM_CREATION_TIMEOUT):
                async for stream in self.session:
                    await stream.accept()
                    kind = stream.headers.get("streamtype")
                    if kind in ("error", "stdin", "stdout", "stderr", "resize"):
                        self.streams[kind] = stream
                    if len(self.streams) == want:
                        break
        except TimeoutError:
            pass
        return len(self.streams) == want

    async def read(self) -> None:
        stdin = self.streams.get("stdin")
        if stdin is not None:
            while chunk := await stdin.read():
                self.stdin.put_nowait(chunk)
            self.stdin.put_nowait(b"")
        await self.session.done.wait()
        self.gone.set()

    async def write(self, channel: int, data: bytes) -> None:
        stream = self.streams.get("stdout" if channel == STDOUT else "stderr")
        if stream is not None:
            await stream.write(data)

    async def finish(self, status: dict) -> None:
        for kind in ("stdout", "stderr"):
            if kind in self.streams:
                await self.streams[kind].close()
        await self.streams["error"].write(json.dumps(status).encode())
        await self.streams["error"].close()


async def serve(request: web.Request, opts: Options, run) -> web.StreamResponse:
    """Upgrade as the client asks and hand the channels to ``run(channels)`` (a coroutine function)."""
    offered = httpstream.websocket_protocols(request)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        chosen = next((p for p in WS_PROTOCOLS if p in offered), None)
        ws = web.WebSocketResponse(protocols=(chosen,) if chosen else (), autoping=True)
        await ws.prepare(request)
        channels = _WebSocketChannels(ws)
        await _run(channels, run)
        return ws
    if not httpstream.is_spdy_upgrade(request):
        return web.Response(status=400, text="unable to upgrade: missing upgrade headers in request\n")
    version = httpstream.negotiate(request, SPDY_VERSIONS)
    if isinstance(version, web.Response):
        return version
    async with httpstream.spdy_session(request, version, tunneled=False) as (session, resp):
        channels = _SpdyChannels(session)
        if await channels.open(opts):
            await _run(channels, run)
    return resp


async def _run(channels, run) -> None:
    reader = asyncio.create_task(channels.read())
    try:
        await run(channels)
    finally:
        reader.cancel()


# ---------------------------------------------------------------------------------------------- exec
async def run_exec(worker, container, cmd: list[str], opts: Options, ch: Channels) -> None:
    try:
        proc = await worker.exec_process(container, cmd, stdin=opts.stdin)
    except ApiError as exc:
        await ch.finish(exc.status())
        return
    feeder = asyncio.create_task(_feed(ch.stdin, proc.stdin)) if proc.stdin is not None else None
    outputs = asyncio.gather(_drain(proc.stdout, STDOUT, ch), _drain(proc.stderr, STDERR, ch))
    gone = asyncio.create_task(ch.gone.wait())
    try:
        await asyncio.wait([outputs, gone], return_when=asyncio.FIRST_COMPLETED)
        if not ch.gone.is_set():
            await ch.finish(exit_status(await proc.wait(), cmd))
    finally:
        gone.cancel()
        outputs.cancel()
        if feeder is not None:
            feeder.cancel()
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            await proc.wait()


async def _drain(stream: asyncio.StreamReader, channel: int, ch: Channels) -> None:
    while data := await stream.read(65536):
        await ch.write(channel, data)


async def _feed(chunks: asyncio.Queue, pipe: asyncio.StreamWriter, close_at_end: bool = True) -> None:
    """Client stdin -> a process's stdin, until the client closes it."""
    while chunk := await chunks.get():
        try:
            pipe.write(chunk)
            await pipe.drain()
        except ConnectionError:
            return
    if close_at_end:
        pipe.close()


# ---------------------------------------------------------------------------------------------- attach
async def run_attach(worker, container, opts: Options, ch: Channels) -> None:
    """Output written from now on, until the container's process ends or the client leaves."""
    c, run = container, container.gen
    path = worker.log_path(c, c.restart_count)
    offset = path.stat().st_size if path.exists() else 0
    pipe = c.proc.stdin if opts.stdin and c.proc is not None else None
    feeder = asyncio.create_task(_feed(ch.stdin, pipe, bool(c.spec.get("stdinOnce")))) if pipe else None
    try:
        while not ch.gone.is_set():
            ended = c.gen != run or c.proc is None or (c.proc.returncode is not None and all(t.done() for t in c.pumps))
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]
            offset += len(complete)
            for stream, text in _log_records(complete):
                await ch.write(STDERR if stream == b"stderr" else STDOUT, text)
            if ended:
                await ch.finish({"metadata": {}, "status": "Success"})
                return
            await asyncio.sleep(0.1)
    finally:
        if feeder is not None:
            feeder.cancel()


def _log_records(data: bytes):
    """(stream, text) from the kubelet's log lines ``<ts> <stream> <F|P> <text>``; P = no newline at the end."""
    for line in data.splitlines():
        parts = line.split(b" ", 3)
        if len(parts) >= 3:
            yield parts[1], (parts[3] if len(parts) > 3 else b"") + (b"\n" if parts[2] == b"F" else b"")
