"""The backend names the settings accept are the names the daemons open backends by."""

import pytest

from nommer.conf.rules import _Context, _Invalid
from nommer.conf.schema import RULES
from nommer.core import keys, store, workqueue
from nommer.core import worker_registry as registry
from nommer.feederd.fleet import backends as fleet_backends
from nommer.workerd import sandbox

CHOICES = [
    ("JOB_STORE_BACKEND", list(store.BACKENDS)),
    ("WORK_QUEUE_BACKEND", list(workqueue.BACKENDS)),
    ("FLEET_BACKEND", list(fleet_backends.BACKENDS)),
    ("FFMPEG_SANDBOX", list(sandbox.MODES)),
]


def test_a_job_store_name_opens_a_store_a_registry_and_a_key_store():
    """JOB_STORE_BACKEND picks from three maps: none may have a name the others lack."""
    assert set(store.BACKENDS) == set(registry.BACKENDS) == set(keys.BACKENDS)


@pytest.mark.parametrize("setting, names", CHOICES)
def test_the_rule_accepts_exactly_the_names_of_the_map(setting, names):
    ctx = _Context("/", [].append)
    assert names
    for name in names:
        assert RULES[setting](name, ctx) == name
    with pytest.raises(_Invalid) as e:
        RULES[setting]("no-such-backend", ctx)
    assert e.value.problems[0][2] == "expected one of " + ", ".join(repr(n) for n in names)
