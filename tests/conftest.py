"""Session set-up: run from a scratch directory, so trial's ``mktemp()`` dirs
(relative to the working directory) never land in the checkout."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _scratch_cwd(tmp_path_factory):
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)


def pytest_addoption(parser):
    # Here, not in tests/chaos/conftest.py: pytest only honours this hook in
    # the rootdir conftest (and plugins) when the whole suite is collected.
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long variant of the chaos suite (tests/chaos)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (``CI`` set), a test that skips fails instead: every tool a
    test needs is installed by ``make test``, so a skip there means a missing
    install step, not a machine without the tool."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped under CI, where make test installs every tool the tests need: "
                           f"{reason}")
