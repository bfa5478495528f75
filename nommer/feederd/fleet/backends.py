"""Fleets by FLEET_BACKEND name: ``BACKENDS`` (name -> builder) and ``make_fleet``; imports no fleet until one is built."""


def _local(settings, reactor, registry):
    from nommer.feederd.fleet.local import LocalFleet
    return LocalFleet(settings, reactor)


def _ec2(settings, reactor, registry):
    from nommer.feederd.fleet.ec2 import Ec2Fleet
    return Ec2Fleet(settings, reactor, registry)


def _none(settings, reactor, registry):
    from nommer.feederd.fleet.local import NoFleet
    return NoFleet()


#: FLEET_BACKEND name -> ``builder(settings, reactor, registry)``. The
#: settings accept exactly these names (``nommer.conf.schema``).
BACKENDS = {
    "local": _local,
    "ec2": _ec2,
    "none": _none,
}


def make_fleet(settings, reactor, registry):
    """Build the fleet named by ``settings.FLEET_BACKEND`` (``registry``: the
    worker registry, which the EC2 fleet reads)."""
    return BACKENDS[settings.FLEET_BACKEND](settings, reactor, registry)
