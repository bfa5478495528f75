"""Small service helpers shared by both daemons."""

from twisted.application import service


class Closer(service.Service):
    """Closes the store and queue when stopped. Attach it first to a
    MultiService: children stop in reverse order, so it closes them last,
    after every service that uses them has stopped."""

    def __init__(self, *closables):
        self.closables = closables

    def stopService(self):
        super().stopService()
        for c in self.closables:
            c.close()
