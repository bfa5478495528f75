"""FFmpegNommer: the original media-nommer's ffmpeg nommer, job format kept.

``job.job_options`` is a list of 1 or 2 pass objects (see
``nommer.workerd.nommers.ffmpeg_options``). ``run()``:

1. normalizes the options again (the worker trusts nothing it did not check);
2. DOWNLOADING (stored by the worker as it took the job): fetches the job's
   source (``download_source``: the context's, which unseals the job's own
   URI) into the scratch dir as ``source`` (no extension: ffmpeg detects the
   format by content), ffprobes it and fails fast (``PermanentJobError``) if
   it is not media;
3. ENCODING: runs each pass with ``ffmpeg_run.FFmpegRun`` in the worker's sandbox
   (``nommer.workerd.sandbox``: only the scratch dir writable, the source
   readable; cwd and ``-passlogfile`` in the scratch dir; pass 1 of 2 writes
   to ``/dev/null``), with the output caps (``output_caps``: ``-fs
   MAX_OUTPUT_BYTES``, and ``-t`` at MAX_OUTPUT_DURATION_FACTOR times the
   source's duration plus 10 s when it is known), reporting
   progress 0..100 over all passes; then moves the moov atom to the front
   with qtfaststart (in a thread) if any pass asks for
   ``move_atom_to_front`` and the muxer is a QuickTime one; ffprobes the
   result (before uploading anything);
4. UPLOADING: uploads the output to the job's destination
   (``upload_result``, the context's likewise);
5. returns ``probe.summarize()`` of the output.

Errors: ``PermanentJobError`` for what a retry cannot fix (bad options, not
media, ffmpeg exit status != 0: the message ends with ffmpeg's last stderr
lines; an output cut at MAX_OUTPUT_BYTES; a resource limit hit; an encode
running longer than FFMPEG_TIMEOUT_S);
``NoScratchSpace`` (the worker releases the job to another worker) when the
scratch disk fills up; ``TransientJobError`` for a signal we did not send,
lack of memory or a missing ffmpeg; ``JobCanceled`` once ``cancel()`` was
called.
"""

import errno
import os
import stat

from twisted.internet import threads

from nommer.core.errors import InvalidJobSpec, PermanentJobError, TransientJobError
from nommer.core.states import JobState
from nommer.core.uri import redact_uri
from nommer.workerd import probe
from nommer.workerd.nommers import ffmpeg_argv, ffmpeg_values
from nommer.workerd.nommers import ffmpeg_options as opts
from nommer.workerd.nommers.base import BaseNommer, NoScratchSpace
from nommer.workerd.nommers.ffmpeg_run import FFmpegRun
from nommer.workerd.process import run_process
from nommer.workerd.sandbox import Sandbox

#: Seconds an output may last beyond MAX_OUTPUT_DURATION_FACTOR x the source's.
OUTPUT_DURATION_SLACK_S = 10.0

_encoders_cache = {}



async def available_encoders(reactor, settings):
    """Names of the encoders ``settings.FFMPEG_BIN`` has (frozenset of str),
    from ``ffmpeg -encoders``; cached per binary. None if it cannot be told."""
    binary = settings.FFMPEG_BIN
    if binary in _encoders_cache:
        return _encoders_cache[binary]
    try:
        result = await run_process(reactor, [binary, "-hide_banner", "-encoders"],
                                   timeout_s=60.0, kill_grace_s=settings.FFMPEG_KILL_GRACE_S,
                                   sandbox=Sandbox(settings))
    except OSError:
        return None
    if not result.ok or not result.stdout:
        return None
    names, started = set(), False
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        if line.strip().startswith("------"):
            started = True
            continue
        parts = line.split()
        if started and len(parts) >= 2:
            names.add(parts[1])
    _encoders_cache[binary] = frozenset(names)
    return _encoders_cache[binary]


def max_output_duration_s(source_duration_s, factor):
    """Longest output (seconds) a source of ``source_duration_s`` may give:
    ``factor`` x its duration + OUTPUT_DURATION_SLACK_S; None when the
    duration is unknown (or not positive)."""
    if not source_duration_s or source_duration_s <= 0:
        return None
    return source_duration_s * float(factor) + OUTPUT_DURATION_SLACK_S


def output_caps(argv, pass_opts, *, max_bytes, max_duration_s):
    """``argv`` (from ``ffmpeg_argv.build_argv``, output path last) with
    the worker's caps on its output, inserted just before the output path,
    after every option of the job, so that ffmpeg (the last of an output's
    repeated options wins) applies them:

    * ``-fs max_bytes``: ffmpeg stops writing at that size;
    * ``-t D`` when ``max_duration_s`` is given: D is the smallest of
      ``max_duration_s`` and the job's own output ``-t`` (or ``-to`` minus
      its output ``-ss``), so a job's shorter limit still holds while a
      padding filter (``apad``, ``tpad``, ``loop``) cannot write forever.

    Pure: returns a new list.
    """
    argv = list(argv)
    caps = ["-fs", str(int(max_bytes))]
    if max_duration_s is not None:
        given = {}
        for flag, value in pass_opts.get("outfile_options", ()):
            if flag in ("t", "to", "ss"):
                seconds = opts.parse_time(value)
                if seconds is not None:
                    given[flag] = min(seconds, given.get(flag, seconds))
        limits = [float(max_duration_s)]
        if "t" in given:
            limits.append(given["t"])
        elif "to" in given:  # -t overrides -to: keep the job's -to as the -t it means
            limits.append(given["to"] - max(given.get("ss", 0.0), 0.0))
        caps += ["-t", f"{max(min(limits), 0.0):.3f}"]
    return argv[:-1] + caps + argv[-1:]


def sandboxed_output_size(path):
    """Size of ``path``, a file sandboxed ffmpeg or ffprobe could change, once none of
    them runs. ``PermanentJobError`` unless it is a regular file itself: code run in the
    sandbox (an exploited decoder) could leave a symlink there, pointing at what only
    the worker can read (another job's scratch, DATA_DIR); the worker, outside the
    sandbox, would follow it and upload that file."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise PermanentJobError(f"ffmpeg left no output file: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PermanentJobError("the output ffmpeg left is not a regular file (a symlink or "
                                "other file put there in the sandbox): nothing uploaded")
    return st.st_size


def _moov_before_mdat(index):
    names = [atom.name for atom in index]
    return "moov" in names and "mdat" in names and names.index("moov") < names.index("mdat")


def faststart_in_place(path):
    """Move the moov atom of the MP4/MOV file ``path`` before its mdat
    (qtfaststart), replacing the file. Blocking: run it in a thread.

    Returns True if the file was rewritten, False if the moov atom was
    already first. Raises ``PermanentJobError`` if the file has no
    moov/mdat atoms.
    """
    from qtfaststart import processor
    from qtfaststart.exceptions import FastStartException

    try:
        with open(path, "rb") as f:
            index = processor.get_index(f)
    except (FastStartException, OSError) as e:
        raise PermanentJobError(
            f"move_atom_to_front: the output has no moov/mdat atoms to reorder ({e!r})") from e
    free_before_mdat = any(a.name == "free" for a in index[:[a.name for a in index].index("mdat")])
    if _moov_before_mdat(index) and not free_before_mdat:
        return False
    tmp = path + ".faststart"
    try:
        # Whatever the sandbox left at that name (a symlink out of scratch) goes first:
        # process() opens it for writing, and nothing sandboxed runs now to put it back.
        if os.path.lexists(tmp):
            os.unlink(tmp)
        processor.process(path, tmp)
    except FastStartException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _moov_before_mdat(index):  # "already set up for streaming"
            return False
        raise PermanentJobError(f"move_atom_to_front failed on the output ({e!r})") from e
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoScratchSpace(f"move_atom_to_front ran out of scratch space: {e.strerror}") from e
        raise TransientJobError(f"move_atom_to_front failed: {e.strerror or e}") from e
    os.replace(tmp, path)
    return True




class FFmpegNommer(BaseNommer):
    """Encodes with ffmpeg from the 2011 pass-list job format."""

    @classmethod
    def validate_options(cls, options, settings, *, dest_path=None,
                         field="job_options.options"):
        """Normalized list of pass objects (see
        ``ffmpeg_options.validate_passes``), or ``InvalidJobSpec``.

        ``settings`` is not used (accepted for the contract). When
        ``dest_path`` is given and no ``-f`` is, the muxer must be inferable
        from the destination's extension.
        """
        return opts.validate_passes(options, field=field, dest_path=dest_path)

    def __init__(self, job, context):
        super().__init__(job, context)
        self._runner = None
        self._progress = 0.0
        self._source_kinds = set()

    def on_cancel(self):
        if self._runner is not None:
            self._runner.terminate()

    # -- run --------------------------------------------------------------------

    async def run(self):
        """Download, probe, encode, faststart, probe, upload; return
        ``probe.summarize()`` of the output (dict). See the module docstring
        for the errors raised."""
        job_id = self.job.job_id
        try:
            passes = opts.validate_passes(self.job.job_options)
        except InvalidJobSpec as e:
            raise PermanentJobError(f"invalid job options: {e.message}") from e
        muxer = opts.final_muxer(passes, self.job.dest_path)
        if muxer is None:
            raise PermanentJobError(
                "no -f given and the muxer cannot be inferred from the destination's "
                f"extension: {redact_uri(self.job.dest_path)}")

        source = await self.download_source("source")
        source_name = redact_uri(self.job.source_path)
        source_info = await probe.ffprobe(self.reactor, self.settings, source,
                                          what="source", display_name=source_name)
        self.check_canceled()
        source_duration = probe.summarize(source_info)["duration_s"]
        self._source_kinds = {st.get("codec_type") for st in source_info["streams"]
                              if isinstance(st, dict)}

        await self.set_state(JobState.ENCODING)
        self.context.report_progress(0.0)
        encoders = None
        if ffmpeg_argv.needs_encoder_list(passes):
            encoders = await available_encoders(self.reactor, self.settings)
        output = self.scratch_path("output." + ffmpeg_values.MUXER_EXTENSIONS.get(muxer, "out"))
        passlog = self.scratch_path("passlog") if ffmpeg_argv.uses_pass(passes) else None
        max_bytes = int(self.settings.MAX_OUTPUT_BYTES)
        max_duration = max_output_duration_s(source_duration,
                                             self.settings.MAX_OUTPUT_DURATION_FACTOR)
        n = len(passes)
        for k, pass_opts in enumerate(passes):
            target = os.devnull if (n == 2 and k == 0) else output
            argv = ffmpeg_argv.build_argv(pass_opts, ffmpeg_bin=self.settings.FFMPEG_BIN,
                                   input_path=source, output_path=target, muxer=muxer,
                                   passlogfile=passlog, encoders=encoders)
            argv = output_caps(argv, pass_opts, max_bytes=max_bytes, max_duration_s=max_duration)
            expected = opts.expected_duration_s(pass_opts, source_duration)
            self.log.info("job {job_id}: ffmpeg pass {k} of {n}: {argv}",
                          job_id=job_id, k=k + 1, n=n, argv=" ".join(argv))
            await self._run_ffmpeg(argv, k, n, expected,
                                   names={source: source_name,
                                          output: redact_uri(self.job.dest_path)},
                                   source=source)
        size = await threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                               sandboxed_output_size, output)
        if size >= max_bytes:
            raise PermanentJobError(
                f"the output reached MAX_OUTPUT_BYTES ({max_bytes} bytes) and ffmpeg stopped "
                "there (-fs): it is cut short")

        if any(p["move_atom_to_front"] for p in passes):
            if muxer in ffmpeg_values.QUICKTIME_MUXERS:
                moved = await threads.deferToThreadPool(
                    self.reactor, self.reactor.getThreadPool(), faststart_in_place, output)
                self.log.info("job {job_id}: move_atom_to_front: {what}", job_id=job_id,
                              what="moov atom moved first" if moved else "moov atom already first")
                self.check_canceled()
            else:
                self.log.warn("job {job_id}: move_atom_to_front ignored: muxer {muxer} has no "
                              "moov atom", job_id=job_id, muxer=muxer)

        output_info = await probe.ffprobe(self.reactor, self.settings, output, what="output",
                                          display_name="encoded output")
        self.check_canceled()
        sandboxed_output_size(output)  # nothing runs in a sandbox from here on
        await self.upload_result(output)
        summary = probe.summarize(output_info)
        if max_duration and (summary["duration_s"] or 0) >= max_duration - 1.0:
            self.log.warn("job {job_id}: output cut at {max_s:.1f} s (MAX_OUTPUT_DURATION_FACTOR "
                          "{factor} x the source's {source_s:.1f} s + {slack:g} s)", job_id=job_id,
                          max_s=max_duration, factor=self.settings.MAX_OUTPUT_DURATION_FACTOR,
                          source_s=source_duration, slack=OUTPUT_DURATION_SLACK_S)
        self.log.info("job {job_id}: encoded {size_bytes} bytes, {duration_s} s",
                      job_id=job_id, size_bytes=summary["size_bytes"],
                      duration_s=summary["duration_s"])
        return summary

    # -- one ffmpeg pass ---------------------------------------------------------

    def _on_fraction(self, k, n):
        def on_fraction(fraction):
            percent = round((k + fraction) / n * 100.0, 2)
            if percent > self._progress:
                self._progress = percent
                self.context.report_progress(percent)
        return on_fraction

    async def _run_ffmpeg(self, argv, k, n, expected_s, names, source):
        """Run one pass in the sandbox (``ffmpeg_run.FFmpegRun``): the scratch
        dir writable, ``source`` readable."""
        self.check_canceled()
        run = self._runner = FFmpegRun(
            self.reactor, self.settings, self.job.job_id, argv, scratch_dir=self.context.scratch_dir,
            readable=[source], expected_s=expected_s, on_fraction=self._on_fraction(k, n), names=names,
            source_kinds=self._source_kinds, where=f"ffmpeg pass {k + 1} of {n}" if n > 1 else "ffmpeg")
        try:
            return await run.run()
        finally:
            self._runner = None
