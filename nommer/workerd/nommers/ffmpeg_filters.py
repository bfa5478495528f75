"""Which filter graphs FFmpegNommer's options may hold: ``filtergraph(value)``.

A graph (``-vf``, ``-af``, ``-filter:v``, ``-filter_complex``...) is read
exactly as ffmpeg 5.1 reads it (``filtergraph.py``), refused where it reads
two ways, and may use only ``ALLOWED_FILTERS`` (``REFUSED_FILTERS`` say why
some are not), with no option naming a file, URL, font or plugin, no looping
expression function, and bounded padding, rates, sizes and pad counts
(``FILTER_BOUNDS``). Moved out of ``ffmpeg_options.py`` unchanged (issue 10).
"""

import re

from nommer.workerd.nommers import filtergraph as fg
from nommer.workerd.nommers.ffmpeg_values import (
    MAX_FILTER_PADS, MAX_FRAME_RATE, MAX_PAD_FRAMES, MAX_PAD_S, MAX_PAD_SAMPLES, MAX_PICTURE_SIDE,
    MAX_SAMPLE_RATE, _URL_RX)

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
