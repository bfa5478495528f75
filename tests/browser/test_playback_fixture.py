"""The browser harness on a ladder made here with one direct ffmpeg command: headless chromium plays the HLS
master with hls.js and the DASH MPD with dash.js, each rung forced in turn, at the rung's size.

The ladder: 2 H.264 rungs (640x360, 416x234) + 1 AAC rendition, 5 s of testsrc2 + sine, fMP4 segments of 2 s
with a keyframe every second, written once by ffmpeg's dash muxer with ``-hls_playlist 1`` (manifest.mpd and
master.m3u8 over the same segments; media-notes §1.2). This proves the harness; nommer's own ladders are
played by their builders' tests with the same :func:`tests.browser.harness.check_playback`.
"""

import re
import subprocess

import pytest

from tests.browser.harness import H264_AAC_TYPES, VENDOR_DIR, MediaServer, browser_facts, check_playback

RUNGS = [(640, 360), (416, 234)]
DURATION_S = 5


@pytest.fixture(scope="module")
def ladder_dir(tmp_path_factory):
    """A directory holding manifest.mpd, master.m3u8, media_N.m3u8 and their init/chunk .m4s segments."""
    out = tmp_path_factory.mktemp("ladder")
    (w0, h0), (w1, h1) = RUNGS
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={w0}x{h0}:rate=25:duration={DURATION_S}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={DURATION_S}",
        "-filter_complex", f"[0:v]split=2[v0][s];[s]scale={w1}:{h1}[v1]",
        "-map", "[v0]", "-map", "[v1]", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-pix_fmt", "yuv420p",
        "-b:v:0", "400k", "-maxrate:v:0", "440k", "-bufsize:v:0", "800k",
        "-b:v:1", "150k", "-maxrate:v:1", "165k", "-bufsize:v:1", "300k",
        "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-force_key_frames", "expr:gte(t,n_forced*1)",
        "-c:a", "aac", "-b:a", "64k", "-ac", "2",
        "-f", "dash", "-seg_duration", "2", "-use_template", "1", "-use_timeline", "1",
        "-adaptation_sets", "id=0,streams=v id=1,streams=a", "-hls_playlist", "1",
        "-init_seg_name", "init-$RepresentationID$.m4s",
        "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s",
        str(out / "manifest.mpd"),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    for name in ("manifest.mpd", "master.m3u8", "media_0.m3u8", "media_1.m3u8", "init-0.m4s", "init-1.m4s"):
        assert (out / name).is_file(), f"ffmpeg did not write {name}: {sorted(p.name for p in out.iterdir())}"
    return out


@pytest.fixture(scope="module")
def server(ladder_dir):
    with MediaServer(ladder_dir) as srv:
        yield srv


def test_chromium_plays_h264_and_aac_with_the_vendored_players(chromium, server):
    facts = browser_facts(chromium, server)
    assert "Chrome/" in facts["user_agent"], facts
    assert all(facts["supports"][t] for t in H264_AAC_TYPES), facts["supports"]
    readme = (VENDOR_DIR / "README.txt").read_text()
    stated = dict(re.findall(r"^\s+\S+\.js\s+(hls\.js|dashjs)\s+(\d+\.\d+\.\d+)\s", readme, re.M))
    assert stated == {"hls.js": facts["versions"]["hls"], "dashjs": facts["versions"]["dashjs"]}, (
        f"vendor/README.txt states {stated}, the players report {facts['versions']}")


@pytest.mark.parametrize("kind, manifest", [("hls", "master.m3u8"), ("dash", "manifest.mpd")])
def test_each_rung_plays_at_its_size(chromium, server, kind, manifest):
    before = len(server.requests)
    seen = check_playback(chromium, server, kind, server.url(manifest), RUNGS)
    assert [(s["width"], s["height"]) for s in seen] == RUNGS
    for s in seen:
        assert s["sizes"] == [f"{s['width']}x{s['height']}"]
        assert s["currentTime"] >= 1.0
    assert sorted(s["index"] for s in seen) == [0, 1]
    assert not server.failed_requests(since=before), server.failed_requests(since=before)


def test_a_ladder_of_other_sizes_fails_with_the_players_levels(chromium, server):
    with pytest.raises(AssertionError) as caught:
        check_playback(chromium, server, "hls", server.url("master.m3u8"), [(640, 360), (426, 240)])
    message = str(caught.value)
    assert "the player's video levels are" in message and "(416, 234)" in message, message
    assert "page state:" in message, message


def test_a_missing_manifest_fails_with_the_players_error_and_the_404(chromium, server):
    with pytest.raises(AssertionError) as caught:
        check_playback(chromium, server, "dash", server.url("absent.mpd"), RUNGS, timeout_s=10)
    message = str(caught.value)
    assert "the player gave up" in message, message
    assert "HTTP 404 for GET /absent.mpd" in message, message
