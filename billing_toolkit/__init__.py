"""Shared toolkit of the billing taps.

What every tap of this distribution needs and nothing tap-specific: UTC timestamps, date windows,
HTTP retries with Retry-After, descriptive request errors, secret masking, common settings and the
windowed incremental stream. It imports only singer-sdk, requests, pendulum and the standard library;
taps import it, it never imports a tap.
"""
