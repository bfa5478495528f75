"""The ffmpeg run of one chunk: a frame-exact seek, every track encoded, video only.

One run per chunk (media-notes §3.3 step 3)::

    ffmpeg [-ss SEEK] -i SRC -filter_complex
      "[0:V:0]trim=end_frame=N,setpts=PTS-STARTPTS,split=K[s0][s1]...;
       [s0]CHAIN0[o0];[s1]CHAIN1[o1];..."
      -map [o0] ARGS0 -fps_mode passthrough -an -sn -dn -f mp4 chunk_00003_o0.mp4
      -map [o1] ...

* ``-ss`` is the chunk's ``seek_s``: the midpoint between the previous
  frame's pts and the chunk's first (a seek 1 ms late drops that frame;
  ffmpeg's accurate seek discards the frames before it), omitted for chunk 0;
* ``trim=end_frame=N`` keeps exactly the chunk's N frames;
* ``setpts=PTS-STARTPTS`` and ``-fps_mode passthrough``: the chunk starts at
  0 and no frame is duplicated or dropped (the default vsync fills the
  half-frame left by the seek by duplicating the first frame: the frame
  count stays right while the content is shifted by one);
* a VFR track (``fps`` None) keeps the source's timestamps: its encoder
  time base is the filter's (``-enc_time_base -1``), not 1/rate, which
  would round them;
* no audio: it is encoded once, for the whole title, by the merge;
* keyframes on the title's 2 s grid, not the chunk's: a track's
  ``-force_key_frames expr:gte(t,n_forced*G)`` counts from the chunk's
  start, so a chunk not starting on the grid gets the grid's times shifted
  by its start as an explicit list instead (``grid_keyframes``); its first
  frame is a keyframe anyway. Otherwise a chunked mp4 has keyframes at
  other places than the same output encoded whole (a whole encode's
  keyframe at 2.0 s became one at 1.67 + 2 s), and its quality differs.

After the run, ``count_step`` (one ``-c copy -f framecrc`` over the chunk's
files: no decoding) and ``check_chunk`` verify that every file holds the
frames expected (``tracks.expected_frames``).
"""

import os
import re

from nommer.core.errors import PermanentJobError
from nommer.workerd.chunks import tracks as tracks_mod
from nommer.workerd.outputs import common
from nommer.workerd.outputs.framecrc import read_framecrc
from nommer.workerd.outputs.step import Step

#: Scratch name of the packet list ``count_step`` writes for chunk i.
COUNT_NAME = "chunk_{index:05d}.packets.txt"


def chunk_file_name(index, key):
    """The file name of chunk ``index``'s encode of track ``key``:
    ``"chunk_00003_p0r1.mp4"`` (zero-padded, so sorting names sorts
    chunks; still, never rely on a listing's order). Raises ValueError for
    a negative index or a key that is not letters and digits."""
    if not isinstance(index, int) or index < 0 or index > 99999:
        raise ValueError(f"a chunk index is 0..99999, not {index!r}")
    tracks_mod._check_key(key)
    return f"chunk_{index:05d}_{key}.mp4"


def _seconds(value):
    """Seconds as ffmpeg's ``-ss`` reads them: 6 decimals (it keeps microseconds)."""
    return f"{value:.6f}"


def filter_graph(chunk, tracks):
    """The ``-filter_complex`` text of ``chunk``'s run (module docstring):
    output pads ``[o0]``, ``[o1]``... in the order of ``tracks``."""
    head = f"[0:V:0]trim=end_frame={int(chunk.frames)},setpts=PTS-STARTPTS"
    k = len(tracks)
    if k > 1:
        graph = [head + f",split={k}" + "".join(f"[s{i}]" for i in range(k))]
    else:
        graph = [head + "[s0]"]
    for i, track in enumerate(tracks):
        graph.append(f"[s{i}]{track.chain or 'null'}[o{i}]")
    return ";".join(graph)


#: A track's chunk-local keyframe grid option (``common.keyframe_args``).
_GRID = re.compile(r"^expr:gte\(t,n_forced\*(\d+(?:\.\d+)?)\)$")


def grid_keyframes(args, chunk):
    """``args`` (a track's encoder options) with its keyframe grid
    (``-force_key_frames expr:gte(t,n_forced*G)``) put on the title's grid
    for ``chunk``: unchanged when the chunk starts on it (within 1 ms),
    else ``-force_key_frames`` of the grid times inside the chunk, in
    chunk-local seconds (``k*G - start_s``, less 0.1 ms so float rounding
    cannot push one past its frame), and 0. Returns a list."""
    args = list(args)
    for i in range(len(args) - 1):
        m = _GRID.match(args[i + 1]) if args[i] == "-force_key_frames" else None
        if not m:
            continue
        grid = float(m.group(1))
        offset = chunk.start_s % grid
        if offset < 0.001 or grid - offset < 0.001:
            return args
        first = chunk.start_s - offset + grid
        times = ["0"]
        t = first - chunk.start_s
        while t < float(chunk.duration):
            times.append(f"{max(0.0, t - 0.0001):.6f}")
            t += grid
        args[i + 1] = ",".join(times)
        return args
    return args


def plan(chunk, tracks, *, ffmpeg_bin, input_path, work_dir, fps=None):
    """The one ``Step`` encoding ``chunk`` for every track.

    :param chunk: ``model.Chunk``.
    :param tracks: list of ``model.VideoTrack`` (non-empty, keys unique).
    :param input_path: absolute path of the source (an indexed container:
        MP4, MOV, MKV; a TS source must be remuxed first, as its input seek
        lands on the wrong frame).
    :param work_dir: existing scratch directory (absolute): the run writes
        ``chunk_file_name(chunk.index, track.key)`` there for each track.
    :param fps: the source's frame rate (``Fraction``; None for VFR): only
        for the step's weight and the docstring's promise that an fps-capped
        track gets ``tracks.expected_frames`` frames.
    :returns: ``Step``; ``expected_s`` the chunk's duration (seconds),
        ``weight`` seconds x the tracks' megapixels, ``what``
        ``"chunk 3 (12.500-25.000 s)"``.
    :raises ValueError: no track, or two with the same key.
    """
    if not tracks:
        raise ValueError("a chunk is encoded for at least one track")
    keys = [t.key for t in tracks]
    if len(set(keys)) != len(keys):
        raise ValueError(f"track keys are not unique: {keys}")
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y"]
    if chunk.index > 0 and chunk.seek_s > 0:
        argv += ["-ss", _seconds(chunk.seek_s)]
    argv += ["-i", input_path, "-filter_complex", filter_graph(chunk, tracks)]
    outputs = [os.path.join(work_dir, chunk_file_name(chunk.index, t.key)) for t in tracks]
    for i, (track, out) in enumerate(zip(tracks, outputs)):
        argv += ["-map", f"[o{i}]", *grid_keyframes(track.args, chunk), "-fps_mode", "passthrough"]
        if track.fps is None:
            # Keep the VFR timestamps: the encoder's time base is the filter's (the
            # source's), not 1/rate (which rounds them to a rate's grid).
            argv += ["-enc_time_base", "-1"]
        argv += ["-an", "-sn", "-dn", "-f", "mp4"]
        argv += common.progress_args(out) if i == len(tracks) - 1 else [out]
    duration = float(chunk.duration)
    megapixels = sum((tracks_mod.pixels(t) or 1e6) for t in tracks) / 1e6
    return Step(what=f"chunk {chunk.index} ({chunk.start_s:.3f}-{chunk.end_s:.3f} s)",
                argv=argv, expected_s=duration, weight=duration * megapixels)


def count_step(chunk, tracks, *, ffmpeg_bin, work_dir):
    """The ``Step`` listing the packets of every file of ``chunk`` (no
    decoding: ``-c copy -f framecrc``), into ``work_dir/COUNT_NAME``; read
    by ``check_chunk``. Not capped (a listing is not an encode)."""
    files = [os.path.join(work_dir, chunk_file_name(chunk.index, t.key)) for t in tracks]
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y"]
    for path in files:
        argv += ["-i", path]
    for i in range(len(files)):
        argv += ["-map", f"{i}:v:0"]
    argv += ["-c", "copy", "-f", "framecrc"]
    argv += common.progress_args(os.path.join(work_dir, COUNT_NAME.format(index=chunk.index)))
    return Step(what=f"chunk {chunk.index} (frame count)", argv=argv,
                expected_s=float(chunk.duration), weight=float(chunk.duration) * 0.001,
                readable=tuple(files), capped=False)


def check_counts(chunk, tracks, counts, fps=None):
    """Raise ``PermanentJobError`` unless each track's file of ``chunk`` holds
    the frames expected.

    :param counts: packets counted in each track's file, in the order of
        ``tracks`` (a list of int; None for a file with no video).
    :param fps: the source's frame rate (Fraction; None for VFR).
    :raises PermanentJobError: e.g. ``"chunk 3: 167 frames encoded, 169
        expected (track p0r1)"``.
    """
    for track, count in zip(tracks, counts):
        expected = tracks_mod.expected_frames(chunk.frames, track, fps)
        if count is None or count == 0:
            raise PermanentJobError(f"chunk {chunk.index}: no video frame encoded "
                                    f"(track {track.key})")
        if expected is not None and count != expected:
            raise PermanentJobError(f"chunk {chunk.index}: {count} frames encoded, {expected} "
                                    f"expected (track {track.key})")


def check_chunk(chunk, tracks, *, work_dir, fps=None):
    """Read what ``count_step`` wrote and ``check_counts``.

    :returns: the counts (list of int, in the order of ``tracks``).
    :raises PermanentJobError: a count differs, or the list is missing or
        unreadable (the chunk's files could not be read).
    """
    path = os.path.join(work_dir, COUNT_NAME.format(index=chunk.index))
    try:
        packets, _ = read_framecrc(path)
    except (OSError, ValueError, IndexError) as e:
        raise PermanentJobError(f"chunk {chunk.index}: its encoded files cannot be read "
                                f"({e})") from None
    counts = [len(packets.get(i, ())) or None for i in range(len(tracks))]
    check_counts(chunk, tracks, counts, fps)
    return counts


def chunk_files(index, tracks, work_dir):
    """``{track key: absolute path}`` of chunk ``index``'s files in ``work_dir``."""
    return {t.key: os.path.join(work_dir, chunk_file_name(index, t.key)) for t in tracks}


_NAME = re.compile(r"^chunk_(\d{5})_([A-Za-z0-9]{1,32})\.mp4$")


def parse_chunk_file_name(name):
    """``(index, key)`` of a ``chunk_file_name``, or None for any other name."""
    m = _NAME.match(name)
    return (int(m.group(1)), m.group(2)) if m else None
