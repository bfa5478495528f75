"""``twistd workerd``: one worker taking jobs from the queue."""


from twisted.internet import reactor as default_reactor
from twisted.python import usage

from nommer.conf import DEFAULT_CONFIG
from nommer.core.lifecycle import DaemonService, attach_backends, load_settings_or_exit
from nommer.workerd.worker import Worker

class Options(usage.Options):
    optFlags = [["local", "l", "not on EC2: skip the instance metadata (as in the original)"]]
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "nomconf module name or path to a nomconf.py file"],
        ["worker-id", None, None, "name of this worker in logs and job records (default: host-pid)"],
    ]


def build(settings, reactor=default_reactor, worker_id=None):
    top = DaemonService()
    Worker(attach_backends(settings, reactor, top), settings, reactor, worker_id=worker_id).setServiceParent(top)
    return top


def makeService(options):
    settings = load_settings_or_exit("workerd", options["config"])
    return build(settings, worker_id=options["worker-id"])
