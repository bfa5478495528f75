"""The value checkers of FFmpegNommer's options: what each kind of option value
may be (``ffmpeg_options.FLAGS`` names one per flag).

Each checker takes the value as str and returns it (possibly normalized) or
raises ValueError with a reason meant for a person: codec and muxer names,
bitrates, numbers within ranges, sizes, times, x264 parameters. Also the
bounds (constants, not settings) any option or filter may ask for, the
muxers ``-f`` may name (and which dest_path extension means which muxer),
and ``_URL_RX``, the text refused in any value. Moved out of
``ffmpeg_options.py`` unchanged (issue 10).
"""

import re

from nommer.workerd.nommers import filtergraph as fg


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

#: Text that marks a URL or a protocol in a value: refused anywhere.
_URL_RX = re.compile(r"://|\bconcat:|\bsubfile[,:]|\b(file|pipe|fd|data|crypto|cache|async"
                     r"|tcp|udp|http|https|rtmp|rtsp|ftp|sftp|tls|unix|gopher):",
                     re.IGNORECASE)
