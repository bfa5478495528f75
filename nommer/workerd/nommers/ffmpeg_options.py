"""FFmpegNommer's job options: validation (an allow-list) and argv building.

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
"""

import json
import os
import re
import urllib.parse

import attr

from nommer.core.errors import InvalidJobSpec
from nommer.workerd.nommers import filtergraph as fg

MAX_PASSES = 2
#: Most [flag, value] pairs in one infile_options / outfile_options list.
MAX_PAIRS = 100
#: Most characters in one value.
MAX_VALUE_CHARS = 2048
#: Most bytes of the whole options list serialized as JSON.
MAX_OPTIONS_JSON_BYTES = 32 * 1024

PASS_KEYS = ("infile_options", "outfile_options", "move_atom_to_front")

# --- value checkers ------------------------------------------------------------
# Each takes the value as str and returns it (possibly normalized) or raises
# ValueError with a reason meant for a person.


def _regex_checker(pattern, what):
    rx = re.compile(pattern)

    def check(value):
        if not rx.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value
    check.__name__ = f"check_{what.replace(' ', '_')}"
    return check


_WORD_RX = r"[A-Za-z0-9_.+-]{1,64}"
codec = _regex_checker(r"[A-Za-z0-9_.-]{1,64}", "a codec name")
bitrate = _regex_checker(r"\d{1,12}(\.\d{1,9})?[kKmMgG]?", "a bitrate such as 400k")
integer = _regex_checker(r"-?\d{1,12}", "an integer")
number = _regex_checker(r"-?\d{1,12}(\.\d{1,9})?", "a number")
word = _regex_checker(_WORD_RX, "a single word (letters, digits, _.+-)")
rate = _regex_checker(r"\d{1,9}(\.\d{1,9})?(/\d{1,9})?|[A-Za-z0-9_]{1,32}",
                      "a rate such as 25, 30000/1001 or ntsc")
size = _regex_checker(r"\d{1,5}x\d{1,5}|[A-Za-z0-9]{1,16}", "a size such as 640x360")
aspect = _regex_checker(r"\d{1,6}(\.\d{1,6})?([:/]\d{1,6}(\.\d{1,6})?)?", "an aspect such as 16:9")
time_value = _regex_checker(r"-?(\d{1,9}:){0,2}\d{1,9}(\.\d{1,9})?(s|ms|us)?",
                            "a time such as 12.5 or 00:01:02.5")
flags_value = _regex_checker(r"[+-]?[A-Za-z0-9_]{1,40}([+-][A-Za-z0-9_]{1,40}){0,20}",
                             "a flag list such as +faststart")
pass_number = _regex_checker(r"[123]", "1, 2 or 3")
threads = _regex_checker(r"\d{1,4}|auto", "a thread count or auto")
map_metadata = _regex_checker(r"-1|0(:[A-Za-z0-9]{1,8}){0,3}",
                              "-1 or a metadata specifier of input 0")
stream_map = _regex_checker(r"-?0(:[A-Za-z0-9_.-]{1,32}){0,4}\??|\[[A-Za-z0-9_]{1,32}\]",
                            "a stream specifier of input 0 (e.g. 0:v:0, 0:a?) or a [label]")



def _in_range(check, low, high, *, parse=None, unit=""):
    """``check`` then: the number the value holds (``parse(value)``, float or
    None to skip, e.g. for named rates) must lie in [low, high]."""
    parse = parse or float

    def ranged(value):
        value = check(value)
        got = parse(value)
        if got is not None and not low <= got <= high:
            raise ValueError(f"{value!r} is out of range ({low:g} to {high:g}{unit})")
        return value
    ranged.__name__ = check.__name__
    return ranged


def _size_value(value):
    """A ``-s`` size: each side 1..MAX_PICTURE_SIDE (names such as hd720 are ffmpeg's)."""
    value = size(value)
    if "x" in value and value.replace("x", "", 1).isdigit():
        for side in value.split("x"):
            if not 1 <= int(side) <= MAX_PICTURE_SIDE:
                raise ValueError(f"{value!r}: each side must be 1 to {MAX_PICTURE_SIDE} pixels")
    return value


def _rate_number(value):
    return fg.rate(value) if not value.isalpha() else None


# Value ranges (constants). probesize: ffmpeg keeps what it probes in memory
# before encoding starts; 100x the 5 MB default (500 MB) covers files whose
# streams start late and stays under a worker's memory. analyzeduration is
# in microseconds: at most an hour of media.
MAX_PROBESIZE = 500_000_000
MAX_ANALYZEDURATION_US = 3600 * 1_000_000
MAX_THREADS = 64
MAX_FRAMES = 24 * 3600 * 1000  # 24 h at 1000 fps
frame_rate = _in_range(rate, 0, 1000, parse=_rate_number, unit=" fps")
picture_size = _size_value
sample_rate = _in_range(integer, 1, 768000, unit=" Hz")
channels = _in_range(integer, 1, 64)
probesize = _in_range(integer, 32, MAX_PROBESIZE, unit=" bytes")
analyzeduration = _in_range(integer, 0, MAX_ANALYZEDURATION_US, unit=" microseconds")
thread_count = _in_range(threads, 0, MAX_THREADS, parse=lambda v: None if v == "auto" else int(v))
gop = _in_range(integer, -1, 100_000, unit=" frames")
b_frames = _in_range(integer, -1, 16)
ref_frames = _in_range(integer, -1, 16)
frame_count = _in_range(integer, 0, MAX_FRAMES)
crf = _in_range(number, -1, 63)
qp = _in_range(integer, -1, 255)
quantizer = _in_range(number, -1, 255)
queue_size = _in_range(integer, 1, 100_000, unit=" packets")

def metadata(value):
    """``key=value`` with a plain key."""
    key, eq, _ = value.partition("=")
    if not eq or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key):
        raise ValueError(f"{value!r} is not key=value")
    return value


#: x264 option names (in x264-params / x264opts) that read or write files.
X264_FILE_KEYS = frozenset({"stats", "qpfile", "cqmfile", "tcfile-in", "tcfile-out",
                            "dump-yuv", "opencl-clbin", "input", "output", "log-file"})


def x264_params(value):
    """``key=value:key=value`` without keys that touch files."""
    for item in value.split(":"):
        key = item.partition("=")[0].strip().lower().replace("_", "-")
        if not re.fullmatch(r"[a-z0-9-]{1,32}", key):
            raise ValueError(f"{item!r} is not an x264 key=value")
        if key in X264_FILE_KEYS or any(w in key for w in ("file", "stats", "dump", "clbin")):
            raise ValueError(f"x264 option {key!r} reads or writes files")
    return value


#: Muxers ``-f`` may name for the output: each writes one file.
OUTPUT_MUXERS = frozenset({
    "mp4", "mov", "ipod", "3gp", "3g2", "f4v", "ismv", "matroska", "webm", "mpegts", "mpeg",
    "vob", "flv", "avi", "ogg", "oga", "ogv", "opus", "mp3", "adts", "wav", "flac", "aiff",
    "gif", "h264", "hevc", "ac3", "mp2", "m4v", "null",
})
#: Demuxers ``-f`` may name for the input (playlists, image sequences, lavfi... refused).
INPUT_DEMUXERS = frozenset({
    "mov", "mp4", "m4a", "3gp", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "ogg",
    "wav", "mp3", "aac", "flac", "h264", "hevc", "m4v", "asf", "aiff", "ac3", "gif",
})

#: Muxers whose files have a moov atom qtfaststart can move.
QUICKTIME_MUXERS = frozenset({"mp4", "mov", "ipod", "3gp", "3g2", "f4v"})

#: dest_path extension -> muxer, used when no -f is given.
EXTENSION_MUXERS = {
    "mp4": "mp4", "m4v": "mp4", "m4a": "ipod", "mov": "mov", "qt": "mov", "3gp": "3gp",
    "3g2": "3g2", "f4v": "f4v", "mkv": "matroska", "mka": "matroska", "webm": "webm",
    "ts": "mpegts", "m2ts": "mpegts", "mts": "mpegts", "mpg": "mpeg", "mpeg": "mpeg",
    "vob": "vob", "flv": "flv", "avi": "avi", "ogg": "ogg", "ogv": "ogg", "oga": "ogg",
    "opus": "opus", "mp3": "mp3", "aac": "adts", "wav": "wav", "flac": "flac", "aif": "aiff",
    "aiff": "aiff", "gif": "gif", "ac3": "ac3", "mp2": "mp2", "h264": "h264", "264": "h264",
}
#: muxer -> extension of the scratch output file.
MUXER_EXTENSIONS = {
    "mp4": "mp4", "mov": "mov", "ipod": "m4a", "3gp": "3gp", "3g2": "3g2", "f4v": "f4v",
    "ismv": "ismv", "matroska": "mkv", "webm": "webm", "mpegts": "ts", "mpeg": "mpg",
    "vob": "vob", "flv": "flv", "avi": "avi", "ogg": "ogg", "oga": "oga", "ogv": "ogv",
    "opus": "opus", "mp3": "mp3", "adts": "aac", "wav": "wav", "flac": "flac", "aiff": "aiff",
    "gif": "gif", "h264": "h264", "hevc": "hevc", "ac3": "ac3", "mp2": "mp2", "m4v": "m4v",
}


def output_muxer(value):
    if value not in OUTPUT_MUXERS:
        raise ValueError(f"muxer {value!r} is not allowed (allowed: "
                         f"{', '.join(sorted(OUTPUT_MUXERS))}); muxers such as tee, hls, "
                         "dash, segment and image2 write other files")
    return value


def input_demuxer(value):
    if value not in INPUT_DEMUXERS:
        raise ValueError(f"input format {value!r} is not allowed (allowed: "
                         f"{', '.join(sorted(INPUT_DEMUXERS))})")
    return value


# --- filter graphs -------------------------------------------------------------

#: Filters a graph (vf, af, filter, filter_complex) may use. None of them
#: reads or writes files or URLs.
ALLOWED_FILTERS = frozenset({
    # video
    "scale", "yadif", "bwdif", "w3fdif", "kerndeint", "crop", "cropdetect", "pad", "fps",
    "framerate", "format", "setsar", "setdar", "transpose", "hflip", "vflip", "rotate",
    "hqdn3d", "nlmeans", "unsharp", "deband", "deblock", "gblur", "boxblur", "setpts", "trim",
    "fade", "null", "split", "overlay", "hstack", "vstack", "drawbox", "eq", "hue",
    "colorchannelmixer", "colorspace", "negate", "noise", "tinterlace", "interlace", "idet",
    "fieldorder", "setfield", "select", "thumbnail", "tile", "decimate", "pullup",
    "fieldmatch", "mpdecimate", "vignette", "tpad", "settb", "setparams", "showinfo",
    "copy", "concat", "lutyuv", "lutrgb", "scale2ref", "minterpolate",
    # audio
    "aresample", "volume", "loudnorm", "pan", "aformat", "atempo", "asetpts", "atrim",
    "afade", "anull", "asplit", "amix", "amerge", "channelmap", "channelsplit", "highpass",
    "lowpass", "bandpass", "equalizer", "acompressor", "dynaudnorm", "silenceremove",
    "adelay", "apad", "aecho", "asetrate", "asettb", "anlmdn", "alimiter", "compand",
    "dcshift", "asetnsamples", "acopy", "ashowinfo", "aselect", "earwax", "extrastereo",
})

#: Filters refused with a specific reason (everything not allowed is refused anyway).
REFUSED_FILTERS = {
    "movie": "opens another file or URL", "amovie": "opens another file or URL",
    "sendcmd": "reads commands from a file", "asendcmd": "reads commands from a file",
    "zmq": "listens on a socket", "azmq": "listens on a socket",
    "subtitles": "reads a subtitle file", "ass": "reads a subtitle file",
    "drawtext": "reads font and text files", "lut3d": "reads a LUT file",
    "frei0r": "loads a plugin", "frei0r_src": "loads a plugin", "ladspa": "loads a plugin",
    "lv2": "loads a plugin", "vidstabdetect": "writes a file",
    "vidstabtransform": "reads a file", "libvmaf": "writes a log file",
    "psnr": "writes a stats file", "ssim": "writes a stats file",
    "metadata": "may write a file", "ametadata": "may write a file",
}

#: Option names that would name a file, URL, font or plugin (none of the
#: allowed filters has one; defence in depth, and the reason told to a person).
_FILE_KEY_RX = re.compile(r"file|url|path|font|dump|stats|script|plugin|lib", re.IGNORECASE)
#: Values that look like a path out of the working directory.
_PATH_VALUE_RX = re.compile(r"^\s*[/~]|(^|/)\.\.(/|$)")
#: libavutil expression functions that loop: while() until its condition fails (for ever,
#: deaf to SIGTERM), taylor() and root() up to ~1000 and ~7000 times, multiplied when
#: nested. Matched after removing what av_expr_parse and the graph reader drop
#: (whitespace; escapes and quotes, to be safe).
_LOOPING_EXPR_RX = re.compile(r"(while|taylor|root)\(", re.IGNORECASE)
_EXPR_IGNORED_RX = re.compile(r"[\s\\'\"]")
#: A filter as written: name, or name@instance (split as ffmpeg does, see filtergraph).
_FILTER_NAME_RX = re.compile(r"[A-Za-z0-9_]{1,40}(@[A-Za-z0-9_]{1,28})?")
#: Most filter instances in one graph.
MAX_GRAPH_FILTERS = 64

# Bounds (constants, not settings): the largest picture side, frame rate,
# sample rate and channel count any option may ask for, and the longest
# padding a filter may add. What they do not catch (expressions, setpts
# stretching time, tile) is capped by the worker's output limits (-t, -fs,
# rlimits).
MAX_PICTURE_SIDE = 16384
MAX_FRAME_RATE = 1000
MAX_SAMPLE_RATE = 768000
MAX_CHANNELS = 64
MAX_PAD_S = 24 * 3600
MAX_PAD_FRAMES = MAX_PAD_S * MAX_FRAME_RATE
MAX_PAD_SAMPLES = MAX_PAD_S * MAX_SAMPLE_RATE
MAX_FILTER_PADS = 64


def _bounded(fname, option, value, low, high, parse=fg.number, what="a number"):
    """``value`` read by ``parse`` must lie in [low, high]; returns it (float)."""
    got = parse(value)
    if got is None:
        raise ValueError(f"filter {fname!r}: {option}={value!r} must be {what} "
                         "(expressions are not allowed here)")
    if not low <= got <= high:
        raise ValueError(f"filter {fname!r}: {option}={value!r} is out of range "
                         f"({low:g} to {high:g})")
    return got


def _check_sides(f, names):
    """Numeric width/height literals at most MAX_PICTURE_SIDE (expressions pass)."""
    for name in names:
        value = f.value_of(name)
        if value is None:
            continue
        got = fg.number(value)
        if got is not None and got > MAX_PICTURE_SIDE:
            raise ValueError(f"filter {f.name!r}: {name}={value!r} is larger than "
                             f"{MAX_PICTURE_SIDE} pixels")


def _check_rate(f, name="fps"):
    value = f.value_of(name)
    if value is not None:
        _bounded(f.name, name, value, 0, MAX_FRAME_RATE, fg.rate,
                 "a frame rate such as 25, 30000/1001 or ntsc")


def _check_apad(f):
    given = False
    for name, parse, high, what in (("pad_len", fg.number, MAX_PAD_SAMPLES, "a sample count"),
                                    ("whole_len", fg.number, MAX_PAD_SAMPLES, "a sample count"),
                                    ("pad_dur", fg.duration, MAX_PAD_S, "a duration"),
                                    ("whole_dur", fg.duration, MAX_PAD_S, "a duration")):
        value = f.value_of(name)
        if value is not None:
            if _bounded(f.name, name, value, 0, high, parse, what) <= 0:
                raise ValueError(f"filter 'apad': {name} must be positive (0 or less pads "
                                 "forever)")
            given = True
    if not given:
        raise ValueError("filter 'apad' pads forever unless given pad_len, whole_len, pad_dur "
                         f"or whole_dur (at most {MAX_PAD_S} s)")
    value = f.value_of("packet_size")
    if value is not None:
        _bounded(f.name, "packet_size", value, 0, MAX_SAMPLE_RATE)


def _check_tpad(f):
    for name in ("start", "stop"):
        value = f.value_of(name)
        if value is not None:
            _bounded(f.name, name, value, 0, MAX_PAD_FRAMES, what="a frame count "
                     "(-1, forever, is not allowed)")
    for name in ("start_duration", "stop_duration"):
        value = f.value_of(name)
        if value is not None:
            _bounded(f.name, name, value, 0, MAX_PAD_S, fg.duration, "a duration")


def _check_adelay(f):
    value = f.value_of("delays")
    for item in (value or "").split("|"):
        item = item.strip()
        if not item:
            continue
        unit = item[-1] if item[-1] in "sS" else ""
        high = {"S": MAX_PAD_SAMPLES, "s": MAX_PAD_S}.get(unit, MAX_PAD_S * 1000)
        _bounded(f.name, "delays", item[:len(item) - len(unit)], 0, high,
                 what="a delay in ms, or with s (seconds) or S (samples)")


#: Per-filter value bounds (see POSITIONAL in filtergraph.py for unnamed values).
def _check_scale(f):
    _check_sides(f, ("w", "h"))
    flags = f.value_of("flags")
    if flags is not None and not fg.sws_flags_ok(flags):
        raise ValueError(f"filter {f.name!r}: flags={flags!r} must be libswscale flag names "
                         f"({', '.join(sorted(fg.SWS_FLAG_NAMES))}) joined by + or - "
                         "(ffmpeg 5.1 crashes on others)")


def _check_sample_rates(f):
    """aresample's rates and aformat's list at most MAX_SAMPLE_RATE, like -ar: a 2e9 Hz
    resample turns a second of sound into gigabytes of output."""
    for name in ("sample_rate", "out_sample_rate", "in_sample_rate"):
        value = f.value_of(name)
        if value is not None:
            _bounded(f.name, name, value, 0, MAX_SAMPLE_RATE, what="a sample rate")
    value = f.value_of("sample_rates")
    for item in (value or "").split("|"):
        if item.strip() and not (item.strip().isdigit() and int(item) <= MAX_SAMPLE_RATE):
            raise ValueError(f"filter {f.name!r}: sample_rates={value!r} must be rates of at "
                             f"most {MAX_SAMPLE_RATE} Hz, written in digits, joined by |")


FILTER_BOUNDS = {
    "scale": _check_scale, "scale2ref": _check_scale,
    "pad": lambda f: _check_sides(f, ("width", "height")),
    "crop": lambda f: _check_sides(f, ("out_w", "out_h")),
    "fps": _check_rate, "framerate": _check_rate, "minterpolate": _check_rate,
    "apad": _check_apad, "tpad": _check_tpad, "adelay": _check_adelay,
    "asetrate": lambda f: f.value_of("sample_rate") is None or _bounded(
        f.name, "sample_rate", f.value_of("sample_rate"), 1, MAX_SAMPLE_RATE),
    "aresample": _check_sample_rates, "aformat": _check_sample_rates,
    "asetnsamples": lambda f: f.value_of("nb_out_samples") is None or _bounded(
        f.name, "nb_out_samples", f.value_of("nb_out_samples"), 1, MAX_SAMPLE_RATE),
}


def _check_pads(*names):
    """Pad counts (outputs of split/select, inputs of amix/hstack...; concat's
    segments and streams) at most MAX_FILTER_PADS: ffmpeg allocates them all
    when the filter is created."""
    def check(f):
        for name in names:
            value = f.value_of(name)
            if value is not None:
                _bounded(f.name, name, value, 0, MAX_FILTER_PADS, what="a count")
    return check


FILTER_BOUNDS.update({
    "split": _check_pads("outputs"), "asplit": _check_pads("outputs"),
    "select": _check_pads("outputs"), "aselect": _check_pads("outputs"),
    "concat": _check_pads("n", "v", "a"), "amix": _check_pads("inputs"),
    "hstack": _check_pads("inputs"), "vstack": _check_pads("inputs"),
    "amerge": _check_pads("inputs"),
})


def check_filter(f):
    """One parsed filter (filtergraph.Filter) against the allow-list, the
    forbidden option names and values, and FILTER_BOUNDS. ValueError."""
    name = f.name
    if name == "sws_flags":
        raise ValueError("sws_flags=...; may only come first in a filter graph")
    if not _FILTER_NAME_RX.fullmatch(f.name_token.text):
        raise ValueError(f"{f.name_token.text!r} is not a filter name (a name, or "
                         "name@instance: letters, digits and _)")
    if name in REFUSED_FILTERS:
        raise ValueError(f"filter {name!r} is not allowed: it {REFUSED_FILTERS[name]}")
    if name not in ALLOWED_FILTERS:
        raise ValueError(f"filter {name!r} is not in the allowed filter list")
    if f.args and _URL_RX.search(f.args):
        raise ValueError(f"filter {name!r}: URLs and protocols (://, concat:, subfile, "
                         "file:...) are not allowed in its options")
    for text in [f.args or ""] + [opt.value for opt in f.options]:
        loop = _LOOPING_EXPR_RX.search(_EXPR_IGNORED_RX.sub("", text))
        if loop:
            raise ValueError(f"filter {name!r}: the expression function {loop.group(1)}() "
                             "is not allowed (it loops; ffmpeg could run for hours)")
    for opt in f.options:
        if opt.key is not None and _FILE_KEY_RX.search(opt.key):
            raise ValueError(f"filter {name!r}: arguments naming files are not allowed "
                             f"({opt.key}=)")
        if _URL_RX.search(opt.value):
            raise ValueError(f"filter {name!r}: URLs and protocols (://, concat:, subfile, "
                             "file:...) are not allowed in values")
        if _PATH_VALUE_RX.search(opt.value):
            raise ValueError(f"filter {name!r}: values naming files are not allowed "
                             f"({opt.value!r})")
    bounds = FILTER_BOUNDS.get(name)
    if bounds is not None:
        bounds(f)


def parse_filtergraph(value):
    """A filter graph (str) -> filtergraph.Graph, read strictly as ffmpeg 5.1
    reads it and checked (``check_filter`` on each filter). ValueError."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("the filter graph holds control characters")
    graph = fg.parse(value, strict=True)
    if len(graph.filters) > MAX_GRAPH_FILTERS:
        raise ValueError(f"at most {MAX_GRAPH_FILTERS} filters in a graph")
    for f in graph.filters:
        check_filter(f)
    return graph


def split_filtergraph(graph):
    """A filter graph (str) -> list of ``(name, args)`` per filter, in order,
    as ffmpeg reads it (``filtergraph.parse``; ``args`` is the options text
    the filter gets, "" without one). ValueError on a malformed graph."""
    return [(f.name, f.args or "") for f in fg.parse(graph, strict=True).filters]


def filtergraph(value):
    """Check a filter graph: read as ffmpeg reads it, allowed filters only, no
    file arguments, bounded values. Returns ``value`` unchanged."""
    parse_filtergraph(value)
    return value


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

#: Text that marks a URL or a protocol in a value: refused anywhere.
_URL_RX = re.compile(r"://|\bconcat:|\bsubfile[,:]|\b(file|pipe|fd|data|crypto|cache|async"
                     r"|tcp|udp|http|https|rtmp|rtsp|ftp|sftp|tls|unix|gopher):",
                     re.IGNORECASE)
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


# --- 2011 spellings -> today's ---------------------------------------------------

#: Audio encoders removed from FFmpeg, always replaced by the native aac.
REMOVED_AAC_ENCODERS = frozenset({"libfaac", "libvo_aacenc"})
_RENAMES = {"vcodec": "c:v", "acodec": "c:a", "scodec": "c:s", "codec": "c",
            "b": "b:v", "vb": "b:v", "ab": "b:a", "vprofile": "profile:v",
            "profile": "profile:v", "level": "level:v", "qscale": "q:v",
            "vframes": "frames:v", "aframes": "frames:a", "vtag": "tag:v", "atag": "tag:a"}
_INPUT_RENAMES = {"vcodec": "c:v", "acodec": "c:a", "codec": "c"}


def needs_encoder_list(passes):
    """True if translating these passes depends on which encoders exist."""
    return any(value == "libfdk_aac" for p in passes
               for flag, value in p["outfile_options"])


def _is_audio_codec_flag(flag):
    base, _, spec = flag.partition(":")
    return base in ("c", "codec") and (spec == "" or spec.startswith("a"))


def translate(pairs, *, where=OUT, encoders=None):
    """Normalized pairs in 2011 spellings -> pairs ffmpeg 5 understands.

    ``-vcodec/-acodec`` -> ``-c:v/-c:a``; ``-b`` -> ``-b:v``; ``-ab`` ->
    ``-b:a``; ``-vprofile/-profile`` -> ``-profile:v``; audio codecs
    libfaac / libvo_aacenc (and libfdk_aac when ``encoders``, a set of
    encoder names, lacks it) -> ``aac``; ``-async N`` -> ``aresample=async=N``
    appended to ``-af``; ``-deinterlace`` -> ``yadif`` put first in ``-vf``.
    """
    renames = _RENAMES if where == OUT else _INPUT_RENAMES
    out, vfilters, afilters = [], [], []
    for flag, value in pairs:
        flag = renames.get(flag, flag)
        if _is_audio_codec_flag(flag) and value is not None:
            if value in REMOVED_AAC_ENCODERS or (
                    value == "libfdk_aac" and encoders is not None
                    and "libfdk_aac" not in encoders):
                value = "aac"
        if where == OUT and flag == "async":
            afilters.append(f"aresample=async={value}")
            continue
        if where == OUT and flag == "deinterlace":
            vfilters.append("yadif")
            continue
        out.append([flag, value])
    for filters, names, prepend in ((vfilters, ("vf", "filter:v"), True),
                                    (afilters, ("af", "filter:a"), False)):
        if not filters:
            continue
        for pair in out:
            if pair[0] in names:
                pair[1] = _join_graph(pair[1], filters, prepend)
                break
        else:
            out.append([names[0], ",".join(filters)])
    return out


def _join_graph(graph, filters, prepend):
    """``filters`` (plain filter texts) put before or after a validated graph's
    first/last chain; a leading ``sws_flags=...;`` stays first (ffmpeg reads it
    only there). The result is checked again (``filtergraph``)."""
    head, body = "", graph
    sws = fg.parse(graph).sws_flags
    if sws is not None:
        semi = graph.index(";") + 1
        head, body = graph[:semi], graph[semi:]
    joined = head + ",".join(filters + [body] if prepend else [body] + filters)
    filtergraph(joined)
    return joined


def _tokens(pairs):
    argv = []
    for flag, value in pairs:
        argv.append("-" + flag)
        if value is not None:
            argv.append(value)
    return argv


def uses_pass(passes):
    return len(passes) > 1 or any(flag.partition(":")[0] == "pass"
                                  for p in passes for flag, _ in p["outfile_options"])


def build_argv(pass_opts, *, ffmpeg_bin, input_path, output_path, muxer=None,
               passlogfile=None, encoders=None):
    """argv (list of str) of one ffmpeg pass.

    ``[ffmpeg_bin, -hide_banner, -nostdin, -y, <infile opts>, -i, input_path,
    <outfile opts>, (-f muxer), (-passlogfile passlogfile), -progress, pipe:1,
    -nostats, output_path]``; ``-f muxer`` is added only when the pass gives
    no ``-f``; ``-passlogfile`` only when ``passlogfile`` is given. Options
    are translated (``translate``) from 2011 spellings. ``pass_opts`` must be
    a normalized pass (``validate_passes``).
    """
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y"]
    argv += _tokens(translate(pass_opts["infile_options"], where=IN, encoders=encoders))
    argv += ["-i", input_path]
    argv += _tokens(translate(pass_opts["outfile_options"], where=OUT, encoders=encoders))
    if given_muxer(pass_opts) is None and muxer:
        argv += ["-f", muxer]
    if passlogfile:
        argv += ["-passlogfile", passlogfile]
    argv += ["-progress", "pipe:1", "-nostats", output_path]
    return argv


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
