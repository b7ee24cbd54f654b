"""What each tap must provide, from its one registry entry (``billing_sandbox/registry.py``).

Adding a tap means its package, its sandbox part and one registry entry; this test names whatever
else is missing (a console script, a benchmark workload, a Hub definition, a README table, the
``meltano.yml`` extractor), and fails on a tap package that is not registered.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli comes with mypy, in the test extra
    import tomli as tomllib  # type: ignore[no-redef]

from billing_sandbox.registry import TAPS, TapEntry
from billing_toolkit.tap import BillingTap
from tests.readme_tables import markers

ROOT = Path(__file__).resolve().parent.parent
#: The suites that run every tap the same way; each must hold a case of each registered tap.
SUITES = (
    "tests/test_standard.py",  # singer-sdk's standard tap tests
    "tests/test_hostile_config.py",  # bad settings
    "tests/fault_cases.py",  # the fault matrix
    "tests/test_kill_resume.py",  # SIGKILL anywhere, then resume
    "tests/test_soak.py",  # 1,000,000-record backfills
    "tests/test_transport_security.py",  # redirects, TLS
)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_tap_package_of_the_checkout_is_registered():
    packages = {path.parent.name for path in ROOT.glob("tap_*/tap.py")}
    assert packages == {tap.package for tap in TAPS}


@pytest.mark.parametrize("tap", TAPS, ids=lambda tap: tap.name)
def test_each_registered_tap_provides_what_the_project_needs(tap: TapEntry):
    missing = []
    cls = tap.load()
    if not (issubclass(cls, BillingTap) and cls.name == tap.name):
        missing.append(f"{tap.target} is not a BillingTap named {tap.name}")
    if not (ROOT / tap.package / "__main__.py").is_file():
        missing.append(f"{tap.package}/__main__.py (python -m {tap.package})")
    if PYPROJECT["project"]["scripts"].get(tap.name) != f"{tap.target}.cli":
        missing.append(f"pyproject [project.scripts] {tap.name} = {tap.target}.cli")
    if tap.package not in PYPROJECT["tool"]["setuptools"]["packages"]:
        missing.append(f"pyproject [tool.setuptools] packages: {tap.package}")
    try:
        importlib.import_module(f"billing_sandbox.{tap.sandbox}")
    except ImportError:
        missing.append(f"billing_sandbox/{tap.sandbox}.py (the sandbox part)")
    if f'registry.entry("{tap.name}")' not in (ROOT / "bench" / "datasets.py").read_text():
        missing.append("a benchmark workload in bench/datasets.py (registry.entry)")
    if not list((ROOT / "hub" / "extractors" / tap.name).glob("*.yml")):
        missing.append(f"hub/extractors/{tap.name}/ (make hub-definitions)")
    extractors = yaml.safe_load((ROOT / "meltano.yml").read_text())["plugins"]["extractors"]
    if tap.name not in {e["name"] for e in extractors}:
        missing.append(f"meltano.yml extractor {tap.name} (make meltano-yml)")
    readme = (ROOT / "README.md").read_text()
    if not all(marker in readme for marker in markers(tap.name)):
        missing.append(f"README settings table of {tap.name} (make readme)")
    for suite in SUITES:
        text = (ROOT / suite).read_text()
        if tap.package not in text and tap.class_name not in text:
            missing.append(f"a case in {suite}")
    if cls.connection_probe is BillingTap.connection_probe:
        missing.append(f"{cls.__name__}.connection_probe (the --test request)")
    assert missing == [], f"{tap.name} lacks: {missing}"
