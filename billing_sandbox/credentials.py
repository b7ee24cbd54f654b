"""Credentials of the benchmark sandboxes (``python -m bench``) only; the harness checks that no
output shows them, and so does its smoke test."""

LUMIN_TOKEN = "bench-lumin-token-4f9a2c71"
KORE_CLIENT_ID = "cs-bench-client-0b7e"
KORE_CLIENT_SECRET = "bench-kore-secret-d2c8a615"
EVO_USERNAME = "bench-evo-admin"
EVO_PASSWORD = "bench-evo-password-7e31b9"
#: The HS256 JWT header every minted token starts with.
JWT_HEADER_PREFIX = "eyJhbGciOiAiSFMyNTYi"
SECRETS = (LUMIN_TOKEN, KORE_CLIENT_SECRET, EVO_PASSWORD, JWT_HEADER_PREFIX)
