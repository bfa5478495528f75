"""ffprobe a local file, and summarize what it found.

``ffprobe(reactor, settings, path)`` runs ``ffprobe -v error -print_format
json -show_format -show_streams <path>`` through ``nommer.workerd.process``
and returns ffprobe's JSON as a dict. ffprobe runs in the worker's sandbox
(``nommer.workerd.sandbox``), seeing only the file it probes, read-only. ``summarize(probe_dict)`` turns that
into the small dict a job shows as its ``output``.
"""

import json
import os

from twisted.internet import threads

from nommer.core.errors import PermanentJobError, TransientJobError
from nommer.workerd.process import ProcessRunner
from nommer.workerd.sandbox import Sandbox, sandbox_failure

#: Most seconds one ffprobe run may take (capped further by FFMPEG_TIMEOUT_S).
PROBE_TIMEOUT_S = 300.0

#: How many of ffprobe's last stderr lines go into an error message.
ERROR_TAIL_LINES = 6

#: Demuxers that open other files or URLs named inside the input (playlists):
#: a source detected as one of these is refused, so a job cannot make the
#: worker read its local files through a crafted playlist.
REFUSED_INPUT_FORMATS = frozenset({"hls", "applehttp", "concat", "dash", "ffconcat"})


#: Bytes of the file's head ``playlist_kind`` looks at.
SNIFF_BYTES = 64 * 1024


def playlist_kind(head):
    """The ffmpeg format name ("hls", "concat", "dash") if ``head`` (the
    first bytes of a file) is a playlist, as ffmpeg's probes would see it (after a
    UTF-8 BOM, whitespace and ID3v2 tags, which avformat skips), else None."""
    data = head
    while data[:3] == b"ID3" and len(data) >= 10:
        size = 0
        for b in data[6:10]:
            size = size << 7 | (b & 0x7F)
        data = data[10 + size + (10 if data[5] & 0x10 else 0):]
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    data = data.lstrip()
    if data.startswith(b"#EXTM3U"):
        return "hls"
    if data.startswith(b"ffconcat version"):
        return "concat"
    lowered = data.lower()
    if data.startswith(b"<") and b"<mpd" in lowered and b"dash:profile" in lowered:
        return "dash"
    return None


def _read_head(path):
    try:
        with open(path, "rb") as f:
            return f.read(SNIFF_BYTES)
    except OSError:
        return b""  # ffprobe reports a missing or unreadable file


def _tail(text, lines=ERROR_TAIL_LINES):
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


async def run_ffprobe(reactor, settings, path, argv, *, what="source", display_name=None,
                      timeout_s=None, max_stdout_bytes=None, unreadable=None):
    """Run the ffprobe ``argv`` (``FFPROBE_BIN`` first, the absolute
    ``path`` in it) in the worker's sandbox, only ``path`` readable, and
    return what it printed (bytes).

    A playlist is refused before ffprobe runs (ffprobe itself would open the
    files it names). The run may take ``min(FFMPEG_TIMEOUT_S, timeout_s)``
    seconds (None: PROBE_TIMEOUT_S) and print ``max_stdout_bytes`` (None:
    ``ProcessRunner``'s cap).
    ``unreadable``: the start of the error when ffprobe fails on the file
    (default "<what> is not a media file ffprobe could read"); ffprobe's own
    mention of ``path`` is replaced by ``display_name``.

    Raises ``PermanentJobError`` (a playlist, ffprobe failing on the file,
    too slow, too much output) or ``TransientJobError`` (ffprobe missing,
    its sandbox failing, killed by a signal we did not send).
    """
    name = display_name or path
    full = os.path.abspath(path)
    # Badinput: ffprobe itself opens the files a playlist names (any local
    # .ts/.mp4 the worker can read), so a playlist is refused before ffprobe
    # runs; the format check after it stays as a second line.
    head = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), _read_head, full)
    kind = playlist_kind(head)
    if kind is not None:
        raise PermanentJobError(f"{what} is a playlist ({kind}), not a media file: {name} "
                                "(playlists name other files, which jobs may not read)")
    timeout_s = min(float(settings.FFMPEG_TIMEOUT_S), PROBE_TIMEOUT_S if timeout_s is None else timeout_s)
    limits = {} if max_stdout_bytes is None else {"max_stdout_bytes": max_stdout_bytes}
    runner = ProcessRunner(reactor, argv, timeout_s=timeout_s, kill_grace_s=settings.FFMPEG_KILL_GRACE_S,
                           sandbox=Sandbox(settings), readable=[full], **limits)
    try:
        result = await runner.start()
    except OSError as e:
        raise TransientJobError(f"cannot run ffprobe ({settings.FFPROBE_BIN}): {e}") from e
    broken = sandbox_failure(result)
    if broken:
        raise TransientJobError(f"the ffprobe sandbox failed to start: {broken}")
    stderr = _tail(result.stderr_tail).replace(full, name)
    if result.timed_out:
        # Permanent: the same file would be probed as long again on every attempt.
        raise PermanentJobError(f"ffprobe took longer than {timeout_s:g} s on the {what}: {name}; stopped")
    if result.signal is not None:
        raise TransientJobError(f"ffprobe was killed by signal {result.signal} on the {what}: "
                                f"{name}\n{stderr}".rstrip())
    if result.exit_code != 0:
        raise PermanentJobError(f"{unreadable or what + ' is not a media file ffprobe could read'}: "
                                f"{stderr or name}")
    if result.stdout_truncated:
        raise PermanentJobError(f"ffprobe printed too much about the {what} (more than "
                                f"{max_stdout_bytes} bytes): {name}")
    return result.stdout or b""


async def ffprobe(reactor, settings, path, *, what="source", display_name=None):
    """Probe the local file ``path`` (str) and return ffprobe's JSON (dict
    with ``"format"`` and ``"streams"``).

    ``what`` ("source", "output"...) and ``display_name`` (a name safe to show
    a user, e.g. the job's URI without credentials; default ``path``) only
    shape error messages; ffprobe's own mention of ``path`` is replaced by
    ``display_name`` too.

    Raises ``PermanentJobError`` when ffprobe cannot read the file as media
    ("source is not a media file ffprobe could read: <name>: Invalid data
    found when processing input"), when it has no audio or video stream, or
    when it is a playlist format (``REFUSED_INPUT_FORMATS``).
    Raises ``PermanentJobError`` too when ffprobe runs longer than
    ``min(FFMPEG_TIMEOUT_S, PROBE_TIMEOUT_S)``: the same file would take as
    long again (as an ffmpeg run past FFMPEG_TIMEOUT_S).
    Raises ``TransientJobError`` when ffprobe is missing or dies of a signal
    we did not send. (``run_ffprobe``.)
    """
    name = display_name or path
    argv = [settings.FFPROBE_BIN, "-v", "error", "-print_format", "json",
            "-show_format", "-show_streams", os.path.abspath(path)]
    stdout = await run_ffprobe(reactor, settings, path, argv, what=what, display_name=display_name)
    try:
        info = json.loads(stdout.decode("utf-8", "replace"))
    except ValueError as e:
        raise PermanentJobError(f"ffprobe gave unreadable output for the {what}: {name}") from e
    if not isinstance(info, dict):
        raise PermanentJobError(f"ffprobe gave unreadable output for the {what}: {name}")
    info.setdefault("streams", [])
    info.setdefault("format", {})
    formats = set(str(info["format"].get("format_name", "")).split(","))
    refused = formats & REFUSED_INPUT_FORMATS
    if refused:
        raise PermanentJobError(
            f"{what} is a playlist ({', '.join(sorted(refused))}), not a media file: {name}")
    kinds = {s.get("codec_type") for s in info["streams"] if isinstance(s, dict)}
    if not kinds & {"audio", "video"}:
        raise PermanentJobError(f"{what} has no audio or video stream: {name}")
    return info


def _number(value, kind=float):
    """ffprobe's "123.4" / "N/A" / missing -> kind or None."""
    if value is None:
        return None
    try:
        return kind(value) if kind is float else kind(float(value))
    except (TypeError, ValueError):
        return None


def _rate(value):
    """"30000/1001" -> 29.97 (float, 3 decimals); "0/0" / missing -> None."""
    if not value or not isinstance(value, str):
        return None
    num, _, den = value.partition("/")
    try:
        num, den = float(num), float(den or 1)
    except ValueError:
        return None
    if num <= 0 or den <= 0:
        return None
    return round(num / den, 3)


def _first(streams, kind):
    for s in streams:
        if not isinstance(s, dict) or s.get("codec_type") != kind:
            continue
        if kind == "video" and (s.get("disposition") or {}).get("attached_pic"):
            continue  # cover art, not the video
        return s
    return None


def summarize(probe_dict):
    """ffprobe's JSON (dict) -> the job's ``output`` info::

        {"format_name": "mov,mp4,m4a,3gp,3g2,mj2",
         "duration_s": 2.006,          # float seconds, or None
         "size_bytes": 153781,         # int, or None
         "bit_rate": 613281,           # int bits per second, or None
         "video": {"codec": "h264", "width": 640, "height": 360,
                   "frame_rate": 25.0} or None,
         "audio": {"codec": "aac", "sample_rate": 48000, "channels": 2} or None}

    Describes the first video stream (cover art skipped) and the first audio
    stream. Missing or "N/A" values become None; never raises on odd input.
    """
    probe_dict = probe_dict if isinstance(probe_dict, dict) else {}
    fmt = probe_dict.get("format") or {}
    streams = probe_dict.get("streams") or []
    v = _first(streams, "video")
    a = _first(streams, "audio")
    duration = _number(fmt.get("duration"))
    if duration is None:
        durations = [_number(s.get("duration")) for s in (v, a) if s]
        durations = [d for d in durations if d is not None]
        duration = max(durations) if durations else None
    video = None
    if v is not None:
        rate = _rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate"))
        video = {"codec": v.get("codec_name"), "width": _number(v.get("width"), int),
                 "height": _number(v.get("height"), int), "frame_rate": rate}
    audio = None
    if a is not None:
        audio = {"codec": a.get("codec_name"),
                 "sample_rate": _number(a.get("sample_rate"), int),
                 "channels": _number(a.get("channels"), int)}
    return {
        "format_name": fmt.get("format_name"),
        "duration_s": duration,
        "size_bytes": _number(fmt.get("size"), int),
        "bit_rate": _number(fmt.get("bit_rate"), int),
        "video": video,
        "audio": audio,
    }
