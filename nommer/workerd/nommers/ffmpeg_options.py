"""FFmpegNommer's job options: the allow-list and the validation.

The job format is the 2011 one: a list of 1 or 2 *pass* objects::

    [{"infile_options":  [["ss", "5"], ...],
      "outfile_options": [["vcodec", "libx264"], ["b", "400k"], ["an", null], ...],
      "move_atom_to_front": true}, ...]

Flags are written without their dash (a leading dash is accepted). A value of
None, "" or [] makes a bare flag (``-an``); 0 becomes "0"; other numbers are
``str()``-ed.

Security: the user must never reach a file or URL through options. Every flag
must be in ``FLAGS`` (an allow-list, each flag with a value checker, numbers
within ranges); flags known to read or write files are refused with the
reason (``REFUSED``); ``-f`` takes only single-file muxers; filter graphs are
read exactly as ffmpeg 5.1 reads them (``filtergraph.py``), refused where
they read two ways, and may use only ``ALLOWED_FILTERS``, with no option
naming a file and bounded padding, rates and sizes; no value may hold a
protocol URL.

2011 spellings are translated when the argv is built (``translate``), not at
validation, so a stored job keeps the user's spelling.

Where each part lives (issue 10: one idea per file): this module holds the
limits, the flag table (``FLAGS``, ``REFUSED``), the validation
(``validate_passes``), the muxer a job writes (``final_muxer``) and the
times progress is measured against (``parse_time``, ``expected_duration_s``);
``ffmpeg_values`` the value checkers the table names (and the muxer lists);
``ffmpeg_filters`` the filter-graph rules (``filtergraph``); ``ffmpeg_argv``
the 2011 translation and the argv (``translate``, ``build_argv``).
"""

import json
import os
import re
import urllib.parse

import attr

from nommer.core.errors import InvalidJobSpec
from nommer.workerd.nommers.ffmpeg_filters import filtergraph
from nommer.workerd.nommers.ffmpeg_values import (
    analyzeduration, aspect, b_frames, bitrate, channels, codec, crf, EXTENSION_MUXERS,
    flags_value, frame_count, frame_rate, gop, input_demuxer, integer, map_metadata, metadata,
    output_muxer, pass_number, picture_size, probesize, qp, quantizer, queue_size, ref_frames,
    sample_rate, size, stream_map, thread_count, time_value, _URL_RX, word, x264_params)

MAX_PASSES = 2
#: Most [flag, value] pairs in one infile_options / outfile_options list.
MAX_PAIRS = 100
#: Most characters in one value.
MAX_VALUE_CHARS = 2048
#: Most bytes of the whole options list serialized as JSON.
MAX_OPTIONS_JSON_BYTES = 32 * 1024

PASS_KEYS = ("infile_options", "outfile_options", "move_atom_to_front")

# --- the flag table --------------------------------------------------------------

IN, OUT, BOTH = "in", "out", "both"


@attr.s(frozen=True, auto_attribs=True)
class Flag:
    """One allowed ffmpeg option.

    ``check``: value checker (str -> str, ValueError) or None for a bare flag.
    ``where``: IN (infile_options), OUT (outfile_options) or BOTH.
    ``per_stream``: accepts a stream specifier suffix (``b:v``, ``c:a:0``).
    """

    check: object
    where: str = OUT
    per_stream: bool = False


FLAGS = {
    # codecs
    "c": Flag(codec, BOTH, True), "codec": Flag(codec, BOTH, True),
    "vcodec": Flag(codec, BOTH), "acodec": Flag(codec, BOTH), "scodec": Flag(codec, OUT),
    # rates and quality
    "b": Flag(bitrate, OUT, True), "vb": Flag(bitrate), "ab": Flag(bitrate),
    "maxrate": Flag(bitrate, OUT, True), "minrate": Flag(bitrate, OUT, True),
    "bufsize": Flag(bitrate, OUT, True),
    "crf": Flag(crf, OUT, True), "qp": Flag(qp, OUT, True),
    "q": Flag(quantizer, OUT, True), "qscale": Flag(quantizer, OUT, True),
    "qmin": Flag(integer, OUT, True), "qmax": Flag(integer, OUT, True),
    "compression_level": Flag(integer, OUT, True), "vbr": Flag(word, OUT, True),
    # encoder settings
    "preset": Flag(word, OUT, True), "tune": Flag(word, OUT, True),
    "profile": Flag(word, OUT, True), "vprofile": Flag(word), "level": Flag(word, OUT, True),
    "g": Flag(gop, OUT, True), "keyint_min": Flag(gop, OUT, True),
    "bf": Flag(b_frames, OUT, True), "refs": Flag(ref_frames, OUT, True),
    "sc_threshold": Flag(integer, OUT, True), "trellis": Flag(integer, OUT, True),
    "subq": Flag(integer, OUT, True), "me_method": Flag(word, OUT, True),
    "coder": Flag(word, OUT, True), "flags": Flag(flags_value, OUT, True),
    "x264-params": Flag(x264_params, OUT, True), "x264opts": Flag(x264_params, OUT, True),
    "cpu-used": Flag(integer, OUT, True), "deadline": Flag(word, OUT, True),
    "row-mt": Flag(integer, OUT, True), "tile-columns": Flag(integer, OUT, True),
    "lag-in-frames": Flag(integer, OUT, True), "auto-alt-ref": Flag(integer, OUT, True),
    "pass": Flag(pass_number, OUT, True), "strict": Flag(word, BOTH, True),
    "threads": Flag(thread_count, BOTH, True),
    # picture and sound
    "r": Flag(frame_rate, BOTH, True), "s": Flag(picture_size, BOTH, True),
    "aspect": Flag(aspect, OUT, True),
    "pix_fmt": Flag(word, BOTH, True), "ar": Flag(sample_rate, BOTH, True),
    "ac": Flag(channels, BOTH, True), "sample_fmt": Flag(word, OUT, True),
    "color_primaries": Flag(word, OUT, True), "color_trc": Flag(word, OUT, True),
    "colorspace": Flag(word, OUT, True), "color_range": Flag(word, OUT, True),
    "async": Flag(integer), "vsync": Flag(word), "fps_mode": Flag(word, OUT, True),
    "deinterlace": Flag(None),
    # filters
    "vf": Flag(filtergraph), "af": Flag(filtergraph), "filter": Flag(filtergraph, OUT, True),
    "filter_complex": Flag(filtergraph), "lavfi": Flag(filtergraph),
    # streams
    "an": Flag(None), "vn": Flag(None), "sn": Flag(None), "dn": Flag(None),
    "map": Flag(stream_map), "map_metadata": Flag(map_metadata, OUT, True),
    "map_chapters": Flag(map_metadata), "shortest": Flag(None),
    "frames": Flag(frame_count, OUT, True), "vframes": Flag(frame_count),
    "aframes": Flag(frame_count),
    "tag": Flag(word, OUT, True), "vtag": Flag(word), "atag": Flag(word),
    "disposition": Flag(flags_value, OUT, True),
    # container
    "f": Flag(output_muxer, BOTH), "movflags": Flag(flags_value), "brand": Flag(word),
    "metadata": Flag(metadata, OUT, True), "avoid_negative_ts": Flag(word),
    "max_muxing_queue_size": Flag(queue_size, OUT, True),
    # time
    "t": Flag(time_value, BOTH), "ss": Flag(time_value, BOTH), "to": Flag(time_value, BOTH),
    "itsoffset": Flag(time_value, IN),
    # input-only
    "accurate_seek": Flag(None, IN), "noaccurate_seek": Flag(None, IN),
    "autorotate": Flag(None, IN), "noautorotate": Flag(None, IN),
    "probesize": Flag(probesize, IN), "analyzeduration": Flag(analyzeduration, IN),
    "fflags": Flag(flags_value, IN),
    "re": Flag(None, IN),  # read the input at its native rate (live-like pacing)
}

#: Input ``-f`` is checked against INPUT_DEMUXERS instead of OUTPUT_MUXERS.
INPUT_CHECKS = {"f": input_demuxer}

_FILES = "it reads or writes files or URLs of its own, which jobs may not do"
_WORKER = "the worker sets it itself"
_PRESET = "it reads a preset file; give the preset's options instead (e.g. preset medium)"
#: Flags refused with the reason why (any flag not in FLAGS is refused too).
REFUSED = {
    "i": "the job's source is the only input",
    "passlogfile": _FILES + " (" + _WORKER + ")", "progress": _FILES + " (" + _WORKER + ")",
    "vstats": _FILES, "vstats_file": _FILES, "filter_script": _FILES,
    "filter_complex_script": _FILES, "attach": _FILES, "dump_attachment": _FILES,
    "report": _FILES, "sdp_file": _FILES, "stats": _FILES, "stats_file": _FILES,
    "protocol_whitelist": _FILES, "protocol_blacklist": _FILES, "safe": _FILES,
    "vpre": _PRESET, "fpre": _PRESET, "apre": _PRESET, "spre": _PRESET, "pre": _PRESET,
    "y": _WORKER, "n": _WORKER, "nostdin": _WORKER, "nostats": _WORKER,
    "hide_banner": _WORKER, "loglevel": _WORKER, "v": _WORKER, "filter_threads": _WORKER,
}

_FLAG_RX = re.compile(r"-?([A-Za-z0-9_-]{1,40})(?::([A-Za-z0-9]{1,8}(?::[A-Za-z0-9]{1,8}){0,3}))?")


def _bare(value):
    return value is None or value is True or value == "" or value == []


def _value_str(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("is not a finite number")
        return repr(value) if not value.is_integer() else str(int(value))
    return value


def normalize_pair(pair, field, where):
    """One ``[flag, value]`` pair -> ``[flag_without_dash, str_or_None]``.

    ``where`` is IN or OUT. Raises InvalidJobSpec(field, reason).
    """
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise InvalidJobSpec(field, "must be a [flag, value] pair")
    flag, value = pair
    if not isinstance(flag, str):
        raise InvalidJobSpec(field, "the flag must be a string")
    m = _FLAG_RX.fullmatch(flag)
    if not m:
        raise InvalidJobSpec(field, f"{flag!r} is not an ffmpeg option name")
    base, spec = m.group(1), m.group(2)
    if base in REFUSED:
        raise InvalidJobSpec(field, f"-{base} is not allowed: {REFUSED[base]}")
    spec_def = FLAGS.get(base)
    if spec_def is None:
        raise InvalidJobSpec(field, f"-{base} is not an allowed ffmpeg option")
    if spec_def.where not in (where, BOTH):
        side = "input" if where == IN else "output"
        raise InvalidJobSpec(field, f"-{base} is not allowed as an {side} option")
    if spec and not spec_def.per_stream:
        raise InvalidJobSpec(field, f"-{base} takes no stream specifier")
    name = f"{base}:{spec}" if spec else base
    if spec_def.check is None:
        if not _bare(value):
            raise InvalidJobSpec(field, f"-{base} takes no value (use null)")
        return [name, None]
    if _bare(value) and value is not True:
        raise InvalidJobSpec(field, f"-{base} needs a value")
    if not isinstance(value, (str, int, float, bool)):
        raise InvalidJobSpec(field, "the value must be a string, a number, a boolean or null")
    try:
        text = _value_str(value)
    except ValueError as e:
        raise InvalidJobSpec(field, f"-{base}: the value {e}") from None
    if len(text) > MAX_VALUE_CHARS:
        raise InvalidJobSpec(field, f"-{base}: the value is longer than {MAX_VALUE_CHARS} "
                                    "characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidJobSpec(field, f"-{base}: the value holds control characters")
    if _URL_RX.search(text):
        raise InvalidJobSpec(field, f"-{base}: URLs and protocols (://, concat:, subfile, "
                                    "file:...) are not allowed in values")
    check = INPUT_CHECKS.get(base, spec_def.check) if where == IN else spec_def.check
    try:
        text = check(text)
    except ValueError as e:
        raise InvalidJobSpec(field, f"-{base}: {e}") from None
    return [name, text]


def _normalize_list(pairs, field, where):
    if pairs is None:
        return []
    if not isinstance(pairs, (list, tuple)):
        raise InvalidJobSpec(field, "must be a list of [flag, value] pairs")
    if len(pairs) > MAX_PAIRS:
        raise InvalidJobSpec(field, f"at most {MAX_PAIRS} options per list")
    return [normalize_pair(p, f"{field}[{i}]", where) for i, p in enumerate(pairs)]


def _check_native_rate(pairs, field):
    """``-re`` paces reading by the input's timestamps, so an input ``-itsoffset`` or a
    negative input ``-ss`` shifting them N seconds on makes ffmpeg sleep N seconds
    (a worker held until FFMPEG_TIMEOUT_S): refused together."""
    if not any(flag == "re" for flag, _ in pairs):
        return
    for j, (flag, value) in enumerate(pairs):
        if flag == "itsoffset" or (flag == "ss" and (parse_time(value) or 0.0) < 0):
            raise InvalidJobSpec(f"{field}[{j}]", f"-{flag} {value} is not allowed with -re: "
                                 "ffmpeg would wait that long before reading")


def validate_passes(options, *, field="job_options.options", dest_path=None):
    """Check and normalize a list of pass objects.

    Returns ``[{"infile_options": [[flag, str|None], ...], "outfile_options":
    [...], "move_atom_to_front": bool}, ...]`` (flags without dashes, values
    as str or None for bare flags). Also accepts ``{"options": [...]}``.

    When ``dest_path`` (the job's destination URI) is given and the last pass
    has no ``-f``, the muxer must be inferable from its extension.

    Raises ``InvalidJobSpec(field, reason)``, field like
    ``job_options.options[1].outfile_options[3]``.
    """
    if isinstance(options, dict) and set(options) == {"options"}:
        options = options["options"]
    if not isinstance(options, (list, tuple)):
        raise InvalidJobSpec(field, "must be a list of 1 or 2 pass objects")
    if not options:
        raise InvalidJobSpec(field, "needs at least one pass")
    if len(options) > MAX_PASSES:
        raise InvalidJobSpec(field, f"at most {MAX_PASSES} passes (got {len(options)})")
    try:
        size = len(json.dumps(options))
    except (TypeError, ValueError):
        raise InvalidJobSpec(field, "must be plain JSON data") from None
    if size > MAX_OPTIONS_JSON_BYTES:
        raise InvalidJobSpec(field, f"options are too large ({size} bytes, at most "
                                    f"{MAX_OPTIONS_JSON_BYTES})")
    passes = []
    for index, pass_obj in enumerate(options):
        pfield = f"{field}[{index}]"
        if not isinstance(pass_obj, dict):
            raise InvalidJobSpec(pfield, "must be an object with infile_options, "
                                         "outfile_options, move_atom_to_front")
        unknown = sorted(set(pass_obj) - set(PASS_KEYS))
        if unknown:
            raise InvalidJobSpec(pfield, f"unknown keys {unknown}; allowed: {list(PASS_KEYS)}")
        faststart = pass_obj.get("move_atom_to_front", False)
        if faststart is None:
            faststart = False
        if faststart not in (True, False):  # also accepts 0 and 1
            raise InvalidJobSpec(f"{pfield}.move_atom_to_front", "must be true or false")
        normalized = {
            "infile_options": _normalize_list(pass_obj.get("infile_options"),
                                              f"{pfield}.infile_options", IN),
            "outfile_options": _normalize_list(pass_obj.get("outfile_options"),
                                               f"{pfield}.outfile_options", OUT),
            "move_atom_to_front": bool(faststart),
        }
        _check_native_rate(normalized["infile_options"], f"{pfield}.infile_options")
        last = index == len(options) - 1
        for j, (flag, value) in enumerate(normalized["outfile_options"]):
            if flag == "f" and value == "null" and last:
                raise InvalidJobSpec(f"{pfield}.outfile_options[{j}]",
                                     "the null muxer writes nothing; it is only for pass 1 "
                                     "of a two-pass job")
        passes.append(normalized)
    if dest_path is not None and given_muxer(passes[-1]) is None \
            and infer_muxer(dest_path) is None:
        raise InvalidJobSpec(f"{field}[{len(passes) - 1}].outfile_options",
                             "no -f given and the muxer cannot be inferred from the "
                             "destination's extension; add [\"f\", \"mp4\"] or similar")
    return passes


def given_muxer(pass_opts):
    """The last ``-f`` in a normalized pass's outfile options, or None."""
    found = None
    for flag, value in pass_opts["outfile_options"]:
        if flag == "f":
            found = value
    return found


def infer_muxer(dest_path):
    """Muxer for a destination URI or path from its extension, or None.

    ``"s3://b/x/movie.MP4?v=1"`` -> ``"mp4"``; ``"file:///out/clip"`` -> None.
    """
    if not dest_path:
        return None
    path = urllib.parse.urlsplit(str(dest_path)).path
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    return EXTENSION_MUXERS.get(ext)


def final_muxer(passes, dest_path):
    """The muxer the real output is written with: the last pass's ``-f``, else
    the one inferred from ``dest_path``; None if neither."""
    return given_muxer(passes[-1]) or infer_muxer(dest_path)


# --- times (for progress) ----------------------------------------------------------

def parse_time(value):
    """ffmpeg time -> seconds (float) or None: ``"90"``, ``"1.5"``,
    ``"01:02:03.5"``, ``"02:03"``, ``"500ms"``, ``"250us"``, ``"3s"``."""
    if value is None:
        return None
    text = str(value).strip()
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.lstrip("-")
    try:
        if ":" in text:
            total = 0.0
            for part in text.split(":"):
                total = total * 60 + float(part)
            return sign * total
        for suffix, scale in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
            if text.endswith(suffix):
                return sign * float(text[:-len(suffix)]) * scale
        return sign * float(text)
    except ValueError:
        return None


def expected_duration_s(pass_opts, source_duration_s):
    """Seconds of media a pass should write, for progress: the source's
    duration cut by ``-ss``/``-t``/``-to`` (input or output side); None if
    unknown."""
    duration = source_duration_s
    opts = dict()
    for key in ("infile_options", "outfile_options"):
        for flag, value in pass_opts[key]:
            opts.setdefault(flag, parse_time(value) if flag in ("ss", "t", "to") else None)
    start = opts.get("ss") or 0.0
    if duration is not None:
        duration = max(duration - max(start, 0.0), 0.0)
    limits = []
    if opts.get("t"):
        limits.append(opts["t"])
    if opts.get("to"):
        limits.append(max(opts["to"] - max(start, 0.0), 0.0))
    if limits:
        duration = min(limits + ([duration] if duration is not None else []))
    return duration if duration else None
