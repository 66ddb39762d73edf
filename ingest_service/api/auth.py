"""Bearer-token authentication: the token names the labeler; the request body never does."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["bearer_labeler"]

_bearer = HTTPBearer(auto_error=False, description="a labeler's API token")


def bearer_labeler(tokens: Mapping[str, str]) -> Callable[..., str]:
    """A FastAPI dependency returning the labeler of ``Authorization: Bearer <token>``.

    ``tokens`` maps token -> labeler name. A missing header or an unknown token is a 401 with
    ``WWW-Authenticate: Bearer``. Tokens are compared in constant time.
    """
    table = [(t.encode(), name) for t, name in tokens.items()]
    for _, name in table:
        if not name.strip():
            raise ValueError("every API token needs a non-empty labeler name")

    def labeler(
        creds: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> str:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing credentials: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        given = creds.credentials.encode()
        found = None
        for token, name in table:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(token, given):
                found = name
        if found is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "unknown API token: ask an admin for a token for your labeler name",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return found

    return labeler
