"""Bearer-token authentication: the token names the labeler; the request body never does."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["BearerTokens", "bearer_scheme"]

bearer_scheme = HTTPBearer(auto_error=False, description="a labeler's API token")
"""The security scheme every ``/v1`` route declares (OpenAPI ``HTTPBearer``)."""


class BearerTokens:
    """The labeler of ``Authorization: Bearer <token>``.

    ``tokens`` maps token -> labeler name. A missing header or an unknown token is a 401 with
    ``WWW-Authenticate: Bearer``. Tokens are compared in constant time.
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._table = [(t.encode(), name) for t, name in tokens.items()]
        for _, name in self._table:
            if not name.strip():
                raise ValueError("every API token needs a non-empty labeler name")

    def labeler(self, creds: HTTPAuthorizationCredentials | None) -> str:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing credentials: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        given = creds.credentials.encode()
        found = None
        for token, name in self._table:  # no early exit: the time does not depend on which
            if hmac.compare_digest(token, given):
                found = name
        if found is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "unknown API token: ask an admin for a token for your labeler name",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return found
