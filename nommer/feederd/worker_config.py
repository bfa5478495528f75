"""Publishes the workers' configuration to S3 at feederd start (AWS setups)."""

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from nommer.conf.remote import upload_nomconf
from nommer.core.aws import AWS


class ConfigPublisher(Service):
    """Puts the rendered nomconf at s3://CONFIG_S3_BUCKET/nomconf.py once at
    start. A failure is logged, never fatal: workers already running keep
    their configuration."""

    log = Logger()

    def __init__(self, settings, reactor):
        self.settings = settings
        self.reactor = reactor
        self.done = None

    def startService(self):
        super().startService()
        self.aws = AWS(self.settings, self.reactor, name="config")
        self.done = defer.Deferred.fromCoroutine(upload_nomconf(self.aws, self.settings))
        self.done.addCallbacks(
            lambda uri: self.log.info("workers' configuration published at {uri}", uri=uri),
            lambda f: self.log.failure("publishing the workers' configuration failed", f))

    async def stopService(self):
        super().stopService()
        if self.done is not None:
            await self.done
        self.aws.close()
