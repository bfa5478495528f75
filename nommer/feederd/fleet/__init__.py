"""Where workers come from, and how many there should be.

- ``base``: the Fleet interface and ``FleetUnavailable``;
- ``local``: ``LocalFleet`` (workerd child processes) and ``NoFleet``;
- ``ec2``: ``Ec2Fleet``, the service; ``ec2_api``: its EC2 calls;
  ``ec2_plan``: its decisions, pure; ``userdata``: a worker instance's
  cloud-init user data;
- ``capacity``: the capacity policy, pure; ``autoscaler``: the service that
  asks it every tick and tells the fleet.

Fleets are built by FLEET_BACKEND name in ``nommer.feederd.fleet.backends``.
"""
