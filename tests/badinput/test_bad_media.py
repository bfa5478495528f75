"""Bad media through a real feederd and real workers: every file is made in
the test (cut, stripped, patched or written by hand), submitted with a preset,
and must end in ERROR with a reason a person understands (the test names the
words) or FINISHED when ffmpeg can make something of it (the test says which),
within a bounded time: FFMPEG_TIMEOUT_S is 20 s, MAX_JOB_ATTEMPTS 1.

Files that name other files (an HLS playlist, an ffconcat list) and a filter
hiding ``movie=`` behind escapes point at *named pipes* ("tripwires"): opening
one for reading is observable, so the test proves the worker never opened the
file they name, not only that the job ended in ERROR.
"""

import json
import os
import random
import shutil
import struct
import subprocess
import threading
import time

import pytest

from nommer.client import presets
from tests.badinput.conftest import assert_alive_and_clean, start_feederd, wait_final
from tests.workerd.media import clip, mp4_boxes, probe_json, top_level_boxes

FFMPEG_TIMEOUT_S = 20.0
KILL_GRACE_S = 2.0
#: Longest a job may run from DOWNLOADING to its end: probe, two passes at the
#: timeout, the kill grace, upload; anything longer is a hang.
MAX_RUN_S = 2 * (FFMPEG_TIMEOUT_S + KILL_GRACE_S) + 15
#: Longest a test waits for its job (jobs share two workers).
WAIT_S = 240


class Tripwire:
    """A named pipe that records whether anything opened it for reading."""

    def __init__(self, path):
        os.mkfifo(path)
        self.path = path
        self.opened = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self):
        fd = os.open(self.path, os.O_WRONLY)  # returns once a reader opens the pipe
        if not self._closing:
            self.opened.set()
        os.close(fd)

    def close(self):
        self._closing = True
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # releases the writer
        self._thread.join(5)
        os.close(fd)


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                   check=True, capture_output=True, timeout=120)


class MediaMaker:
    """Writes each bad file into ``media_dir``; returns its path."""

    def __init__(self, media_dir):
        self.dir = media_dir
        os.makedirs(media_dir, exist_ok=True)
        self.base = self.copy(clip(seconds=2, size="320x240"), "base.mp4")  # moov after mdat
        self.faststart = self.path("faststart.mp4")
        ffmpeg("-i", self.base, "-c", "copy", "-movflags", "+faststart", self.faststart)
        self.tripwires = {}

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def copy(self, src, name):
        shutil.copy(src, self.path(name))
        return self.path(name)

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def tripwire(self, name):
        wire = Tripwire(self.path(name))
        self.tripwires[name] = wire
        return wire.path

    # --- the files -------------------------------------------------------------

    def zero_bytes(self):
        return self.write("zero.mp4", b"")

    def truncated_half(self):
        data = self.read(self.base)
        assert mp4_boxes(self.base)[-1][0] == "moov"  # the cut loses the moov
        return self.write("truncated.mp4", data[:len(data) // 2])

    def moov_stripped(self):
        data = self.read(self.base)
        kept = [data[pos:pos + size] for kind, pos, size in mp4_boxes(self.base) if kind != "moov"]
        return self.write("nomoov.mp4", b"".join(kept))

    def truncated_faststart(self):
        data = self.read(self.faststart)
        kinds = top_level_boxes(self.faststart)
        assert kinds.index("moov") < kinds.index("mdat")
        return self.write("truncated_faststart.mp4", data[:len(data) // 2])

    def text_named_mp4(self):
        return self.write("notes.mp4", b"Meeting notes: this is not a video.\n" * 40)

    def wav_named_mp4(self):
        wav = self.path("tone.wav")
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1", wav)
        return self.copy(wav, "tone_wav.mp4")

    def audio_only_m4a(self):
        return self.copy(clip(seconds=1, video=False, fmt="m4a"), "audio_only.m4a")

    def video_only_mp4(self):
        return self.copy(clip(seconds=1, size="320x240", audio=False), "silent.mp4")

    def y4m_huge_dimensions(self):
        return self.write("huge.y4m.mp4", b"YUV4MPEG2 W60000 H60000 F25:1 Ip A1:1 C420jpeg\nFRAME\n"
                          + b"\x80" * 4096)

    def y4m_zero_dimensions(self):
        return self.write("zero_size.mp4", b"YUV4MPEG2 W0 H0 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 64)

    def jpeg_huge_dimensions(self):
        jpg = self.path("small.jpg")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", jpg)
        data = bytearray(self.read(jpg))
        sof = data.find(b"\xff\xc0")
        assert sof > 0
        struct.pack_into(">HH", data, sof + 5, 60000, 60000)  # SOF0: height, width
        return self.write("huge_jpeg.mp4", bytes(data))

    def corrupt_middle(self):
        data = bytearray(self.read(self.faststart))
        rnd, mid = random.Random(1234), len(data) // 2
        for i in range(mid, mid + 4000):
            data[i] = rnd.randrange(256)
        return self.write("corrupt_middle.mp4", bytes(data))

    def png_image(self):
        png = self.path("still.png")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", png)
        return png

    def animated_gif(self):
        gif = self.path("anim.gif")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=5", "-t", "1", gif)
        return gif

    def mkv_no_frames(self):
        mkv = self.path("no_frames.mkv")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "0", "-c:v", "libx264", mkv)
        return mkv

    def mkv_ebml_header_only(self):
        # EBML header (DocType "matroska") and nothing else: no Segment.
        return self.write("header_only.mkv", bytes.fromhex(
            "1a45dfa39f4286810142f7810142f2810442f381084282886d6174726f736b61428781044285810200"))

    def random_bytes(self):
        return self.write("random.mp4", random.Random(99).randbytes(200_000))

    def elf_binary(self):
        return self.copy(shutil.which("true") or "/bin/true", "program.mp4")

    def subtitles_only(self):
        return self.write("subs.mp4", b"1\n00:00:00,000 --> 00:00:01,000\nhello\n\n"
                                      b"2\n00:00:01,000 --> 00:00:02,000\nworld\n")

    def sdp_session(self):
        return self.write("session.mp4", b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\n"
                                         b"t=0 0\nm=video 9 RTP/AVP 96\na=rtpmap:96 H264/90000\n")

    def wav_lying_length(self):
        tone = self.path("tone2.wav")
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1", tone)
        wav = bytearray(self.read(tone))
        data = wav.find(b"data")
        struct.pack_into("<I", wav, data + 4, 0x7FFFFFF0)  # claims ~2 GiB of samples
        return self.write("lying.wav", bytes(wav))

    def hls_playlist_local(self):
        wire = self.tripwire("secret_hls.ts")
        return self.write("list.m3u8", f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{wire}\n"
                                       "#EXT-X-ENDLIST\n".encode())

    def hls_playlist_bom_id3(self):
        wire = self.tripwire("secret_hls2.ts")
        id3 = b"ID3\x04\x00\x00\x00\x00\x00\x04" + b"\x00" * 4
        return self.write("list2.mp4", id3 + b"\xef\xbb\xbf" + f"#EXTM3U\n#EXTINF:2,\n{wire}\n"
                                                                  "#EXT-X-ENDLIST\n".encode())

    def ffconcat_local(self):
        wire = self.tripwire("secret_concat.ts")
        return self.write("list.ffconcat.mp4", f"ffconcat version 1.0\nfile {wire}\n".encode())

    def dash_manifest_local(self):
        wire = self.tripwire("secret_dash.mp4")
        return self.write("manifest.mpd.mp4", (
            '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'mediaPresentationDuration="PT2S" minBufferTime="PT1S" '
            'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period><AdaptationSet '
            f'mimeType="video/mp4"><Representation id="1" bandwidth="1000"><BaseURL>file://{wire}'
            '</BaseURL></Representation></AdaptationSet></Period></MPD>\n').encode())

    def timestamp_bomb(self):
        # 3 frames, the last stamped at 10 hours: 4 KB that decode to ~900k frames at 25 fps.
        bomb = self.path("bomb.mkv")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=1:duration=3",
               "-vf", "setpts=if(eq(N\\,2)\\,36000/TB\\,PTS)", "-fps_mode", "passthrough",
               "-c:v", "libx264", "-preset", "ultrafast", bomb)
        return bomb


def filter_escape_movie(wire):
    """A pass whose scale filter hides ``movie=<wire>`` behind a backslash-escaped comma."""
    return [{"outfile_options": [["vf", f"scale=640:-2\\,movie={wire}"], ["c:v", "libx264"],
                                 ["preset", "ultrafast"], ["f", "mp4"]]}]


def filter_quoted_movie(wire):
    """A pass whose scale expression holds ``,movie=<wire>`` inside quotes."""
    return [{"outfile_options": [["vf", f"scale=w='320,movie={wire}':h=-2"], ["c:v", "libx264"],
                                 ["preset", "ultrafast"], ["f", "mp4"]]}]


ERROR, FINISHED = "ERROR", "FINISHED"
# (id, maker method, preset or options factory, expected state, words in job_state_details)
CASES = [
    ("zero-bytes", "zero_bytes", "web-640", ERROR, ["not a media file", "Invalid data"]),
    ("truncated-half", "truncated_half", "web-640", ERROR, ["not a media file", "moov atom not found"]),
    ("moov-stripped", "moov_stripped", "web-640", ERROR, ["moov atom not found"]),
    ("truncated-faststart", "truncated_faststart", "web-640", FINISHED, []),
    ("text-named-mp4", "text_named_mp4", "web-640", ERROR, ["not a media file", "Invalid data"]),
    ("wav-named-mp4-video-preset", "wav_named_mp4", "web-640", ERROR,
     ["nothing to encode", "audio but no video"]),
    ("wav-named-mp4-audio-preset", "wav_named_mp4", "audio-aac", FINISHED, []),
    ("audio-only-video-preset", "audio_only_m4a", "web-640", ERROR, ["nothing to encode", "audio but no video"]),
    ("video-only-audio-preset", "video_only_mp4", "audio-aac", ERROR, ["nothing to encode", "video but no audio"]),
    ("y4m-60000x60000", "y4m_huge_dimensions", "web-640", ERROR, ["60000x60000", "invalid"]),
    ("y4m-0x0", "y4m_zero_dimensions", "web-640", ERROR, ["0x0", "invalid"]),
    ("jpeg-60000x60000", "jpeg_huge_dimensions", "web-640", ERROR, ["60000x60000", "invalid"]),
    ("corrupt-middle", "corrupt_middle", "web-640", FINISHED, []),
    ("png-image", "png_image", "web-640", FINISHED, []),
    ("png-image-audio-preset", "png_image", "audio-aac", ERROR, ["nothing to encode", "video but no audio"]),
    ("animated-gif", "animated_gif", "web-640", FINISHED, []),
    ("mkv-no-frames", "mkv_no_frames", "web-640", ERROR, ["not a media file"]),
    ("mkv-header-only", "mkv_ebml_header_only", "web-640", ERROR, ["not a media file"]),
    ("random-bytes", "random_bytes", "web-640", ERROR, ["not a media file", "Invalid data"]),
    ("elf-binary", "elf_binary", "web-640", ERROR, ["not a media file", "Invalid data"]),
    ("subtitles-only", "subtitles_only", "web-640", ERROR, ["no audio or video stream"]),
    ("sdp-session", "sdp_session", "web-640", ERROR, ["not a media file"]),
    ("wav-lying-length", "wav_lying_length", "audio-aac", FINISHED, []),
    ("hls-playlist", "hls_playlist_local", "web-640", ERROR, ["playlist (hls)", "may not read"]),
    ("hls-playlist-id3-bom", "hls_playlist_bom_id3", "web-640", ERROR, ["playlist (hls)"]),
    ("ffconcat-list", "ffconcat_local", "web-640", ERROR, ["playlist (concat)"]),
    ("dash-manifest", "dash_manifest_local", "web-640", ERROR, ["playlist (dash)"]),
    ("filter-escaped-movie", ("tripwire", "secret_filter1.mp4", filter_escape_movie), None, ERROR, ["ffmpeg"]),
    ("filter-quoted-movie", ("tripwire", "secret_filter2.mp4", filter_quoted_movie), None, ERROR, ["ffmpeg"]),
    ("timestamp-bomb", "timestamp_bomb", "web-640", ERROR, ["FFMPEG_TIMEOUT_S", "stopped"]),
]


@pytest.fixture(scope="module")
def daemon(root):
    feederd = start_feederd(root, FFMPEG_TIMEOUT_S=FFMPEG_TIMEOUT_S, FFMPEG_KILL_GRACE_S=KILL_GRACE_S,
                            MAX_JOB_ATTEMPTS=1, MAX_NUM_WORKERS=2)
    yield feederd
    feederd.stop()


@pytest.fixture(scope="module")
def submitted(daemon, root):
    """Make every file and submit every case at once (two workers share them).
    Yields (case id -> job id, case id -> its tripwires); tripwires are closed
    at the end."""
    maker = MediaMaker(os.path.join(root, "media"))
    jobs, wires = {}, {}
    for case_id, make, preset, _state, _words in CASES:
        before = set(maker.tripwires)
        if isinstance(make, tuple):  # a clip with options aimed at a tripwire
            _, wire_name, options_for = make
            source = maker.copy(clip(seconds=1, size="320x240"), f"{case_id}.mp4")
            job_options = {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
                           "options": options_for(maker.tripwire(wire_name))}
        else:
            source = getattr(maker, make)()
            job_options = presets.get(preset)
        dest = os.path.join(root, "out", f"{case_id}.mp4")
        jobs[case_id] = daemon.client.submit(f"file://{source}", f"file://{dest}", job_options)
        wires[case_id] = [maker.tripwires[name] for name in sorted(set(maker.tripwires) - before)]
    yield jobs, wires
    for wire in maker.tripwires.values():
        wire.close()


def test_case_count():
    """At least 15 distinct bad media files (and presets) are exercised."""
    assert len(CASES) >= 15
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_media_ends_with_a_reason(daemon, root, submitted, case):
    """One bad file: ERROR with the named words, or FINISHED with a playable output, within the time limit."""
    case_id, _make, _preset, state, words = case
    jobs, wires = submitted
    job = wait_final(daemon, jobs[case_id], WAIT_S)
    for wire in wires[case_id]:
        assert not wire.opened.is_set(), f"the worker opened {wire.path}, which the job named"
    details = job["job_state_details"] or ""
    assert job["job_state"] == state, json.dumps(job, indent=1)
    for word in words:
        assert word in details, (word, details)
    assert "Traceback" not in details and 'File "' not in details, details
    assert job["attempts"] == 1, job
    if job["started_at"] and job["finished_at"]:
        ran = _seconds(job["finished_at"]) - _seconds(job["started_at"])
        assert ran < MAX_RUN_S, f"{case_id} ran {ran:.0f} s"
    dest = os.path.join(root, "out", f"{case_id}.mp4")
    if state == FINISHED:
        out = probe_json(dest)
        assert float(out["format"]["duration"]) > 0
        assert job["output"]["size_bytes"] == os.path.getsize(dest)
    else:
        assert not os.path.exists(dest), f"an ERROR job left {dest}"


def test_finished_outputs_are_what_was_expected(daemon, root, submitted):
    """The FINISHED ones made sense: the half-cut faststart file encodes its first part only,
    the still image a one-frame 640-wide video, the WAV an AAC track."""
    jobs, _ = submitted
    half = wait_final(daemon, jobs["truncated-faststart"], WAIT_S)["output"]
    assert 0 < half["duration_s"] < 1.9, half
    assert half["video"]["width"] == 640
    png = wait_final(daemon, jobs["png-image"], WAIT_S)["output"]
    assert png["video"]["width"] == 640 and png["audio"] is None and png["duration_s"] < 0.2, png
    wav = wait_final(daemon, jobs["wav-named-mp4-audio-preset"], WAIT_S)["output"]
    assert wav["video"] is None and wav["audio"]["codec"] == "aac", wav
    corrupt = wait_final(daemon, jobs["corrupt-middle"], WAIT_S)["output"]
    assert corrupt["duration_s"] == pytest.approx(2.0, abs=0.2), corrupt


def test_named_pipe_source_does_not_hang(daemon, root):
    """A source that is a named pipe (nothing ever writes it) ends in ERROR quickly, not DOWNLOADING forever."""
    pipe = os.path.join(root, "media", "pipe.mp4")
    os.makedirs(os.path.dirname(pipe), exist_ok=True)
    os.mkfifo(pipe)
    job_id = daemon.client.submit(f"file://{pipe}", f"file://{root}/out/pipe.mp4", presets.get("web-640"))
    try:
        job = wait_final(daemon, job_id, 15)
        assert job["job_state"] == "ERROR" and "not a regular file" in job["job_state_details"], job
    finally:
        # Release a worker thread stuck in open(): a writer comes and goes (EOF).
        deadline = time.monotonic() + 60
        while daemon.client.get(job_id)["job_state"] not in ("ERROR", "FINISHED", "CANCELED", "ABANDONED"):
            assert time.monotonic() < deadline, "the stuck download was not released"
            try:
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # no reader yet
            time.sleep(0.2)


def test_daemon_alive_and_log_clean(daemon, submitted):
    """After all the bad media, GET /health is 200, no job is left running and the log holds no traceback."""
    jobs, _ = submitted
    for job_id in jobs.values():
        wait_final(daemon, job_id, WAIT_S)
    assert_alive_and_clean(daemon)


def _seconds(iso):
    from datetime import datetime
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
