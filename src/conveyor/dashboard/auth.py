"""Who may see the dashboard: a bearer token or HTTP basic auth, checked on every request.

Starlette's AuthenticationMiddleware runs the check; a request without good credentials gets
401 before any route reads Redis. Token auth also accepts a cookie, set by the login form,
holding an HMAC of the token (never the token itself), so a browser can use it too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
)
from starlette.requests import HTTPConnection

from ..errors import ConfigurationError

#: Cookie a token login sets; its value is ``session_value(token)``.
SESSION_COOKIE = "conveyor_session"
#: Path prefix reachable without credentials (relative to the dashboard's root): the
#: static mount, which holds only the dashboard's own scripts and styles.
STATIC_PREFIX = "/static/"
#: The token login form's path, open (exactly this path) only when TokenAuth is used.
LOGIN_PATH = "/login"


@dataclass(frozen=True, repr=False)
class TokenAuth:
    """``Authorization: Bearer <token>``, or the session cookie the login form sets."""

    token: str

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ConfigurationError(
                "dashboard token must be at least 16 characters; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
            )

    def __repr__(self) -> str:
        return "TokenAuth(token=***)"

    def session_value(self) -> str:
        return hmac.new(
            self.token.encode(), b"conveyor-dashboard-session", hashlib.sha256
        ).hexdigest()

    def accepts(self, conn: HTTPConnection) -> bool:
        scheme, _, value = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value:
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        cookie = conn.cookies.get(SESSION_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.session_value().encode())


@dataclass(frozen=True, repr=False)
class BasicAuth:
    """HTTP basic auth with one user name and password (the browser asks for them)."""

    username: str
    password: str

    def __post_init__(self) -> None:
        if not self.username or ":" in self.username or not self.password:
            raise ConfigurationError(
                "basic auth needs a user name without ':' and a non-empty password "
                "(--basic-auth USER:PASSWORD)"
            )

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=***)"

    @classmethod
    def parse(cls, text: str) -> BasicAuth:
        """``USER:PASSWORD`` as the CLI takes it."""
        username, sep, password = text.partition(":")
        if not sep:
            raise ConfigurationError("basic auth must be given as USER:PASSWORD")
        return cls(username, password)

    def accepts(self, conn: HTTPConnection) -> bool:
        scheme, _, value = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        username, _, password = decoded.partition(b":")
        # Both compared, always: the time taken does not say which one was wrong.
        user_ok = hmac.compare_digest(username, self.username.encode())
        password_ok = hmac.compare_digest(password, self.password.encode())
        return user_ok and password_ok


Auth = TokenAuth | BasicAuth


class Backend(AuthenticationBackend):
    """Lets a request through only with credentials ``auth`` accepts (or to an open path)."""

    def __init__(self, auth: Auth) -> None:
        self.auth = auth

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser]:
        if self.auth.accepts(conn):
            name = self.auth.username if isinstance(self.auth, BasicAuth) else "token"
            return AuthCredentials(["authenticated"]), SimpleUser(name)
        if self.is_open(route_path(conn)):
            return AuthCredentials([]), SimpleUser("anonymous")
        raise AuthenticationError("credentials required")

    def is_open(self, path: str) -> bool:
        """The static files, and the login form when there is one: compared exactly, so an
        extra route such as ``/login-audit`` stays behind the auth."""
        if path.startswith(STATIC_PREFIX):
            return True
        return path == LOGIN_PATH and isinstance(self.auth, TokenAuth)


def route_path(conn: HTTPConnection) -> str:
    """The path below the dashboard's mount point (its root when mounted in another app)."""
    path: str = conn.scope.get("path", "/")
    root: str = conn.scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, auth: Auth | None) -> None:
    """Refuse to serve beyond this machine without auth: anyone who reaches the port could
    read job data and replay or delete jobs."""
    if auth is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the dashboard on {host} without auth: anyone who can reach it "
            "could read and change jobs. Pass --token TOKEN (or CONVEYOR_DASHBOARD_TOKEN) or "
            "--basic-auth USER:PASSWORD, or bind 127.0.0.1"
        )
