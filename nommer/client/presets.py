"""Named job_options, ready to submit.

Each preset is one JSON file in ``nommer/client/presets/`` holding a
job_options object in the original media-nommer format plus a one-line
``description``::

    {"description": "...",
     "nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
     "options": [{"infile_options": [[flag, value], ...],
                  "outfile_options": [[flag, value], ...],
                  "move_atom_to_front": false}, ...]}

Flags are ffmpeg's without the dash; a ``null`` value is a bare flag. A
two-pass preset has two pass objects (the worker sends pass 1 to /dev/null).
To add a preset, drop a file there: the name is the file name without
``.json``.
"""

import json
from importlib import resources

_PACKAGE = "nommer.client"
_DIR = "presets"
_SUFFIX = ".json"


def _files():
    return {entry.name[:-len(_SUFFIX)]: entry
            for entry in resources.files(_PACKAGE).joinpath(_DIR).iterdir()
            if entry.name.endswith(_SUFFIX) and entry.is_file()}


def names():
    """Every preset name, sorted."""
    return sorted(_files())


def _load(name):
    files = _files()
    if name not in files:
        raise KeyError(f"no preset named {name!r}; presets: {', '.join(sorted(files))}")
    return json.loads(files[name].read_text(encoding="utf-8"))


def get(name):
    """The job_options of preset ``name`` (a fresh dict: change it freely).
    Unknown name -> ``KeyError`` listing the names there are."""
    data = _load(name)
    data.pop("description", None)
    return data


def describe(name):
    """The preset's one-line description."""
    return _load(name).get("description", "")
