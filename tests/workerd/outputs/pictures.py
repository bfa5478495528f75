"""Helpers of the picture outputs' tests (poster, thumbnails, storyboard):
pictures decoded to 8-bit gray by ffmpeg, crops and PSNR in plain Python
(a few thousand pixels per comparison; numpy is not a dependency), and the
ffprobe view of an image. Running a builder is ``media.build``.
"""

import math

from tests.workerd.outputs.media import ffmpeg, ffprobe_json


def gray_frames(path, width, height):
    """Every frame of ``path`` (a video or an image) scaled to ``width`` x
    ``height`` and turned to 8-bit gray: a list of ``bytes`` (one per
    frame, width x height long), in decoding order."""
    out = ffmpeg("-i", path, "-map", "0:V:0", "-vf", f"scale={width}:{height},format=gray",
                 "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "-").stdout
    size = width * height
    assert out and len(out) % size == 0, (path, len(out), size)
    return [out[i:i + size] for i in range(0, len(out), size)]


def gray_image(path):
    """``(bytes, width, height)`` of the image at ``path`` in 8-bit gray, unscaled."""
    _, width, height = image_info(path)
    return gray_frames(path, width, height)[0], width, height


def crop(pixels, width, x, y, w, h):
    """The ``w`` x ``h`` rectangle at (``x``, ``y``) of a gray picture
    ``width`` pixels wide (``bytes``)."""
    return b"".join(pixels[(y + row) * width + x:(y + row) * width + x + w] for row in range(h))


def psnr(a, b):
    """PSNR in dB of two gray pictures of the same size (inf when equal)."""
    assert len(a) == len(b) and a
    mse = sum((p - q) * (p - q) for p, q in zip(a, b)) / len(a)
    return math.inf if mse == 0 else 10 * math.log10(255 * 255 / mse)


def mean(pixels):
    """Average gray level (0..255)."""
    return sum(pixels) / len(pixels)


def image_info(path):
    """``(codec_name, width, height)`` of the picture at ``path`` (ffprobe)."""
    stream = ffprobe_json(path, "-show_streams")["streams"][0]
    return stream["codec_name"], stream["width"], stream["height"]


def best_match(picture, frames, candidates):
    """``(index, {index: psnr})``: which of ``frames[i]`` for i in
    ``candidates`` (indexes in range) ``picture`` resembles most."""
    scores = {i: psnr(picture, frames[i]) for i in candidates if 0 <= i < len(frames)}
    return max(scores, key=scores.get), scores
