"""Path arithmetic shared by the file storage, its roots check, the scratch space and the sandbox."""

import os


def is_within(path, directory):
    """Whether ``path`` is ``directory`` or lies under it (str paths, compared
    as given: callers pass real or normalized paths; no I/O). ``/srv/media2``
    is not within ``/srv/media``."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)
