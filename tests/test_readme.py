"""The README documents the settings the code declares."""

import pytest

from billing_sandbox.registry import TAPS
from tests.readme_tables import README, current_table, settings_table


@pytest.mark.parametrize("tap", TAPS, ids=lambda tap: tap.name)
def test_readme_settings_table_matches_about(tap):
    assert current_table(README.read_text(), tap.name) == settings_table(tap.package), (
        "run `make readme`"
    )


def test_readme_quick_start_names_make_test():
    assert "make test" in README.read_text()
