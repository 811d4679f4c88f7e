"""Container launcher: the last step before the container's own process.

Run by the kubelet as ``ip netns exec <ns> unshare --mount --propagation private /usr/bin/python3 launch.py fd:N``
(or under ``nsenter`` for exec and exec probes). It bind-mounts the volumes at their mountPath inside the
private mount namespace, switches uid/gid, changes to workingDir and execs the command with exactly the
environment given. Python 3.11-compatible on purpose (Debian's /usr/bin/python3). Exit code 128 with a
message on stderr means the container could not start (as runc's StartError).
"""

import ctypes
import json
import os
import sys

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384


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


def main():
    src = sys.argv[1]
    if src.startswith("fd:"):  # a pipe from the kubelet (keeps env/secrets off disk and out of argv)
        with os.fdopen(int(src[3:]), "rb") as f:
            spec = json.loads(f.read())
    else:
        with open(src) as f:
            spec = json.load(f)
    if spec.get("mounts"):
        libc = ctypes.CDLL(None, use_errno=True)
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
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        die(f'exec: "{argv[0]}": executable file not found in $PATH')
    except PermissionError:
        die(f'exec: "{argv[0]}": permission denied')


if __name__ == "__main__":
    main()
