"""The chunked side of ``OutputsNommer``: plan and queue the chunks, encode one, join them.

A declarative job is chunked (``nommer.core.chunking``) when its body asks
(``"chunking": true`` or an object) or, unless it says ``false``, when its
source lasts at least CHUNKING_MIN_SOURCE_S; and when at least one output
encodes the source's video (an mp4 output, a ladder) without a target-quality
search (which samples the whole title: such outputs are encoded whole, by the
merge). The video of those outputs is cut into ``VideoTrack`` s
(``chunks.tracks``: one per mp4, one per ladder rung) that every chunk encodes.

Three kinds of run share this code, told apart by ``Job.chunks``:

1. **Plan** (an attempt at the job with no plan yet): remux a TS/PS/AVI
   source to Matroska (stored in the work area as ``source.mkv``), read the
   frame timeline, find scene cuts (only in the windows the planner looks in,
   ``cuts.scan_windows``; not for ladders: their cuts lie on the 2 s keyframe
   grid so segments map onto chunks), ``cuts.plan_chunks``; store
   the plan, queue one task per chunk, raise ``ChunksQueued``. A plan of one
   chunk is not worth it: the job is encoded whole. An attempt that finds a
   plan with unfinished chunks (a retried job, a planner that died after
   storing it) queues those again: finished chunks are kept.
2. **Chunk** (``run_chunk``, from ``nommer.workerd.chunk_attempt``): fetch the
   source (or ``source.mkv``) into this machine's copy shared by the job's
   tasks (``chunks.source_cache``; the merge reads it too), encode the chunk's frames for every track in one
   ffmpeg run (``chunks.encode``), check each file's frame count, store the
   files in the work area (``chunks.workarea``).
3. **Merge** (an attempt at the job whose chunks are all FINISHED): fetch the
   checkpoints (a missing one is queued again, as in 1), join each track with
   the concat demuxer and exact durations (``chunks.concat``), check it
   (``chunks.verify``: frame count, durations, timestamps, PSNR at every cut),
   then make the outputs as an unchunked job would, but copying the joined
   video instead of encoding it (audio encoded once, here: an mp4's audio
   alone first, then copied in, and the output's audio checked to last as
   long as that encode); progress runs from 90 to 100 %; after the outputs
   are stored the checkpoints are deleted.
"""

import os
from fractions import Fraction
from types import SimpleNamespace

from nommer.core.chunking import CHUNKS_SHARE, ChunkState, all_finished
from nommer.core.errors import PermanentJobError, TransientJobError
from nommer.core.events import EventKind, JobEvent
from nommer.core.states import JobState
from nommer.core.workqueue.jobs import send_chunk
from nommer.workerd.chunks import concat, cuts, encode, frames, scenes, verify
from nommer.workerd.chunks import tracks as tracks_mod
from nommer.workerd.chunks.model import Chunk
from nommer.workerd.chunks.workarea import WorkArea, stored_names
from nommer.workerd.nommers.base import ChunksQueued
from nommer.workerd import probe
from nommer.workerd.outputs import common, mp4, package
from nommer.workerd.outputs.common import KEYFRAME_INTERVAL_S

#: The work-area name of a TS/PS/AVI source remuxed to Matroska.
MEZZANINE_NAME = "source.mkv"
#: How far a merged output's audio may be from its audio-only encode, seconds.
AUDIO_TOLERANCE_S = 0.001


def wants_chunking(request, duration_s, settings):
    """Whether a job asking ``request`` (``normalize_request``'s dict, or
    None for a job stored before chunking existed) is chunked for a source
    of ``duration_s`` seconds (None: unknown)."""
    mode = (request or {}).get("mode", "auto")
    if mode == "off":
        return False
    if mode == "on":
        return True
    threshold = settings.CHUNKING_MIN_SOURCE_S
    return threshold is not None and duration_s is not None and duration_s >= threshold


def audio_seconds(probed):
    """The first audio stream's duration in seconds from ffprobe's JSON, or None."""
    for stream in probed.get("streams") or ():
        if isinstance(stream, dict) and stream.get("codec_type") == "audio":
            return common.to_float(stream.get("duration"))
    return None


def chunk_fps(record):
    """The source's frame rate a chunk record keeps (``Fraction``), None for VFR."""
    return Fraction(record["fps"]) if record.get("fps") else None


class ChunkedOutputs:
    """Mixed into ``OutputsNommer`` (see the module docstring): uses its
    ``job``, ``context``, ``settings``, ``reactor``, ``_prepare``,
    ``_run_step``, ``check_canceled``."""

    def _chunked_units(self, units, source, options):
        """``{unit position: [VideoTrack]}`` of the units whose video is
        encoded in chunks (empty: the job is encoded whole). Once planned,
        a variable-frame-rate source (the plan's ``fps`` None) gives tracks
        without a rate (their real timestamps kept)."""
        plan = self.job.chunks
        rate = SimpleNamespace(cfr=chunk_fps(plan[0]) is not None) if plan else None
        # A job planned already is chunked, whatever this worker's CHUNKING_MIN_SOURCE_S says.
        request = {"mode": "on"} if plan else options.get("chunking")
        if not source.has_video or not wants_chunking(request, source.duration_s, self.settings):
            return {}
        from nommer.workerd.nommers.outputs import _target_of
        chunked = {}
        for pos, unit in enumerate(units):
            if _target_of(unit):
                continue  # its CRF search samples the whole title: encoded whole, by the merge
            if unit.builder is package:
                chunked[pos] = tracks_mod.package_tracks(unit.spec, source, f"u{pos}r", timeline=rate)
            elif unit.builder is mp4 and not unit.spec.get("image_path"):
                chunked[pos] = [tracks_mod.mp4_track(unit.spec, source, f"u{pos}", timeline=rate)]
        return chunked

    def _work_area(self):
        return WorkArea(self.job.job_id, self.context.job_uri("dest_path"), self.settings, self.reactor)

    async def _record(self, kind, details):
        await self.context.worker.ledger.record_event(JobEvent(
            job_id=self.job.job_id, at=self.reactor.seconds(), kind=kind, state="ENCODING",
            worker_id=self.context.worker.worker_id, attempt=self.job.attempts, details=details))

    # --- 1. plan ----------------------------------------------------------------------

    async def _plan_chunks(self, job, units, chunked, request):
        """Plan the chunks and queue them (raises ``ChunksQueued``), or
        return when one chunk would do (the job is then encoded whole)."""
        if self.job.chunks:
            return await self._queue_again(self.job.chunks, "queued again")
        request = request or {}
        s = self.settings
        input_path, mezzanine = job.source_path, None
        if frames.needs_remux(job.probed):
            mezzanine = os.path.join(job.work_dir, MEZZANINE_NAME)
            await self._run_step(job, frames.remux_step(job.source_path, mezzanine, s.FFMPEG_BIN,
                                                        expected_s=job.source.duration_s))
            input_path = mezzanine
        timeline = await frames.read_timeline(self.reactor, s, input_path, display_name="source")
        ladder = any(units[pos].builder is package for pos in chunked)
        lengths = dict(target_s=request.get("target_s", s.CHUNK_TARGET_S),
                       min_s=request.get("min_s", s.CHUNK_MIN_S),
                       max_s=request.get("max_s", s.CHUNK_MAX_S), workers=s.MAX_NUM_WORKERS)
        scene_frames = []
        if not ladder:
            scene_frames = await self._scene_cuts(job, input_path, timeline, lengths)
        plan = cuts.plan_chunks(timeline, scene_frames, **lengths,
                                grid_s=KEYFRAME_INTERVAL_S if ladder else None)
        if len(plan) < 2:
            self.log.info("job {job_id}: one chunk would do; encoding it whole", job_id=self.job.job_id)
            return
        stored = None
        if mezzanine:
            await self._work_area().put(mezzanine, MEZZANINE_NAME)
            stored = MEZZANINE_NAME
        chunks = [{"index": c.index, "start_s": round(c.start_s, 6), "end_s": round(c.end_s, 6),
                   "frames": c.frames, "state": ChunkState.PENDING.value, "attempts": 0,
                   "worker_id": None, "progress": 0.0, "details": None, "heartbeat_at": None,
                   "files": None, "input": stored, "life": self.job.retries, "plan": c.to_dict(),
                   "fps": None if timeline.fps is None else str(timeline.fps),
                   "offset_s": round(timeline.pts_s[0] - timeline.start_s, 6)}
                  for c in plan]
        await self.context.worker.ledger.update(self.job.job_id, expect=self.context.owned, chunks=chunks)
        what = "on the keyframe grid" if ladder else f"at {len(scene_frames)} scene cuts found"
        await self._record(EventKind.CHUNK, f"planned {len(chunks)} chunks of about "
                                            f"{timeline.duration_s / len(chunks):.1f} s ({what})")
        await self._send(chunks)

    async def _scene_cuts(self, job, input_path, timeline, lengths):
        """The scene cuts ``cuts.plan_chunks`` needs (frame indexes): those
        inside the windows where it looks for them (``cuts.scan_windows``,
        again for any window the cuts found send it to), or, when those
        windows would cover most of the source, of the whole source."""
        s, base = self.settings, os.path.join(job.work_dir, "scenes.txt")
        windows = cuts.scan_windows(timeline, **lengths)
        if windows is None:
            await self._run_step(job, scenes.plan(input_path, base, ffmpeg_bin=s.FFMPEG_BIN,
                                                  expected_s=timeline.duration_s),
                                 readable=(input_path,))
            with open(base, encoding="utf-8", errors="replace") as f:
                return scenes.parse(f.read(), timeline)
        found, scanned = [], []
        for rounds in range(3):  # a split can look elsewhere once the cuts are known
            if not windows:
                break
            out = f"{base}.{rounds}"
            for step in scenes.plan_windows(input_path, out, windows, timeline, ffmpeg_bin=s.FFMPEG_BIN):
                await self._run_step(job, step, readable=(input_path,))
            texts = []
            for k in range(len(windows)):
                with open(scenes.window_path(out, k), encoding="utf-8", errors="replace") as f:
                    texts.append(f.read())
            found = sorted(set(found) | set(scenes.parse_windows(texts, timeline, windows)))
            scanned += windows
            windows = cuts.scan_windows(timeline, **lengths, scene_frames=found, scanned=scanned)
        return found

    async def _queue_again(self, chunks, why):
        """Queue the unfinished chunks of a stored plan (PENDING; a retried
        job's get fresh attempts); raises ``ChunksQueued``."""
        life = self.job.retries
        again = [dict(c) for c in chunks]
        for c in again:
            if c["state"] != ChunkState.FINISHED:
                c.update(state=ChunkState.PENDING.value, worker_id=None, progress=0.0)
                if c.get("life") != life:
                    c.update(attempts=0, life=life)
        await self.context.worker.ledger.update(self.job.job_id, expect=self.context.owned, chunks=again)
        todo = [c for c in again if c["state"] != ChunkState.FINISHED]
        await self._record(EventKind.CHUNK, f"{len(todo)} of {len(again)} chunks {why}")
        await self._send(todo)

    async def _send(self, chunks):
        """Queue the tasks of ``chunks``, then raise ``ChunksQueued``. A
        queue failure is transient: the job's next attempt finds the plan
        and queues the unfinished chunks again (a task sent twice is run
        once: ``chunk_attempt`` drops a duplicate of a chunk being encoded)."""
        worker = self.context.worker
        for c in chunks:
            try:
                await send_chunk(worker.ledger.queue, self.settings, self.job, c["index"])
            except Exception as exc:
                raise TransientJobError(f"queuing the task of chunk {c['index']} failed: {exc!r}") from exc
        raise ChunksQueued(f"{len(chunks)} chunk tasks queued")

    # --- 2. one chunk -------------------------------------------------------------------

    async def run_chunk(self, index):
        """Encode chunk ``index`` for every track and store the files in the
        work area; returns ``{track key: {"name", "bytes"}}``. Errors as ``run``."""
        options = self.validate_options(self.job.job_options, self.settings)
        record = self.job.chunks[index]
        area = self._work_area()
        job = await self._prepare(options["outputs"], cached=(area, record.get("input")), inputs=False)
        units = plan_units_of(options["outputs"])
        chunked = self._chunked_units(units, job.source, options)
        tracks = [t for pos in sorted(chunked) for t in chunked[pos]]
        if not tracks:
            raise PermanentJobError("this job has no video output to encode in chunks")
        chunk = Chunk.from_dict(record["plan"])
        fps = chunk_fps(record)
        step = encode.plan(chunk, tracks, ffmpeg_bin=self.settings.FFMPEG_BIN, input_path=job.source_path,
                           work_dir=job.work_dir, fps=fps)
        await self._run_step(job, step, on_fraction=lambda f: self.context.report_progress(100.0 * f),
                             capped=False)
        await self._run_step(job, encode.count_step(chunk, tracks, ffmpeg_bin=self.settings.FFMPEG_BIN,
                                                    work_dir=job.work_dir))
        encode.check_chunk(chunk, tracks, work_dir=job.work_dir, fps=fps)
        files = {}
        for key, local in encode.chunk_files(index, tracks, job.work_dir).items():
            self.check_canceled()
            name = os.path.basename(local)
            files[key] = {"name": name, "bytes": await area.put(local, name)}
        return files

    # --- 3. merge -----------------------------------------------------------------------

    async def _join_chunks(self, job, units, chunked):
        """Fetch every chunk's files, join each track, check it; returns
        ``{unit position: (paths in track order, offset_s)}``. A missing
        checkpoint queues its chunk again (raises ``ChunksQueued``)."""
        chunks = self.job.chunks
        area = self._work_area()
        await self._record(EventKind.MERGE, f"joining {len(chunks)} chunks on {self.context.worker.worker_id}")
        plan = [Chunk.from_dict(c["plan"]) for c in chunks]
        fetched, missing = {}, []
        for c in chunks:
            for key, f in (c.get("files") or {}).items():
                local = os.path.join(job.work_dir, f["name"])
                self.check_canceled()
                try:
                    await area.get(f["name"], local)
                except Exception as exc:
                    self.log.warn("job {job_id}: checkpoint {name} of chunk {index} cannot be read "
                                  "({error}); encoding that chunk again", job_id=self.job.job_id,
                                  name=f["name"], index=c["index"], error=str(exc))
                    missing.append(c["index"])
                    break
                fetched[(c["index"], key)] = local
        if missing:
            again = [dict(c, state=ChunkState.PENDING.value, files=None) if c["index"] in missing else c
                     for c in chunks]
            return await self._queue_again_forced(again, missing)
        offset_s = float(chunks[0].get("offset_s") or 0.0)
        fps = chunk_fps(chunks[0])
        # The file the chunks were cut from (a TS source's Matroska copy): the verify seeks in it
        # and picks the frames around each join by its timeline's times (a VFR track's are also
        # checked against them).
        cut_from = job.source_path
        name = chunks[0].get("input")
        if name:
            cut_from = await self.context.worker.scratch.sources.fetch(
                self.job.job_id, self.job.retries, name, lambda local: area.get(name, local))
        timeline = await frames.read_timeline(self.reactor, self.settings, cut_from,
                                              display_name="source")
        joined = {}
        for pos, tracks in chunked.items():
            paths = []
            for track in tracks:
                entries = [(os.path.basename(fetched[(c.index, track.key)]), c.duration) for c in plan]
                list_path = os.path.join(job.work_dir, f"concat_{track.key}.txt")
                with open(list_path, "w", encoding="utf-8") as f:
                    f.write(concat.list_text(entries))
                out = os.path.join(job.work_dir, f"joined_{track.key}.mp4")
                step = concat.plan(list_path, out, ffmpeg_bin=self.settings.FFMPEG_BIN,
                                   expected_s=job.source.duration_s)
                await self._run_step(job, step, readable=tuple(
                    fetched[(c.index, track.key)] for c in plan) + (list_path,))
                await self._verify(job, track, out, plan, fps, timeline, cut_from)
                paths.append(out)
            joined[pos] = (paths, offset_s)
        return joined

    def _merge_progress(self, percent):
        """Report the merge's ``percent`` (0..100) as the job's last 100 - CHUNKS_SHARE %."""
        self.context.report_progress(CHUNKS_SHARE + percent * (100.0 - CHUNKS_SHARE) / 100.0)

    async def _queue_again_forced(self, chunks, missing):
        """Store ``chunks`` (the missing ones reset) and queue ``missing``;
        the job waits in ENCODING for them."""
        await self.set_state(JobState.ENCODING)
        await self.context.worker.ledger.update(self.job.job_id, expect=self.context.owned, chunks=chunks)
        await self._record(EventKind.CHUNK, f"checkpoints of chunks {missing} missing: encoding them again")
        await self._send([c for c in chunks if c["index"] in missing])

    async def _verify(self, job, track, joined_path, plan, fps, timeline, cut_from):
        """The checks of a joined track before the job may finish
        (``chunks.verify``: windows around each join, seeked in ``cut_from``,
        then again from the start for any a seek missed); raises
        ``PermanentJobError`` with the first problem."""
        args = dict(input_path=cut_from, ffmpeg_bin=self.settings.FFMPEG_BIN, work_dir=job.work_dir,
                    fps=fps, timeline=timeline)
        for step in verify.plan(joined_path, plan, track, **args):
            await self._run_step(job, step, readable=(joined_path,))
        again = await self._in_thread(lambda: verify.fallback_steps(joined_path, plan, track, **args))
        for step in again:
            await self._run_step(job, step, readable=(joined_path,))
        await self._in_thread(lambda: verify.verify(plan, track, work_dir=job.work_dir, fps=fps,
                                                    timeline=timeline))

    async def _check_audio(self, job, units, chunked):
        """Each chunked mp4's audio lasts as long as the audio-only encode it
        was muxed from (to the millisecond); raises ``PermanentJobError``."""
        if not job.source.audio:
            return
        for pos in sorted(chunked):
            spec = units[pos].spec
            if units[pos].builder is not mp4:
                continue
            name = spec["name"]
            got = audio_seconds(await probe.ffprobe(self.reactor, self.settings,
                                                    common.local_path(job.work_dir, name), what="output",
                                                    display_name=name))
            want = audio_seconds(await probe.ffprobe(self.reactor, self.settings,
                                                     mp4.audio_only_path(spec, job.work_dir),
                                                     what="audio", display_name=f"{name} (audio alone)"))
            if got is None or want is None or abs(got - want) > AUDIO_TOLERANCE_S:
                raise PermanentJobError(f"the audio of {name} lasts {got} s, not the {want} s of its audio "
                                        "encode: the join lost or added audio")

    async def _delete_checkpoints(self):
        """After the outputs are stored: remove the job's work area files (best effort)."""
        chunks = self.job.chunks or ()
        try:
            area = self._work_area()
            await area.delete(stored_names(chunks, chunks[0].get("input") if chunks else None))
            await self.context.worker.scratch.sources.drop(self.job.job_id)
        except Exception:
            self.log.failure("job {job_id}: removing its chunk files failed", job_id=self.job.job_id)


def plan_units_of(outputs):
    from nommer.workerd.nommers.outputs import plan_units
    return plan_units(outputs)


__all__ = ["ChunkedOutputs", "wants_chunking", "all_finished", "MEZZANINE_NAME"]
