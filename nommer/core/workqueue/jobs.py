"""Job messages: where a job is queued and what its message says.

A job is queued on its pool's queue (``nommer.core.pools.pool_queue``) with
its priority (``WorkQueue.send(..., priority=)``). The message body is the
job id, as it always was, for a job never retried; a job queued again by
``POST /job/<id>/retry`` for the n-th time has the body ``<job_id>#<n>``, so
that a message of an earlier life of the job (a canceled job's message still
in the queue, a dead letter arriving late) is told apart and dropped instead
of running the job twice (``is_current``).
"""

from nommer.core.pools import pool_queue
from nommer.core.priority import DEFAULT_PRIORITY

#: Between a job id and its retry count in a message body.
RETRY_SEPARATOR = "#"


def job_message_body(job):
    """The body of ``job``'s message (str): its id, ``#<retries>`` after it
    once retried."""
    return job.job_id if not job.retries else f"{job.job_id}{RETRY_SEPARATOR}{job.retries}"


def parse_job_message(body):
    """``(job_id, retries)`` of a job message body (retries 0 when the
    body is a bare job id, as from every nommer before retries existed).
    A body whose suffix is not a number is taken whole as the job id."""
    job_id, sep, count = body.rpartition(RETRY_SEPARATOR)
    if sep and count.isascii() and count.isdigit():
        return job_id, int(count)
    return body, 0


def is_current(body, job):
    """Whether a message with ``body`` is of ``job``'s current life (its
    retry count matches the stored job's ``retries``)."""
    job_id, retries = parse_job_message(body)
    return job_id == job.job_id and retries == job.retries


def send_job(queue, settings, job):
    """Queue ``job`` for a worker of its pool, with its priority (a job of
    the default priority is sent without one, as before priorities). Returns
    the Deferred of ``queue.send`` (the message id). Raises
    ``nommer.core.pools.UnknownPool`` when the settings no longer define
    the job's pool."""
    queue_name, body = pool_queue(settings, job.pool), job_message_body(job)
    if job.priority == DEFAULT_PRIORITY:  # sent as every job message always was
        return queue.send(queue_name, body)
    return queue.send(queue_name, body, priority=job.priority)


def send_chunk(queue, settings, job, index):
    """Queue the task of chunk ``index`` of chunked ``job`` on the job's
    queue with its priority (body: the job's message body + ``@chunk<i>``,
    ``nommer.core.chunking.chunk_message_body``). Returns the Deferred of
    ``queue.send``."""
    from nommer.core.chunking import chunk_message_body
    queue_name, body = pool_queue(settings, job.pool), chunk_message_body(job_message_body(job), index)
    if job.priority == DEFAULT_PRIORITY:
        return queue.send(queue_name, body)
    return queue.send(queue_name, body, priority=job.priority)


def worker_queues(settings, pools):
    """The queues a worker serving ``pools`` (names) receives from, in the
    order given. Raises ``UnknownPool``."""
    return [pool_queue(settings, pool) for pool in pools]
