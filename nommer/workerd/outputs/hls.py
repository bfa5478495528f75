"""HLS playlists over the CMAF segments of a DASH ladder, with measured figures.

ffmpeg's dash muxer writes fMP4 segments that HLS (version 7, ``EXT-X-MAP``)
plays as they are; this module writes the HLS side next to the MPD:

* one media playlist per representation (``EXTINF`` = the exact durations
  of the MPD's ``SegmentTimeline``);
* one I-frame playlist per video rung (``EXT-X-I-FRAMES-ONLY``, byte ranges
  into the segments, found by ``nommer.workerd.outputs.iframes``), which
  ffmpeg 5.1 cannot write;
* one SUBTITLES rendition per captions output of the job (``subtitles``):
  segmented WebVTT cut on the video segments' boundaries, each file with
  ``X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000`` (cue times are media
  times: local 0 is media time 0 of the fMP4 segments, which is how hls.js
  and Safari place WebVTT beside CMAF), and its media playlist;
* the master playlist, whose ``BANDWIDTH`` / ``AVERAGE-BANDWIDTH`` are the
  measured figures of ``nommer.workerd.outputs.measure`` (video + the
  largest audio rendition), not the encoder's targets.

Media and I-frame playlists are built with the ``m3u8`` library; the master
is written line by line (for exact attribute formatting, e.g.
``FRAME-RATE=29.970``) and parsed back with ``m3u8`` as a check. Language
names come from ``pycountry`` (ISO 639). Pure functions of the files.
"""

import math
import os
import re
from fractions import Fraction

import m3u8
import pycountry
from m3u8.model import Segment as M3U8Segment

from nommer.workerd.outputs import iframes as iframes_mod
from nommer.workerd.outputs.measure import MIN_PEAK_SEGMENT_S, bits_per_second
from nommer.workerd.outputs.step import MANIFEST, MEDIA, PLAYLIST
from nommer.workerd.outputs.storyboard import vtt_timestamp

#: EXT-X-VERSION of every playlist (EXT-X-MAP in a playlist without
#: EXT-X-I-FRAMES-ONLY needs 6; 7 is what CMAF packagers write).
HLS_VERSION = 7
#: The GROUP-ID of the audio renditions.
AUDIO_GROUP = "audio"
#: The GROUP-ID of the subtitles renditions.
SUBTITLES_GROUP = "subs"
#: The header line of every WebVTT segment: cue times are the media's own.
TIMESTAMP_MAP = "X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000"


def _language(code):
    """``(RFC 5646 tag, English name)`` of an ISO 639 code (``"eng"``,
    ``"fre"``, ``"en-US"``); ``(code, None)`` when unknown."""
    primary, _, rest = code.replace("_", "-").partition("-")
    primary = primary.lower()
    lang = None
    try:
        if len(primary) == 2:
            lang = pycountry.languages.get(alpha_2=primary)
        elif len(primary) == 3:
            lang = (pycountry.languages.get(alpha_3=primary)
                    or pycountry.languages.get(bibliographic=primary))
    except LookupError:  # older pycountry raises instead of returning None
        lang = None
    if lang is None:
        return code, None
    tag = getattr(lang, "alpha_2", None) or lang.alpha_3
    return tag + ("-" + rest if rest else ""), lang.name


def _quoted(value):
    """An HLS quoted-string: no double quote, CR or LF allowed inside."""
    return '"' + re.sub(r'["\r\n]', "", str(value)) + '"'


def _seconds(value):
    """EXTINF value: seconds with 6 decimals (microseconds)."""
    return round(value, 6)


def _target_duration(durations):
    """EXT-X-TARGETDURATION: the longest duration rounded up (integer seconds)."""
    return max(1, math.ceil(round(max(durations), 6)))


def _frame_rate(rep):
    if not rep.frame_rate:
        return None
    num, _, den = rep.frame_rate.partition("/")
    return f"{float(Fraction(int(num), int(den or 1))):.3f}"


def _media_playlist(segments, init, *, i_frames_only=False):
    """An ``m3u8.M3U8`` VOD playlist of ``segments``: ``(uri, duration_s,
    byterange or None)`` tuples, all sharing the init segment ``init`` (None:
    no ``EXT-X-MAP``, as for WebVTT)."""
    playlist = m3u8.M3U8()
    playlist.version = HLS_VERSION
    playlist.target_duration = _target_duration([d for _, d, _ in segments])
    playlist.playlist_type = "vod"
    playlist.is_independent_segments = True
    playlist.is_i_frames_only = i_frames_only
    playlist.is_endlist = True
    for uri, duration, byterange in segments:
        playlist.segments.append(M3U8Segment(uri=uri, duration=_seconds(duration), byterange=byterange,
                                             init_section={"uri": init} if init else None))
    return playlist


def _write(base_dir, name, text):
    path = os.path.join(base_dir, name)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _video_names(videos, measured):
    """``{rep_id: playlist stem}``: ``video_<height>p``, with ``_<kbps>k``
    (measured average) when two rungs share a height, and ``_<rep_id>`` if
    even that is ambiguous."""
    by_height = {}
    for rep in videos:
        by_height.setdefault(rep.height, []).append(rep)
    names = {}
    for height, reps in by_height.items():
        for rep in reps:
            stem = f"video_{height}p"
            if len(reps) > 1:
                stem += f"_{round(measured[rep.rep_id].average_bps / 1000)}k"
            names[rep.rep_id] = stem
    counts = {}
    for stem in names.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {rep_id: stem if counts[stem] == 1 else f"{stem}_{rep_id}"
            for rep_id, stem in names.items()}


def _audio_names(audios):
    """``{rep_id: (playlist stem, NAME, LANGUAGE or None)}``."""
    langs = [a.lang for a in audios]
    out, used_names = {}, set()
    for index, rep in enumerate(audios, start=1):
        if rep.lang:
            tag, name = _language(rep.lang)
            stem = f"audio_{rep.lang}" if langs.count(rep.lang) == 1 \
                else f"audio_{rep.lang}_{index}"
            name = name or rep.lang
        else:
            tag, name, stem = None, f"audio {index}", f"audio_{index}"
        if name in used_names:  # NAMEs must differ within a group (RFC 8216 4.3.4.1.1)
            name = f"{name} {index}"
        used_names.add(name)
        out[rep.rep_id] = (re.sub(r"[^A-Za-z0-9_.-]", "_", stem), name, tag)
    return out


def subtitle_names(subtitles):
    """``[(stem, NAME, LANGUAGE or None)]`` for each of ``subtitles`` (objects
    with ``language``): stems ``subs_<lang>`` (``subs_<lang>_<n>`` from the
    second of a language on), NAMEs the language's English name, distinct."""
    out, used_stems, used_names = [], set(), set()
    for index, track in enumerate(subtitles, start=1):
        tag, name = _language(track.language)
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", f"subs_{track.language}")
        stem, n = base, 1
        while stem in used_stems:
            n += 1
            stem = f"{base}_{n}"
        used_stems.add(stem)
        name = name or track.language
        if name in used_names:
            name = f"{name} {index}"
        used_names.add(name)
        out.append((stem, name, tag))
    return out


def _vtt_escape(line):
    """Cue text as WebVTT wants it: ``&``, ``<`` and ``>`` as entities (so no
    ``-->`` and no markup)."""
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def subtitle_segments(cues, segments):
    """The WebVTT segment texts of ``cues`` (``(start_s, end_s, text)``, the
    text plain, lines joined by ``\\n``) cut
    on ``segments`` (``(start_s, duration_s)`` of the video segments): a
    list of str, one per segment, each holding the cues that overlap it
    (a cue across a boundary is in both, whole: players merge them; the
    last segment also takes any cue past the video's end)."""
    texts = []
    for i, (start, duration) in enumerate(segments):
        end = start + duration if i + 1 < len(segments) else float("inf")
        lines = ["WEBVTT", TIMESTAMP_MAP, ""]
        for cue_start, cue_end, text in cues:
            if cue_start < end and cue_end > start:
                lines += [f"{vtt_timestamp(cue_start)} --> {vtt_timestamp(cue_end)}",
                          *[_vtt_escape(line) for line in text.splitlines() if line.strip()], ""]
        texts.append("\n".join(lines) + ("\n" if lines[-1] else ""))
    return texts


def iframe_entries(base_dir, rep):
    """The I-frame playlist entries of the video representation ``rep``:
    list of ``(segment name, duration_s, "length@offset")``. The duration of
    an entry runs to the next keyframe (the last one to the end of the
    track). Raises ``PermanentJobError`` on an unreadable segment."""
    keyframes = iframes_mod.keyframes(
        os.path.join(base_dir, rep.init),
        [(s.name, os.path.join(base_dir, s.name)) for s in rep.segments])
    if not keyframes:
        return []
    end_s = rep.segments[-1].start_s + rep.segments[-1].duration_s
    times = [k.presentation / k.timescale for k in keyframes] + [end_s]
    return [(k.segment, times[i + 1] - times[i], k.byterange)
            for i, k in enumerate(keyframes) if times[i + 1] > times[i]]


def _iframe_bandwidths(entries):
    """``(peak, average)`` bits per second of I-frame entries (the peak
    over entries of at least ``MIN_PEAK_SEGMENT_S``, as for media segments)."""
    pairs = [(int(r.partition("@")[0]), d) for _, d, r in entries]
    long_enough = [p for p in pairs if p[1] >= MIN_PEAK_SEGMENT_S] or pairs
    peak = max(bits_per_second(n * 8, d) for n, d in long_enough)
    average = bits_per_second(sum(n for n, _ in pairs) * 8, sum(d for _, d in pairs))
    return peak, average


def write_hls(base_dir, reps, measured, *, master_name="master.m3u8", iframes=True, subtitles=()):
    """Write the HLS playlists of a CMAF ladder into ``base_dir``.

    :param base_dir: the directory holding the MPD's init and media
        segments; playlists are written there, naming the segments relatively.
    :param reps: ``mpd.Representation`` list (from ``mpd.read_timeline``).
    :param measured: ``{rep_id: measure.Measured}`` for every rep.
    :param master_name: file name of the master playlist.
    :param iframes: also write an I-frame playlist per video rung.
    :param subtitles: captions to carry (objects with ``language`` and
        ``cues``: ``nommer.workerd.outputs.captions.Subtitles``): each
        becomes a SUBTITLES rendition (group ``"subs"``, DEFAULT=NO,
        AUTOSELECT=YES) of WebVTT segments ``subs_<lang>_<NNNNN>.vtt`` on
        the first video rung's segment boundaries, listed by
        ``subs_<lang>.m3u8``; every variant then names the group.
    :returns: list of ``(relative path, role)``: the subtitle segments with
        role ``MEDIA``, each media, subtitles and I-frame playlist with role
        ``PLAYLIST``, the master last with ``MANIFEST``.
    :raises PermanentJobError: a segment cannot be read (I-frame playlists).
    :raises ValueError: no representation, or a rep has no entry in ``measured``.

    Names: ``video_<height>p[_<kbps>k].m3u8`` (the suffix only when two rungs
    share a height), ``video_<...>_iframes.m3u8``, ``audio_<lang or
    1-based index>.m3u8``. Master: ``EXT-X-MEDIA`` per audio rendition
    (group ``"audio"``, the first DEFAULT), then per subtitles rendition
    (group ``"subs"``), one ``EXT-X-STREAM-INF`` per
    video rung by ascending ``BANDWIDTH`` (video peak + the largest audio
    peak; ``AVERAGE-BANDWIDTH`` likewise; ``CODECS``, ``RESOLUTION``,
    ``FRAME-RATE``), then the ``EXT-X-I-FRAME-STREAM-INF`` lines. With no
    audio the variants are video only; with no video each audio rendition
    is an audio-only variant.
    """
    if not reps:
        raise ValueError("no representation to write playlists for")
    missing = [r.rep_id for r in reps if r.rep_id not in measured]
    if missing:
        raise ValueError(f"no measured figures for representations {missing}")
    videos = [r for r in reps if r.content_type == "video"]
    audios = [r for r in reps if r.content_type == "audio"]
    written = []

    def media_playlist(rep, stem):
        name = stem + ".m3u8"
        playlist = _media_playlist([(s.name, s.duration_s, None) for s in rep.segments], rep.init)
        _write(base_dir, name, playlist.dumps(infspec="microseconds"))
        written.append((name, PLAYLIST))
        return name

    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    audio_names = _audio_names(audios)
    audio_peak = max((measured[a.rep_id].peak_bps for a in audios), default=0)
    audio_average = max((measured[a.rep_id].average_bps for a in audios), default=0)
    audio_codecs = []
    for index, rep in enumerate(audios):
        stem, name, language = audio_names[rep.rep_id]
        uri = media_playlist(rep, stem)
        if rep.codecs and rep.codecs not in audio_codecs:
            audio_codecs.append(rep.codecs)
        if not videos:
            continue
        attrs = ["TYPE=AUDIO", f"GROUP-ID={_quoted(AUDIO_GROUP)}", f"NAME={_quoted(name)}"]
        if language:
            attrs.append(f"LANGUAGE={_quoted(language)}")
        attrs += [f"DEFAULT={'YES' if index == 0 else 'NO'}", "AUTOSELECT=YES"]
        if rep.channels:
            attrs.append(f"CHANNELS={_quoted(rep.channels)}")
        attrs.append(f"URI={_quoted(uri)}")
        lines.append("#EXT-X-MEDIA:" + ",".join(attrs))

    subtitle_group = None
    if subtitles and videos:
        timeline = [(s.start_s, s.duration_s) for s in videos[0].segments]
        for track, (stem, name, language) in zip(subtitles, subtitle_names(subtitles)):
            entries = []
            for n, text in enumerate(subtitle_segments(track.cues, timeline), start=1):
                segment = f"{stem}_{n:05d}.vtt"
                _write(base_dir, segment, text)
                written.append((segment, MEDIA))
                entries.append((segment, timeline[n - 1][1]))
            playlist = _media_playlist([(u, d, None) for u, d in entries], None)
            uri = stem + ".m3u8"
            _write(base_dir, uri, playlist.dumps(infspec="microseconds"))
            written.append((uri, PLAYLIST))
            attrs = ["TYPE=SUBTITLES", f"GROUP-ID={_quoted(SUBTITLES_GROUP)}", f"NAME={_quoted(name)}"]
            if language:
                attrs.append(f"LANGUAGE={_quoted(language)}")
            attrs += ["DEFAULT=NO", "AUTOSELECT=YES", f"URI={_quoted(uri)}"]
            lines.append("#EXT-X-MEDIA:" + ",".join(attrs))
        subtitle_group = SUBTITLES_GROUP

    variants, iframe_lines = [], []
    video_names = _video_names(videos, measured)
    for stem_rep in videos:
        stem = video_names[stem_rep.rep_id]
        uri = media_playlist(stem_rep, stem)
        m = measured[stem_rep.rep_id]
        bandwidth, average = m.peak_bps + audio_peak, m.average_bps + audio_average
        codecs = ",".join([stem_rep.codecs] + audio_codecs) if stem_rep.codecs else ""
        attrs = [f"BANDWIDTH={bandwidth}", f"AVERAGE-BANDWIDTH={average}"]
        if codecs:
            attrs.append(f"CODECS={_quoted(codecs)}")
        if stem_rep.width and stem_rep.height:
            attrs.append(f"RESOLUTION={stem_rep.width}x{stem_rep.height}")
        if _frame_rate(stem_rep):
            attrs.append(f"FRAME-RATE={_frame_rate(stem_rep)}")
        if audios:
            attrs.append(f"AUDIO={_quoted(AUDIO_GROUP)}")
        if subtitle_group:
            attrs.append(f"SUBTITLES={_quoted(subtitle_group)}")
        variants.append((bandwidth, ["#EXT-X-STREAM-INF:" + ",".join(attrs), uri]))
        if iframes:
            entries = iframe_entries(base_dir, stem_rep)
            if entries:
                name = stem + "_iframes.m3u8"
                playlist = _media_playlist(entries, stem_rep.init, i_frames_only=True)
                _write(base_dir, name, playlist.dumps(infspec="microseconds"))
                written.append((name, PLAYLIST))
                peak, avg = _iframe_bandwidths(entries)
                attrs = [f"BANDWIDTH={peak}", f"AVERAGE-BANDWIDTH={avg}"]
                if stem_rep.codecs:
                    attrs.append(f"CODECS={_quoted(stem_rep.codecs)}")
                if stem_rep.width and stem_rep.height:
                    attrs.append(f"RESOLUTION={stem_rep.width}x{stem_rep.height}")
                attrs.append(f"URI={_quoted(name)}")
                iframe_lines.append((bandwidth, "#EXT-X-I-FRAME-STREAM-INF:" + ",".join(attrs)))
    if not videos:
        for rep in audios:
            m = measured[rep.rep_id]
            attrs = [f"BANDWIDTH={m.peak_bps}", f"AVERAGE-BANDWIDTH={m.average_bps}"]
            if rep.codecs:
                attrs.append(f"CODECS={_quoted(rep.codecs)}")
            variants.append((m.peak_bps, ["#EXT-X-STREAM-INF:" + ",".join(attrs),
                                          audio_names[rep.rep_id][0] + ".m3u8"]))
    for _, pair in sorted(variants, key=lambda v: v[0]):
        lines += pair
    lines += [line for _, line in sorted(iframe_lines, key=lambda v: v[0])]
    text = "\n".join(lines) + "\n"
    check = m3u8.loads(text)
    if len(check.playlists) != len(variants) or len(check.iframe_playlists) != len(iframe_lines) \
            or sum(m.type == "SUBTITLES" for m in check.media) != (len(subtitles) if subtitle_group else 0):
        raise ValueError(f"the master playlist written does not parse back: {text!r}")
    _write(base_dir, master_name, text)
    written.append((master_name, MANIFEST))
    return written
