"""The ``chromium`` fixture: one headless chromium (Selenium) per test session, quit at the end."""

import pytest

from tests.browser.harness import chromium_session


@pytest.fixture(scope="session")
def chromium():
    """A ``selenium.webdriver.Chrome`` driving headless Debian chromium (see tests/browser/harness.py)."""
    with chromium_session() as driver:
        yield driver
