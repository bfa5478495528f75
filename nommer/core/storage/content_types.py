"""The Content-Type of a stored file, by extension: one table for every
storage backend and the job document (``files[].content_type``)."""

import mimetypes
import os

#: Extension (lower case, no dot) -> MIME type. Streaming types per RFC 8216
#: (HLS), ISO/IEC 23009-1 (DASH) and the CMAF segment type.
CONTENT_TYPES = {
    "mp4": "video/mp4", "m4v": "video/mp4", "f4v": "video/mp4", "ismv": "video/mp4",
    "m4a": "audio/mp4", "mov": "video/quicktime", "qt": "video/quicktime",
    "3gp": "video/3gpp", "3g2": "video/3gpp2",
    "mkv": "video/x-matroska", "mka": "audio/x-matroska", "webm": "video/webm",
    "ts": "video/mp2t", "m2ts": "video/mp2t", "mts": "video/mp2t",
    "mpg": "video/mpeg", "mpeg": "video/mpeg", "vob": "video/mpeg",
    "flv": "video/x-flv", "avi": "video/x-msvideo",
    "ogv": "video/ogg", "ogg": "audio/ogg", "oga": "audio/ogg", "opus": "audio/ogg",
    "mp3": "audio/mpeg", "mp2": "audio/mpeg", "aac": "audio/aac", "ac3": "audio/ac3",
    "wav": "audio/wav", "flac": "audio/flac", "aif": "audio/aiff", "aiff": "audio/aiff",
    "gif": "image/gif", "h264": "video/h264", "264": "video/h264", "hevc": "video/h265",
    "m3u8": "application/vnd.apple.mpegurl", "mpd": "application/dash+xml",
    "m4s": "video/iso.segment", "cmfv": "video/mp4", "cmfa": "audio/mp4",
    "vtt": "text/vtt", "srt": "application/x-subrip", "json": "application/json",
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def extension(path):
    """``"a/b.M3U8"`` -> ``"m3u8"``; ``""`` when there is none."""
    return os.path.splitext(path or "")[1].lstrip(".").lower()


def content_type_for_name(name):
    """MIME type of a file called ``name`` (a path or key): the table, else
    ``mimetypes``, else ``application/octet-stream``."""
    ext = extension(name)
    if ext in CONTENT_TYPES:
        return CONTENT_TYPES[ext]
    if ext:
        guessed, _ = mimetypes.guess_type("x." + ext, strict=False)
        if guessed:
            return guessed
    return DEFAULT_CONTENT_TYPE
