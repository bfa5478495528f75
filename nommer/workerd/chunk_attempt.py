"""One attempt at a chunk of a chunked job: from a chunk task's message to its outcome.

A chunked job (``nommer.core.chunking``, ``nommer.workerd.chunks``) is
planned by an ordinary attempt at the job, which stores the plan in
``Job.chunks`` and queues one task per chunk on the job's own queue (body
``<job message>@chunk<i>``). Any worker takes any chunk: this module runs it,
with the same lease (JOB_LEASE_S, extended every HEARTBEAT_INTERVAL_S),
attempt and dead-letter rules as a job, and the same decision table
(``nommer.workerd.outcome.decide``) applied to the chunk:

* taken: the chunk ENCODING, its ``attempts`` + 1, this worker named; a
  chunk another worker holds (heartbeat younger than 3/4 of JOB_LEASE_S) is
  left to it and the duplicate message deleted; a FINISHED chunk is not
  encoded again (its checkpoint is in the work area).
* each beat: the lease extended, the chunk's heartbeat and progress written
  (fenced: only while the stored chunk names this worker and attempt); the
  job canceled stops ffmpeg.
* success: the encoded tracks stored in the job's work area
  (``chunks.workarea``), the chunk FINISHED with its files; when it was the
  last one, the job's own message is queued again: the merge
  (``OutputsNommer`` finds every chunk FINISHED and joins them).
* transient failure: the chunk PENDING again and its message visible after
  the backoff, until MAX_JOB_ATTEMPTS; then, or on a permanent failure, the
  job ERROR with the chunk's reason ("chunk 3 (36.0-48.0 s): ...").
* cold shutdown, spot notice: the chunk PENDING, its message visible at once.
* canceled (the job final): ffmpeg stopped, the job's checkpoints deleted.
"""

from twisted.logger import Logger

from nommer.core.chunking import ChunkState, all_finished, check_chunk_transition
from nommer.core.errors import JobCanceled, NoSuchJob
from nommer.core.events import EventKind, JobEvent
from nommer.core.states import IllegalTransition, JobState
from nommer.core.workqueue.jobs import send_job
from nommer.workerd.chunks.workarea import WorkArea, stored_names
from nommer.workerd.context import CANCELED, LEASE_LOST, JobContext, NotOwner
from nommer.workerd.outcome import (
    Attempt, DeleteMessage, Ended, Fail, Finish, Leave, Release, decide, ending_of, keeps_progress)

#: A chunk ENCODING whose heartbeat is older than this fraction of
#: JOB_LEASE_S has lost its worker (a live one beats every
#: HEARTBEAT_INTERVAL_S, at most a third of the lease).
STALE_LEASE_FRACTION = 0.75


def chunk_span(chunk):
    """``"chunk 3 (36.0-48.0 s)"`` for errors and events."""
    return f"chunk {chunk['index']} ({chunk['start_s']:.1f}-{chunk['end_s']:.1f} s)"


class ChunkContext(JobContext):
    """A ``JobContext`` for one chunk attempt: writes are fenced on the
    chunk (this worker, this chunk attempt), not on the job; progress is
    kept here and written with each heartbeat; the job's state is not
    moved by a chunk."""

    def __init__(self, worker, job, scratch_dir, index, attempt):
        super().__init__(worker, job, scratch_dir)
        self.index = index
        self.attempt = attempt

    def owned(self, stored):
        chunks = stored.chunks or ()
        chunk = chunks[self.index] if self.index < len(chunks) else {}
        if chunk.get("worker_id") != self.worker.worker_id or chunk.get("attempts") != self.attempt:
            raise NotOwner(f"chunk {self.index} of job {stored.job_id} is attempt {chunk.get('attempts')} "
                           f"on {chunk.get('worker_id')}, not attempt {self.attempt} on "
                           f"{self.worker.worker_id}")

    async def set_state(self, state):
        self._check()

    def report_progress(self, percent):
        self.progress = max(0.0, min(100.0, float(percent)))


class ChunkRunner:
    """Runs chunk task messages for ``worker`` (a ``Worker``), sharing its
    ``AttemptRunner``'s leases, contexts and stop reasons."""

    log = Logger()

    def __init__(self, worker):
        self.worker = worker
        self.attempts = worker.attempts
        self.worker_id = worker.worker_id
        self.ledger = worker.ledger
        self.store = worker.ledger.store
        self.queue = worker.ledger.queue
        self.settings = worker.settings
        self.reactor = worker.reactor
        self.leases = worker.attempts.leases

    async def run_message(self, message, job_id, index):
        """Run chunk ``index`` of ``job_id`` (``message`` its task); never raises."""
        try:
            await self._run(message, job_id, index)
        except Exception:
            self.log.failure("worker {worker_id} failed on chunk {index} of job {job_id}",
                             worker_id=self.worker_id, index=index, job_id=job_id)

    async def _delete(self, message):
        await self.leases.delete(message, job_id=message.body)

    async def _run(self, message, job_id, index):
        try:
            job = await self.store.get(job_id)
        except NoSuchJob:
            self.log.error("chunk task names unknown job {job_id}; dropping it", job_id=job_id)
            return await self._delete(message)
        chunks = job.chunks or ()
        if job.is_final or index >= len(chunks):
            if job.job_state == JobState.CANCELED:
                await self._clean_up(job)
            return await self._delete(message)
        chunk = chunks[index]
        key = f"{job_id}@chunk{index}"
        if key in self.attempts.contexts:  # a duplicate task of a chunk this worker is encoding
            self.log.info("chunk {index} of job {job_id} runs on {other} (this worker); dropping a "
                          "duplicate task", index=index, job_id=job_id, other=self.worker_id)
            return await self._delete(message)
        if chunk.get("state") == ChunkState.FINISHED:
            await self._merge_if_last(job)
            return await self._delete(message)
        now = self.reactor.seconds()
        if chunk.get("state") == ChunkState.ENCODING and chunk.get("worker_id") != self.worker_id and \
                now - (chunk.get("heartbeat_at") or 0) < STALE_LEASE_FRACTION * self.settings.JOB_LEASE_S:
            self.log.info("chunk {index} of job {job_id} runs on {other}; dropping a duplicate task",
                          index=index, job_id=job_id, other=chunk.get("worker_id"))
            return await self._delete(message)
        if self.attempts.stop_new is not None:
            return await self.leases.release(message, 0, job_id=job_id)
        read_attempts = chunk.get("attempts") or 0

        def take(c, stored):
            if (c.get("attempts") or 0) != read_attempts:
                raise NotOwner(f"chunk {index} of job {job_id} was taken by {c.get('worker_id')} meanwhile")
            check_chunk_transition(index, c["state"], ChunkState.ENCODING)
            c.update(state=ChunkState.ENCODING.value, attempts=read_attempts + 1, worker_id=self.worker_id,
                     heartbeat_at=now, progress=0.0, details=None)
            return c
        try:
            job = await self.ledger.update_chunk(job_id, index, take, heartbeat_at=now)
        except (JobCanceled, NotOwner) as exc:
            self.log.info("not taking chunk {index} of job {job_id}: {why}", index=index, job_id=job_id,
                          why=str(exc))
            return await self._delete(message) if isinstance(exc, JobCanceled) else None
        except Exception as exc:  # IllegalChunkTransition: finished meanwhile
            self.log.info("not taking chunk {index} of job {job_id}: {why}", index=index, job_id=job_id,
                          why=str(exc))
            return await self._delete(message)
        chunk = job.chunks[index]
        attempt = chunk["attempts"]
        await self._event(job, f"{chunk_span(chunk)}: attempt {attempt} on {self.worker_id}", attempt)
        scratch = self.worker.scratch.make(f"{job_id}-c{index}", attempt)
        ctx = self.attempts.contexts[key] = ChunkContext(self.worker, job, scratch, index, attempt)
        if self.attempts.stop_new is not None:
            ctx.stop(self.attempts.stop_new)
        self.leases.hold(message, on_beat=lambda: self._heartbeat(ctx), on_lost=lambda: ctx.stop(LEASE_LOST),
                         job_id=job_id)
        try:
            await self._encode(ctx, message)
        finally:
            self.leases.let_go(message)
            if self.attempts.contexts.get(key) is ctx:
                del self.attempts.contexts[key]
            await self.worker.scratch.remove(scratch)
            await ctx.wait_event_written()
            await self.ledger.events_settled(job_id)

    async def _encode(self, ctx, message):
        from nommer.workerd.nommers.outputs import OutputsNommer
        files, ended, reason = None, Ended.SUCCEEDED, ""
        try:
            files = await OutputsNommer(ctx.job, ctx).run_chunk(ctx.index)
        except Exception as exc:
            ended, reason = ending_of(exc)
            if ended is Ended.CRASHED:
                self.log.failure("chunk {index} of job {job_id} crashed", index=ctx.index,
                                 job_id=ctx.job.job_id)
        stop_reason = ctx.stop_reason
        attempt = Attempt(ended=ended, attempts=ctx.attempt, worker_id=self.worker_id, stop_reason=stop_reason,
                          reason=reason, output=files, nommer=ctx.job.nommer,
                          progress=ctx.progress if keeps_progress(stop_reason) else None, free_bytes=None)
        decision = decide(attempt, self.settings.MAX_JOB_ATTEMPTS, self.settings.RETRY_BACKOFF_S)
        await self._execute(ctx, message, decision)

    async def _execute(self, ctx, message, decision):
        job_id, index = ctx.job.job_id, ctx.index
        span = chunk_span(ctx.job.chunks[index])
        match decision:
            case Leave():
                return
            case DeleteMessage():
                if ctx.stop_reason == CANCELED:
                    await self._clean_up(await self.store.get(job_id))
                return await self._delete(message)
            case Finish():
                def finish(c, stored):
                    ctx.owned(stored)
                    check_chunk_transition(index, c["state"], ChunkState.FINISHED)
                    c.update(state=ChunkState.FINISHED.value, progress=100.0, files=decision.output)
                    return c
                try:
                    job = await self.ledger.update_chunk(job_id, index, finish,
                                                         heartbeat_at=self.reactor.seconds())
                except JobCanceled:
                    await self._clean_up(await self.store.get(job_id))
                    return await self._delete(message)
                except NotOwner:
                    return
                await self._event(job, f"{span}: finished on {self.worker_id}", ctx.attempt)
                await self._merge_if_last(job)
                return await self._delete(message)
            case Fail():
                details = f"{span}: {decision.details}"
                try:
                    await self.ledger.set_state(job_id, JobState.ERROR, details, expect=ctx.owned)
                except IllegalTransition:
                    pass
                except NotOwner:
                    return
                return await self._delete(message)
            case Release():
                def release(c, stored):
                    ctx.owned(stored)
                    c.update(state=ChunkState.PENDING.value, worker_id=None, details=decision.details)
                    if decision.progress is not None:
                        c["progress"] = decision.progress
                    return c
                try:
                    job = await self.ledger.update_chunk(job_id, index, release)
                except JobCanceled:
                    return await self._delete(message)
                except NotOwner:
                    return
                await self._event(job, f"{span}: {decision.details}", ctx.attempt)
                return await self.leases.release(message, decision.visibility_s, job_id=job_id)
            case _:
                raise TypeError(f"not a decision: {decision!r}")

    async def _heartbeat(self, ctx):
        """Write the chunk's heartbeat and progress (after each lease extension); never raises."""
        now = self.reactor.seconds()

        def beat(c, stored):
            ctx.owned(stored)
            c.update(heartbeat_at=now, progress=round(ctx.progress or 0.0, 1))
            return c
        try:
            await self.ledger.update_chunk(ctx.job.job_id, ctx.index, beat, heartbeat_at=now)
        except JobCanceled:
            ctx.stop(CANCELED)
        except NotOwner:
            ctx.stop(LEASE_LOST)
        except Exception:
            self.log.failure("heartbeat of chunk {index} of job {job_id} failed", index=ctx.index,
                             job_id=ctx.job.job_id, worker_id=self.worker_id)

    async def _merge_if_last(self, job):
        """Queue the job's own message again (its merge) when every chunk is FINISHED."""
        if job.is_final or not all_finished(job.chunks):
            return
        self.log.info("job {job_id}: every chunk done; queuing its merge", job_id=job.job_id)
        await send_job(self.queue, self.settings, job)

    async def _clean_up(self, job):
        """Delete a canceled job's checkpoints (best effort, logged)."""
        try:
            ctx = JobContext(self.worker, job, None)
            area = WorkArea(job.job_id, ctx.job_uri("dest_path"), self.settings, self.reactor)
            names = stored_names(job.chunks, *(c.get("input") for c in (job.chunks or ())[:1]))
            removed = await area.delete(names)
            await self.worker.scratch.sources.drop(job.job_id)
            if removed:
                self.log.info("job {job_id} canceled: removed {n} chunk file(s) from {where}",
                              job_id=job.job_id, n=removed, where=area.describe())
        except Exception:
            self.log.failure("removing the chunk files of canceled job {job_id} failed", job_id=job.job_id)

    async def _event(self, job, details, attempt):
        await self.ledger.record_event(JobEvent(
            job_id=job.job_id, at=self.reactor.seconds(), kind=EventKind.CHUNK, state=job.job_state.value,
            worker_id=self.worker_id, attempt=attempt, details=details))
