"""The ingress-nginx annotations the lab implements, parsed the way ingress-nginx parses them.

Sources: ingress-nginx ``docs/user-guide/nginx-configuration/annotations.md`` and ``configmap.md`` (defaults),
``internal/ingress/annotations/proxy/main.go`` (an invalid ``proxy-*`` value falls back to the default),
``internal/ingress/annotations/parser/validators.go`` (value syntax). Timeouts are unitless seconds (``"120"``;
``"120s"`` is not an integer and falls back to the default). Booleans follow Go's ``strconv.ParseBool``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PREFIX = "nginx.ingress.kubernetes.io/"
SIZE = re.compile(r"(?i)^\d+[bkmg]?$")
REWRITE_TARGET = re.compile(r"^/?[-._~a-zA-Z0-9/:$&+=]*$")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
PROTOCOLS = ("HTTP", "HTTPS", "AUTO_HTTP", "GRPC", "GRPCS", "FCGI")
LAB_PROTOCOLS = ("HTTP", "HTTPS", "AUTO_HTTP")

# annotation -> (attribute, default); defaults are ingress-nginx's ConfigMap defaults
DEFAULTS = {
    "proxy-body-size": ("body_size", "1m"),
    "proxy-connect-timeout": ("connect_timeout", 5),
    "proxy-send-timeout": ("send_timeout", 60),
    "proxy-read-timeout": ("read_timeout", 60),
    "rewrite-target": ("rewrite_target", ""),
    "use-regex": ("use_regex", False),
    "ssl-redirect": ("ssl_redirect", True),
    "force-ssl-redirect": ("force_ssl_redirect", False),
    "backend-protocol": ("backend_protocol", "HTTP"),
    "use-port-in-redirects": ("use_port_in_redirects", False),
    "preserve-trailing-slash": ("preserve_trailing_slash", False),
}
SUPPORTED = tuple(DEFAULTS)


@dataclass(frozen=True)
class Annotations:
    body_size: str = "1m"
    connect_timeout: int = 5
    send_timeout: int = 60
    read_timeout: int = 60
    rewrite_target: str = ""
    use_regex: bool = False
    ssl_redirect: bool = True
    force_ssl_redirect: bool = False
    backend_protocol: str = "HTTP"
    use_port_in_redirects: bool = False
    preserve_trailing_slash: bool = False
    warnings: tuple[str, ...] = field(default=(), compare=False)
    unsupported: tuple[str, ...] = field(default=(), compare=False)

    @property
    def needs_rewrite(self) -> bool:
        return bool(self.rewrite_target)


def _bool(value: str) -> bool | None:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def _int(value: str) -> int | None:
    return int(value) if re.fullmatch(r"[+-]?\d+", value.strip()) else None


def parse(annotations: dict | None) -> Annotations:
    """The lab-relevant settings of one Ingress; invalid values keep the default and add a warning."""
    values: dict = {}
    warnings: list[str] = []
    unsupported: list[str] = []
    for key, raw in (annotations or {}).items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        if name not in DEFAULTS:
            unsupported.append(key)
            continue
        attr, default = DEFAULTS[name]
        value = str(raw)
        parsed: object
        if isinstance(default, bool):
            parsed = _bool(value)
            want = "true or false"
        elif isinstance(default, int):
            parsed = _int(value)
            parsed = parsed if parsed is not None and 0 <= parsed <= 2147483 else None
            want = "a whole number of seconds like \"120\""
        elif name == "proxy-body-size":
            parsed = value if SIZE.match(value) else None
            want = "a size like \"1m\", \"512k\", \"1g\" or \"0\" (no limit)"
        elif name == "rewrite-target":
            parsed = value if REWRITE_TARGET.match(value) else None
            want = "a path with optional capture group references like \"/$2\""
        else:  # backend-protocol
            up = value.upper()
            parsed = up if up in PROTOCOLS else None
            want = "one of " + ", ".join(PROTOCOLS)
        if parsed is None:
            warnings.append(f"annotation {key}: invalid value {value!r} (expected {want}); using the default {default!r}")
            continue
        values[attr] = parsed
    return Annotations(**values, warnings=tuple(warnings), unsupported=tuple(sorted(unsupported)))
