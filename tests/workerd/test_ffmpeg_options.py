"""FFmpegNommer options: validation (allow-list), 2011 translation, argv."""

from twisted.trial import unittest

from nommer.core.errors import InvalidJobSpec
from nommer.workerd.nommers import ffmpeg_argv, ffmpeg_filters
from nommer.workerd.nommers import ffmpeg_options as o
from nommer.workerd.nommers.ffmpeg import FFmpegNommer

SCALE = "yadif,scale='640:trunc(ow/a/2)*2'"


def doc_example():
    """The 2011 documentation's two-pass job (threads 0 as an int)."""
    common = [["threads", 0], ["vcodec", "libx264"], ["preset", "medium"],
              ["vprofile", "baseline"], ["b", "400k"], ["vf", SCALE]]
    return [
        {"outfile_options": common + [["pass", "1"], ["f", "mp4"], ["an", None]]},
        {"outfile_options": common + [["pass", "2"], ["acodec", "libfaac"], ["ab", "128k"],
                                      ["ar", 48000], ["async", 480], ["ac", 2], ["f", "mp4"]],
         "move_atom_to_front": True},
    ]


def one_pass(*pairs, infile=()):
    return [{"infile_options": [list(p) for p in infile],
             "outfile_options": [list(p) for p in pairs]}]


class ValidateTests(unittest.SynchronousTestCase):
    """Shape checks and normalization."""

    def refused(self, options, field=None, says=None, **kwargs):
        with self.assertRaises(InvalidJobSpec) as cm:
            o.validate_passes(options, **kwargs)
        if field is not None:
            self.assertEqual(cm.exception.field, field)
        if says is not None:
            self.assertIn(says, cm.exception.message)
        return cm.exception

    def test_doc_example_normalizes(self):
        """The 2011 example is accepted; values become str, bare flags None."""
        passes = FFmpegNommer.validate_options(doc_example(), None)
        self.assertEqual(len(passes), 2)
        self.assertEqual(passes[0]["outfile_options"][0], ["threads", "0"])
        self.assertIn(["an", None], passes[0]["outfile_options"])
        self.assertIn(["ar", "48000"], passes[1]["outfile_options"])
        self.assertEqual(passes[0]["infile_options"], [])
        self.assertIs(passes[0]["move_atom_to_front"], False)
        self.assertIs(passes[1]["move_atom_to_front"], True)

    def test_leading_dash_and_bare_values(self):
        """'-vcodec' equals 'vcodec'; None, '' and [] make a bare flag; 0 is '0'."""
        passes = o.validate_passes(one_pass(["-vcodec", "libx264"], ["an", ""], ["sn", []],
                                            ["vn", None], ["bf", 0]))
        self.assertEqual(passes[0]["outfile_options"],
                         [["vcodec", "libx264"], ["an", None], ["sn", None], ["vn", None],
                          ["bf", "0"]])

    def test_options_wrapped_in_an_object(self):
        """{"options": [...]} is accepted as the pass list."""
        passes = o.validate_passes({"options": one_pass(["f", "mp4"])})
        self.assertEqual(passes[0]["outfile_options"], [["f", "mp4"]])

    def test_pass_count(self):
        """Zero passes and more than two passes are refused."""
        self.refused([], field="job_options.options", says="at least one")
        self.refused(one_pass() * 3, field="job_options.options", says="at most 2")
        self.refused("vcodec libx264", says="list")

    def test_unknown_key(self):
        """A pass object with an unknown key is refused."""
        self.refused([{"outfile_options": [], "output": "/etc/passwd"}],
                     field="job_options.options[0]", says="unknown keys")

    def test_pair_shapes(self):
        """Pairs must be 2-element lists with a string flag and a scalar value."""
        self.refused(one_pass(["vcodec"]), field="job_options.options[0].outfile_options[0]")
        self.refused(one_pass([1, "x"]), says="flag must be a string")
        self.refused(one_pass(["metadata", {"a": 1}]), says="must be a string")
        self.refused([{"outfile_options": "vcodec"}], says="list of [flag, value] pairs")
        self.refused(one_pass(["ar", float("nan")]), says="finite")

    def test_field_names_point_at_the_pair(self):
        """The error field names the pass and the pair index."""
        options = doc_example()
        options[1]["outfile_options"][3] = ["vpre", "libx264-hq"]
        self.refused(options, field="job_options.options[1].outfile_options[3]",
                     says="preset file")

    def test_bare_flag_with_value_and_flag_without_value(self):
        """-an takes no value; -vcodec needs one (no argument smuggling)."""
        self.refused(one_pass(["an", "-i"]), says="takes no value")
        self.refused(one_pass(["an", False]), says="takes no value")
        self.refused(one_pass(["vcodec", None]), says="needs a value")
        self.refused(one_pass(["f", ""]), says="needs a value")

    def test_value_checks(self):
        """Values must fit their flag: bitrates, codecs, pass numbers, sizes."""
        self.refused(one_pass(["b", "400k; rm -rf /"]), says="bitrate")
        self.refused(one_pass(["vcodec", "lib x264"]), says="codec")
        self.refused(one_pass(["pass", "4"]), says="1, 2 or 3")
        self.refused(one_pass(["s", "640x360,1"]), says="size")
        self.refused(one_pass(["metadata", "no equals sign"]), says="key=value")

    def test_stream_specifiers(self):
        """Per-stream flags take specifiers; others refuse them."""
        passes = o.validate_passes(one_pass(["b:v", "1M"], ["c:a:0", "aac"],
                                            ["metadata:s:a:0", "language=eng"]))
        self.assertEqual(passes[0]["outfile_options"][0], ["b:v", "1M"])
        self.refused(one_pass(["vf:v", "null"]), says="no stream specifier")

    def test_input_and_output_sides(self):
        """Output-only flags are refused in infile_options and vice versa."""
        self.refused(one_pass(infile=[["vf", "null"]]), says="input option")
        self.refused(one_pass(["itsoffset", "1"]), says="output option")
        passes = o.validate_passes(one_pass(infile=[["ss", "0.5"], ["f", "mov"]]))
        self.assertEqual(passes[0]["infile_options"], [["ss", "0.5"], ["f", "mov"]])

    def test_total_size_is_bounded(self):
        """Too many pairs or too many bytes are refused."""
        self.refused(one_pass(*[["an", None]] * (o.MAX_PAIRS + 1)), says="at most")
        big = one_pass(*[["metadata", "comment=" + "x" * 2000]] * 20)
        self.refused(big, says="too large")
        self.refused(one_pass(["metadata", "c=" + "x" * 3000]), says="longer than")

    def test_unknown_flag(self):
        """A flag not in the allow-list is refused."""
        self.refused(one_pass(["sameq", None]), says="not an allowed ffmpeg option")
        self.refused(one_pass(["foo bar", "1"]), says="not an ffmpeg option name")

    def test_move_atom_to_front_type(self):
        """move_atom_to_front must be a boolean."""
        self.refused([{"outfile_options": [], "move_atom_to_front": "yes"}],
                     field="job_options.options[0].move_atom_to_front")

    def test_muxer_inferred_or_refused_at_submit(self):
        """Without -f the destination's extension must name a muxer."""
        o.validate_passes(one_pass(["vcodec", "libx264"]), dest_path="s3://b/out/clip.MP4?x=1")
        self.refused(one_pass(["vcodec", "libx264"]), dest_path="file:///out/clip",
                     says="cannot be inferred")
        self.refused(one_pass(["vcodec", "libx264"]), dest_path="file:///out/clip.xyz",
                     says="cannot be inferred")
        o.validate_passes(one_pass(["f", "matroska"]), dest_path="file:///out/clip")

    def test_null_muxer_only_for_first_pass(self):
        """-f null is fine for pass 1 of 2, refused for the pass that writes the output."""
        o.validate_passes([{"outfile_options": [["f", "null"]]},
                           {"outfile_options": [["f", "mp4"]]}])
        self.refused(one_pass(["f", "null"]), says="writes nothing")


class RefusedTests(unittest.SynchronousTestCase):
    """Everything that could reach a file or a URL is refused, with the reason."""

    def assertRefused(self, pairs, says, infile=()):
        with self.assertRaises(InvalidJobSpec) as cm:
            o.validate_passes(one_pass(*pairs, infile=infile))
        self.assertIn(says, cm.exception.message)
        self.assertEqual(cm.exception.error_code, "BADINPUT")

    def test_extra_input(self):
        """-i is refused on both sides."""
        self.assertRefused([["i", "/etc/passwd"]], "only input")
        self.assertRefused([], "only input", infile=[["-i", "/etc/passwd"]])

    def test_options_that_read_or_write_files(self):
        """-passlogfile, -progress, -vstats_file, scripts, attachments, -report are refused."""
        for flag in ("passlogfile", "progress", "vstats", "vstats_file", "filter_script",
                     "filter_complex_script", "attach", "dump_attachment", "report",
                     "sdp_file", "stats"):
            self.assertRefused([[flag, "/tmp/x"]], "files or URLs")

    def test_preset_files(self):
        """-vpre / -fpre (and friends) read preset files and are refused."""
        for flag in ("vpre", "fpre", "apre", "spre", "pre"):
            self.assertRefused([[flag, "libx264-hq"]], "preset file")

    def test_worker_owned_flags(self):
        """Flags the worker sets itself (-y, -loglevel...) are refused."""
        for flag in ("y", "nostdin", "loglevel", "hide_banner"):
            self.assertRefused([[flag, None]], "worker sets")

    def test_multi_file_muxers(self):
        """-f tee/hls/dash/segment/image2 (and unknown muxers) are refused."""
        for muxer in ("tee", "hls", "dash", "segment", "image2", "ssegment", "rtp", "nope"):
            self.assertRefused([["f", muxer]], "is not allowed")

    def test_input_formats(self):
        """Input -f may not name playlist or generator demuxers."""
        for demuxer in ("concat", "hls", "lavfi", "image2", "dash"):
            self.assertRefused([], "not allowed", infile=[["f", demuxer]])

    def test_forbidden_filters(self):
        """Filters that open files, sockets or plugins are refused in every graph flag."""
        bad = ["movie=/etc/passwd", "amovie=x.wav", "sendcmd=f=cmds.txt", "zmq",
               "subtitles=x.srt", "ass=x.ass", "drawtext=text=hi", "lut3d=x.cube",
               "frei0r=distort0r", "ladspa=f=x", "lv2=p=x", "nosuchfilter"]
        for flag in ("vf", "af", "filter:v", "filter_complex", "lavfi"):
            for graph in bad:
                self.assertRefused([[flag, "null," + graph]], "filter")

    def test_filter_hidden_in_a_complex_graph(self):
        """A forbidden filter after labels, quotes and chains is still found."""
        self.assertRefused([["filter_complex",
                             "[0:v]scale='640:-2'[a];[a]split[b][c];[c]movie=x.mp4[d]"]],
                           "'movie'")
        self.assertRefused([["vf", "scale=640:-2 , drawtext@t1=text=x"]], "'drawtext'")

    def test_file_arguments_in_allowed_filters(self):
        """An allowed filter with a *file*= argument is refused."""
        self.assertRefused([["vf", "scale=640:-2:textfile=/etc/passwd"]], "naming files")
        self.assertRefused([["af", "volume=1:stats_file=out.log"]], "naming files")

    def test_protocol_urls_in_values(self):
        """Values holding ://, concat:, subfile, or protocol prefixes are refused."""
        for value in ("title=http://evil/x", "title=concat:/a|/b",
                      "title=subfile,,start,0,end,0,,:/etc/passwd", "title=file:/etc/passwd"):
            self.assertRefused([["metadata", value]], "URLs and protocols")
        self.assertRefused([["vf", "scale='w=1:h=1',null='ftp://x'"]], "URLs and protocols")

    def test_graphs_read_as_ffmpeg_reads_them(self):
        """What ffmpeg 5.1 reads differently from a naive reading is refused
        (regression: sws_flags ends at the first ';' whatever the quotes)."""
        for graph, says in (
                ("sws_flags=bicubic';[0:v]metadata=mode=print:file=/any/path'", "sws_flags"),
                ("sws_flags=bicubic';[0:v]null,movie=/etc/passwd'", "sws_flags"),
                ("sws_flags=bicubic;[0:v]null,sendcmd=filename=/tmp/c", "'sendcmd'"),
                ("sws_flags=bicubic:w=99;scale", "sws_flags"),
                ("drawbox='1\\',movie=x.mkv", "lone backslash"),
                ("drawbox='1\\\\',movie=x.mkv", "'movie'"),
                ("['x]null[']", "label"), ("[a\\]b]null", "label"),
                ("null,mov\\ie=x.mkv", "quotes or escapes"),
                ("null,'movie'=x.mkv", "quotes or escapes"),
                ("scale='640:-2", "unterminated"), ("null,sws_flags=area;null", "first"),
                ("scale=w=640:-2", "without a name"),
                ("null=\\;metadata=mode=print:file=/x", "files")):
            for flag in ("vf", "filter_complex"):
                self.assertRefused([[flag, graph]], says)

    def test_values_checked_after_unescaping(self):
        """Keys and values are checked as the filter gets them (both rounds of
        unescaping), named or positional."""
        self.assertRefused([["vf", "scale=640:-2:fil\\e\\name=x"]], "naming files")
        self.assertRefused([["vf", "scale=w='/etc/passwd'"]], "naming files")
        self.assertRefused([["vf", "drawbox=x=ht\\tp\\://h/x"]], "URLs and protocols")

    def test_scale_flags_limited_to_libswscale_names(self):
        """ffmpeg 5.1 crashes on unknown scale flags: only libswscale's names pass."""
        self.assertRefused([["vf", "scale=640:-2:flags=nosuch"]], "flag names")
        self.assertRefused([["vf", "sws_flags=nosuch;scale=640:-2"]], "sws_flags")
        o.validate_passes(one_pass(["vf", "scale=640:-2:flags=lanczos+accurate_rnd"]))

    def test_x264_params_touching_files(self):
        """x264-params / x264opts keys that read or write files are refused."""
        for value in ("stats=/tmp/x", "keyint=50:qpfile=/etc/passwd", "dump-yuv=x.yuv",
                      "tcfile-out=x"):
            self.assertRefused([["x264-params", value]], "reads or writes files")
        self.assertRefused([["x264opts", "ref=3:cqmfile=/x"]], "reads or writes files")
        o.validate_passes(one_pass(["x264-params", "keyint=50:min-keyint=25:scenecut=0"]))

    def test_map_only_stream_specifiers(self):
        """-map takes input 0's stream specifiers or a [label], nothing else."""
        o.validate_passes(one_pass(["map", "0:v:0"], ["map", "0:a?"], ["map", "[out]"]))
        for value in ("1:v", "0:v;ls", "/etc/passwd"):
            self.assertRefused([["map", value]], "stream specifier")


class BoundsTests(unittest.SynchronousTestCase):
    """Values that would make ffmpeg produce unbounded output or huge frames."""

    def refused(self, pairs, says):
        with self.assertRaises(InvalidJobSpec) as cm:
            o.validate_passes(one_pass(*pairs))
        self.assertIn(says, cm.exception.message)

    def accepted(self, *pairs):
        o.validate_passes(one_pass(*pairs))

    def test_apad_must_be_bounded(self):
        """apad pads forever unless given a positive length or duration up to 24 h."""
        for graph in ("apad", "apad=packet_size=4096", "apad=pad_len=-1", "apad=whole_dur=0",
                      "apad=4096:-1", "volume=2,apad@x"):
            self.refused([["af", graph]], "apad")
        self.refused([["af", "apad=pad_dur=86401"]], "out of range")
        self.refused([["af", "apad=whole_len=1e15"]], "out of range")
        for graph in ("apad=whole_dur=10", "apad=pad_len=48000", "apad=4096:48000",
                      "apad=pad_dur=1.5"):
            self.accepted(["af", graph])

    def test_tpad_never_forever(self):
        for graph in ("tpad=stop=-1", "tpad=0:-1", "tpad=stop_duration=-1",
                      "tpad=stop_duration=100000", "tpad=start=99999999999"):
            self.refused([["vf", graph]], "tpad")
        self.accepted(["vf", "tpad=stop=25:stop_mode=clone:start_duration=1.5"])

    def test_frame_rates(self):
        for graph in ("fps=1001", "fps=fps=100000/3", "framerate=5000", "minterpolate=2000",
                      "fps=source_fps*100"):
            self.refused([["vf", graph]], "fps")
        self.accepted(["vf", "fps=30000/1001,framerate=fps=60,minterpolate=fps=ntsc"])

    def test_picture_sides(self):
        for graph in ("scale=16385:-2", "scale=w=640:h=20000", "scale=width=99999",
                      "pad=20000:100", "pad=w=100:h=17000", "crop=out_w=16400"):
            self.refused([["vf", graph]], "16384")
        self.accepted(["vf", "scale=16384:-2,pad=iw+20:ih*2,crop=w=iw*100"])

    def test_sample_rates_and_delays(self):
        self.refused([["af", "asetrate=800000"]], "sample_rate")
        self.refused([["af", "asetrate=r=48000*100"]], "expressions")
        self.refused([["af", "adelay=86400001"]], "out of range")
        self.refused([["af", "adelay=1|2s|99999999999S"]], "out of range")
        self.refused([["af", "asetnsamples=n=100000000"]], "out of range")
        self.accepted(["af", "asetrate=44100,adelay=1000|2s|480S,asetnsamples=1024"])

    def test_pad_counts(self):
        """Filters that allocate many pads at creation are bounded (64): libavfilter
        5.1 grows pad arrays one at a time, and concat=2000:200 (400k pads) did
        not finish parsing in 20 s (found by the differential fuzz)."""
        for flag, graph in (("vf", "split=1000000"), ("af", "asplit=outputs=65"),
                            ("filter_complex", "concat=2000:200"),
                            ("vf", "select=1:1000"), ("filter_complex", "concat=n=100"),
                            ("filter_complex", "amix=inputs=99999"), ("vf", "hstack=100")):
            self.refused([[flag, graph]], "out of range")
        self.accepted(["vf", "split=2,select=e=1:n=2,hstack=inputs=3"])

    def test_flag_ranges(self):
        """-s, -r, -ar, -ac, -probesize, -analyzeduration, -threads, -g, -bf,
        -refs, -frames, -crf, -qp: values out of range are refused."""
        for flag, bad, good in (
                ("s", ["16385x100", "100x99999", "0x10"], ["16384x16384", "hd720", "1x1"]),
                ("r", ["1001", "100000/3"], ["1000", "30000/1001", "ntsc"]),
                ("ar", ["768001", "0"], ["48000", "768000"]),
                ("ac", ["0", "65"], ["1", "64"]),
                ("threads", ["65"], ["0", "64", "auto"]),
                ("g", ["100001"], ["250", "-1"]), ("bf", ["17"], ["3"]),
                ("refs", ["17"], ["4"]), ("frames:v", ["86400001"], ["100"]),
                ("crf", ["64", "-2"], ["23", "18.5"]), ("qp", ["256"], ["0", "30"])):
            for value in bad:
                self.refused([[flag, value]], "out of range" if flag != "s" else "each side")
            for value in good:
                self.accepted([flag, value])
        for flag, bad, good in (("probesize", "500000001", "5000000"),
                                ("analyzeduration", "3600000001", "10000000")):
            with self.assertRaises(InvalidJobSpec):
                o.validate_passes(one_pass(infile=[[flag, bad]]))
            o.validate_passes(one_pass(infile=[[flag, good]]))


class TranslateTests(unittest.SynchronousTestCase):
    """2011 spellings become today's when the argv is built."""

    def argv(self, options, **kwargs):
        passes = o.validate_passes(options)
        params = dict(ffmpeg_bin="ffmpeg", input_path="/s/source", output_path="/s/out.mp4",
                      muxer="mp4")
        params.update(kwargs)
        return [ffmpeg_argv.build_argv(p, **params) for p in passes]

    def test_doc_example_argv(self):
        """The 2011 example gives exactly today's equivalent argv."""
        first, second = self.argv(doc_example(), passlogfile="/s/passlog")
        common = ["-threads", "0", "-c:v", "libx264", "-preset", "medium",
                  "-profile:v", "baseline", "-b:v", "400k", "-vf", SCALE]
        head = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-i", "/s/source"]
        tail = ["-passlogfile", "/s/passlog", "-progress", "pipe:1", "-nostats", "/s/out.mp4"]
        self.assertEqual(first, head + common + ["-pass", "1", "-f", "mp4", "-an"] + tail)
        self.assertEqual(second, head + common + [
            "-pass", "2", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
            "-f", "mp4", "-af", "aresample=async=480"] + tail)

    def test_removed_aac_encoders(self):
        """libfaac and libvo_aacenc always become aac."""
        for codec in ("libfaac", "libvo_aacenc"):
            argv, = self.argv(one_pass(["acodec", codec]))
            self.assertEqual(argv[argv.index("-c:a") + 1], "aac")
            argv, = self.argv(one_pass(["c:a", codec]))
            self.assertEqual(argv[argv.index("-c:a") + 1], "aac")

    def test_fdk_aac_depends_on_the_build(self):
        """libfdk_aac becomes aac only when this ffmpeg lacks it."""
        options = one_pass(["acodec", "libfdk_aac"])
        self.assertTrue(ffmpeg_argv.needs_encoder_list(o.validate_passes(options)))
        argv, = self.argv(options, encoders=frozenset({"aac", "libx264"}))
        self.assertIn("aac", argv)
        self.assertNotIn("libfdk_aac", argv)
        argv, = self.argv(options, encoders=frozenset({"aac", "libfdk_aac"}))
        self.assertIn("libfdk_aac", argv)

    def test_async_merges_into_af(self):
        """-async N joins an existing -af graph instead of replacing it."""
        argv, = self.argv(one_pass(["af", "volume=0.5"], ["async", 1]))
        self.assertNotIn("-async", argv)
        self.assertEqual(argv[argv.index("-af") + 1], "volume=0.5,aresample=async=1")
        self.assertEqual(argv.count("-af"), 1)

    def test_deinterlace_becomes_yadif(self):
        """-deinterlace puts yadif first in -vf (or adds -vf yadif)."""
        argv, = self.argv(one_pass(["deinterlace", None], ["vf", "scale=640:-2"]))
        self.assertNotIn("-deinterlace", argv)
        self.assertEqual(argv[argv.index("-vf") + 1], "yadif,scale=640:-2")
        argv, = self.argv(one_pass(["deinterlace", None]))
        self.assertEqual(argv[argv.index("-vf") + 1], "yadif")

    def test_deinterlace_keeps_sws_flags_first(self):
        """yadif goes after a leading sws_flags=...; (ffmpeg reads it only first)."""
        argv, = self.argv(one_pass(["deinterlace", None], ["vf", "sws_flags=area;scale=640:-2"]))
        self.assertEqual(argv[argv.index("-vf") + 1], "sws_flags=area;yadif,scale=640:-2")

    def test_renamed_flags(self):
        """-b, -ab, -profile, -vcodec, -acodec, -qscale get their stream-specific names."""
        argv, = self.argv(one_pass(["b", "1M"], ["ab", "96k"], ["profile", "main"],
                                   ["vcodec", "libx264"], ["acodec", "aac"], ["qscale", 3]))
        for old, new in (("-b", "-b:v"), ("-ab", "-b:a"), ("-profile", "-profile:v"),
                         ("-vcodec", "-c:v"), ("-acodec", "-c:a"), ("-qscale", "-q:v")):
            self.assertNotIn(old, argv)
            self.assertIn(new, argv)

    def test_muxer_added_only_when_missing(self):
        """-f is added from the inferred muxer only if the pass gives none."""
        argv, = self.argv(one_pass(["vcodec", "libx264"]), muxer="matroska")
        self.assertEqual(argv[argv.index("-f") + 1], "matroska")
        argv, = self.argv(one_pass(["f", "mov"]), muxer="matroska")
        self.assertEqual(argv.count("-f"), 1)
        self.assertEqual(argv[argv.index("-f") + 1], "mov")

    def test_input_options_before_input(self):
        """infile_options go before -i, translated for the input side."""
        argv, = self.argv(one_pass(["an", None], infile=[["ss", "1"], ["vcodec", "h264"]]))
        self.assertEqual(argv[4:10], ["-ss", "1", "-c:v", "h264", "-i", "/s/source"])


class HelperTests(unittest.SynchronousTestCase):
    """Graph splitting, muxer inference, time parsing."""

    def test_split_filtergraph(self):
        """Quoted and escaped commas do not split filters; labels are dropped
        (filtergraph.parse underneath: (name, args as the filter gets them))."""
        self.assertEqual(
            ffmpeg_filters.split_filtergraph("[in]scale='640:trunc(ow/a/2)*2',pad=w=1\\,2[x];[x]null[out]"),
            [("scale", "640:trunc(ow/a/2)*2"), ("pad", "w=1,2"), ("null", "")])
        with self.assertRaises(ValueError):
            ffmpeg_filters.split_filtergraph("scale='640")

    def test_infer_muxer(self):
        """Extensions of URIs (query ignored, case ignored) map to muxers."""
        self.assertEqual(o.infer_muxer("s3://b/a/clip.MKV?versionId=3"), "matroska")
        self.assertEqual(o.infer_muxer("http://h/x.m4a"), "ipod")
        self.assertEqual(o.infer_muxer("file:///x/y.mp4"), "mp4")
        self.assertIsNone(o.infer_muxer("file:///x/y"))
        self.assertIsNone(o.infer_muxer("file:///x.y/z"))

    def test_parse_time(self):
        """ffmpeg time syntaxes become seconds."""
        self.assertEqual(o.parse_time("90"), 90.0)
        self.assertEqual(o.parse_time("01:02:03.5"), 3723.5)
        self.assertEqual(o.parse_time("02:03"), 123.0)
        self.assertEqual(o.parse_time("500ms"), 0.5)
        self.assertAlmostEqual(o.parse_time("250us"), 0.00025)
        self.assertIsNone(o.parse_time("N/A"))

    def test_expected_duration(self):
        """-ss/-t/-to shorten the duration progress is measured against."""
        p = o.validate_passes(one_pass(["t", "1.5"], infile=[["ss", "1"]]))[0]
        self.assertEqual(o.expected_duration_s(p, 10.0), 1.5)
        p = o.validate_passes(one_pass(infile=[["ss", "4"]]))[0]
        self.assertEqual(o.expected_duration_s(p, 10.0), 6.0)
        p = o.validate_passes(one_pass(["an", None]))[0]
        self.assertIsNone(o.expected_duration_s(p, None))
