"""Browser safety: which requests a Turnstile server answers at all.

A server bound to loopback is still reachable from every web page the user opens: a page can send
cross-site requests to ``127.0.0.1`` (CSRF), open WebSockets to it (no CORS applies to WebSockets), or
point a DNS name it controls at ``127.0.0.1`` after the page has loaded (DNS rebinding: the browser then
treats our server as the attacker's origin). With ``--agent claude --allowed-tools Bash`` any of these is
remote code execution. The rules here are the ones Jupyter, the Docker daemon and VS Code's servers
arrived at; every HTTP request, every WebSocket handshake on both ports, passes them before routing:

1. **Host** must name this server: a loopback address, ``localhost`` (or a ``*.localhost`` name, which
   browsers resolve to loopback themselves), the bound address, or an ``--allowed-host``. A server bound
   to a non-loopback address (which already requires a token) also answers to any IP-literal Host: a
   rebinding attack needs a DNS name. Otherwise **421** ``host_not_allowed``.
2. **Origin**, when the browser sends one, must be this server's own (the host and port of the request;
   or the HTTP port's origin, for the WebSocket port) or an ``--allowed-origin``. ``null``
   (sandboxed frames, ``file:`` pages) is never allowed. Otherwise **403** ``origin_not_allowed``.
3. **Fetch metadata**: a request the browser marks ``Sec-Fetch-Site: cross-site`` or ``same-site``
   (another port of localhost is the same *site*) without an allowed Origin is refused — that covers
   ``<img>``, ``<script>`` and other no-cors loads, which carry no Origin — except a top-level
   navigation (someone following a link to the console). **403** ``cross_site_request``.
4. **Content-Type**: a state-changing request (POST, PUT, PATCH) must say ``application/json``. The three
   content types an HTML form or a no-cors ``fetch`` can send (urlencoded, multipart, text/plain) are
   exactly what is refused, so a cross-site write cannot be a "simple request" that skips the CORS
   preflight. **415** ``unsupported_media_type``.
5. **Token** (with ``--token``): ``Authorization: Bearer <token>`` (the scheme is case-insensitive), the
   console's ``HttpOnly; SameSite=Strict`` cookie, or ``?token=``. The console is opened once as
   ``/?token=…``; the answer sets the cookie and redirects to the same address without the token, so it
   never stays in the address bar, the history or a ``Referer``. **401** ``unauthorized``.

:class:`RequestPolicy` holds the rules and judges requests from their raw headers (no framework types),
so the ASGI app (:class:`BrowserGuard`) and the WebSocket port (``adapters.websocket``) share them.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import quote, unquote_to_bytes, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from turnstile.adapters.config import ServerConfig
from turnstile.adapters.errors import error_body

__all__ = [
    "CONSOLE_PAGES",
    "BrowserGuard",
    "Refusal",
    "RequestPolicy",
    "cookie_name",
    "query_token",
    "request_policy",
]

_STATE_CHANGING: Final = frozenset({"POST", "PUT", "PATCH"})
CONSOLE_PAGES: Final = ("/", "/replay")
"""The pages a person opens as ``?token=…`` once (the console and the replay viewer): answered with the
token cookie and a redirect to the same address without the token."""
_JSON: Final = "application/json"
Headers = Sequence[tuple[bytes, bytes]]


class Refusal(Exception):
    """Why a request is refused: an HTTP status, a stable code and a message that says what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def cookie_name(http_port: int) -> str:
    """The console's token cookie. Cookies ignore ports, so the name carries it: two servers on one
    host keep their own."""
    return f"turnstile_token_{http_port}"


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _split_authority(authority: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (IPv6 in brackets) → (lower-case host without brackets, port); None if malformed."""
    authority = authority.strip().lower()
    if not authority or any(c in authority for c in "/@?#\\ "):
        return None
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        host, rest = authority[1:end], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = authority.partition(":")
        if ":" in port_text:
            return None
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
            return None
        return host.rstrip("."), int(port_text)
    return host.rstrip("."), None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class RequestPolicy:
    """The rules above for one server. ``http_port``/``ws_port``: where it listens (the real ports);
    ``bind_host``: the address it is bound to."""

    def __init__(
        self,
        *,
        bind_host: str = "127.0.0.1",
        http_port: int | None = None,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        token: str | None = None,
    ) -> None:
        self.bind_host = bind_host.strip("[]").lower()
        self.http_port = http_port
        hosts = {h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()}
        self.any_host = "*" in hosts
        self.allowed_hosts = frozenset(hosts - {"*"})
        self.allowed_origins = frozenset(o.strip().lower().rstrip("/") for o in allowed_origins if o.strip())
        self.token = token.encode() if token else None
        bind_ip = _ip(self.bind_host)
        self._network_bind = bind_ip is not None and not bind_ip.is_loopback

    # --- the single checks -------------------------------------------------------------------------------

    def host_allowed(self, host: str) -> bool:
        """Whether a Host name (without port) is one this server answers for."""
        if self.any_host or host in self.allowed_hosts or host == self.bind_host:
            return True
        if host == "localhost" or host.endswith(".localhost"):
            return True
        ip = _ip(host)
        if ip is None:
            return False
        return ip.is_loopback or self._network_bind

    def origin_allowed(self, origin: str, request_host: str | None) -> bool:
        """Whether a browser ``Origin`` may use this server (see the module docstring, rule 2).

        The scheme is not compared: behind a TLS-terminating proxy the page is ``https`` while the
        request reaches us as ``http``, and no one else can serve pages from this server's host and port.
        """
        origin = origin.strip().lower().rstrip("/")
        if origin in self.allowed_origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or parts.path or parts.query or parts.fragment:
            return False
        authority = _split_authority(parts.netloc)
        if authority is None or not self.host_allowed(authority[0]):
            return False
        host, port = authority[0], authority[1] or (443 if parts.scheme == "https" else 80)
        own = _split_authority(request_host) if request_host is not None else None
        if own is not None and host == own[0] and own[1] in (None, port):
            return True  # same host and port as the request: the page came from this server
        # The console's own origin (its HTTP port) may use the WebSocket port, whatever name it used.
        return self.http_port is not None and port == self.http_port

    def token_ok(self, headers: Headers, query: bytes) -> bool:
        """Whether the request carries the token (header, console cookie or ``?token=``)."""
        if self.token is None:
            return True
        given = self._given_token(headers, query)
        return given is not None and secrets.compare_digest(given, self.token)

    def _given_token(self, headers: Headers, query: bytes) -> bytes | None:
        auth = _header(headers, b"authorization")
        if auth is not None:
            scheme, _, value = auth.strip().partition(" ")
            if scheme.lower() == "bearer":
                return value.strip().encode("latin-1")
        cookie = _header(headers, b"cookie")
        if cookie is not None and self.http_port is not None:
            wanted = cookie_name(self.http_port)
            for part in cookie.split(";"):
                name, _, value = part.strip().partition("=")
                if name == wanted:
                    return unquote_to_bytes(value)
        return query_token(query)

    # --- a whole request ---------------------------------------------------------------------------------

    def check(self, method: str, headers: Headers, query: bytes) -> None:
        """Raise :class:`Refusal` unless the request passes every rule (rules 1-5, in that order)."""
        host_header = _header(headers, b"host")
        authority = _split_authority(host_header) if host_header is not None else None
        if authority is None or not self.host_allowed(authority[0]):
            raise Refusal(
                421,
                "host_not_allowed",
                f"this server does not answer for Host {host_header!r}; if that name is really this "
                "server, start it with --allowed-host NAME (a defence against DNS rebinding)",
            )
        origin = _header(headers, b"origin")
        if origin is not None and not self.origin_allowed(origin, host_header):
            raise Refusal(
                403,
                "origin_not_allowed",
                f"requests from pages at {origin!r} are not allowed; to let that site use the API, start "
                "the server with --allowed-origin ORIGIN",
            )
        site = _header(headers, b"sec-fetch-site")
        if origin is None and site in ("cross-site", "same-site"):
            navigation = method == "GET" and _header(headers, b"sec-fetch-mode") == "navigate"
            if not navigation:
                raise Refusal(
                    403,
                    "cross_site_request",
                    "a request from another site's page is not allowed (Sec-Fetch-Site: "
                    f"{site}); open the console itself, or allow that site with --allowed-origin",
                )
        if method in _STATE_CHANGING:
            media = (_header(headers, b"content-type") or "").split(";", 1)[0].strip().lower()
            if media != _JSON:
                raise Refusal(
                    415,
                    "unsupported_media_type",
                    f"{method} requests must send 'Content-Type: application/json' (got "
                    f"{media or 'none'}); the body may be empty",
                )
        if not self.token_ok(headers, query):
            raise Refusal(
                401,
                "unauthorized",
                "missing or wrong token: send 'Authorization: Bearer <token>', or open the console as "
                "/?token=<token> once",
            )


def request_policy(config: ServerConfig) -> RequestPolicy:
    """The rules for a server with this configuration (``config.port``: the real HTTP port, if known)."""
    return RequestPolicy(
        bind_host=config.host,
        http_port=config.port or None,
        allowed_hosts=config.allowed_hosts,
        allowed_origins=config.allowed_origins,
        token=config.token,
    )


def query_token(query: bytes) -> bytes | None:
    """The ``token`` query parameter, percent-decoded (None when absent)."""
    for part in query.split(b"&"):
        if part.startswith(b"token="):
            return unquote_to_bytes(part[6:].replace(b"+", b" "))
    return None


def _without_token(query: bytes) -> bytes:
    return b"&".join(p for p in query.split(b"&") if p and not p.startswith(b"token="))


class BrowserGuard:
    """ASGI middleware applying a :class:`RequestPolicy` to every HTTP request and WebSocket handshake.

    A console page opened with a valid ``?token=`` is answered with a redirect to the same address
    without it, setting the token cookie (``HttpOnly; SameSite=Strict``).
    """

    def __init__(
        self, app: ASGIApp, policy: RequestPolicy, *, console_paths: Iterable[str] = CONSOLE_PAGES
    ) -> None:
        self.app = app
        self.policy = policy
        self.console_paths = frozenset(console_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: Headers = scope.get("headers", [])
        query: bytes = scope.get("query_string", b"")
        method = scope.get("method", "GET") if kind == "http" else "GET"
        try:
            self.policy.check(method, headers, query)
        except Refusal as refusal:
            if kind == "websocket":
                if "websocket.http.response" in scope.get("extensions", {}):
                    await _refuse(send, refusal, prefix="websocket.")
                else:  # a server without the extension answers a close before accept with 403
                    await send({"type": "websocket.close", "code": 1008, "reason": refusal.code})
                return
            await _refuse(send, refusal)
            return
        if (
            kind == "http"
            and method == "GET"
            and self.policy.token is not None
            and self.policy.http_port is not None
            and scope.get("path") in self.console_paths
            and query_token(query) == self.policy.token
        ):
            await self._set_cookie_and_redirect(scope, send, query)
            return
        await self.app(scope, receive, send)

    async def _set_cookie_and_redirect(self, scope: Scope, send: Send, query: bytes) -> None:
        assert self.policy.http_port is not None and self.policy.token is not None
        rest = _without_token(query)
        location = scope.get("root_path", "") + scope.get("path", "/") + ("?" + rest.decode() if rest else "")
        value = quote(self.policy.token, safe="")
        cookie = f"{cookie_name(self.policy.http_port)}={value}; Path=/; HttpOnly; SameSite=Strict".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode()),
                    (b"set-cookie", cookie),
                    (b"cache-control", b"no-store"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def _refuse(send: Send, refusal: Refusal, prefix: str = "") -> None:
    body = error_body(refusal.code, refusal.message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": prefix + "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": prefix + "http.response.body", "body": body})
