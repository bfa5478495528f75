"""The job bodies of issue 11 that several test modules check (submit-time
validation in tests/core, the API's edge in tests/feederd). Copy before
changing them (``copy.deepcopy``)."""

#: The issue's example outputs, verbatim: one of every output type.
ISSUE_OUTPUTS = [
    {"type": "hls", "ladder": "default", "codec": "h264", "segment_s": 6},
    {"type": "dash", "ladder": "default", "codec": "h264", "segment_s": 6},
    {"type": "mp4", "name": "download.mp4", "height": 720, "crf": 23},
    {"type": "poster", "name": "poster.jpg"},
    {"type": "thumbnails", "interval_s": 10, "width": 320},
    {"type": "storyboard", "interval_s": 2, "tile_width": 160, "columns": 5, "rows": 5},
    {"type": "audio", "name": "audio.m4a", "codec": "aac", "bitrate": "128k"},
]

#: The issue's example body, verbatim.
ISSUE_EXAMPLE = {
    "source_path": "s3://in/title.mov",
    "dest_path": "s3://out/title/",
    "notify_url": "https://app.example/hook",
    "outputs": ISSUE_OUTPUTS,
}
