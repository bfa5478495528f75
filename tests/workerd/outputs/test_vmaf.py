"""Finding the VMAF-capable ffmpeg (nommer.workerd.outputs.vmaf), and running it
in the worker's sandbox.

The imageio-ffmpeg wheel (the ``vmaf`` extra, also in the ``test`` extra) is
installed by ``make test``; Debian's ffmpeg has no libvmaf and stands for a
binary without it.
"""

import os
import shutil
import stat
import subprocess

import imageio_ffmpeg
from twisted.internet import reactor

from nommer.workerd.outputs import quality, vmaf
from nommer.workerd.process import ProcessRunner
from nommer.workerd.sandbox import Sandbox
from tests.helpers import ensure
from tests.workerd import media as worker_media
from tests.workerd.outputs.media import make_source
from tests.workerd.test_sandbox import SandboxTestCase

IMAGEIO = os.path.realpath(imageio_ffmpeg.get_ffmpeg_exe())
SYSTEM = os.path.realpath(shutil.which("ffmpeg"))


def settings(**overrides):
    return worker_media.settings(**overrides)


def test_found_automatically_from_the_wheel():
    assert vmaf.find_vmaf_ffmpeg(settings()) == IMAGEIO
    assert vmaf.has_libvmaf(IMAGEIO)


def test_the_setting_wins():
    assert vmaf.find_vmaf_ffmpeg(settings(VMAF_FFMPEG_BIN=IMAGEIO)) == IMAGEIO


def test_a_setting_naming_an_ffmpeg_without_libvmaf_finds_none():
    """Debian's ffmpeg runs but has no libvmaf: None, and the reason names the
    setting; the wheel is not used behind the setting's back."""
    assert not vmaf.has_libvmaf(SYSTEM)
    path, reason = vmaf.search(settings(VMAF_FFMPEG_BIN="/usr/bin/ffmpeg"))
    assert path is None
    assert reason == "VMAF_FFMPEG_BIN (/usr/bin/ffmpeg) has no libvmaf filter"


def test_a_setting_naming_nothing_finds_none(tmp_path):
    missing = str(tmp_path / "no-such-ffmpeg")
    path, reason = vmaf.search(settings(VMAF_FFMPEG_BIN=missing))
    assert path is None
    assert reason == f"VMAF_FFMPEG_BIN ({missing}) is not an executable"


def _fake_ffmpeg(path, filters):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + "".join(f"echo ' .. {name}  VV->V  a filter'\n" for name in filters))
    os.chmod(path, stat.S_IRWXU)


def test_the_answer_is_cached_per_binary(tmp_path, monkeypatch):
    """Asked twice, a binary runs once; replaced (new size and time), it is asked again."""
    fake = str(tmp_path / "ffmpeg")
    _fake_ffmpeg(fake, ["psnr", "libvmaf"])
    runs = []
    real_run = subprocess.run

    def counting_run(argv, **kw):
        runs.append(argv[0])
        return real_run(argv, **kw)
    monkeypatch.setattr(vmaf.subprocess, "run", counting_run)
    assert vmaf.find_vmaf_ffmpeg(settings(VMAF_FFMPEG_BIN=fake)) == os.path.realpath(fake)
    assert vmaf.find_vmaf_ffmpeg(settings(VMAF_FFMPEG_BIN=fake)) == os.path.realpath(fake)
    assert runs == [os.path.realpath(fake)]
    _fake_ffmpeg(fake, ["psnr", "ssim", "not-libvmaf"])
    os.utime(fake, ns=(1, 1))
    assert vmaf.find_vmaf_ffmpeg(settings(VMAF_FFMPEG_BIN=fake)) is None
    assert len(runs) == 2


class VmafInTheSandbox(SandboxTestCase):
    """The wheel's ffmpeg lives in site-packages, outside /usr: the sandbox binds
    that one file (it needs only glibc's libraries from /usr), and it runs as the
    worker runs every ffmpeg (as ``nobody`` when the worker is root)."""

    timeout = 120

    @ensure
    async def test_a_pair_step_runs_sandboxed(self):
        ref = make_source(self.scratch, "ref.mp4", width=320, height=180, duration_s=1, audio=None)
        dist = os.path.join(self.scratch, "dist.mkv")
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", ref, "-vf",
                        "scale=160:90", "-c:v", "libx264", "-crf", "30", dist], check=True)
        log = os.path.join(self.scratch, "q", "pair.json")
        step = quality.pair_step(dist, ref, metrics=["vmaf", "psnr", "ssim"], model="vmaf_v0.6.1",
                                 subsample=1, ffmpeg_bin="ffmpeg", vmaf_bin=IMAGEIO, log_path=log,
                                 ref_width=320, ref_height=180, fps=30, what="sandboxed pair")
        self.assertEqual(step.argv[0], IMAGEIO)
        sandbox = Sandbox(self.settings)
        self.assertIn(IMAGEIO, sandbox.wrap(step.argv, writable=[self.scratch]).argv)
        runner = ProcessRunner(reactor, step.argv, timeout_s=90, kill_grace_s=2.0, sandbox=sandbox,
                               writable=[self.scratch, os.path.dirname(log)],
                               readable=list(step.readable), cwd=self.scratch)
        result = await runner.start()
        self.assertTrue(result.ok, result.stderr_tail)
        pooled = quality.read_log(log, ["vmaf", "psnr", "ssim"])
        self.assertEqual(pooled["frames"], 30)
        self.assertTrue(0 < pooled["vmaf"]["mean"] < 100, pooled)
        self.assertTrue(20 < pooled["psnr_y"] < 60, pooled)
