"""nommer.workerd.probe: ffprobe and summarize, on real files."""

import os
import shutil

from twisted.internet import reactor
from twisted.trial import unittest

from nommer.core.errors import PermanentJobError, TransientJobError
from nommer.workerd import probe
from tests.workerd import media
from tests.helpers import ensure


class FFprobeTests(unittest.TestCase):
    """ffprobe() on real media and on things that are not."""

    timeout = 60

    def write(self, name, data):
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    @ensure
    async def test_probe_and_summarize_a_clip(self):
        """A 2 s 1280x720 H.264/AAC clip is described correctly."""
        path = media.clip(seconds=2)
        info = await probe.ffprobe(reactor, media.settings(), path)
        self.assertEqual({s["codec_type"] for s in info["streams"]}, {"video", "audio"})
        summary = probe.summarize(info)
        self.assertIn("mp4", summary["format_name"])
        self.assertAlmostEqual(summary["duration_s"], 2.0, delta=0.1)
        self.assertEqual(summary["size_bytes"], os.path.getsize(path))
        self.assertIsInstance(summary["bit_rate"], int)
        self.assertEqual(summary["video"], {"codec": "h264", "width": 1280, "height": 720,
                                            "frame_rate": 25.0})
        self.assertEqual(summary["audio"], {"codec": "aac", "sample_rate": 48000,
                                            "channels": 1})

    @ensure
    async def test_audio_only(self):
        """An audio-only file summarizes with video None."""
        info = await probe.ffprobe(reactor, media.settings(), media.clip(seconds=1, video=False,
                                                                         fmt="m4a"))
        summary = probe.summarize(info)
        self.assertIsNone(summary["video"])
        self.assertEqual(summary["audio"]["codec"], "aac")

    @ensure
    async def test_not_media(self):
        """A text file fails with ffprobe's own words and the display name."""
        path = self.write("source", b"hello, I am not a video\n" * 10)
        with self.assertRaises(PermanentJobError) as cm:
            await probe.ffprobe(reactor, media.settings(), path,
                                display_name="file:///in/notes.mp4")
        message = cm.exception.message
        self.assertTrue(message.startswith(
            "source is not a media file ffprobe could read: file:///in/notes.mp4: "), message)
        self.assertIn("Invalid data found when processing input", message)
        self.assertNotIn(path, message)

    @ensure
    async def test_missing_file(self):
        """A file that does not exist is a permanent error naming it."""
        with self.assertRaises(PermanentJobError) as cm:
            await probe.ffprobe(reactor, media.settings(), "/nonexistent/nope.mp4")
        self.assertIn("No such file", cm.exception.message)

    @ensure
    async def test_no_audio_or_video(self):
        """A subtitle-only file (valid for ffprobe) has no audio or video stream."""
        path = self.write("subs", b"1\n00:00:00,000 --> 00:00:01,000\nhello\n\n")
        with self.assertRaises(PermanentJobError) as cm:
            await probe.ffprobe(reactor, media.settings(), path)
        self.assertIn("has no audio or video stream", cm.exception.message)

    @ensure
    async def test_playlist_refused(self):
        """An HLS playlist pointing at local files is refused, not followed."""
        path = self.write("source", b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n"
                                    b"seg.ts\n#EXT-X-ENDLIST\n")
        shutil.copy(media.clip(seconds=1, fmt="ts"), os.path.join(os.path.dirname(path),
                                                                   "seg.ts"))
        with self.assertRaises(PermanentJobError) as cm:
            await probe.ffprobe(reactor, media.settings(), path)
        self.assertIn("playlist (hls)", cm.exception.message)

    @ensure
    async def test_timeout_is_permanent(self):
        """An ffprobe run past its time limit is stopped and a permanent error (as ffmpeg's timeout)."""
        self.patch(probe, "PROBE_TIMEOUT_S", 0.001)  # ffprobe in its sandbox takes far longer to start
        with self.assertRaises(PermanentJobError) as cm:
            await probe.ffprobe(reactor, media.settings(), media.clip(), display_name="file:///in/clip.mp4")
        self.assertEqual(cm.exception.message,
                         "ffprobe took longer than 0.001 s on the source: file:///in/clip.mp4; stopped")

    @ensure
    async def test_missing_ffprobe(self):
        """A worker without ffprobe gives a transient error (another worker may have it)."""
        with self.assertRaises(TransientJobError):
            await probe.ffprobe(reactor, media.settings(FFPROBE_BIN="/nonexistent/ffprobe"),
                                media.clip())


class SummarizeTests(unittest.SynchronousTestCase):
    """summarize() on hand-made probe dicts."""

    def test_odd_values(self):
        """N/A values, cover art and 0/0 rates do not break the summary."""
        summary = probe.summarize({
            "format": {"format_name": "mov,mp4", "duration": "N/A", "size": "100",
                       "bit_rate": "N/A"},
            "streams": [
                {"codec_type": "video", "codec_name": "mjpeg", "width": 600, "height": 600,
                 "disposition": {"attached_pic": 1}, "avg_frame_rate": "0/0"},
                {"codec_type": "video", "codec_name": "h264", "width": 720, "height": 480,
                 "avg_frame_rate": "0/0", "r_frame_rate": "30000/1001", "duration": "3.5"},
                {"codec_type": "audio", "codec_name": "aac", "sample_rate": "44100",
                 "channels": 2, "duration": "3.4"},
            ]})
        self.assertEqual(summary, {
            "format_name": "mov,mp4", "duration_s": 3.5, "size_bytes": 100, "bit_rate": None,
            "video": {"codec": "h264", "width": 720, "height": 480, "frame_rate": 29.97},
            "audio": {"codec": "aac", "sample_rate": 44100, "channels": 2}})

    def test_garbage(self):
        """Something that is not a probe dict gives an all-None summary."""
        summary = probe.summarize(None)
        self.assertEqual(summary["video"], None)
        self.assertEqual(summary["duration_s"], None)
