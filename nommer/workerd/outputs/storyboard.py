"""Storyboard: sprite sheets for seek previews, a WebVTT pointing into them and
a JSON description.

Spec (normalized, ``nommer.core.outputs.schema``): ``interval_s`` (seconds
between tiles), ``tile_width`` (pixels; never upscaled), ``columns``,
``rows`` (the grid of one sheet), ``dir`` (directory under the destination
prefix). Files, under ``dir``:

* ``sheet_000.jpg``, ``sheet_001.jpg``... (role MEDIA): JPEG grids of
  ``columns`` x ``rows`` tiles, each ``tile_width`` x ``tile_height``
  pixels, tile_height = round(tile_width x h / w / 2) x 2 (the source's
  aspect ratio kept, even). Tile i is on sheet i // (columns x rows), at
  column k % columns and row k // columns of it (k = i % (columns x rows)),
  and shows the first frame at or after i x interval_s (the thumbnails'
  selection, which does not drift). ffmpeg's ``tile`` filter pads the last
  sheet to the full grid with black: its real tile count is in the JSON
  and no cue points at a padded place.
* ``storyboard.vtt`` (role PLAYLIST, uploaded after the sheets): one cue per
  tile, ``[i x I, min((i + 1) x I, duration))``, whose text is
  ``sheet_NNN.jpg#xywh=x,y,w,h`` (Mux, JW Player, videojs-vtt-thumbnails),
  the URL relative to the VTT.
* ``storyboard.json`` (role MANIFEST): PeerTube's fields ``spriteWidth``,
  ``spriteHeight``, ``spriteDuration``, ``totalWidth``, ``totalHeight``,
  plus ``columns``, ``rows``, ``interval_s``, ``tiles``, ``duration_s``,
  ``vtt`` and ``sheets`` (``[{"path", "tiles"}]``, paths relative to the
  JSON).

How many tiles there are is what ffmpeg says (a ``framecrc`` side output of
the tiles, ``.tiles.frames``, not uploaded), not a guess from the duration:
the container's duration can be longer than the video (longer audio).
"""

import json
import math
import os

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs.common import progress_args, scaled_size
from nommer.workerd.outputs.step import MANIFEST, MEDIA, PLAYLIST, OutputResult, Step
from nommer.workerd.outputs.thumbnails import (
    every_interval_filter, frame_times, frame_times_args, local_path, numbered, output_file,
    picture_input, require_video, weight_for)

#: File name pattern of the sheets (ffmpeg's image2 numbering, from 0).
SHEET_PATTERN = "sheet_%03d.jpg"
VTT_NAME = "storyboard.vtt"
JSON_NAME = "storyboard.json"
#: The tiles' framecrc (how many tiles there are), beside the sheets.
TIMES_NAME = ".tiles.frames"
#: JPEG quality of the sheets (ffmpeg's -q:v, 2 best .. 31 worst).
JPEG_QUALITY = 4


def tile_size(spec, source):
    """(width, height) of one tile in pixels: ``tile_width`` (no larger than
    the source), the height following the source's aspect ratio, both even."""
    return scaled_size(source.width, source.height, width=spec["tile_width"])


def plan(spec, source, *, ffmpeg_bin, input_path, work_dir, **extra):
    """One ffmpeg run writing the sheets into ``<work_dir>/<dir>/`` (it
    creates the directory) and the tiles' frame list beside them.

    :param spec: normalized storyboard output (``interval_s`` seconds,
        ``tile_width`` pixels, ``columns``, ``rows``, ``dir``).
    :param source: ``SourceInfo``.
    :returns: ``[Step]``; ``expected_s`` is the source's duration (seconds).
    :raises PermanentJobError: the source has no video.
    """
    require_video(source, "a storyboard")
    width, height = tile_size(spec, source)
    directory = local_path(work_dir, spec["dir"])
    os.makedirs(directory, exist_ok=True)
    graph = (f"[0:V:0]{every_interval_filter(spec['interval_s'])},scale={width}:{height},setsar=1,"
             f"split=2[times][tiles];[tiles]tile={spec['columns']}x{spec['rows']}[sheets]")
    argv = picture_input(ffmpeg_bin, input_path) + [
        "-filter_complex", graph,
        "-map", "[times]", *frame_times_args(os.path.join(directory, TIMES_NAME)),
        "-map", "[sheets]", "-fps_mode", "passthrough", "-q:v", str(JPEG_QUALITY),
        "-start_number", "0", *progress_args(os.path.join(directory, SHEET_PATTERN))]
    return [Step(what=f"storyboard {spec['dir']}/", argv=argv, expected_s=source.duration_s,
                 weight=weight_for(source.duration_s))]


def vtt_timestamp(seconds):
    """``HH:MM:SS.mmm`` of ``seconds`` (float >= 0), rounded to the millisecond."""
    ms = int(round(seconds * 1000))
    hours, ms = divmod(ms, 3600000)
    minutes, ms = divmod(ms, 60000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def cues(tiles, *, interval_s, tile_width, tile_height, columns, rows, duration_s):
    """The storyboard's cues: ``[(start_s, end_s, "sheet_NNN.jpg#xywh=x,y,w,h")]``
    for ``tiles`` tiles. Cue i runs from i x interval_s to min((i + 1) x
    interval_s, duration_s) (``duration_s`` None: no cap; a cap at or
    before the start is ignored)."""
    per_sheet = columns * rows
    made = []
    for i in range(tiles):
        sheet, k = divmod(i, per_sheet)
        x, y = (k % columns) * tile_width, (k // columns) * tile_height
        start = i * interval_s
        end = (i + 1) * interval_s
        if duration_s is not None and start < duration_s < end:
            end = duration_s
        made.append((start, end, f"{SHEET_PATTERN % sheet}#xywh={x},{y},{tile_width},{tile_height}"))
    return made


def vtt_text(cue_list):
    """A WebVTT document (str) of ``cues()``."""
    lines = ["WEBVTT", ""]
    for start, end, text in cue_list:
        lines += [f"{vtt_timestamp(start)} --> {vtt_timestamp(end)}", text, ""]
    return "\n".join(lines)


def finish(spec, source, steps, work_dir):
    """Write the VTT and the JSON beside the sheets the step wrote.

    :returns: ``OutputResult``: the sheets (MEDIA), the VTT (PLAYLIST), the
        JSON (MANIFEST); info ``{"sheets", "tiles", "tile_width",
        "tile_height", "columns", "rows", "interval_s", "vtt"}`` (pixels,
        seconds; ``vtt`` the VTT's path under the destination prefix).
    :raises PermanentJobError: ffmpeg made no tile, or not the sheets its
        tiles fill.
    """
    directory = spec["dir"]
    columns, rows, interval_s = spec["columns"], spec["rows"], spec["interval_s"]
    width, height = tile_size(spec, source)
    tiles = len(frame_times(local_path(work_dir, f"{directory}/{TIMES_NAME}")))
    sheets = numbered(work_dir, directory, SHEET_PATTERN)
    if not tiles:
        raise PermanentJobError("ffmpeg made no storyboard tile: the source's video has no frame it could "
                                "decode")
    per_sheet = columns * rows
    if len(sheets) != math.ceil(tiles / per_sheet):
        raise PermanentJobError(f"ffmpeg made {len(sheets)} storyboard sheets for {tiles} tiles of "
                                f"{per_sheet} per sheet; expected {math.ceil(tiles / per_sheet)}")
    cue_list = cues(tiles, interval_s=interval_s, tile_width=width, tile_height=height,
                    columns=columns, rows=rows, duration_s=source.duration_s)
    with open(local_path(work_dir, f"{directory}/{VTT_NAME}"), "w", encoding="utf-8") as f:
        f.write(vtt_text(cue_list))
    description = {
        "spriteWidth": width, "spriteHeight": height, "spriteDuration": interval_s,
        "totalWidth": width * columns, "totalHeight": height * rows,
        "columns": columns, "rows": rows, "interval_s": interval_s, "tiles": tiles,
        "duration_s": source.duration_s, "vtt": VTT_NAME,
        "sheets": [{"path": SHEET_PATTERN % n, "tiles": min(per_sheet, tiles - n * per_sheet)}
                   for n in range(len(sheets))],
    }
    with open(local_path(work_dir, f"{directory}/{JSON_NAME}"), "w", encoding="utf-8") as f:
        json.dump(description, f, indent=1)
        f.write("\n")
    files = [output_file(work_dir, sheet, MEDIA) for sheet in sheets]
    files.append(output_file(work_dir, f"{directory}/{VTT_NAME}", PLAYLIST))
    files.append(output_file(work_dir, f"{directory}/{JSON_NAME}", MANIFEST))
    info = {"sheets": len(sheets), "tiles": tiles, "tile_width": width, "tile_height": height,
            "columns": columns, "rows": rows, "interval_s": interval_s,
            "vtt": f"{directory}/{VTT_NAME}"}
    return OutputResult(files=files, info=info)
