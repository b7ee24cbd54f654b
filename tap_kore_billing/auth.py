"""The ``auth`` header of Kore.ai's public APIs: an HS256 JWT whose ``appId`` claim is the client id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import requests

from billing_toolkit.secrets import JWT_PATTERN, register_secret, register_secret_pattern

#: A minted token lives this long. A fresh one, with its own ``jti``, is minted for every request,
#: so apps that enforce ``jti`` accept every call.
TOKEN_LIFETIME_SECONDS = 300


def mint_jwt(client_id: str, client_secret: str, *, now: float | None = None) -> str:
    """An HS256 JWT signed with the client secret, claims ``appId``, ``sub``, ``iat``, ``exp``, ``jti``."""
    issued = int(now if now is not None else time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "appId": client_id,
        "sub": "tap-kore-billing",
        "iat": issued,
        "exp": issued + TOKEN_LIFETIME_SECONDS,
        "jti": uuid.uuid4().hex,
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(client_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class KoreJWTAuth(requests.auth.AuthBase):
    """Sets ``auth: <JWT>``: a ready token, or one minted per request from the client credentials."""

    def __init__(
        self, *, client_id: str | None, client_secret: str | None, jwt: str | None
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._jwt = jwt
        register_secret(client_secret)
        register_secret(jwt)
        register_secret_pattern(JWT_PATTERN)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._jwt:
            token = self._jwt
        else:
            assert self._client_id and self._client_secret  # settings validation guarantees it
            token = mint_jwt(self._client_id, self._client_secret)
        request.headers["auth"] = token
        return request
