"""The README documents the settings the code declares."""

import pytest

from tests.readme_tables import README, TAPS, current_table, settings_table


@pytest.mark.parametrize(("tap", "module"), TAPS.items())
def test_readme_settings_table_matches_about(tap, module):
    assert current_table(README.read_text(), tap) == settings_table(module), "run `make readme`"


def test_readme_quick_start_names_make_test():
    assert "make test" in README.read_text()
