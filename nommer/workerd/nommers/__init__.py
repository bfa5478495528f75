"""Nommers: the classes that encode one job (``BaseNommer`` and its subclasses).

A job names its nommer by dotted path; only ``ALLOWED_NOMMERS`` (settings)
may be named. ``nommer.workerd.nommers.ffmpeg.FFmpegNommer`` is the one that
ships (the original's ``media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer``
is an alias of it).
"""
