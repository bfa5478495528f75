"""What an output builder hands the outputs nommer: ``Step`` and ``OutputFile``.

Each output type has a builder module in this package with two pure
functions (no I/O but reading files the step wrote, no reactor):

* ``plan(spec, source, *, ffmpeg_bin, input_path, work_dir, **extra) -> list[Step]``:
  the ffmpeg runs the output needs. ``spec`` is the normalized output (every
  field of ``nommer.core.outputs.schema`` filled in), ``source`` a
  ``nommer.workerd.outputs.source.SourceInfo``, ``work_dir`` an existing
  empty scratch directory (absolute path) the steps write into; argvs are
  complete (``ffmpeg_bin`` first, ``-progress pipe:1 -nostats`` included).
  Raise ``PermanentJobError`` with a sentence for a person when the source
  cannot give the output (a ladder on an audio-only source...).
* ``finish(spec, source, steps, work_dir) -> OutputResult``: after every
  step ran, post-process (write manifests, measure bitrates, build the VTT)
  and describe what to upload.

The nommer runs the steps in the sandbox (only the scratch dir writable,
the inputs readable), reports one monotonic percentage over all steps of all
outputs (``weight``), then uploads every file of every result: role
``MEDIA`` first, then ``PLAYLIST``, then ``MANIFEST`` (so a player never
sees a manifest that names a missing file).
"""

import attr

#: Upload order: media files (segments, pictures, MP4s) first, then the
#: per-rung playlists, then the master playlists and MPDs last.
MEDIA, PLAYLIST, MANIFEST = 0, 1, 2


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Step:
    """One ffmpeg run.

    :ivar what: a few words for logs and errors ("ladder stream/", "poster poster.jpg").
    :ivar argv: the complete argv (list of str), binary first.
    :ivar expected_s: seconds of output ffmpeg's ``-progress`` ``out_time``
        reaches at the end (for progress); None if unknown.
    :ivar weight: this step's share of the job's encode work, relative to
        the other steps (e.g. decoded source seconds x output pixels / 1e6).
    :ivar readable: extra absolute paths the sandboxed ffmpeg must read
        (besides the job's source), e.g. the merge image.
    :ivar capped: the argv ends with ffmpeg's output, before which the
        nommer puts ``-t`` (MAX_OUTPUT_DURATION_FACTOR x the source's
        duration); False for a program that is not ffmpeg.
    """

    what: str
    argv: list
    expected_s: float = None
    weight: float = 1.0
    readable: tuple = ()
    capped: bool = True


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class OutputFile:
    """One file to upload.

    :ivar path: relative path under the job's destination prefix (``/``-separated).
    :ivar local: absolute path in the scratch dir.
    :ivar bytes: size in bytes.
    :ivar content_type: MIME type (``nommer.core.storage.content_types``).
    :ivar role: ``MEDIA``, ``PLAYLIST`` or ``MANIFEST`` (upload order).
    """

    path: str
    local: str
    bytes: int
    content_type: str
    role: int = MEDIA


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class OutputResult:
    """What one output made.

    :ivar files: ``OutputFile`` list.
    :ivar info: JSON-able dict for the job document, merged into the output's
        entry (e.g. ``{"rungs": [...], "audio": [...]}`` for a ladder,
        ``{"sheets": ..., "tiles": ...}`` for a storyboard); the nommer adds
        ``type``, the spec's naming fields and ``files``.
    """

    files: list
    info: dict = attr.Factory(dict)
