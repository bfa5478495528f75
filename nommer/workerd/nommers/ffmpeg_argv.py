"""FFmpegNommer's argv: the 2011 spellings translated to today's
(``translate``) and one pass's ffmpeg command line (``build_argv``).

Translation happens here, when the argv is built, not at validation
(``ffmpeg_options.validate_passes``), so a stored job keeps the user's
spelling. Moved out of ``ffmpeg_options.py`` unchanged (issue 10).
"""

from nommer.workerd.nommers import filtergraph as fg
from nommer.workerd.nommers.ffmpeg_filters import filtergraph
from nommer.workerd.nommers.ffmpeg_options import IN, OUT, given_muxer


# --- 2011 spellings -> today's ---------------------------------------------------

#: Audio encoders removed from FFmpeg, always replaced by the native aac.
REMOVED_AAC_ENCODERS = frozenset({"libfaac", "libvo_aacenc"})
_RENAMES = {"vcodec": "c:v", "acodec": "c:a", "scodec": "c:s", "codec": "c",
            "b": "b:v", "vb": "b:v", "ab": "b:a", "vprofile": "profile:v",
            "profile": "profile:v", "level": "level:v", "qscale": "q:v",
            "vframes": "frames:v", "aframes": "frames:a", "vtag": "tag:v", "atag": "tag:a"}
_INPUT_RENAMES = {"vcodec": "c:v", "acodec": "c:a", "codec": "c"}


def needs_encoder_list(passes):
    """True if translating these passes depends on which encoders exist."""
    return any(value == "libfdk_aac" for p in passes
               for flag, value in p["outfile_options"])


def _is_audio_codec_flag(flag):
    base, _, spec = flag.partition(":")
    return base in ("c", "codec") and (spec == "" or spec.startswith("a"))


def translate(pairs, *, where=OUT, encoders=None):
    """Normalized pairs in 2011 spellings -> pairs ffmpeg 5 understands.

    ``-vcodec/-acodec`` -> ``-c:v/-c:a``; ``-b`` -> ``-b:v``; ``-ab`` ->
    ``-b:a``; ``-vprofile/-profile`` -> ``-profile:v``; audio codecs
    libfaac / libvo_aacenc (and libfdk_aac when ``encoders``, a set of
    encoder names, lacks it) -> ``aac``; ``-async N`` -> ``aresample=async=N``
    appended to ``-af``; ``-deinterlace`` -> ``yadif`` put first in ``-vf``.
    """
    renames = _RENAMES if where == OUT else _INPUT_RENAMES
    out, vfilters, afilters = [], [], []
    for flag, value in pairs:
        flag = renames.get(flag, flag)
        if _is_audio_codec_flag(flag) and value is not None:
            if value in REMOVED_AAC_ENCODERS or (
                    value == "libfdk_aac" and encoders is not None
                    and "libfdk_aac" not in encoders):
                value = "aac"
        if where == OUT and flag == "async":
            afilters.append(f"aresample=async={value}")
            continue
        if where == OUT and flag == "deinterlace":
            vfilters.append("yadif")
            continue
        out.append([flag, value])
    for filters, names, prepend in ((vfilters, ("vf", "filter:v"), True),
                                    (afilters, ("af", "filter:a"), False)):
        if not filters:
            continue
        for pair in out:
            if pair[0] in names:
                pair[1] = _join_graph(pair[1], filters, prepend)
                break
        else:
            out.append([names[0], ",".join(filters)])
    return out


def _join_graph(graph, filters, prepend):
    """``filters`` (plain filter texts) put before or after a validated graph's
    first/last chain; a leading ``sws_flags=...;`` stays first (ffmpeg reads it
    only there). The result is checked again (``filtergraph``)."""
    head, body = "", graph
    sws = fg.parse(graph).sws_flags
    if sws is not None:
        semi = graph.index(";") + 1
        head, body = graph[:semi], graph[semi:]
    joined = head + ",".join(filters + [body] if prepend else [body] + filters)
    filtergraph(joined)
    return joined


def _tokens(pairs):
    argv = []
    for flag, value in pairs:
        argv.append("-" + flag)
        if value is not None:
            argv.append(value)
    return argv


def uses_pass(passes):
    return len(passes) > 1 or any(flag.partition(":")[0] == "pass"
                                  for p in passes for flag, _ in p["outfile_options"])


def build_argv(pass_opts, *, ffmpeg_bin, input_path, output_path, muxer=None,
               passlogfile=None, encoders=None):
    """argv (list of str) of one ffmpeg pass.

    ``[ffmpeg_bin, -hide_banner, -nostdin, -y, <infile opts>, -i, input_path,
    <outfile opts>, (-f muxer), (-passlogfile passlogfile), -progress, pipe:1,
    -nostats, output_path]``; ``-f muxer`` is added only when the pass gives
    no ``-f``; ``-passlogfile`` only when ``passlogfile`` is given. Options
    are translated (``translate``) from 2011 spellings. ``pass_opts`` must be
    a normalized pass (``validate_passes``).
    """
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y"]
    argv += _tokens(translate(pass_opts["infile_options"], where=IN, encoders=encoders))
    argv += ["-i", input_path]
    argv += _tokens(translate(pass_opts["outfile_options"], where=OUT, encoders=encoders))
    if given_muxer(pass_opts) is None and muxer:
        argv += ["-f", muxer]
    if passlogfile:
        argv += ["-passlogfile", passlogfile]
    argv += ["-progress", "pipe:1", "-nostats", output_path]
    return argv
