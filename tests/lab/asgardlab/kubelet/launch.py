"""Container launcher: the last step before the container's own process.

Run by the kubelet as ``ip netns exec <ns> unshare --mount --propagation private /usr/bin/python3 launch.py fd:N``
(or under ``nsenter`` for exec and exec probes). For a container (spec ``pidns``) it first makes a new PID
namespace and forks: the child becomes PID 1 there (with its own /proc), the parent stays behind as the
container's shim (as containerd-shim: it ignores SIGTERM/SIGINT/SIGHUP, waits for PID 1 and exits with its
status, 128+N for signal N). PID 1 bind-mounts the volumes at their mountPath inside the private mount
namespace, switches uid/gid, changes to workingDir and execs the command with exactly the environment given,
so the container's command is PID 1: the kernel drops signals it has no handler for (SIGTERM included), and
when it exits every other process in the namespace is killed. Python 3.11-compatible on purpose (Debian's
/usr/bin/python3). Exit code 128 with a message on stderr means the container could not start (as runc's
StartError).
"""

import ctypes
import json
import os
import signal
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1


def die(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
    os._exit(128)


def bind(libc, src, dst, readonly):
    """Bind ``src`` (a /proc/self/fd/N path opened before any mount) at ``dst``."""
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst) or "/", exist_ok=True)
        if not os.path.exists(dst):
            open(dst, "a").close()
    if libc.mount(src.encode(), dst.encode(), None, MS_BIND | MS_REC, None) != 0:
        die(f"failed to mount {src} at {dst}: {os.strerror(ctypes.get_errno())}")
    if readonly and libc.mount(b"none", dst.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, None) != 0:
        die(f"failed to make {dst} read-only: {os.strerror(ctypes.get_errno())}")


def pid_namespace(libc):
    """Fork the container's PID 1 into a new PID namespace; in the parent (the shim), wait for it and exit
    as it did. Returns only in the child."""
    if libc.unshare(CLONE_NEWPID) != 0:
        die(f"failed to create a PID namespace: {os.strerror(ctypes.get_errno())}")
    child = os.fork()
    if child == 0:
        # the shim killed: PID 1 too (and so the namespace). getppid() is 0 in the new namespace, so a shim
        # that died before this line goes unnoticed; the kubelet's sweep of tagged processes covers that.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
            die(f"failed to mount /proc: {os.strerror(ctypes.get_errno())}")
        return
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    os.close(0)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def main():
    src = sys.argv[1]
    if src.startswith("fd:"):  # a pipe from the kubelet (keeps env/secrets off disk and out of argv)
        with os.fdopen(int(src[3:]), "rb") as f:
            spec = json.loads(f.read())
    else:
        with open(src) as f:
            spec = json.load(f)
    libc = ctypes.CDLL(None, use_errno=True)
    if spec.get("pidns"):
        pid_namespace(libc)
    if spec.get("mounts"):
        # open every source first: a mount over /tmp must not hide sources that live under the host's /tmp
        fds = []
        for m in spec["mounts"]:
            try:
                fds.append(os.open(m["src"], os.O_PATH))
            except OSError as exc:
                die(f"failed to open volume source {m['src']}: {exc.strerror}")
        for m, fd in zip(spec["mounts"], fds, strict=True):
            bind(libc, f"/proc/self/fd/{fd}", m["dst"], m.get("readOnly", False))
        for fd in fds:
            os.close(fd)
    cwd = spec.get("cwd") or "/"
    try:
        os.makedirs(cwd, exist_ok=True)
    except OSError:
        pass
    gid, uid = spec.get("gid"), spec.get("uid")
    if gid is not None:
        os.setgroups([gid] + list(spec.get("groups") or []))
        os.setgid(gid)
    if uid is not None:
        if gid is None:
            os.setgroups([])
            os.setgid(uid if spec.get("gid_default_uid") else 0)
        os.setuid(uid)
    try:
        os.chdir(cwd)
    except OSError as exc:
        die(f"chdir to cwd ({cwd!r}) set in config.json failed: {exc.strerror}")
    argv = spec["argv"]
    if not argv:
        die("no command specified")
    env = spec["env"]
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # CPython ignores SIGPIPE, and an ignored signal survives exec
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        die(f'exec: "{argv[0]}": executable file not found in $PATH')
    except PermissionError:
        die(f'exec: "{argv[0]}": permission denied')


if __name__ == "__main__":
    main()
