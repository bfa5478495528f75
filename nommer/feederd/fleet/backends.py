"""Fleets by FLEET_BACKEND name: ``BACKENDS`` (name -> builder) and ``make_fleet``; imports no fleet until one is built."""


def _local(settings, reactor, registry, pool=None):
    from nommer.feederd.fleet.local import LocalFleet
    return LocalFleet(settings, reactor, pool=pool)


def _ec2(settings, reactor, registry, pool=None):
    from nommer.feederd.fleet.ec2 import Ec2Fleet
    return Ec2Fleet(settings, reactor, registry, pool=pool)


def _none(settings, reactor, registry, pool=None):
    from nommer.feederd.fleet.local import NoFleet
    return NoFleet()


#: FLEET_BACKEND name -> ``builder(settings, reactor, registry, pool=None)``.
#: The settings accept exactly these names (``nommer.conf.schema``).
BACKENDS = {
    "local": _local,
    "ec2": _ec2,
    "none": _none,
}


def make_fleet(settings, reactor, registry, pool=None):
    """Build the fleet named by ``settings.FLEET_BACKEND`` (``registry``: the
    worker registry, which the EC2 fleet reads), for ``pool`` (None: the
    default pool; ``settings`` are then the pool's fleet settings,
    ``nommer.core.pools.fleet_settings``)."""
    return BACKENDS[settings.FLEET_BACKEND](settings, reactor, registry, pool=pool)
