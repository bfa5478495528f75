"""Fixtures of the chaos suite. ``--long`` (declared in tests/conftest.py,
where pytest honours ``pytest_addoption``) selects the long variant."""

import pytest

from tests.e2e.harness import HookReceiver


@pytest.fixture
def long_run(request):
    """True with ``pytest --long``: more jobs, more chaos, longer outages."""
    return request.config.getoption("--long")


@pytest.fixture
def root(tmp_path):
    return str(tmp_path)


@pytest.fixture
def hooks():
    receiver = HookReceiver()
    yield receiver
    receiver.close()
