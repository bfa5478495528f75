"""One sandboxed ffmpeg run and what its end means for the job.

``run_ffmpeg`` is the one place a nommer starts ffmpeg on a job: in the
worker's sandbox (the job's scratch dir writable, its inputs readable), with
FFMPEG_TIMEOUT_S and the kill grace, ``-progress`` blocks turned into a
fraction 0..1 of ``expected_s``, and the end mapped onto the job's errors:

* ``JobCanceled``: the run was stopped (cancel, lease lost, shutdown);
* ``NoScratchSpace``: the scratch disk filled up (another worker may have room);
* ``TransientJobError``: a signal we did not send, lack of memory, the
  sandbox failing to start, ffmpeg missing;
* ``PermanentJobError``: anything else (exit status != 0, FFMPEG_TIMEOUT_S,
  an rlimit hit); the message ends with ffmpeg's last stderr lines, local
  paths replaced by names safe to show (``names``).
"""

import os
import signal

from nommer.core.errors import JobCanceled, PermanentJobError, TransientJobError
from nommer.workerd.nommers import ffmpeg_options as opts
from nommer.workerd.nommers.base import NoScratchSpace, says_no_space
from nommer.workerd.process import ProcessRunner
from nommer.workerd.sandbox import Sandbox, sandbox_failure

#: How many of ffmpeg's last stderr lines go into an error message.
ERROR_TAIL_LINES = 12
#: Most characters of ffmpeg output in an error message.
ERROR_TAIL_CHARS = 2000
#: stderr text that means the machine, not the job, is at fault.
_TRANSIENT_MARKERS = ("Cannot allocate memory",)
#: ffmpeg's words when the options leave the output without any stream.
_NO_STREAM_MARKER = "does not contain any stream"


def tail(text, lines=ERROR_TAIL_LINES, chars=ERROR_TAIL_CHARS):
    """The last ``lines`` non-blank lines of ``text``, at most ``chars`` characters."""
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept)[-chars:]


def describe_kinds(kinds):
    """"the source has audio but no video" and the like, from stream kinds."""
    kinds = {k for k in kinds if k in ("audio", "video")}
    if kinds == {"audio"}:
        return "the source has audio but no video"
    if kinds == {"video"}:
        return "the source has video but no audio"
    return "the source has " + (" and ".join(sorted(kinds)) or "no audio or video")


def _microseconds(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def progress_fraction(block, expected_s):
    """Fraction 0..1 of a run done, from one ``-progress`` block (dict of
    str), or None when it cannot be told (no time, ``expected_s`` unknown).
    ``progress=end`` is 1.0."""
    if block.get("progress") == "end":
        return 1.0
    us = _microseconds(block.get("out_time_us"))
    if us is None:  # out_time_ms holds microseconds too (an old ffmpeg quirk)
        us = _microseconds(block.get("out_time_ms"))
    seconds = us / 1e6 if us is not None else opts.parse_time(block.get("out_time"))
    if seconds is None or not expected_s:
        return None
    return min(max(seconds / expected_s, 0.0), 1.0)


class FFmpegRun:
    """One ffmpeg run of job ``job_id`` (see the module docstring).

    :param on_fraction: called with the fraction 0..1 done (float) as
        ``-progress`` blocks arrive.
    :param names: ``{local path: name safe to show}`` for error messages.
    :param source_kinds: the source's stream kinds (``{"audio", "video"}``),
        to say why a run had nothing to encode.
    :param work_dirs: directories under ``scratch_dir`` the run writes into
        besides it (a root worker gives them to the sandbox user too:
        ``Sandbox.prepare``).
    """

    def __init__(self, reactor, settings, job_id, argv, *, scratch_dir, readable, expected_s=None,
                 on_fraction=None, names=None, source_kinds=(), where="ffmpeg", work_dirs=()):
        self.reactor = reactor
        self.settings = settings
        self.job_id = job_id
        self.argv = argv
        self.scratch_dir = os.path.abspath(scratch_dir)
        self.readable = [os.path.abspath(p) for p in readable]
        self.expected_s = expected_s
        self.on_fraction = on_fraction
        self.names = dict(names or {})
        self.source_kinds = set(source_kinds)
        self.where = where
        self.writable = [self.scratch_dir] + [os.path.abspath(d) for d in work_dirs]
        self.stopped = False
        self._runner = None

    def terminate(self):
        """Stop the run now (the job was canceled); ``run()`` raises ``JobCanceled``."""
        self.stopped = True
        if self._runner is not None:
            self._runner.terminate()

    def _on_block(self, block):
        fraction = progress_fraction(block, self.expected_s)
        if fraction is not None and self.on_fraction is not None:
            self.on_fraction(fraction)

    async def run(self):
        """Run ffmpeg; return its ``ProcessResult`` when it succeeded, else
        raise (see the module docstring)."""
        settings = self.settings
        if self.stopped:
            raise JobCanceled(f"job {self.job_id} was stopped before ffmpeg ran")
        self._runner = ProcessRunner(
            self.reactor, self.argv, timeout_s=settings.FFMPEG_TIMEOUT_S,
            kill_grace_s=settings.FFMPEG_KILL_GRACE_S, on_progress_line=self._on_block,
            cwd=self.scratch_dir, log_fields={"job_id": self.job_id}, sandbox=Sandbox(settings),
            writable=self.writable, readable=self.readable)
        try:
            result = await self._runner.start()
        except OSError as e:
            raise TransientJobError(f"cannot run ffmpeg ({settings.FFMPEG_BIN}): {e}") from e
        finally:
            self._runner = None
        if self.stopped or result.terminated:
            raise JobCanceled(f"job {self.job_id} was stopped while ffmpeg ran")
        if result.ok:
            return result
        raise self._failure(result)

    def _failure(self, result):
        settings, where = self.settings, self.where
        broken = sandbox_failure(result)
        if broken:
            return TransientJobError(f"the ffmpeg sandbox failed to start: {broken}")
        said = tail(result.stderr_tail)
        for path, name in self.names.items():
            said = said.replace(path, name)
        if result.timed_out:
            # Permanent: the same encode would run as long again (each retry up to 6 h).
            return PermanentJobError(
                f"{where} ran longer than FFMPEG_TIMEOUT_S = {settings.FFMPEG_TIMEOUT_S:g} s; stopped")
        if result.signal == signal.SIGXFSZ:
            return PermanentJobError(f"{where} wrote a file larger than FFMPEG_RLIMIT_FSIZE_BYTES "
                                     f"({settings.FFMPEG_RLIMIT_FSIZE_BYTES} bytes) and was stopped")
        if result.signal == signal.SIGXCPU:
            return PermanentJobError(f"{where} used more than FFMPEG_RLIMIT_CPU_S "
                                     f"({settings.FFMPEG_RLIMIT_CPU_S} s) of CPU time and was stopped")
        if result.signal is not None:
            return TransientJobError(f"{where} was killed by signal {result.signal}:\n{said}")
        if says_no_space(said):
            return NoScratchSpace(f"{where} ran out of scratch space:\n{said}")
        if any(marker in said for marker in _TRANSIENT_MARKERS):
            return TransientJobError(f"{where} failed for lack of resources:\n{said}")
        if _NO_STREAM_MARKER in said:
            # Badinput: say in words why (a video preset on an audio-only file).
            return PermanentJobError(
                f"{where} failed: nothing to encode: {describe_kinds(self.source_kinds)}, "
                "and the options keep none of its streams (a video preset on an audio-only "
                f"source, or an audio preset on a silent video?); its last output:\n{said}")
        return PermanentJobError(
            f"{where} failed (exit status {result.exit_code}); its last output:\n{said}")
