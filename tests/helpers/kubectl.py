"""A real ``kubectl port-forward`` in the background, for tests: started, waited for, read and stopped by pid."""

from __future__ import annotations

import queue
import re
import subprocess
import threading

_FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)")


class PortForward:
    """``kubectl port-forward --address 127.0.0.1 ARGS...`` with ``env`` (KUBECONFIG, KUBECTL_* switches).

    The constructor returns once kubectl printed ``Forwarding from 127.0.0.1:PORT -> REMOTE`` (``port`` is that
    local port; ``:REMOTE`` in ARGS lets kubectl pick a free one) and raises with kubectl's output if it exits
    first or prints nothing within ``timeout`` seconds. Use it as a context manager: it stops kubectl on exit."""

    def __init__(self, env: dict, *args: str, timeout: float = 60) -> None:
        self.args = ["kubectl", "port-forward", "--address", "127.0.0.1", *args]
        self.proc = subprocess.Popen(self.args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self._stdout), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, None), daemon=True)]
        for t in self._readers:
            t.start()
        self.port = self._wait_forwarding(timeout)

    def _read(self, pipe, lines: queue.Queue | None) -> None:
        for line in pipe:
            (self._out if lines is not None else self._err).append(line)
            if lines is not None:
                lines.put(line)
        if lines is not None:
            lines.put(None)

    def _wait_forwarding(self, timeout: float) -> int:
        try:
            while (line := self._stdout.get(timeout=timeout)) is not None:
                if m := _FORWARDING.match(line):
                    return int(m.group(1))
        except queue.Empty:
            self.stop()
            raise AssertionError(f"{' '.join(self.args)}: no 'Forwarding from' line in {timeout}s: {self.output()}") from None
        self.wait(10)
        raise AssertionError(f"{' '.join(self.args)} exited {self.proc.returncode}: {self.output()}")

    def wait(self, timeout: float) -> int:
        """kubectl's exit status once it exited by itself (and its output has been read)."""
        rc = self.proc.wait(timeout=timeout)
        for t in self._readers:
            t.join(timeout)
        return rc

    def stderr(self) -> str:
        return "".join(self._err)

    def output(self) -> str:
        return f"stdout: {''.join(self._out)!r} stderr: {self.stderr()!r}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
