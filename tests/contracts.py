"""What every contract suite shares: the signature check that fails when an
implementation drifts from its interface (Buildbot's ``assertArgSpecMatches``,
``test/util/interfaces.py``, for a whole class). Used by the Fleet contract
(tests/feederd/fleet_contract.py) and the Storage contract
(tests/core/storage_contract.py)."""

import inspect

__all__ = ["assert_matches_interface", "public_methods"]


def public_methods(cls):
    """``{name: function}`` of every public method of class ``cls``,
    inherited ones included."""
    methods = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        member = inspect.getattr_static(cls, name)
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if inspect.isfunction(member):
            methods[name] = member
    return methods


def _left_to_backends(function):
    """True for an interface method whose body raises NotImplementedError."""
    return "NotImplementedError" in function.__code__.co_names


def assert_matches_interface(testcase, implementation, interface, extras=(), may_inherit=()):
    """Fail ``testcase`` unless class ``implementation`` keeps to class
    ``interface``: every public method of the implementation is one of the
    interface's, with the same ``inspect.signature`` (parameter names, order,
    kinds, defaults), and every method the interface leaves to backends is
    overridden. Buildbot's ``assertArgSpecMatches``, for a whole class.

    @param extras: names of public methods the implementation adds beyond
        the interface on purpose (each must exist: a stale name fails too).
    @param may_inherit: names of methods left to backends that this
        implementation inherits on purpose (a direction it does not support,
        refused before the interface's NotImplementedError is reached).
    """
    theirs, ours = public_methods(interface), public_methods(implementation)
    name = implementation.__name__
    testcase.assertEqual(sorted(set(extras) - set(ours)), [],
                         f"{name} no longer has these declared extra public methods")
    testcase.assertEqual(sorted(set(ours) - set(theirs) - set(extras)), [],
                         f"{name} has public methods that {interface.__name__} does not declare")
    for method, function in sorted(ours.items()):
        if method not in theirs:  # one of ``extras``
            continue
        expected = inspect.signature(inspect.unwrap(theirs[method]))
        got = inspect.signature(inspect.unwrap(function))
        testcase.assertEqual(got, expected, f"{name}.{method}{got} drifted from "
                                            f"{interface.__name__}.{method}{expected}")
    testcase.assertEqual(sorted(method for method, function in theirs.items()
                                if _left_to_backends(function) and ours[method] is function
                                and method not in may_inherit), [],
                         f"{name} does not implement these {interface.__name__} methods")
