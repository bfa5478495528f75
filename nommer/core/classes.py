# -*- test-case-name: tests.core.test_classes -*-
"""Loading a class named by a dotted path, from an allow-list: ``load_class``.

Settings and jobs name classes by dotted path: a job its nommer
(``job_options.nommer``, checked against ALLOWED_NOMMERS, with the 2011 paths
of NOMMER_ALIASES mapped to today's), the settings their storage backends
(STORAGE_BACKENDS). Every such class is loaded here:

* ``canonical_name(dotted, aliases)``: the path an old one maps to (pure);
* ``load_class(dotted, allowed=None, aliases=None, what="class")``: maps
  ``dotted`` through ``aliases``, refuses it unless ``allowed`` (when given)
  holds the result, **before importing anything** (a job naming
  ``os.system`` never imports a module), then imports the module and returns
  the class.

Every failure is one error, ``ClassLoadError`` (an ``ImportError``), saying
which path and why; ``ClassNotAllowed``, its subclass, is a refusal by the
allow-list (a caller's mistake rather than the configuration's).
"""

import importlib

__all__ = ["ClassLoadError", "ClassNotAllowed", "canonical_name", "load_class"]


class ClassLoadError(ImportError):
    """``dotted`` names no class that may be loaded. ``reason`` is the
    message (it names the path); ``dotted`` the path as given."""

    def __init__(self, dotted, reason):
        super().__init__(reason)
        self.dotted = dotted
        self.reason = reason


class ClassNotAllowed(ClassLoadError):
    """The allow-list does not hold the path: nothing was imported."""


def canonical_name(dotted, aliases=None):
    """The dotted path ``dotted`` stands for: ``aliases[dotted]`` when it is
    an old path, else itself."""
    return (aliases or {}).get(dotted, dotted)


def load_class(dotted, allowed=None, aliases=None, what="class"):
    """The class at ``dotted`` (``package.module.Class``).

    @param allowed: None (any path), or the paths that may be loaded; the
        path is checked after ``aliases`` and before any import.
    @param aliases: None, or ``{old path: path}``.
    @param what: what the class is, for messages ("nommer", "storage
        backend").
    @raise ClassNotAllowed: ``allowed`` does not hold the path.
    @raise ClassLoadError: not a dotted path, the module cannot be imported
        (the import's own error is its ``__cause__``), it has no such name,
        or the name is not a class.
    """
    if not isinstance(dotted, str) or not dotted:
        raise ClassLoadError(dotted, f"{what} {dotted!r} is not a dotted path such as 'package.module.Class'")
    path = canonical_name(dotted, aliases)
    if allowed is not None and path not in allowed:
        raise ClassNotAllowed(dotted, f"{dotted!r} is not an allowed {what}; allowed: {', '.join(allowed)}")
    module_name, _, name = path.rpartition(".")
    if not module_name or not name:
        raise ClassLoadError(dotted, f"{what} {path!r} is not a dotted path such as 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module failing as it runs
        raise ClassLoadError(dotted, f"{what} {path!r}: module {module_name!r} cannot be imported: {e}") from e
    try:
        cls = getattr(module, name)
    except AttributeError:
        raise ClassLoadError(dotted, f"{what} {path!r}: module {module_name!r} has no class {name!r}") from None
    if not isinstance(cls, type):
        raise ClassLoadError(dotted, f"{what} {path!r} is not a class but {type(cls).__name__}")
    return cls
