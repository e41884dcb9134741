"""CSRF protection for the dashboard's actions: a double-submit token.

Every page sets a random token in a ``SameSite=Strict``, HttpOnly cookie and writes the same
token into each action's form; an action (always a POST) runs only when the two match. A
page on another site can make a browser send the cookie (not with SameSite=Strict, on any
current browser) but cannot read it, so it cannot fill in the form field.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "conveyor_csrf"
FIELD = "csrf_token"


def token_for(request: Request) -> str:
    """The request's token: the cookie's, or a new one that ``remember`` will set."""
    existing = request.cookies.get(COOKIE, "")
    if existing:
        return existing
    fresh: str | None = getattr(request.state, "csrf_new", None)
    if fresh is None:
        fresh = secrets.token_urlsafe(32)
        request.state.csrf_new = fresh
    return fresh


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
    """The action's form, after its token was found to match the cookie; 403 otherwise."""
    form = await request.form()
    cookie = request.cookies.get(COOKIE, "")
    sent = form.get(FIELD)
    # Compared as bytes: compare_digest refuses a non-ASCII str (a 500 for a typo'd field).
    if (
        not cookie
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent.encode(), cookie.encode())
    ):
        raise HTTPException(
            403, "CSRF token missing or wrong: reload the page and submit the form again"
        )
    return form
