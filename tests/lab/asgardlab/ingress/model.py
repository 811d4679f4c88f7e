"""What the data plane serves (servers, locations, upstreams) and its rendering as nginx.conf.

Ingress objects (ingresses.py) and Gateway API routes (gateway.py) are both translated into this model, so
one nginx serves both: a server block per (port, hostname) on the lab's shared HTTP and HTTPS ports, a
location per path, an upstream per (Service, port) with the Service's ready endpoints. The proxy settings follow
ingress-nginx's template (``rootfs/etc/nginx/template/nginx.tmpl``): the client's Host header, X-Forwarded-*,
X-Request-ID, HTTP/1.1 to the upstream, request buffering on, response buffering off, next upstream on
"error timeout" (3 tries).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

CATCH_ALL = "_"


def q(value: str) -> str:
    """A double-quoted nginx token (no variable interpolation concerns)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lit(value: str) -> str:
    """A double-quoted token for directives that interpolate variables: a literal ``$`` stays literal."""
    return q(value).replace("$", "${asgard_dollar}")


@dataclass
class Upstream:
    name: str
    servers: list[tuple[str, int, int]]  # (ip, port, weight)


@dataclass
class Location:
    path: str
    modifier: str  # "" (prefix), "=", "~", "~*"
    owner: str  # "Ingress ns/name" / "HTTPRoute ns/name": a comment in nginx.conf
    upstream: str | None = None
    scheme: str = "http"
    status: int | None = None  # answer this code instead of proxying (no endpoints 503, invalid backend 500)
    redirect: tuple[int, str] | None = None  # (code, URL expression), already escaped
    body_size: str = "1m"
    connect_timeout: str = "5s"
    send_timeout: str = "60s"
    read_timeout: str = "60s"
    rewrites: list[tuple[str, str]] = field(default_factory=list)  # (regex, replacement), flag break
    ssl_redirect: bool = False  # in the HTTP server of a host whose HTTPS server has a certificate
    force_ssl_redirect: bool = False
    redirect_port: int | None = None  # use-port-in-redirects
    preserve_trailing_slash: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)  # proxy_set_header overrides (name, token)

    @property
    def key(self) -> tuple[str, str]:
        return (self.modifier, self.path)


@dataclass
class Server:
    host: str
    https: bool
    cert: tuple[Path, Path] | None = None  # None on HTTPS: the default (fake) certificate
    locations: dict[tuple[str, str], Location] = field(default_factory=dict)
    hsts: bool = False

    def add(self, loc: Location) -> bool:
        """Add unless a location with the same match exists (the first owner wins); True when added."""
        if loc.key in self.locations:
            return False
        self.locations[loc.key] = loc
        return True


@dataclass
class Config:
    http_port: int
    https_port: int
    status_port: int
    prefix: Path
    default_cert: tuple[Path, Path]
    # the load balancer's own address (status.loadBalancer): nginx also listens on <lb_address>:80 and :443 there
    lb_address: str | None = None
    generation: int = 0
    servers: dict[tuple[bool, str], Server] = field(default_factory=dict)
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    maps: list[str] = field(default_factory=list)

    def server(self, host: str, https: bool) -> Server:
        key = (https, host)
        if key not in self.servers:
            self.servers[key] = Server(host=host, https=https)
        return self.servers[key]


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def upstream_name(ns: str, svc: str, port: object) -> str:
    return _SAFE.sub("-", f"{ns}-{svc}-{port}")


def server_name(host: str) -> str:
    if host == CATCH_ALL:
        return CATCH_ALL
    return host if host.startswith(("*.", "~")) else host


def _sort_locations(locs: list[Location]) -> list[Location]:
    # ingress-nginx sorts locations by path, descending (regex locations are tried in this order)
    return sorted(locs, key=lambda loc: (loc.path, loc.modifier), reverse=True)


def _location(cfg: Config, srv: Server, loc: Location) -> list[str]:
    arg = loc.path if loc.modifier in ("", "=") and re.fullmatch(r"[A-Za-z0-9/._~%!&'()*+,;=:@-]*", loc.path) else q(loc.path)
    out = [f"    location {loc.modifier + ' ' if loc.modifier else ''}{arg} {{", f"        # {loc.owner}"]
    out.append(f"        client_max_body_size {loc.body_size};")
    out.append(f"        proxy_connect_timeout {loc.connect_timeout};")
    out.append(f"        proxy_send_timeout {loc.send_timeout};")
    out.append(f"        proxy_read_timeout {loc.read_timeout};")
    out.append(f"        port_in_redirect {'on' if loc.redirect_port else 'off'};")
    if not srv.https:
        https_srv = cfg.servers.get((True, srv.host))
        has_cert = https_srv is not None and https_srv.cert is not None
        if loc.force_ssl_redirect or (loc.ssl_redirect and has_cert):
            host = "$asgard_redirect_host" + ("$asgard_https_port" if loc.redirect_port else "")
            uri = "$request_uri" if loc.preserve_trailing_slash else "$asgard_redirect_uri"
            out.append(f'        return 308 "https://{host}{uri}";')
    if loc.redirect is not None:
        out.append(f"        return {loc.redirect[0]} {loc.redirect[1]};")
    if loc.status is not None:
        out.append(f"        return {loc.status};")
    if loc.upstream is None and loc.status is None and loc.redirect is None:
        out.append("        return 503;")
    headers = dict(_PROXY_HEADERS)
    for name, token in loc.headers:
        headers[name] = token
    for name, token in headers.items():
        out.append(f"        proxy_set_header {name} {token};")
    for regex, replacement in loc.rewrites:
        out.append(f"        rewrite {q(regex)} {replacement} break;")
    if loc.upstream is not None:
        if loc.scheme == "https":
            out.append("        proxy_ssl_server_name on;")
        out.append(f"        proxy_pass {loc.scheme}://{loc.upstream};")
    out.append("    }")
    return out


_PROXY_HEADERS = {
    "Host": "$best_http_host",
    "X-Request-ID": "$request_id",
    "X-Real-IP": "$remote_addr",
    "X-Forwarded-For": "$remote_addr",
    "X-Forwarded-Host": "$best_http_host",
    "X-Forwarded-Port": "$server_port",
    "X-Forwarded-Proto": "$scheme",
    "X-Forwarded-Scheme": "$scheme",
    "X-Scheme": "$scheme",
    "X-Original-URI": "$request_uri",
    "Upgrade": "$http_upgrade",
    "Connection": "$connection_upgrade",
    "Proxy": '""',
}


def render(cfg: Config) -> str:
    p = cfg.prefix
    lines = [
        f"# asgard lab ingress controller (tests/lab/asgardlab/ingress), configuration generation {cfg.generation}",
        "# generated: do not edit (rewritten on every change of IngressClass/Ingress/Service/EndpointSlice/Secret/Gateway API objects)",
    ]
    if os.geteuid() == 0:
        # workers read the 0600 key pairs at each TLS handshake and write request bodies under the state dir,
        # wherever that is
        lines.append("user root;")
    lines += [
        "worker_processes 1;",
        f"pid {p / 'nginx.pid'};",
        "daemon off;",
        f"error_log {p / 'error.log'} notice;",
        "worker_shutdown_timeout 240s;",
        "events {",
        "    worker_connections 4096;",
        "}",
        "http {",
        "    log_format upstreaminfo '$remote_addr - [$time_local] \"$request\" $status $body_bytes_sent $request_length '",
        "                            '$request_time host=$host upstream=$upstream_addr upstream_status=$upstream_status';",
        f"    access_log {p / 'access.log'} upstreaminfo;",
        f"    client_body_temp_path {p / 'tmp' / 'body'};",
        f"    proxy_temp_path {p / 'tmp' / 'proxy'};",
        f"    fastcgi_temp_path {p / 'tmp' / 'fastcgi'};",
        f"    uwsgi_temp_path {p / 'tmp' / 'uwsgi'};",
        f"    scgi_temp_path {p / 'tmp' / 'scgi'};",
        "    default_type text/html;",
        "    server_tokens off;",
        "    keepalive_timeout 75s;",
        "    keepalive_requests 1000;",
        "    client_header_buffer_size 1k;",
        "    client_header_timeout 60s;",
        "    large_client_header_buffers 4 8k;",
        "    client_body_buffer_size 8k;",
        "    client_body_timeout 60s;",
        "    server_names_hash_bucket_size 256;",
        "    server_names_hash_max_size 4096;",
        "    variables_hash_bucket_size 256;",
        "    map_hash_bucket_size 256;",
        "    proxy_http_version 1.1;",
        "    proxy_buffering off;",
        "    proxy_request_buffering on;",
        "    proxy_redirect off;",
        "    proxy_next_upstream error timeout;",
        "    proxy_next_upstream_tries 3;",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        "    ssl_session_cache shared:SSL:10m;",
        "    ssl_session_timeout 10m;",
        "    map $http_upgrade $connection_upgrade {",
        "        default upgrade;",
        "        '' close;",
        "    }",
        "    map $http_host $best_http_host {",
        "        default $http_host;",
        "        '' $host;",
        "    }",
        "    map $best_http_host $asgard_redirect_host {",
        '        "~^(?<h>\\[[^\\]]*\\]|[^:]+)" $h;',
        "        default $host;",
        "    }",
        "    map $request_uri $asgard_redirect_uri {",
        '        "~^(?<u>.*)/$" $u;',
        "        default $request_uri;",
        "    }",
        # a redirect to HTTPS keeps the port only off the load balancer's standard ports (80 -> 443)
        "    map $server_port $asgard_https_port {",
        f'        default ":{cfg.https_port}";',
        '        80 "";',
        "    }",
        "    geo $asgard_dollar {",
        '        default "$";',
        "    }",
        '    map "" $asgard_lazy {',
        '        default "";',
        "    }",
    ]
    for m in cfg.maps:
        lines.append(m)
    for up in sorted(cfg.upstreams.values(), key=lambda u: u.name):
        lines.append(f"    upstream {up.name} {{")
        for ip, port, weight in up.servers:
            lines.append(f"        server {ip}:{port}" + (f" weight={weight}" if weight != 1 else "") + " max_fails=0;")
        lines.append("    }")
    # catch-all servers first: they carry default_server
    for https in (False, True):
        if (https, CATCH_ALL) not in cfg.servers:
            cfg.servers[(https, CATCH_ALL)] = Server(host=CATCH_ALL, https=https)
    order = sorted(cfg.servers.values(), key=lambda s: (s.host != CATCH_ALL, s.https, s.host))
    for srv in order:
        port = cfg.https_port if srv.https else cfg.http_port
        flags = (" ssl" if srv.https else "") + (" default_server" if srv.host == CATCH_ALL else "")
        lines.append("    server {")
        lines.append(f"        listen 127.0.0.1:{port}{flags};")
        if cfg.lb_address:
            lines.append(f"        listen {cfg.lb_address}:{443 if srv.https else 80}{flags};")
        lines.append(f"        server_name {server_name(srv.host) if not srv.host.startswith('~') else q(srv.host)};")
        if srv.https:
            # loaded at each handshake (the empty variable makes the path dynamic): a static certificate costs
            # every server block an OpenSSL context at each nginx -t and reload (~8 ms each with OpenSSL 3)
            crt, key = srv.cert or cfg.default_cert
            lines.append(f"        ssl_certificate ${{asgard_lazy}}{crt};")
            lines.append(f"        ssl_certificate_key ${{asgard_lazy}}{key};")
            if srv.hsts and srv.cert is not None:
                lines.append('        add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;')
        locs = _sort_locations(list(srv.locations.values()))
        if not any(loc.modifier == "" and loc.path == "/" for loc in locs):
            lines += ["        location / {", "            # default backend", "            return 404;", "        }"]
        for loc in locs:
            lines.extend("    " + line for line in _location(cfg, srv, loc))
        lines.append("    }")
    lines += [
        "    server {",
        f"        listen 127.0.0.1:{cfg.status_port};",
        "        access_log off;",
        "        location = /generation {",
        f'            return 200 "{cfg.generation}\\n";',
        "        }",
        "        location / {",
        "            return 404;",
        "        }",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)
