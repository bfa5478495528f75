"""One AWS resource (a DynamoDB table, a SimpleDB domain) used through an
``AWS`` pool: the pool it owns or was given, and the set-up done lazily once.

A subclass defines ``ensure_resources()`` (create or check the resource,
set ``self._resources_ok``, return lines for a person) and calls
``_open_pool(settings, reactor, name, pool)`` from its ``__init__``.
"""

from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.aws.pool import AWS


class AWSResource:
    """``self.aws``: the ``AWS`` pool the calls run in: ``pool`` when given
    (the caller keeps owning it: ``close()`` leaves it running), else one of
    this object's own, named ``nommer-<name>``.

    With AWS_CREATE_RESOURCES the first ``_ready()`` runs
    ``ensure_resources()`` once and logs its lines (concurrent first calls
    wait for that one run); without, ``_ready()`` does nothing and a missing
    resource is the backend's error.
    """

    log = Logger()

    @classmethod
    def from_settings(cls, settings, reactor, **kwargs):
        """The backend factories' way in (``make_store``, ``make_registry``,
        ``open_key_store``): ``cls(settings, reactor, **kwargs)``."""
        return cls(settings, reactor, **kwargs)

    @property
    def aws_pool(self):
        """The pool the calls run in, for a sibling to share (feederd's API
        keys use the job store's; see ``JobStore.aws_pool``)."""
        return self.aws

    def _open_pool(self, settings, reactor, name, pool=None):
        self.settings = settings
        self.reactor = reactor
        self._owns_pool = pool is None
        self.aws = AWS(settings, reactor, name=name) if pool is None else pool
        self._resources_ok = not settings.AWS_CREATE_RESOURCES
        self._setup_lock = defer.DeferredLock()

    def close(self):
        """Stop this object's thread pool (not a ``pool`` it was given).
        Returns a fired Deferred."""
        if self._owns_pool:
            self.aws.close()
        return defer.succeed(None)

    async def ensure_resources(self):
        raise NotImplementedError

    async def _ready(self):
        """Run ``ensure_resources`` once, before first use, when AWS_CREATE_RESOURCES."""
        if self._resources_ok:
            return
        await self._setup_lock.acquire()
        try:
            if not self._resources_ok:
                for line in await self.ensure_resources():
                    self.log.info("{line}", line=line)
        finally:
            self._setup_lock.release()
