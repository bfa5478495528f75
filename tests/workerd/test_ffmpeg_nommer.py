"""FFmpegNommer end to end with real ffmpeg, against a test double of the worker context."""

import os
import shutil
import signal
import urllib.parse

from twisted.internet import reactor
from twisted.logger import Logger
from twisted.trial import unittest

from nommer.core.errors import (JobCanceled, PermanentJobError, SourceNotFound,
                                TransientJobError)
from nommer.core.job import Job, new_job_id
from nommer.core.states import JobState
from nommer.workerd.nommers import ffmpeg as ffmpeg_module
from nommer.workerd.nommers import ffmpeg_run
from nommer.workerd.nommers.ffmpeg import FFmpegNommer
from nommer.workerd.process import ProcessRunner
from tests.workerd import media
from tests.helpers import ensure
from tests.workerd.media import ClockTimeReactor
from tests.workerd.test_ffmpeg_options import doc_example

NOMMER = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"


def path_of(uri):
    return urllib.parse.unquote(urllib.parse.urlsplit(uri).path)


class FakeContext:
    """The worker's job context as the contract describes it, recording calls.

    ``download_source``/``upload_result`` copy the job's file:// URIs;
    ``states`` are the states the job goes through as the nommer runs:
    DOWNLOADING once it fetches its source (stored by the worker when it took
    the job, not by the nommer), then those it stores (UPLOADING by
    ``upload_result``); ``cancel()`` plays the worker canceling the job;
    ``on_download`` is an optional hook run after download.
    """

    def __init__(self, scratch_dir, job, *, settings=None, reactor_=reactor):
        self.reactor = reactor_
        self.settings = settings or media.settings()
        self.scratch_dir = scratch_dir
        self.job = job
        self.log = Logger(namespace="tests.nommer")
        self.states = []
        self.progress = []
        self.uploads = []
        self.on_download = None
        self.canceled = False
        self._callbacks = []

    def _check(self):
        if self.canceled:
            raise JobCanceled("canceled")

    async def set_state(self, state):
        self._check()
        self.states.append(JobState(state))

    def report_progress(self, percent):
        self.progress.append(percent)

    async def download_source(self, local_path):
        self._check()
        self.states.append(JobState.DOWNLOADING)
        source_uri = self.job.source_path
        path = path_of(source_uri)
        if not os.path.exists(path):
            raise SourceNotFound(f"no such file: {source_uri}")
        shutil.copyfile(path, local_path)
        if self.on_download:
            self.on_download()
        self._check()

    async def upload_result(self, local_path):
        await self.set_state(JobState.UPLOADING)
        shutil.copyfile(local_path, path_of(self.job.dest_path))
        self.uploads.append(self.job.dest_path)
        self._check()

    def register_cancel(self, callback):
        self._callbacks.append(callback)

    def cancel(self):
        self.canceled = True
        for callback in self._callbacks:
            callback()


class NommerCase(unittest.TestCase):
    """A scratch dir, an output dir, and ``make()``: an FFmpegNommer on a fake context."""

    timeout = 60

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        self.scratch = os.path.join(self.root, "scratch")
        self.outdir = os.path.join(self.root, "out")
        os.makedirs(self.scratch)
        os.makedirs(self.outdir)

    def make(self, options, *, source=None, dest_name="result.mp4", **context_kwargs):
        source = source or media.clip(seconds=2)
        job = Job(job_id=new_job_id(), source_path="file://" + source,
                  dest_path="file://" + os.path.join(self.outdir, dest_name),
                  nommer=NOMMER, job_options=options)
        self.ctx = FakeContext(self.scratch, job, **context_kwargs)
        return FFmpegNommer(job, self.ctx)

    def dest(self, name="result.mp4"):
        return os.path.join(self.outdir, name)


class NommerTests(NommerCase):
    """FFmpegNommer.run() on real clips."""

    @ensure
    async def test_2011_doc_example_end_to_end(self):
        """The 2011 two-pass doc example encodes a 720p clip to 640-wide H.264/AAC, moov first."""
        source = media.clip(seconds=2, size="1280x720")
        cwd_before = set(os.listdir(os.getcwd()))
        nommer = self.make(doc_example(), source=source)
        output = await nommer.run()

        self.assertEqual(self.ctx.states,
                         [JobState.DOWNLOADING, JobState.ENCODING, JobState.UPLOADING])
        self.assertEqual(self.ctx.uploads, ["file://" + self.dest()])
        self.assertEqual(output["video"]["codec"], "h264")
        self.assertEqual(output["video"]["width"], 640)
        self.assertEqual(output["video"]["height"], 360)
        self.assertEqual(output["audio"]["codec"], "aac")
        self.assertEqual(output["audio"]["channels"], 2)
        self.assertEqual(output["audio"]["sample_rate"], 48000)
        self.assertLess(abs(output["duration_s"] - 2.0), 0.1)
        self.assertEqual(output["size_bytes"], os.path.getsize(self.dest()))

        # check the uploaded file itself, independently of what run() said
        boxes = media.top_level_boxes(self.dest())
        self.assertLess(boxes.index("moov"), boxes.index("mdat"), boxes)
        dest_info = media.probe_json(self.dest())
        codecs = {s["codec_type"]: s["codec_name"] for s in dest_info["streams"]}
        self.assertEqual(codecs, {"video": "h264", "audio": "aac"})
        self.assertLess(abs(float(dest_info["format"]["duration"]) -
                            float(media.probe_json(source)["format"]["duration"])), 0.1)

        # two-pass log in the job's scratch dir, never in the process cwd
        self.assertTrue(os.path.exists(os.path.join(self.scratch, "passlog-0.log")))
        self.assertEqual(set(os.listdir(os.getcwd())), cwd_before)

        # progress: 0 first, never going back, 100 at the end, pass 1 ends at 50
        self.assertEqual(self.ctx.progress[0], 0.0)
        self.assertEqual(self.ctx.progress, sorted(self.ctx.progress))
        self.assertEqual(self.ctx.progress[-1], 100.0)
        self.assertIn(50.0, self.ctx.progress)

    @ensure
    async def test_one_pass_muxer_from_destination(self):
        """Without -f the muxer comes from the destination's extension (.mkv -> matroska)."""
        nommer = self.make([{"outfile_options": [
            ["vcodec", "libx264"], ["preset", "ultrafast"], ["s", "320x180"],
            ["acodec", "libvo_aacenc"], ["async", 1], ["deinterlace", None], ["t", 1]]}],
            dest_name="small.mkv")
        output = await nommer.run()
        self.assertIn("matroska", output["format_name"])
        self.assertEqual((output["video"]["width"], output["video"]["height"]), (320, 180))
        self.assertEqual(output["audio"]["codec"], "aac")
        self.assertLess(abs(output["duration_s"] - 1.0), 0.1)
        self.assertTrue(os.path.exists(self.dest("small.mkv")))
        self.assertEqual(self.ctx.progress[-1], 100.0)

    @ensure
    async def test_faststart_already_first_is_fine(self):
        """move_atom_to_front on a file ffmpeg already wrote moov-first is not an error."""
        nommer = self.make([{"outfile_options": [
            ["c:v", "libx264"], ["preset", "ultrafast"], ["an", None], ["t", 1],
            ["movflags", "+faststart"], ["f", "mp4"]], "move_atom_to_front": True}])
        output = await nommer.run()
        self.assertEqual(output["audio"], None)
        boxes = media.top_level_boxes(self.dest())
        self.assertLess(boxes.index("moov"), boxes.index("mdat"))

    @ensure
    async def test_source_not_media(self):
        """A source that is not media fails fast: permanent error, no encoding, no upload."""
        bogus = os.path.join(self.root, "bogus.mp4")
        with open(bogus, "wb") as f:
            f.write(b"this is not a movie\n" * 100)
        nommer = self.make(doc_example(), source=bogus)
        with self.assertRaises(PermanentJobError) as cm:
            await nommer.run()
        self.assertIn("source is not a media file ffprobe could read: file://" + bogus,
                      cm.exception.message)
        self.assertIn("Invalid data found", cm.exception.message)
        self.assertEqual(self.ctx.states, [JobState.DOWNLOADING])
        self.assertEqual(self.ctx.uploads, [])

    @ensure
    async def test_ffmpeg_refuses_the_options(self):
        """ffmpeg exiting non-zero is a permanent error quoting ffmpeg's last lines."""
        nommer = self.make([{"outfile_options": [["vcodec", "nosuchencoder"], ["f", "mp4"]]}])
        with self.assertRaises(PermanentJobError) as cm:
            await nommer.run()
        self.assertIn("ffmpeg failed (exit status", cm.exception.message)
        self.assertIn("nosuchencoder", cm.exception.message)
        self.assertNotIn(self.scratch, cm.exception.message)
        self.assertEqual(self.ctx.states, [JobState.DOWNLOADING, JobState.ENCODING])
        self.assertEqual(self.ctx.uploads, [])

    @ensure
    async def test_invalid_options_at_run(self):
        """Options that slipped past submit are refused again by the worker, before any I/O."""
        nommer = self.make([{"outfile_options": [["i", "/etc/passwd"]]}])
        with self.assertRaises(PermanentJobError) as cm:
            await nommer.run()
        self.assertIn("invalid job options", cm.exception.message)
        self.assertEqual(self.ctx.states, [])

    @ensure
    async def test_no_muxer_at_run(self):
        """No -f and a destination without extension is a permanent error before download."""
        nommer = self.make([{"outfile_options": [["an", None]]}], dest_name="noext")
        with self.assertRaises(PermanentJobError):
            await nommer.run()
        self.assertEqual(self.ctx.states, [])

    @ensure
    async def test_missing_source(self):
        """SourceNotFound from download passes through."""
        nommer = self.make(doc_example(), source=os.path.join(self.root, "missing.mp4"))
        with self.assertRaises(SourceNotFound):
            await nommer.run()

    @ensure
    async def test_cancel_terminates_running_ffmpeg(self):
        """Canceling while ffmpeg runs terminates it and run() raises JobCanceled."""
        ctx_holder = {}
        runners = []

        class CancelRightAfterSpawn(ProcessRunner):
            def start(self):
                d = super().start()
                runners.append(self)
                ctx_holder["ctx"].cancel()
                return d
        self.patch(ffmpeg_run, "ProcessRunner", CancelRightAfterSpawn)
        nommer = self.make(doc_example())
        ctx_holder["ctx"] = self.ctx
        with self.assertRaises(JobCanceled):
            await nommer.run()
        self.assertEqual(len(runners), 1)
        self.assertFalse(runners[0].running)
        self.assertEqual(self.ctx.uploads, [])
        self.assertEqual(self.ctx.states, [JobState.DOWNLOADING, JobState.ENCODING])

    @ensure
    async def test_cancel_between_steps(self):
        """Canceling during download stops the job before ffmpeg ever runs."""
        nommer = self.make(doc_example())
        self.ctx.on_download = self.ctx.cancel
        with self.assertRaises(JobCanceled):
            await nommer.run()
        self.assertEqual(self.ctx.states, [JobState.DOWNLOADING])
        self.assertFalse(os.path.exists(os.path.join(self.scratch, "passlog-0.log")))

    @ensure
    async def test_timeout_is_permanent(self):
        """An ffmpeg run past FFMPEG_TIMEOUT_S is stopped and reported as permanent (the same encode
        would run as long again)."""
        fake_time = ClockTimeReactor()
        settings = media.settings(FFMPEG_TIMEOUT_S=100.0)

        class TimeRunsOut(ProcessRunner):
            def start(self):
                d = super().start()
                fake_time.clock.advance(100.0)
                return d
        nommer = self.make(doc_example(), settings=settings, reactor_=fake_time)
        self.patch(ffmpeg_run, "ProcessRunner", TimeRunsOut)
        with self.assertRaises(PermanentJobError) as cm:
            await nommer.run()
        self.assertIn("ran longer than FFMPEG_TIMEOUT_S", cm.exception.message)
        self.assertEqual(self.ctx.uploads, [])

    @ensure
    async def test_foreign_signal_is_transient(self):
        """ffmpeg killed by a signal we did not send is a transient error."""
        class KilledFromOutside(ProcessRunner):
            def start(self):
                d = super().start()
                os.kill(self._transport.pid, signal.SIGKILL)
                return d
        self.patch(ffmpeg_run, "ProcessRunner", KilledFromOutside)
        nommer = self.make(doc_example())
        with self.assertRaises(TransientJobError) as cm:
            await nommer.run()
        self.assertIn("killed by signal 9", cm.exception.message)

    @ensure
    async def test_missing_ffmpeg_is_transient(self):
        """A worker without the ffmpeg binary gives a transient error."""
        nommer = self.make(doc_example(),
                           settings=media.settings(FFMPEG_BIN="/nonexistent/ffmpeg"))
        with self.assertRaises(TransientJobError):
            await nommer.run()

    @ensure
    async def test_available_encoders(self):
        """ffmpeg -encoders is parsed (libx264 and aac present) and cached."""
        ffmpeg_module._encoders_cache.clear()
        encoders = await ffmpeg_module.available_encoders(reactor, media.settings())
        self.assertIn("libx264", encoders)
        self.assertIn("aac", encoders)
        again = await ffmpeg_module.available_encoders(reactor, media.settings())
        self.assertIs(again, encoders)


class SandboxRoutingTests(NommerCase):
    """Every ffmpeg and ffprobe of a job starts through bwrap (BWRAP_BIN here is a shell script
    logging each call, then running the real bwrap)."""

    @ensure
    async def test_every_launch_goes_through_the_sandbox(self):
        log = os.path.join(self.root, "bwrap-calls")
        wrapper = os.path.join(self.root, "bwrap")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {log}\nexec {shutil.which('bwrap')} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        ffmpeg_module._encoders_cache.clear()
        self.addCleanup(ffmpeg_module._encoders_cache.clear)
        settings = media.settings(BWRAP_BIN=wrapper)
        nommer = self.make(doc_example(), settings=settings)
        await nommer.run()
        self.assertIsNotNone(await ffmpeg_module.available_encoders(reactor, settings))
        with open(log) as f:
            calls = f.read().splitlines()
        # bwrap's options -- [setpriv ... -- (a root worker: nommer.workerd.sandbox)] prlimit ... -- program
        programs = [call.split(" -- ")[-1].split()[:3] for call in calls]
        # ffprobe of the source, two passes, ffprobe of the output, then ffmpeg -encoders:
        # all of them, and nothing else.
        self.assertEqual([os.path.basename(p[0]) for p in programs],
                         ["ffprobe", "ffmpeg", "ffmpeg", "ffprobe", "ffmpeg"], calls)
        self.assertEqual(programs[-1][1:], ["-hide_banner", "-encoders"])
        # A root worker's bwrap has no user namespace: the other namespaces are unshared one by one.
        each = {"--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"}
        self.assertTrue(all(("--unshare-all" in call or each <= set(call.split())) and "--clearenv" in call
                            for call in calls))
        encode = calls[1]
        self.assertIn(f"--bind {self.scratch} {self.scratch}", encode)
        self.assertNotIn(self.root + "/out", encode)

    @ensure
    async def test_no_sandbox_no_job(self):
        """bwrap missing while a job runs: a transient error naming BWRAP_BIN, nothing run bare."""
        nommer = self.make(doc_example(), settings=media.settings(BWRAP_BIN="/nonexistent/bwrap"))
        with self.assertRaises(TransientJobError) as cm:
            await nommer.run()
        self.assertIn("BWRAP_BIN", cm.exception.message)


class CompromisedFFmpegTests(NommerCase):
    """What an ffmpeg running attacker's code in the sandbox leaves in scratch is not trusted:
    the worker, outside the sandbox, never follows it out (FFMPEG_BIN here is a script that
    runs the real ffmpeg, then replaces its output with a symlink, as an exploit could)."""

    def compromised_ffmpeg(self, target, suffix=""):
        """The real ffmpeg, then ``<output><suffix>`` made a symlink to ``target``."""
        script = os.path.join(self.root, "ffmpeg")
        with open(script, "w") as f:
            f.write(f"#!/bin/sh\n{shutil.which('ffmpeg')} \"$@\" || exit $?\n"
                    f"for out; do :; done\nrm -f \"$out{suffix}\"\nln -s {target} \"$out{suffix}\"\n")
        os.chmod(script, 0o755)
        return script

    @ensure
    async def test_symlink_planted_for_faststart_is_not_written_through(self):
        """A symlink left at the name move_atom_to_front writes its temporary file to is
        replaced, not followed: the worker (often root) writes nothing outside scratch."""
        victim = os.path.join(self.root, "victim.txt")
        with open(victim, "w") as f:
            f.write("untouched")
        settings = media.settings(FFMPEG_BIN=self.compromised_ffmpeg(victim, ".faststart"))
        nommer = self.make([{"outfile_options": [["vcodec", "libx264"], ["s", "64x48"]],
                             "move_atom_to_front": True}], settings=settings)
        await nommer.run()
        with open(victim) as f:
            self.assertEqual(f.read(), "untouched")
        self.assertEqual(self.ctx.uploads, [nommer.job.dest_path])

    @ensure
    async def test_symlinked_output_is_not_uploaded(self):
        """Output swapped for a symlink to another job's source (in its scratch dir, outside the
        sandbox): the job fails, the other job's file is neither read nor uploaded."""
        other = os.path.join(self.root, "other-job-scratch")
        os.makedirs(other)
        secret = os.path.join(other, "source")
        shutil.copyfile(media.clip(seconds=1, size="320x240"), secret)
        settings = media.settings(FFMPEG_BIN=self.compromised_ffmpeg(secret))
        nommer = self.make([{"outfile_options": [["vcodec", "libx264"], ["s", "64x48"]]}],
                           settings=settings)
        with self.assertRaises(PermanentJobError) as cm:
            await nommer.run()
        self.assertIn("not a regular file", cm.exception.message)
        self.assertEqual(self.ctx.uploads, [])
        self.assertEqual(os.listdir(self.outdir), [])


class OutputCapTests(NommerCase):
    """-fs MAX_OUTPUT_BYTES and the -t cap on every ffmpeg output, by their effect."""

    def make_capped(self, options, dest_name, **settings):
        argvs = []
        original = ffmpeg_module.FFmpegNommer._run_ffmpeg

        async def recording(nommer, argv, *args, **kwargs):
            argvs.append(argv)
            return await original(nommer, argv, *args, **kwargs)
        self.patch(ffmpeg_module.FFmpegNommer, "_run_ffmpeg", recording)
        nommer = self.make(options, source=media.clip(seconds=1, video=False), dest_name=dest_name,
                           settings=media.settings(**settings))
        return nommer, argvs

    @ensure
    async def test_padding_forever_stops_at_the_duration_cap(self):
        """apad=whole_dur=86400 (a day of silence, which the validator allows) on a 1 s source
        stops at 1 x MAX_OUTPUT_DURATION_FACTOR + 10 s."""
        nommer, argvs = self.make_capped(
            [{"outfile_options": [["af", "apad=whole_dur=86400"], ["acodec", "pcm_s16le"], ["f", "wav"]]}],
            "padded.wav", MAX_OUTPUT_DURATION_FACTOR=2.0)
        output = await nommer.run()
        source_s = float(media.probe_json(media.clip(seconds=1, video=False))["format"]["duration"])
        cap = source_s * 2.0 + ffmpeg_module.OUTPUT_DURATION_SLACK_S
        self.assertAlmostEqual(output["duration_s"], cap, delta=0.1)
        self.assertAlmostEqual(float(media.probe_json(self.dest("padded.wav"))["format"]["duration"]),
                               cap, delta=0.1)
        argv = argvs[0]
        self.assertEqual(argv[-5:-1], ["-fs", str(media.settings().MAX_OUTPUT_BYTES), "-t", f"{cap:.3f}"])

    @ensure
    async def test_output_past_max_output_bytes_is_cut_and_refused(self):
        """-fs: ffmpeg stops writing at MAX_OUTPUT_BYTES; the job fails saying so, nothing uploaded."""
        nommer, argvs = self.make_capped(
            [{"outfile_options": [["af", "apad=whole_dur=60"], ["acodec", "pcm_s16le"], ["f", "wav"]]}],
            "big.wav", MAX_OUTPUT_BYTES=100000)
        with self.assertRaises(PermanentJobError) as cm:
            await nommer.run()
        self.assertIn("MAX_OUTPUT_BYTES (100000 bytes)", cm.exception.message)
        self.assertIn("-fs", argvs[0])
        written = os.path.getsize(os.path.join(self.scratch, "output.wav"))
        self.assertGreaterEqual(written, 100000)
        self.assertLess(written, 100000 + 64 * 1024)  # stopped there: 60 s would be ~5.7 MB
        self.assertEqual(self.ctx.uploads, [])

    def test_caps_keep_a_shorter_job_limit(self):
        """The cap goes last (ffmpeg keeps an output's last -t) and never lengthens the job's
        own -t, nor its -to (turned into the -t it means)."""
        argv = ["ffmpeg", "-i", "in", "-t", "5", "-progress", "pipe:1", "out"]
        capped = ffmpeg_module.output_caps(argv, {"outfile_options": [["t", "5"]]}, max_bytes=9,
                                           max_duration_s=30.0)
        self.assertEqual(capped, argv[:-1] + ["-fs", "9", "-t", "5.000", "out"])
        capped = ffmpeg_module.output_caps(argv, {"outfile_options": [["t", "00:01:00"]]}, max_bytes=9,
                                           max_duration_s=30.0)
        self.assertEqual(capped[-3:], ["-t", "30.000", "out"])
        capped = ffmpeg_module.output_caps(argv, {"outfile_options": [["ss", "2"], ["to", "6"]]},
                                           max_bytes=9, max_duration_s=30.0)
        self.assertEqual(capped[-3:], ["-t", "4.000", "out"])
        capped = ffmpeg_module.output_caps(argv, {"outfile_options": []}, max_bytes=9, max_duration_s=None)
        self.assertEqual(capped[-3:], ["-fs", "9", "out"])
        self.assertEqual(ffmpeg_module.max_output_duration_s(None, 2.0), None)
        self.assertEqual(ffmpeg_module.max_output_duration_s(3.0, 2.0), 16.0)


class FaststartTests(unittest.SynchronousTestCase):
    """faststart_in_place (qtfaststart) on real files."""

    def copy(self, source):
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, os.path.basename(source))
        shutil.copyfile(source, path)
        return path

    def test_moves_moov_then_leaves_it(self):
        """moov goes before mdat; a second run sees it first and changes nothing."""
        path = self.copy(media.clip(seconds=1))
        boxes = media.top_level_boxes(path)
        self.assertGreater(boxes.index("moov"), boxes.index("mdat"))
        self.assertTrue(ffmpeg_module.faststart_in_place(path))
        boxes = media.top_level_boxes(path)
        self.assertLess(boxes.index("moov"), boxes.index("mdat"))
        with open(path, "rb") as f:
            before = f.read()
        self.assertFalse(ffmpeg_module.faststart_in_place(path))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(media.probe_json(path)["streams"][0]["codec_name"], "h264")
        self.assertEqual(os.listdir(os.path.dirname(path)), [os.path.basename(path)])

    def test_not_quicktime(self):
        """A file without moov/mdat atoms is a permanent error."""
        path = self.copy(media.clip(seconds=1, fmt="mkv"))
        with self.assertRaises(PermanentJobError):
            ffmpeg_module.faststart_in_place(path)
