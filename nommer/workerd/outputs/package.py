"""A "package": the hls and/or dash outputs that share one set of CMAF segments.

An hls and a dash output with the same ``dir``, ``ladder``, ``codec``,
``segment_s``, ``encoder_preset`` and ``audio_bitrate`` (``group_key``) are
made by ONE ffmpeg run: one decode, a ``split`` into every rung (scaled, fps
capped where the ladder says), x264/x265 per rung with IDRs on the 2 s grid,
each audio track of the source as its own AAC-LC stereo 48 kHz stream, all
written by ffmpeg's ``dash`` muxer as fMP4 (CMAF) segments plus an MPD.
``finish`` then measures every segment, rewrites the MPD's ``bandwidth`` with
the measured peaks and writes the HLS playlists (variant, audio, I-frame,
master) over the same segments (``mpd``, ``measure``, ``hls`` modules).

``package`` below is a dict ``{"hls": spec or None, "dash": spec or None}``
(at least one given; the shared fields equal): the orchestrator groups the
job's outputs with ``group_key``.
"""

import json
import math
import os
import re
import shutil

from nommer.core.errors import PermanentJobError
from nommer.core.paths import is_within
from nommer.core.storage.content_types import content_type_for_name
from nommer.workerd.outputs import captions, hls, iframes, measure, mpd
from nommer.workerd.outputs import ladder as ladder_mod
from nommer.workerd.outputs.common import (
    KEYFRAME_INTERVAL_S, VIDEO_ENCODERS, gop_frames, input_args, keyframe_args, parse_bitrate,
    progress_args)
from nommer.workerd.outputs.step import MANIFEST, MEDIA, OutputFile, OutputResult, Step

#: The MPD ffmpeg writes (renamed to the dash spec's ``name`` by ``finish``).
MPD_NAME = "manifest.mpd"
INIT_SEG_NAME = "init-$RepresentationID$.m4s"
MEDIA_SEG_NAME = "chunk-$RepresentationID$-$Number%05d$.m4s"
#: Audio renditions: AAC-LC, stereo, 48 kHz (Apple's HLS Authoring Specification).
AUDIO_CHANNELS = 2
AUDIO_SAMPLE_RATE = 48000
#: The fields an hls and a dash output must share to be made by one run.
SHARED_FIELDS = ("dir", "ladder", "codec", "segment_s", "encoder_preset", "audio_bitrate")
#: A source's language tag passed on (ISO 639 / BCP 47 shape). ffmpeg 5.1 writes it into the MPD's
#: ``lang`` attribute unescaped, so anything else (a tag from the source is untrusted) is dropped.
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$")


def group_key(spec):
    """The hashable key of an hls/dash ``spec``: outputs with equal keys are
    one package (one ffmpeg run, one set of segments). A tuple of ``dir``,
    the ladder (canonical JSON), ``codec``, ``segment_s`` (float),
    ``encoder_preset`` and ``audio_bitrate`` (bits per second)."""
    try:
        audio_bps = parse_bitrate(spec.get("audio_bitrate", "128k"))
    except ValueError:
        audio_bps = str(spec.get("audio_bitrate"))
    return (spec.get("dir", "stream"),
            json.dumps(spec.get("ladder", "default"), sort_keys=True),
            spec.get("codec", "h264"),
            float(spec.get("segment_s", 6)),
            spec.get("encoder_preset", "medium"),
            audio_bps)


def _specs(package):
    specs = [s for s in (package.get("hls"), package.get("dash")) if s]
    if not specs:
        raise ValueError("a package needs an hls or a dash output")
    if len(specs) == 2 and group_key(specs[0]) != group_key(specs[1]):
        raise ValueError("the hls and dash outputs of a package must share "
                         + ", ".join(SHARED_FIELDS))
    return specs[0]


def package_dir(package, work_dir):
    """Absolute path of the package's directory in ``work_dir``.
    Raises PermanentJobError if ``dir`` leaves it."""
    spec = _specs(package)
    root = os.path.abspath(work_dir)
    path = os.path.normpath(os.path.join(root, spec.get("dir", "stream")))
    if not is_within(path, root) or path == root:
        raise PermanentJobError(f"the output directory {spec.get('dir')!r} is not a relative path "
                                "under the destination")
    return path


def _video_args(i, rung):
    """Encoder options of output video stream ``i`` (the rung's)."""
    v = f":v:{i}"
    argv = [f"-c{v}", VIDEO_ENCODERS[rung.codec],
            f"-b{v}", str(rung.bitrate_bps), f"-maxrate{v}", str(rung.maxrate_bps),
            f"-bufsize{v}", str(rung.bufsize_bits)]
    # common.keyframe_args, each option for this stream only (rungs differ in fps).
    kf = keyframe_args(rung.fps)
    for opt, value in zip(kf[::2], kf[1::2]):
        argv += [opt + v, value]
    if rung.codec == "hevc":
        g = gop_frames(rung.fps) if rung.fps else 250
        # x265 ignores -sc_threshold and makes forced keyframes non-IDR I frames unless told.
        argv += [f"-tag{v}", "hvc1", f"-forced-idr{v}", "1",
                 f"-x265-params{v}",
                 f"keyint={g}:min-keyint={g}:scenecut=0:open-gop=0:log-level=error"]
    else:
        argv += [f"-profile{v}", "high"]
    return argv


def rung_chains(rungs, video="[0:v:0]"):
    """The filtergraph chains (list of str, joined with ``;`` for
    ``-filter_complex``) that make the video of each of ``rungs``
    (``ladder.Rung``) from the input pad ``video``: a ``split`` when there
    are several, then for each rung its fps cap (when ``fps_capped``), its
    scale and ``setsar=1``, labelled ``[v0]``, ``[v1]``... in order."""
    n = len(rungs)
    labels = [f"[s{i}]" for i in range(n)] if n > 1 else [video]
    chains = [f"{video}split={n}{''.join(labels)}"] if n > 1 else []
    for i, rung in enumerate(rungs):
        filters = []
        if rung.fps_capped:
            # ffmpeg 5.1's fps filter takes a rate, not an expression: computed here.
            filters.append(f"fps={rung.fps.numerator}/{rung.fps.denominator}")
        filters += [f"scale={rung.width}:{rung.height}", "setsar=1"]
        chains.append(f"{labels[i]}{','.join(filters)}[v{i}]")
    return chains


def plan_command(package, source, *, ffmpeg_bin, input_path, work_dir, encoded_videos=None):
    """``(argv, rungs, mpd_path)`` of the package's one ffmpeg run (see
    ``plan``); creates the package directory. ``encoded_videos``: ``(paths,
    offset_s)``, each rung's video encoded already (a chunked job's merged
    tracks, in rung order), copied instead of encoded, ``offset_s`` seconds
    after the source's start."""
    spec = _specs(package)
    rungs = ladder_mod.plan_rungs(spec, source)
    out_dir = package_dir(package, work_dir)
    os.makedirs(out_dir, exist_ok=True)
    mpd_path = os.path.join(out_dir, MPD_NAME)

    n = len(rungs)
    if encoded_videos is None:
        argv = input_args(ffmpeg_bin, input_path) + ["-filter_complex", ";".join(rung_chains(rungs))]
        argv += [a for i in range(n) for a in ("-map", f"[v{i}]")]
    else:
        paths, offset_s = encoded_videos
        if len(paths) != n:
            raise ValueError(f"{len(paths)} encoded rungs given for a ladder of {n}")
        offset = ["-itsoffset", f"{offset_s:.6f}"] if offset_s else []
        argv = input_args(ffmpeg_bin, input_path, *[offset + [p] for p in paths])
        argv += [a for i in range(n) for a in ("-map", f"{i + 1}:v:0")]
    for track in source.audio:
        argv += ["-map", f"0:a:{track.index}"]
    if encoded_videos is None:
        argv += ["-preset:v", spec.get("encoder_preset", "medium"), "-pix_fmt:v", "yuv420p"]
        for i, rung in enumerate(rungs):
            argv += _video_args(i, rung)
    else:
        argv += ["-c:v", "copy"]
    audio_bps = parse_bitrate(spec.get("audio_bitrate", "128k"))
    for j, track in enumerate(source.audio):
        a = f":a:{j}"
        argv += [f"-c{a}", "aac", f"-b{a}", str(audio_bps), f"-ac{a}", str(AUDIO_CHANNELS),
                 f"-ar{a}", str(AUDIO_SAMPLE_RATE)]
        if track.language and LANGUAGE_TAG.match(track.language):
            argv += [f"-metadata:s{a}", f"language={track.language}"]
    # One adaptation set for the video rungs, one per audio track (each its own language).
    sets = ["id=0,streams=v"]
    sets += [f"id={1 + j},streams={n + j}" for j in range(len(source.audio))]
    argv += ["-f", "dash", "-dash_segment_type", "mp4",
             "-seg_duration", str(segment_duration(spec)),
             "-use_template", "1", "-use_timeline", "1",
             # A fragment per 2 s keyframe interval: every keyframe begins a moof (byte ranges
             # of the I-frame playlists).
             "-frag_type", "duration", "-frag_duration", str(KEYFRAME_INTERVAL_S),
             "-adaptation_sets", " ".join(sets),
             "-init_seg_name", INIT_SEG_NAME, "-media_seg_name", MEDIA_SEG_NAME]
    argv += progress_args(mpd_path)
    return argv, rungs, mpd_path


def segment_duration(spec):
    """Seconds of the package's video segments: ``segment_s`` rounded up to
    the keyframe grid (KEYFRAME_INTERVAL_S), as a segment can only start on
    a keyframe (ffmpeg's dash muxer would cut at the next one anyway: 3 s
    asked gives 4 s video segments, and 3 s audio ones)."""
    grid = KEYFRAME_INTERVAL_S
    return max(grid, math.ceil(float(spec.get("segment_s", 6)) / grid - 1e-9) * grid)


def plan(package, source, *, ffmpeg_bin, input_path, work_dir, encoded_videos=None, **extra):
    """The one ``Step`` making a package's segments and MPD.

    :param package: ``{"hls": spec or None, "dash": spec or None}``, specs
        normalized (every field filled), at least one given, the shared
        fields (``SHARED_FIELDS``) equal.
    :param source: ``SourceInfo`` of the input.
    :param input_path: absolute path of the source.
    :param work_dir: the scratch directory (absolute); the run writes
        ``<work_dir>/<dir>/manifest.mpd``, ``init-<rep>.m4s`` and
        ``chunk-<rep>-<number>.m4s`` (``<dir>`` is created here).
    :returns: ``[Step]``; ``expected_s`` the source duration in seconds,
        ``weight`` duration x the rungs' pixels / 1e6.
    Raises ``PermanentJobError`` when the source has no video (or ``dir``
    leaves the scratch directory); ``ValueError`` for a malformed package.
    """
    argv, rungs, _ = plan_command(package, source, ffmpeg_bin=ffmpeg_bin, input_path=input_path,
                                  work_dir=work_dir, encoded_videos=encoded_videos)
    spec = _specs(package)
    duration = source.duration_s
    pixels = sum(r.pixels for r in rungs) if encoded_videos is None else 1e5
    readable = tuple(encoded_videos[0]) if encoded_videos else ()
    kinds = "+".join(k for k in ("hls", "dash") if package.get(k))
    return [Step(what=f"{kinds} ladder {spec.get('dir', 'stream')}/", argv=argv,
                 expected_s=duration, readable=readable,
                 weight=(duration or 1.0) * pixels / 1e6)]


def set_init_language(init_path, language):
    """Write ``language`` (an ISO 639-2 code of three lower-case letters,
    e.g. ``"fra"``) into the ``mdhd`` box of the init segment at
    ``init_path``, in place. ffmpeg 5.1's dash muxer puts a stream's
    language in the MPD (``AdaptationSet@lang``) but leaves ``und`` in the
    segments. Returns False (nothing written) for a code that is not three
    letters a-z or a file with no ``moov/trak/mdia/mdhd``; raises ValueError
    on a malformed file, OSError if unreadable."""
    if not (isinstance(language, str) and len(language) == 3
            and all("a" <= c <= "z" for c in language)):
        return False
    with open(init_path, "rb") as f:
        data = bytearray(f.read())

    def find(start, end, path):
        for kind, off, size, header in iframes.iter_boxes(bytes(data), start, end):
            if kind == path[0]:
                return (off, size, header) if len(path) == 1 else \
                    find(off + header, off + size, path[1:])
        return None

    mdhd = find(0, len(data), [b"moov", b"trak", b"mdia", b"mdhd"])
    if mdhd is None:
        return False
    off, size, header = mdhd
    version = data[off + header]
    at = off + header + 4 + (28 if version == 1 else 16)
    if at + 2 > off + size:
        raise ValueError(f"{init_path}: mdhd too short")
    packed = 0
    for c in language:  # ISO/IEC 14496-12 8.4.2: three 5-bit letters (c - 0x60)
        packed = (packed << 5) | (ord(c) - 0x60)
    data[at:at + 2] = packed.to_bytes(2, "big")
    tmp = init_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, init_path)
    return True


def _file(dir_rel, base_dir, name, role):
    local = os.path.join(base_dir, name)
    return OutputFile(path=f"{dir_rel}/{name}", local=local, bytes=os.path.getsize(local),
                      content_type=content_type_for_name(name), role=role)


def finish(package, source, steps, work_dir, subtitles=()):
    """After the run: measure, write the manifests, describe the uploads.

    Reads the MPD ffmpeg wrote (``mpd.read_timeline``, which completes the
    bare ``hvc1`` codecs string ffmpeg 5.1 writes from the init segments),
    measures every representation's segments (``measure.measure``); for
    dash, rewrites the MPD's ``bandwidth`` with each representation's
    measured peak (bits per second) and renames it to the spec's ``name``;
    for hls, writes the variant, audio, I-frame and master playlists
    (``hls.write_hls``).

    :param subtitles: the job's captions outputs' ``OutputResult`` s (from
        ``nommer.workerd.outputs.captions.finish``), carried by the ladder:
        for hls a SUBTITLES rendition each (segmented WebVTT, its playlist;
        ``hls.write_hls``), for dash a text AdaptationSet each whose
        ``BaseURL`` is a copy of the whole VTT beside the MPD,
        ``subs_<lang>.vtt`` (``mpd.add_text_tracks``). The info of each
        result then lists ``subtitles``: ``[{"language", "name", "playlist"
        (hls) or "vtt" (dash)}]``.
    :returns: ``{"hls": OutputResult, "dash": OutputResult}``, a key only for
        each output the package has. Both list the shared init and media
        segments (role MEDIA, paths ``"<dir>/<file>"``); the dash result the
        MPD (MANIFEST), the hls one its playlists (PLAYLIST) and master
        (MANIFEST). ``info``: ``rungs`` (name, width, height, codec, fps,
        bitrate_peak, bitrate_average, bitrate_target; bits per second),
        ``audio`` (language, codec, channels, bitrate_average,
        bitrate_peak), ``segment_s``, ``manifest`` (``"<dir>/<name>"``).
    :raises PermanentJobError: the run left no readable MPD or a segment it
        names is missing.
    """
    spec = _specs(package)
    base_dir = package_dir(package, work_dir)
    dir_rel = os.path.normpath(spec.get("dir", "stream")).replace(os.sep, "/")
    mpd_path = os.path.join(base_dir, MPD_NAME)
    if not os.path.isfile(mpd_path):
        raise PermanentJobError(f"ffmpeg wrote no DASH manifest for {dir_rel}/ (the ladder run "
                                "made nothing)")
    reps = mpd.read_timeline(mpd_path)  # HEVC codecs completed from the init segments
    videos = [r for r in reps if r.content_type == "video"]
    if not videos:
        raise PermanentJobError(f"the ladder in {dir_rel}/ has no video representation")
    measured = {r.rep_id: measure.measure(r, base_dir) for r in reps}
    for rep in reps:
        if rep.content_type == "audio" and rep.lang and rep.init:
            try:
                set_init_language(os.path.join(base_dir, rep.init), rep.lang)
            except (OSError, ValueError) as e:
                raise PermanentJobError(f"the init segment {rep.init} cannot be read: {e}") \
                    from None

    media = []
    for rep in reps:
        names = ([rep.init] if rep.init else []) + [s.name for s in rep.segments]
        media += [_file(dir_rel, base_dir, name, MEDIA) for name in names]

    rungs = ladder_mod.plan_rungs(spec, source)
    by_id = {str(i): rung for i, rung in enumerate(rungs)}
    rung_info = []
    for rep in videos:
        rung = by_id.get(rep.rep_id)
        m = measured[rep.rep_id]
        fps = rep.fps if rep.fps else (float(rung.fps) if rung and rung.fps else None)
        rung_info.append({
            "name": rung.name if rung else f"{rep.height}p",
            "width": rep.width, "height": rep.height, "codec": rep.codecs,
            "fps": round(fps, 3) if fps else None,
            "bitrate_peak": m.peak_bps, "bitrate_average": m.average_bps,
            "bitrate_target": rung.bitrate_bps if rung else None})
    audio_info = [{"language": rep.lang, "codec": rep.codecs, "channels": rep.channels,
                   "bitrate_average": measured[rep.rep_id].average_bps,
                   "bitrate_peak": measured[rep.rep_id].peak_bps}
                  for rep in reps if rep.content_type == "audio"]

    def info(name):
        return {"rungs": [dict(r) for r in rung_info], "audio": [dict(a) for a in audio_info],
                "segment_s": segment_duration(spec),
                "manifest": f"{dir_rel}/{name}"}

    tracks = [captions.subtitles_of(result) for result in subtitles]
    names = hls.subtitle_names(tracks)
    results = {}
    if package.get("dash"):
        mpd.rewrite_bandwidth(mpd_path, {r.rep_id: measured[r.rep_id].peak_bps for r in reps},
                              codecs={r.rep_id: r.codecs for r in reps if r.codecs})
        name = package["dash"].get("name", MPD_NAME)
        if name != MPD_NAME:
            os.replace(mpd_path, os.path.join(base_dir, name))
        text_files, text_info = _dash_subtitles(os.path.join(base_dir, name), base_dir, dir_rel,
                                                tracks, names, videos[0].duration_s)
        dash_info = info(name)
        if tracks:
            dash_info["subtitles"] = text_info
        results["dash"] = OutputResult(
            files=media + text_files + [_file(dir_rel, base_dir, name, MANIFEST)], info=dash_info)
    if package.get("hls"):
        spec_hls = package["hls"]
        name = spec_hls.get("name", "master.m3u8")
        written = hls.write_hls(base_dir, reps, measured, master_name=name,
                                iframes=bool(spec_hls.get("iframes", True)), subtitles=tracks)
        playlists = [_file(dir_rel, base_dir, rel, role) for rel, role in written]
        hls_info = info(name)
        if tracks:
            hls_info["subtitles"] = [{"language": t.language, "name": label,
                                      "playlist": f"{dir_rel}/{stem}.m3u8"}
                                     for t, (stem, label, _) in zip(tracks, names)]
        results["hls"] = OutputResult(files=media + playlists, info=hls_info)
    return results


def _dash_subtitles(mpd_path, base_dir, dir_rel, tracks, names, duration_s):
    """Copy each captions VTT beside the MPD (``<stem>.vtt``) and add its text
    AdaptationSet; ``(files (MEDIA), info entries)``."""
    if not tracks:
        return [], []
    entries, files, info = [], [], []
    for track, (stem, label, tag) in zip(tracks, names):
        vtt_name = f"{stem}.vtt"
        shutil.copyfile(track.vtt, os.path.join(base_dir, vtt_name))
        size = os.path.getsize(os.path.join(base_dir, vtt_name))
        entries.append((stem, tag or track.language, vtt_name, size / max(duration_s or 1.0, 1.0)))
        files.append(_file(dir_rel, base_dir, vtt_name, MEDIA))
        info.append({"language": track.language, "name": label, "vtt": f"{dir_rel}/{vtt_name}"})
    mpd.add_text_tracks(mpd_path, entries)
    return files, info
