"""The one list of the taps this distribution ships, for everything around them.

Tests, benchmarks, scripts, the README's settings tables and the generated ``meltano.yml`` and Hub
definitions enumerate the taps from :data:`TAPS`; the taps themselves never read it (they run
without the sandbox). A tap's entry names its package, its tap class, the sandbox module that
plays its API, and what a Meltano Hub definition says that the tap's ``--about`` does not.

Adding a tap: its package (``tap_x/``, with ``tap.py`` and ``__main__.py``), its sandbox part
(``billing_sandbox/<sandbox>.py``), one entry here; ``tests/test_registry.py`` lists what else
each entry must have (a console script, a benchmark workload, a Hub definition, a README table) and
fails naming what is missing.
"""

from __future__ import annotations

import importlib
import typing as t
from dataclasses import dataclass

if t.TYPE_CHECKING:
    from billing_toolkit.tap import BillingTap


@dataclass(frozen=True)
class TapEntry:
    """One tap of the distribution."""

    #: The executable and Meltano plugin name, e.g. ``tap-luminai``.
    name: str
    #: Its Python package, e.g. ``tap_luminai``.
    package: str
    #: The tap class in ``<package>.tap``.
    class_name: str
    #: The module of ``billing_sandbox`` that plays its API.
    sandbox: str
    #: Meltano Hub: the plugin's label, keywords, and one list per way to authenticate of the
    #: settings a working config needs; the vendor's public site (None where none is on record).
    label: str
    keywords: tuple[str, ...]
    setting_groups: tuple[tuple[str, ...], ...]
    domain_url: str | None = None

    @property
    def target(self) -> str:
        """``package.module:Class``, as a console script or ``bench.sdk_default`` names it."""
        return f"{self.package}.tap:{self.class_name}"

    @property
    def env_prefix(self) -> str:
        """The prefix of its settings in the environment, e.g. ``TAP_LUMINAI_``."""
        return self.name.upper().replace("-", "_") + "_"

    def load(self) -> type[BillingTap]:
        """The tap class (imported on demand)."""
        return getattr(importlib.import_module(f"{self.package}.tap"), self.class_name)  # type: ignore[no-any-return]


TAPS: tuple[TapEntry, ...] = (
    TapEntry(
        name="tap-luminai",
        package="tap_luminai",
        class_name="TapLuminai",
        sandbox="luminai",
        label="Lumin.ai Billing",
        keywords=("meltano_sdk", "billing", "conversational-ai", "lumin.ai"),
        setting_groups=(("api_url", "token", "start_date"),),
    ),
    TapEntry(
        name="tap-kore-billing",
        package="tap_kore_billing",
        class_name="TapKoreBilling",
        sandbox="kore",
        label="Kore.ai Billing Sessions",
        keywords=("meltano_sdk", "billing", "conversational-ai", "kore.ai"),
        setting_groups=(("client_id", "client_secret", "start_date"), ("jwt", "start_date")),
        domain_url="https://kore.ai",
    ),
    TapEntry(
        name="tap-evovoice",
        package="tap_evovoice",
        class_name="TapEvoVoice",
        sandbox="evovoice",
        label="Evo Voice AI Usage",
        keywords=("meltano_sdk", "billing", "voice", "evo-voice"),
        setting_groups=(("username", "password", "start_date"),),
        domain_url="https://evovoice.io",
    ),
)

NAMES: tuple[str, ...] = tuple(entry.name for entry in TAPS)


def entry(name: str) -> TapEntry:
    """The entry of tap ``name``."""
    for each in TAPS:
        if each.name == name:
            return each
    msg = f"no tap {name!r} in the registry; known: {', '.join(NAMES)}"
    raise KeyError(msg)
