"""CSRF protection for the dashboard's actions: a double-submit token bound to the session.

Every page sets a random value in a ``SameSite=Strict``, HttpOnly cookie and writes into each
action's form an HMAC of that value keyed by the request's credentials (the basic auth or
bearer ``Authorization`` header, else the token login's session cookie); an action (always a
POST) runs only when the form's token is that HMAC of the cookie it comes with. A page on
another site cannot read the cookie, so it cannot fill in the form field; a sibling subdomain
that plants a cookie of its own still cannot, as it never sees the credentials that key the
HMAC. Without auth there are no credentials: the token is then as strong as a plain
double-submit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .auth import SESSION_COOKIE

COOKIE = "conveyor_csrf"
FIELD = "csrf_token"


def token_for(request: Request) -> str:
    """The token for the request's forms: bound to its cookie (or to a new one that
    ``remember`` will set) and to its credentials."""
    existing = request.cookies.get(COOKIE, "")
    if existing:
        return _bound(request, existing)
    fresh: str | None = getattr(request.state, "csrf_new", None)
    if fresh is None:
        fresh = secrets.token_urlsafe(32)
        request.state.csrf_new = fresh
    return _bound(request, fresh)


def _bound(request: Request, cookie: str) -> str:
    """The cookie's value signed with the credentials the request carries."""
    credentials = request.headers.get("authorization") or request.cookies.get(SESSION_COOKIE, "")
    key = b"conveyor-dashboard-csrf:" + credentials.encode()
    return hmac.new(key, cookie.encode(), hashlib.sha256).hexdigest()


def remember(request: Request, response: Response) -> None:
    """Set the cookie when this request minted the token."""
    fresh = getattr(request.state, "csrf_new", None)
    if fresh:
        response.set_cookie(
            COOKIE,
            fresh,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=request.scope.get("root_path") or "/",
        )


async def checked_form(request: Request) -> FormData:
    """The action's form, after its token was found bound to the cookie and credentials
    it came with; 403 otherwise."""
    form = await request.form()
    cookie = request.cookies.get(COOKIE, "")
    sent = form.get(FIELD)
    # Compared as bytes: compare_digest refuses a non-ASCII str (a 500 for a typo'd field).
    if (
        not cookie
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent.encode(), _bound(request, cookie).encode())
    ):
        raise HTTPException(
            403, "CSRF token missing or wrong: reload the page and submit the form again"
        )
    return form
