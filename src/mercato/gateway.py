"""The gateway of the distributed mode: which service answers which part of the URL space.

DESIGN §2 gives every service one URL space, so a client cannot tell the embedded process from
a gateway in front of separate services. `render_nginx` writes the nginx configuration for a set
of upstream addresses: `deploy/nginx.conf` (containers) and the dev cluster (localhost ports)
are both rendered from `ROUTES`, so they cannot drift apart.

What no single service can answer, the installation-wide OpenAPI document, its docs, the
readiness of every service and the web console, is answered by the gateway's companion process
(`GATEWAY`, `mercato serve gateway`, `mercato.gateway_app`); nginx sends it the exact paths in
`GATEWAY_PATHS` and everything under `GATEWAY_PREFIXES`. This module stays free of FastAPI so
that rendering a config needs no web stack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

# Path prefixes each service answers (nginx prefix locations; the longest match wins).
ROUTES: Mapping[str, tuple[str, ...]] = {
    "accounts": ("/api/v1/accounts/", "/api/v1/admin/accounts"),
    "identity": (
        "/api/v1/auth/",
        "/oauth/",
        "/.well-known/",
        "/api/v1/admin/clients",
        "/api/v1/admin/keys/",
    ),
    "catalog": ("/api/v1/products",),
    "wallet": ("/api/v1/wallet/",),
    "orders": ("/api/v1/orders", "/api/v1/admin/orders"),
    "integration": (
        "/api/v1/integration/",
        "/api/v1/jobs",
        "/api/v1/exports",
        "/api/v1/external-orders",
        # The external product sync is integration's job; catalog applies what it announces.
        "/api/v1/sync/",
    ),
}

# The companion's name in upstreams (`mercato serve gateway`), and the exact paths it answers.
GATEWAY = "gateway"
GATEWAY_PATHS = (
    "/openapi.json",
    "/asyncapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/ready",
    "/console",
)
# And the prefixes it answers: the docs pages' assets (served from an installed package) and the
# web console's files (mercato.console).
GATEWAY_PREFIXES = ("/docs/assets/", "/console/")
# The environment variable naming the companion's upstreams: JSON {"service": ["host:port"]}.
UPSTREAMS_ENV = "MERCATO_GATEWAY_UPSTREAMS"

_NOT_FOUND = (
    '{"type": "https://mercato.dev/problems/not-found", "title": "Not Found", '
    '"status": 404, "detail": "no service answers this path"}'
)
# What nginx answers itself carries the headers every service's answer does
# (mercato.platform.browser); proxied answers bring their own.
_API_POLICY = "default-src 'none'; frame-ancestors 'none'"  # mercato.platform.browser's
_OWN_ANSWER = f"""\
            add_header X-Content-Type-Options nosniff always;
            add_header Referrer-Policy no-referrer always;
            add_header Content-Security-Policy "{_API_POLICY}" always;"""
_PROXY = """\
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_pass_header Server;
            proxy_buffering off;"""


def render_nginx(
    upstreams: Mapping[str, Sequence[str]],
    *,
    listen: str = "8080",
    pid_file: str = "nginx.pid",
    temp_dir: str = "tmp",
    access_log: str = "off",
    source_address: str | None = None,
) -> str:
    """The whole nginx.conf for `upstreams` (service -> ["host:port", ...]; every service of
    `ROUTES` and the companion `GATEWAY`).

    nginx is the edge: the `X-Forwarded-For` it sends is the address it saw, never a list a
    client started, and the services believe it from nginx's address only (their
    `MERCATO_TRUSTED_PROXIES`). `source_address` is the address nginx connects to them from
    (`proxy_bind`), where its address alone does not tell nginx from a client (the dev cluster,
    on loopback). Proxied answers carry no `Server` header (the services send none and nginx
    passes that on); nginx's own answers (`/health`, 404, 502) say `nginx`, without a version.
    """
    missing = sorted({*ROUTES, GATEWAY} - set(upstreams))
    if missing:
        raise ValueError(f"no upstream for {', '.join(missing)}")
    blocks: list[str] = []
    for service in (*ROUTES, GATEWAY):
        servers = "\n".join(
            f"        server {address} max_fails=1 fail_timeout=2s;"
            for address in upstreams[service]
        )
        blocks.append(f"    upstream {service} {{\n{servers}\n        keepalive 16;\n    }}")
    # Exact locations: they win over every prefix, so `/docs` is never a service's own page.
    locations = [
        f"        location = {path} {{\n{_PROXY.format(upstream=GATEWAY)}\n        }}"
        for path in GATEWAY_PATHS
    ]
    for prefix in GATEWAY_PREFIXES:
        locations.append(
            f"        location {prefix} {{\n{_PROXY.format(upstream=GATEWAY)}\n        }}"
        )
    for service, prefixes in ROUTES.items():
        for prefix in prefixes:
            locations.append(
                f"        location {prefix} {{\n{_PROXY.format(upstream=service)}\n        }}"
            )
    names = "|".join(ROUTES)
    # The backbone's admin endpoints carry the owning service in the path (DESIGN §3).
    by_path = _PROXY.format(upstream="$1")
    locations.append(f"        location ~ ^/api/v1/events/({names})/ {{\n{by_path}\n        }}")
    # Each service's own operational endpoints and docs, under /services/<name>/.
    to_service = _PROXY.format(upstream="$svc$rest$is_args$args")
    locations.append(
        f"        location ~ ^/services/(?<svc>{names})(?<rest>/.*)$ {{\n{to_service}\n        }}"
    )
    bind = f"    proxy_bind {source_address};\n" if source_address else ""
    own = _OWN_ANSWER
    body = "\n\n".join(blocks)
    routes = "\n".join(locations)
    return f"""\
# Rendered by mercato.gateway.render_nginx; edit ROUTES there, not this file.
worker_processes 1;
pid {pid_file};
error_log stderr warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log {access_log};
    client_body_temp_path {temp_dir}/body;
    proxy_temp_path {temp_dir}/proxy;
    fastcgi_temp_path {temp_dir}/fastcgi;
    uwsgi_temp_path {temp_dir}/uwsgi;
    scgi_temp_path {temp_dir}/scgi;
    # Bodies over 1 MiB are refused by the services with a problem+json 413; let them decide.
    client_max_body_size 2m;
    # A replica that refuses connections (killed, restarting) is skipped for the next one;
    # a request it already took is not replayed unless it was idempotent.
    proxy_next_upstream error timeout http_502;
    proxy_connect_timeout 2s;
    proxy_read_timeout 60s;
    # nginx's own answers name no version; the services' pass through with no Server header.
    server_tokens off;
{bind}
{body}

    server {{
        listen {listen};

        location = /health {{
            default_type application/json;
{own}
            return 200 '{{"status": "ok"}}';
        }}

{routes}

        location / {{
            default_type application/problem+json;
{own}
            return 404 '{_NOT_FOUND}';
        }}
    }}
}}
"""


def owner_of(path: str) -> str | None:
    """The service the gateway sends `path` to (`GATEWAY` for its exact paths, else the longest
    matching prefix), if any."""
    if path in GATEWAY_PATHS or path.startswith(GATEWAY_PREFIXES):
        return GATEWAY
    best: tuple[int, str] | None = None
    for service, prefixes in ROUTES.items():
        for prefix in prefixes:
            if path.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), service)
    return best[1] if best else None


def compose_upstreams() -> dict[str, list[str]]:
    """Upstreams of `deploy/compose.yaml`: one compose service per Mercato service, port 8000,
    and the companion's container `gateway-app`."""
    return {**{service: [f"{service}:8000"] for service in ROUTES}, GATEWAY: ["gateway-app:8000"]}


def services_upstreams_json(upstreams: Mapping[str, Sequence[str]]) -> str:
    """The companion's `MERCATO_GATEWAY_UPSTREAMS` value: the services' part of `upstreams`."""
    return json.dumps({service: list(upstreams[service]) for service in ROUTES})


def compose_nginx_conf() -> str:
    """The text of `deploy/nginx.conf` (the gateway container of `deploy/compose.yaml`)."""
    return render_nginx(
        compose_upstreams(),
        listen="80",
        # Inside the nginx container, /tmp is the container's own and writable by nginx.
        pid_file="/tmp/nginx.pid",  # noqa: S108
        temp_dir="/tmp",  # noqa: S108
        access_log="/dev/stdout",
    )
