"""The JSON Schema of job bodies (``POST /job/submit``), served at ``GET /schema``.

A body is one of three forms, told apart by which key it has:

* the 2011 form: ``job_options`` (``{"nommer": dotted path, "options": ...}``;
  the options are the nommer's to check);
* declarative outputs: ``outputs``, a list of output objects, each with a
  ``type`` (``hls``, ``dash``, ``mp4``, ``poster``, ``thumbnails``,
  ``storyboard``, ``audio``);
* a server preset: ``preset`` (a name from ``GET /presets``) with optional
  ``overrides`` (output fields applied to each output of the preset that
  takes them).

Every output field has a ``default`` here; ``nommer.core.outputs.normalize``
fills them in, so the job store holds every output fully spelled out.
Units are in the field names (``_s`` seconds) or descriptions (bitrates
are bits per second, given as an integer or as ``"128k"`` / ``"7.8M"``).

The schema is data (``JOB_SCHEMA``); validation is the ``jsonschema``
library's (Draft 2020-12), never hand-written checks.
"""

import copy

#: Most outputs one job may ask for.
MAX_OUTPUTS = 20
#: Most rungs a ladder may have.
MAX_RUNGS = 10

#: A relative path under the destination prefix: segments of letters, digits,
#: ``._-``, separated by ``/``; no ``..``, no leading dot (checked again by
#: ``nommer.core.uri`` when joined to the prefix).
RELATIVE_PATH = r"^(?!.*\n)(?!.*(^|/)\.)[A-Za-z0-9_][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9_][A-Za-z0-9._-]{0,99}){0,4}$"

def file_pattern(*extensions):
    """A RELATIVE_PATH ending in one of ``extensions``."""
    return RELATIVE_PATH[:-1] + r"\.(" + "|".join(extensions) + ")$"


#: A bitrate: integer bits per second, or a decimal with a ``k`` or ``M`` suffix.
BITRATE_STRING = r"^(?!.*\n)[0-9]{1,6}(\.[0-9]{1,3})?[kM]?$"

ENCODER_PRESETS = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                   "slower", "veryslow"]
VIDEO_CODECS = ["h264", "hevc"]
AUDIO_CODECS = ["aac", "opus", "mp3"]
OUTPUT_TYPES = ["hls", "dash", "mp4", "poster", "thumbnails", "storyboard", "audio", "captions",
                "compare"]
QUALITY_METRICS = ["vmaf", "psnr", "ssim"]
VMAF_MODELS = ["vmaf_v0.6.1", "vmaf_v0.6.1neg", "vmaf_4k_v0.6.1"]
CAPTION_ENGINES = ["auto", "pocketsphinx", "faster-whisper"]

_bitrate = {"oneOf": [{"type": "integer", "minimum": 16000, "maximum": 100000000},
                      {"type": "string", "pattern": BITRATE_STRING}],
            "description": "bits per second: an integer, or a string such as \"128k\" or \"7.8M\""}
_uri = {"type": "string", "minLength": 1, "maxLength": 4096}


def _path(default, description, pattern=RELATIVE_PATH):
    return {"type": "string", "pattern": pattern, "maxLength": 200, "default": default,
            "description": description}


def _output(type_name, description, properties, required=()):
    props = {"type": {"const": type_name}}
    props.update(properties)
    return {"type": "object", "description": description, "properties": props,
            "required": ["type", *required], "additionalProperties": False}


_rung = {
    "type": "object",
    "description": "one rung of a custom ladder",
    "properties": {
        "height": {"type": "integer", "minimum": 64, "maximum": 4320,
                   "description": "pixels (the width follows the source's aspect ratio)"},
        "width": {"type": "integer", "minimum": 64, "maximum": 7680,
                  "description": "pixels; for portrait sources the rung scales by width"},
        "bitrate": _bitrate,
        "fps_max": {"type": "number", "exclusiveMinimum": 0, "maximum": 240,
                    "description": "frames per second this rung is capped at"},
    },
    "required": ["height", "bitrate"],
    "additionalProperties": False,
}

_metrics = {"type": "array", "items": {"enum": QUALITY_METRICS}, "minItems": 1, "uniqueItems": True,
            "default": ["vmaf", "psnr", "ssim"],
            "description": "vmaf needs the VMAF-capable ffmpeg (pip install nommer[vmaf]); psnr and ssim "
                           "work with any ffmpeg"}
_model = {"enum": VMAF_MODELS, "default": "vmaf_v0.6.1",
          "description": "libvmaf's built-in model: vmaf_v0.6.1 (1080p TV), vmaf_v0.6.1neg (no "
                         "enhancement gain: compare encoders), vmaf_4k_v0.6.1"}
_subsample = {"type": "integer", "minimum": 1, "maximum": 30, "default": 1,
              "description": "score every Nth frame (libvmaf n_subsample): faster, slightly less exact"}

_quality = {
    "type": "object",
    "description": "measure the output against the source at the source's display size (each rung "
                   "scaled up); pooled figures in the job document, per-frame log stored beside it",
    "properties": {"metrics": _metrics, "model": _model, "subsample": _subsample},
    "additionalProperties": False,
}

_target = {
    "type": "object",
    "description": "encode to a target quality instead of a fixed CRF: a CRF search per title with "
                   "probes on sampled segments at the same encoder preset",
    "properties": {
        "vmaf": {"type": "number", "minimum": 1, "maximum": 100, "description": "the score to reach"},
        "pool": {"enum": ["mean", "p5", "harmonic_mean"], "default": "mean",
                 "description": "how per-frame scores are pooled into the one compared with vmaf"},
        "crf_range": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 51},
                      "minItems": 2, "maxItems": 2, "default": [16, 36],
                      "description": "[lowest, highest] CRF the search may choose"},
        "max_probes": {"type": "integer", "minimum": 2, "maximum": 8, "default": 4,
                       "description": "most probe encodes of the search"},
    },
    "required": ["vmaf"],
    "additionalProperties": False,
}

_ladder_common = {
    "ladder": {"oneOf": [{"const": "default"},
                         {"type": "array", "items": _rung, "minItems": 1, "maxItems": MAX_RUNGS}],
               "default": "default",
               "description": "\"default\" (Apple's HLS Authoring Specification) or a list of rungs"},
    "codec": {"enum": VIDEO_CODECS, "default": "h264"},
    "segment_s": {"type": "number", "minimum": 1, "maximum": 30, "default": 6,
                  "description": "target segment duration, seconds (a multiple of the 2 s keyframe grid "
                                 "is best)"},
    "dir": _path("stream", "directory under dest_path of the manifest and its segments; an hls and "
                           "a dash output with the same dir, ladder, codec and segment_s share one set "
                           "of CMAF segments"),
    "encoder_preset": {"enum": ENCODER_PRESETS, "default": "medium",
                       "description": "x264/x265 speed preset"},
    "audio_bitrate": dict(_bitrate, default="128k"),
    "quality": _quality,
    "target": _target,
}

_hls = _output("hls", "HLS (fMP4/CMAF segments): a master playlist with measured BANDWIDTH, one "
                      "playlist per rung and audio track, and I-frame playlists", dict(
    _ladder_common,
    name=_path("master.m3u8", "the master playlist's file name in dir", r"^(?!.*\n)[A-Za-z0-9_][A-Za-z0-9._-]{0,99}\.m3u8$"),
    iframes={"type": "boolean", "default": True,
             "description": "write EXT-X-I-FRAMES-ONLY playlists (trick play)"},
))

_dash = _output("dash", "MPEG-DASH (isoff-live, SegmentTemplate) with measured bandwidth", dict(
    _ladder_common,
    name=_path("manifest.mpd", "the MPD's file name in dir", r"^(?!.*\n)[A-Za-z0-9_][A-Za-z0-9._-]{0,99}\.mpd$"),
))

_mp4 = _output("mp4", "one MP4 file (H.264 or HEVC + AAC), fast start; with image_path, the "
                      "source's audio over a still image (audio merge)", {
    "name": _path("video.mp4", "file name under dest_path",
                  file_pattern("mp4", "m4v", "mov")),
    "codec": {"enum": VIDEO_CODECS, "default": "h264"},
    "height": {"type": "integer", "minimum": 64, "maximum": 4320,
               "description": "pixels: the short side (the height; for a portrait source the width, "
                              "as ladder rungs); never larger than the source (no upscaling)"},
    "width": {"type": "integer", "minimum": 64, "maximum": 7680,
              "description": "pixels: the long side (the width; for a portrait source the height); "
                             "height wins if both are given; never upscaled"},
    "crf": {"type": "number", "minimum": 0, "maximum": 51, "default": 23},
    "bitrate": _bitrate,
    "fps_max": {"type": "number", "exclusiveMinimum": 0, "maximum": 240},
    "encoder_preset": {"enum": ENCODER_PRESETS, "default": "medium"},
    "audio_bitrate": dict(_bitrate, default="128k"),
    "image_path": dict(_uri, description="URI of a still image (same storage rules as source_path): "
                                         "the output is that image over the source's audio"),
    "quality": _quality,
    "target": _target,
})

_poster = _output("poster", "one still: the most representative frame of the first minutes "
                            "(ffmpeg's thumbnail filter), or the frame at at_s", {
    "name": _path("poster.jpg", "file name under dest_path",
                  file_pattern("jpg", "jpeg", "png")),
    "width": {"type": "integer", "minimum": 16, "maximum": 7680,
              "description": "pixels (aspect ratio kept; never upscaled); default the source's"},
    "at_s": {"type": "number", "minimum": 0, "description": "seconds into the source"},
})

_thumbnails = _output("thumbnails", "a JPEG every interval_s seconds, aspect ratio kept", {
    "interval_s": {"type": "number", "minimum": 0.5, "maximum": 3600, "default": 10},
    "width": {"type": "integer", "minimum": 16, "maximum": 1920, "default": 320},
    "dir": _path("thumbnails", "directory under dest_path"),
})

_storyboard = _output("storyboard", "sprite sheets (JPEG grids) + a WebVTT of #xywh= cues + a JSON "
                                    "description, for seek previews", {
    "interval_s": {"type": "number", "minimum": 0.5, "maximum": 600, "default": 2},
    "tile_width": {"type": "integer", "minimum": 16, "maximum": 640, "default": 160},
    "columns": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
    "rows": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
    "dir": _path("storyboard", "directory under dest_path"),
})

_audio = _output("audio", "an audio-only file (AAC in M4A, Opus in Ogg, MP3)", {
    "name": _path("audio.m4a", "file name under dest_path; its extension must suit the codec "
                               "(aac: .m4a/.mp4/.aac, opus: .opus/.ogg/.webm, mp3: .mp3)",
                  file_pattern("m4a", "mp4", "aac", "opus", "ogg", "webm", "mp3")),
    "codec": {"enum": AUDIO_CODECS, "default": "aac"},
    "bitrate": dict(_bitrate, default="128k"),
    "channels": {"enum": [1, 2], "default": 2},
    "sample_rate": {"enum": [44100, 48000], "default": 48000},
    "track": {"type": "integer", "minimum": 0, "maximum": 63, "default": 0,
              "description": "which audio track of the source (0 = the first)"},
})

_captions = _output("captions", "captions transcribed offline from the source's speech: WebVTT (and "
                                "SRT), a JSON of words with their confidence; attached to the job's "
                                "HLS (a SUBTITLES rendition) and DASH outputs", {
    "language": {"type": "string", "pattern": r"^(?!.*\n)[a-z]{2,3}$", "default": "en",
                 "description": "ISO 639-1 code of the spoken language (the engine must have it)"},
    "engine": {"enum": CAPTION_ENGINES, "default": "auto",
               "description": "auto: the best engine installed (faster-whisper, else pocketsphinx)"},
    "formats": {"type": "array", "items": {"enum": ["vtt", "srt"]}, "minItems": 1, "uniqueItems": True,
                "default": ["vtt"]},
    "dir": _path("captions", "directory under dest_path"),
    "track": {"type": "integer", "minimum": 0, "maximum": 63, "default": 0,
              "description": "which audio track of the source to transcribe"},
})

_compare = _output("compare", "measure a distorted file against the job's source (the reference): "
                              "pooled VMAF/PSNR/SSIM in the job document, the per-frame report under "
                              "dest_path", {
    "distorted": dict(_uri, description="URI of the distorted file (same storage rules as "
                                        "source_path)"),
    "metrics": _metrics,
    "model": _model,
    "subsample": _subsample,
    "name": _path("compare.json", "file name of the per-frame report under dest_path",
                  file_pattern("json")),
}, required=("distorted",))

OUTPUT_SCHEMAS = {"captions": _captions, "compare": _compare, "hls": _hls, "dash": _dash, "mp4": _mp4, "poster": _poster,
                  "thumbnails": _thumbnails, "storyboard": _storyboard, "audio": _audio}

#: One output: dispatched on ``type`` with if/then, so an error names the
#: field of the right type (not "not valid under any of the given schemas").
_output_ref = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": OUTPUT_TYPES}},
    "allOf": [{"if": {"properties": {"type": {"const": t}}, "required": ["type"]},
               "then": {"$ref": f"#/$defs/{t}"}} for t in OUTPUT_TYPES],
}

JOB_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://nommer.invalid/schema/job.json",
    "title": "nommer job",
    "description": "The body of POST /job/submit: source_path and dest_path, and exactly one of "
                   "job_options (the 2011 form), outputs, or preset (with optional overrides).",
    "type": "object",
    "properties": {
        "source_path": dict(_uri, description="URI of the source (file://, http(s)://, s3://)"),
        "dest_path": dict(_uri, description="URI of the output; ending in '/', a prefix every "
                                            "output file goes under"),
        "notify_url": {"oneOf": [dict(_uri), {"type": "null"}],
                       "description": "http(s) URL told of every state change"},
        "job_options": {"type": "object", "description": "the 2011 form: nommer and its options",
                        "properties": {"nommer": {"type": "string"}, "options": {}},
                        "required": ["nommer", "options"], "additionalProperties": False},
        "outputs": {"type": "array", "items": _output_ref, "minItems": 1, "maxItems": MAX_OUTPUTS},
        "preset": {"type": "string", "pattern": r"^(?!.*\n)[a-z0-9][a-z0-9._-]{0,63}$",
                   "description": "a server preset's name (GET /presets)"},
        "overrides": {"type": "object", "maxProperties": 32,
                      "description": "with preset: output fields set on each output of the preset "
                                     "that takes them"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 100, "default": 50,
                     "description": "0..100, higher runs first; a waiting job's priority grows with "
                                    "its wait, so none starves"},
        "chunking": {
            "description": "split the source, encode the chunks on many workers, merge (declarative "
                           "jobs): true or an object asks for it, false never; absent: when the "
                           "source lasts at least the server's CHUNKING_MIN_SOURCE_S",
            "oneOf": [{"type": "boolean"},
                      {"type": "object", "additionalProperties": False,
                       "properties": {
                           "target_s": {"type": "number", "minimum": 1, "maximum": 3600,
                                        "description": "chunk length aimed at, seconds"},
                           "min_s": {"type": "number", "minimum": 0.5, "maximum": 3600,
                                     "description": "shortest chunk, seconds"},
                           "max_s": {"type": "number", "minimum": 1, "maximum": 7200,
                                     "description": "longest chunk, seconds"}}}]},
        "pool": {"type": "string", "pattern": r"^(?!.*\n)[a-z][a-z0-9-]{0,29}$",
                 "description": "the pool of workers that runs the job (server setting POOLS; "
                                "default: the job's preset's pool, else \"default\")"},
    },
    "required": ["source_path", "dest_path"],
    "additionalProperties": False,
    "oneOf": [{"required": ["job_options"]}, {"required": ["outputs"]}, {"required": ["preset"]}],
    "dependentRequired": {"overrides": ["preset"]},
    "$defs": dict(OUTPUT_SCHEMAS),
}


def job_schema():
    """A deep copy of ``JOB_SCHEMA`` (a dict, JSON-able), for ``GET /schema``."""
    return copy.deepcopy(JOB_SCHEMA)
