"""The rule language: a rule is ``check(value, ctx) -> normalised value``, raising ``_Invalid``."""

import contextlib
import ipaddress
import math
import os
import re

_DOTTED_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$", re.ASCII)


class _Invalid(Exception):
    """A value does not fit its rule. ``problems`` is a list of
    (suffix, value, text): suffix locates an item (``[2]``, ``['s3']``) and text
    says what is wrong, usually "expected ..."."""

    def __init__(self, text, value=None, suffix="", problems=None):
        super().__init__(text)
        self.problems = problems if problems is not None else [(suffix, value, text)]


@contextlib.contextmanager
def _gathered(problems, where):
    """Inside: an ``_Invalid`` raised (by an item's rule) does not propagate;
    its problems are appended to ``problems`` (a list), each suffix located
    under ``where`` (``[2]``, ``['s3']``). For a container's rule, which
    checks every item and then raises them all at once."""
    try:
        yield
    except _Invalid as e:
        problems += [(f"{where}{suffix}", value, text) for suffix, value, text in e.problems]


class _Context:
    """What a rule may use besides the value: ``cwd`` and ``warn(str)``."""

    def __init__(self, cwd, warn):
        self.cwd = cwd
        self.warn = warn


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(x):
    return repr(int(x)) if float(x).is_integer() else repr(x)


def _seconds(gt=None, ge=None, le=None, what="a number of seconds"):
    """A finite number (int or float, not bool) -> float."""
    bounds = []
    if gt is not None:
        bounds.append(f"> {_fmt(gt)}")
    if ge is not None:
        bounds.append(f">= {_fmt(ge)}")
    if le is not None:
        bounds.append(f"<= {_fmt(le)}")
    expected = f"expected {what}" + (" " + " and ".join(bounds) if bounds else "")

    def check(value, ctx):
        if not _is_number(value) or not math.isfinite(value):
            raise _Invalid(expected, value)
        if ((gt is not None and not value > gt) or (ge is not None and not value >= ge)
                or (le is not None and not value <= le)):
            raise _Invalid(expected, value)
        return float(value)
    return check


def _int(minimum=None, maximum=None):
    """An int (not bool) within [minimum, maximum]."""
    if minimum is not None and maximum is not None:
        expected = f"expected an integer from {minimum} to {maximum}"
    elif minimum is not None:
        expected = f"expected an integer >= {minimum}"
    else:
        expected = "expected an integer"

    def check(value, ctx):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(expected, value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise _Invalid(expected, value)
        return value
    return check


def _bool(value, ctx):
    if not isinstance(value, bool):
        raise _Invalid("expected True or False", value)
    return value


def _str(pattern=None, what="a non-empty string"):
    def check(value, ctx):
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            raise _Invalid(f"expected {what}", value)
        return value
    return check


def _any_string(what):
    def check(value, ctx):
        if not isinstance(value, str):
            raise _Invalid(f"expected {what}", value)
        return value
    return check


def _optional(rule, what=None):
    """None, or whatever ``rule`` accepts. With ``what``, a bad value is
    reported as "expected None or <what>"; without, ``rule``'s own problems
    are reported."""
    def check(value, ctx):
        if value is None:
            return None
        try:
            return rule(value, ctx)
        except _Invalid:
            if what is None:
                raise
            raise _Invalid(f"expected None or {what}", value) from None
    return check


def _path(value, ctx):
    """A non-empty str or os.PathLike -> str (not resolved here)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise _Invalid("expected a path (a non-empty string)", value)
    return value


def _url(value, ctx):
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
        raise _Invalid("expected an http:// or https:// URL", value)
    return value


def _cidr(value, ctx):
    """A network such as "10.0.0.0/8" or "fd00::/8" (host bits allowed) -> str."""
    try:
        ipaddress.ip_network(value, strict=False)
    except (TypeError, ValueError):
        raise _Invalid("expected a network in CIDR form such as '10.0.0.0/8'", value) from None
    return value


def _list_of(item_rule, what, nonempty=False):
    """A list (or tuple) whose items pass ``item_rule`` -> list. Every bad item
    is reported."""
    def check(value, ctx):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected a list of {what}", value)
        if nonempty and not value:
            raise _Invalid(f"expected a non-empty list of {what}", value)
        out, problems = [], []
        for i, item in enumerate(value):
            with _gathered(problems, f"[{i}]"):
                out.append(item_rule(item, ctx))
        if problems:
            raise _Invalid("", problems=problems)
        return out
    return check


def _dict_of(key_rule, value_rule, what):
    def check(value, ctx):
        if not isinstance(value, dict):
            raise _Invalid(f"expected a dict of {what}", value)
        out, problems = {}, []
        for k, v in value.items():
            try:
                k2 = key_rule(k, ctx)
            except _Invalid as e:
                problems += [(f"[{k!r}] (key)", k, t) for _, _, t in e.problems]
                continue
            with _gathered(problems, f"[{k!r}]"):
                out[k2] = value_rule(v, ctx)
        if problems:
            raise _Invalid("", problems=problems)
        return out
    return check


_dotted = _str(_DOTTED_PATH, "a dotted path such as 'package.module.Class'")


def _backend(available):
    """A backend name: one of ``available``."""
    names = ", ".join(repr(n) for n in available)

    def check(value, ctx):
        if value in available:
            return value
        raise _Invalid(f"expected one of {names}", value)
    return check


def _existing_dir(value, ctx):
    """An existing directory -> its absolute, symlink-free path (relative
    paths are taken against cwd)."""
    path = _path(value, ctx)
    full = os.path.realpath(os.path.join(ctx.cwd, path))
    if not os.path.isdir(full):
        raise _Invalid(f"expected an existing directory ({full} is not one)", value)
    return full


def _anything(value, ctx):
    return value

