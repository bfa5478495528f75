"""WorkQueue on Amazon SQS (standard queues), through ``nommer.core.aws.AWS``.

Queues are named by their logical names (NEW_JOB_QUEUE_NAME ``media_nommer``,
STATE_CHANGE_QUEUE_NAME ``media_nommer_jstate``, the new-job queue's
dead-letter queue ``media_nommer_dlq``); a name's URL comes from GetQueueUrl
once and is cached. With AWS_CREATE_RESOURCES a missing queue is created on
first use: the dead-letter queue first (MessageRetentionPeriod 14 days), then
the queue with ``RedrivePolicy {deadLetterTargetArn, maxReceiveCount}``
(retention 4 days, SQS's default made explicit). ``ensure_resources()`` does
the same on purpose (``nommer aws setup``) and checks queues that exist.

SQS limits, applied here (seconds are whole on SQS; fractions are rounded up):

- ``send``: DelaySeconds 0..900 (else ValueError), one body up to the queue's
  MaximumMessageSize (SQS: 1 MiB).
- ``receive``: MaxNumberOfMessages 1..10 (clamped), VisibilityTimeout
  0..43200 (clamped), WaitTimeSeconds 0..20 per call: a longer
  ``wait_time_s`` is served by several long polls.
- ``change_visibility``: VisibilityTimeout clamped to 0..43200. (SQS also
  refuses a lease reaching beyond 12 h after the message's first receive.)
- batches (``send_batch``, ``delete_batch``): 10 entries per request.

Stale receipt handles. SQS only promises the newest receipt handle of a
message; what an older one does differs by server:

- moto 5 (what the tests run on) accepts *every* handle a message ever had
  for DeleteMessage and ChangeMessageVisibility, answers
  ``ReceiptHandleIsInvalid`` for a handle it never issued (and for
  ChangeMessageVisibility on a deleted message), and accepts a repeated
  DeleteMessage of a deleted message.
- AWS answers ``ReceiptHandleIsInvalid``, ``InvalidParameterValue`` ("Value
  ... for parameter ReceiptHandle is invalid. Reason: The receipt handle has
  expired" / "Message does not exist or is not available for visibility
  timeout change") or ``MessageNotInflight``; DeleteMessage with an old handle
  may succeed.

All of those become ``ReceiptHandleInvalid``. Besides, this object remembers
the newest handle it has seen for each message (the last
RECEIPTS_REMEMBERED handles) and refuses, without asking SQS, a handle it
knows to be superseded by a later receive or already used to delete. Two
slots of one worker sharing a queue object thus get the contract's
behaviour on any server; across processes it is SQS's word.

Redrive (moto matches SQS here): a receive that finds a message already
received maxReceiveCount times moves it to the dead-letter queue instead of
delivering it. The message keeps its MessageId and its receive count, so its
first receive from the dead-letter queue reports ``maxReceiveCount + 1``
(the local queue restarts at 1).

Cancelling a receive: the Deferred of ``receive`` fails with CancelledError at
once, but the ReceiveMessage call runs on in its pool thread until its long
poll ends (at most 20 s). Messages it still gets are released in that thread
(ChangeMessageVisibilityBatch to 0) so no job sits out a lease; ``close()``
never waits for such a call on the reactor thread.

Priority bands (``nommer.core.priority``): a queue named in ``banded`` (from
the settings: every pool's queue, ``nommer.core.pools``) is three SQS queues,
``<name>_high``, ``<name>`` and ``<name>_low``; ``send`` puts a message in
the band of its priority, ``depth`` sums the three. A receive from such a
queue, or from several queues (a worker serving several pools), first
short-polls (WaitTimeSeconds 0) every band queue in ``band_order`` (highest
band first, but a band this object has not looked at for its starvation
window first; the pools rotated within a band) and takes from the first that
answers with messages. When none does and the wait is not over, it
long-polls one pool's normal band (``<name>``, where jobs of the default
priority go; pools in turn) for at most BAND_POLL_S seconds, then looks at
every band again. So an idle worker takes a normal job at once and a high
or low one within about BAND_POLL_S; a short poll of a near-empty queue may
miss a message on SQS (it samples servers; moto does not), which the next
look finds. A receive from one queue that is not banded is one long poll,
as before.

Size (issue 10: about 400 lines at most, or a reason): kept whole. It is
one backend of one interface, and every part of it -- the queue URLs and
set-up, the limits above, the receipt bookkeeping, the release of abandoned
receives -- shares the pool, the URL cache and the receipts; split, one
contract would be spread over several files. This docstring is a tenth of it.
"""

import collections
import json
import math
import threading

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from nommer.core.aws import AWS, error_code
from nommer.core.priority import BANDS, NORMAL, band_of, band_order, band_queue
from nommer.core.workqueue.base import Message, ReceiptHandleInvalid, WorkQueue, queue_names, redrive_policies

#: SQS limits (seconds, counts).
MAX_DELAY_S = 900
MAX_VISIBILITY_S = 43200
MAX_WAIT_S = 20
MAX_BATCH = 10

#: MessageRetentionPeriod of queues created here, seconds (SQS allows 60 s .. 14 days).
RETENTION_S = 4 * 24 * 3600
DEAD_LETTER_RETENTION_S = 14 * 24 * 3600

#: How many receipt handles the stale-handle guard remembers.
RECEIPTS_REMEMBERED = 10_000

#: Longest long poll of a receive over priority bands or several queues
#: before every band is looked at again, seconds (see the module docstring).
BAND_POLL_S = 2

MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
ALREADY_EXISTS_CODES = frozenset({"QueueAlreadyExists", "QueueNameExists"})
RECEIPT_INVALID_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight",
                                   "AWS.SimpleQueueService.MessageNotInflight"})
_RECEIPT_PHRASES = ("receipthandle", "receipt handle", "not available for visibility timeout change")

SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp"]


class QueueSetupError(Exception):
    """An SQS queue is missing (and AWS_CREATE_RESOURCES is off), was deleted
    under us, or exists with a configuration nommer cannot work with (e.g. no
    redrive policy to its dead-letter queue). The message says which and how
    to fix it."""


class BatchError(Exception):
    """Some entries of a batch failed for a reason other than a stale receipt
    handle. ``failures`` is a list of ``(index, code, message)``, index into the
    list given; ``message_ids`` (send_batch) holds the ids of the entries that
    were sent, None for the failed ones."""

    def __init__(self, what, failures, message_ids=None):
        first = "; ".join(f"#{i}: {code} {msg}" for i, code, msg in failures[:3])
        super().__init__(f"{what}: {len(failures)} entr{'y' if len(failures) == 1 else 'ies'} failed ({first})")
        self.failures = failures
        self.message_ids = message_ids


def is_receipt_invalid(code, message=""):
    """Whether an SQS error (code and message) means "this receipt handle is
    not (or no longer) valid" (see the module docstring)."""
    if code in RECEIPT_INVALID_CODES:
        return True
    return code == "InvalidParameterValue" and any(p in (message or "").lower() for p in _RECEIPT_PHRASES)


def _client_error_message(exc):
    return ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message", "")


def _whole_seconds(seconds, high):
    """``seconds`` rounded up to a whole number and clamped to 0..high."""
    return min(high, max(0, math.ceil(seconds)))


def _to_message(raw, queue=None):
    attributes = raw.get("Attributes") or {}
    return Message(message_id=raw["MessageId"], receipt_handle=raw["ReceiptHandle"], body=raw["Body"],
                   receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
                   sent_at=int(attributes.get("SentTimestamp", 0)) / 1000.0, queue=queue)


class _Receipts:
    """The newest receipt handle this process has seen per message id: knows
    a handle is stale without asking SQS. Bounded (oldest forgotten first)."""

    def __init__(self, limit=RECEIPTS_REMEMBERED):
        self._limit = limit
        self._owner = collections.OrderedDict()   # receipt handle -> message id, oldest first
        self._latest = {}                         # message id -> newest handle (None: deleted)

    def received(self, message_id, receipt_handle):
        self._latest[message_id] = receipt_handle
        self._owner[receipt_handle] = message_id
        while len(self._owner) > self._limit:
            handle, owner = self._owner.popitem(last=False)
            if self._latest.get(owner, handle) in (handle, None):
                self._latest.pop(owner, None)

    def deleted(self, receipt_handle):
        owner = self._owner.get(receipt_handle)
        if owner is not None:
            self._latest[owner] = None

    def is_stale(self, receipt_handle):
        owner = self._owner.get(receipt_handle)
        return owner is not None and owner in self._latest and self._latest[owner] != receipt_handle


class _PendingReceive:
    """What the reactor and the pool thread of one ReceiveMessage agree on,
    under ``lock``. ``abandoned``: False while the call runs; True once the
    caller cancelled (the thread then releases what it got); None once the
    thread handed its result to the reactor (which releases it if the caller
    cancels after that)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.abandoned = False


class SQSWorkQueue(WorkQueue):
    """Work queues on SQS. ``settings`` gives the AWS client settings, the
    queue names and AWS_CREATE_RESOURCES; ``redrive`` maps a queue name to its
    ``RedrivePolicy`` (``from_settings``: ``redrive_policies(settings)``);
    ``banded``: the queue names split in priority bands (``from_settings``:
    every pool's queue), ``aging_s`` PRIORITY_AGING_S (see the module
    docstring);
    ``clock`` (default ``reactor``) must keep real time: it bounds a receive
    waiting longer than one 20 s long poll. Every method returns a Deferred
    (``receive`` is a coroutine function, so ``Deferred.fromCoroutine`` works
    on it). Errors other than the ones named arrive as
    ``botocore.exceptions.ClientError``.
    """

    log = Logger()

    def __init__(self, settings, reactor, redrive=None, clock=None, banded=(), aging_s=30.0):
        self.settings = settings
        self._banded = frozenset(banded)
        self._aging_s = aging_s
        self._last_look = {}     # band name -> epoch s this object last looked at it
        self._turn = 0           # rotates the pools of a receive over several queues
        self.reactor = reactor
        self.aws = AWS(settings, reactor, name="sqs-queue")
        self._clock = clock or reactor
        self._redrive = dict(redrive or {})
        self._create = settings.AWS_CREATE_RESOURCES
        self._urls = {}          # queue name -> URL
        self._resolving = {}     # queue name -> [Deferreds waiting for its lookup]
        self._receipts = _Receipts()
        self._in_flight = 0      # boto3 calls running or queued in the pool
        self._closed = False

    @classmethod
    def from_settings(cls, settings, reactor):
        from nommer.core.pools import pool_queues
        return cls(settings, reactor, redrive=redrive_policies(settings), banded=pool_queues(settings).values(),
                   aging_s=settings.PRIORITY_AGING_S)

    @property
    def calls_in_flight(self):
        """How many boto3 calls of this queue are running (including
        abandoned receives still polling)."""
        return self._in_flight

    def close(self):
        """Stop the thread pool. Returns None at once: when an abandoned long
        poll is still running, the pool is stopped from a helper thread once
        it ends (at most 20 s), never on the reactor thread. Calls after
        close fail with RuntimeError."""
        if self._closed:
            return
        self._closed = True
        if self._in_flight == 0:
            self.aws.close()
        else:
            threading.Thread(target=self.aws.close, name="nommer-sqs-queue-close", daemon=True).start()

    # --- plumbing -----------------------------------------------------------

    def _track(self, d):
        self._in_flight += 1

        def done(result):
            self._in_flight -= 1
            return result
        return d.addBoth(done)

    def _call(self, method, **params):
        """One SQS call in the pool (Deferred of its response dict)."""
        if self._closed:
            return defer.fail(RuntimeError("the SQS work queue is closed"))
        return self._track(self.aws.call("sqs", method, **params))

    async def _queue_call(self, queue, method, **params):
        """``method`` on the queue named ``queue``; a queue deleted under us
        becomes QueueSetupError (and its URL is looked up again next time)."""
        url = await self._url(queue)
        try:
            return await self._call(method, QueueUrl=url, **params)
        except Exception as exc:
            self._raise_if_gone(queue, exc)
            raise

    def _raise_if_gone(self, queue, exc):
        if error_code(exc) in MISSING_QUEUE_CODES:
            self._urls.pop(queue, None)
            raise QueueSetupError(f"SQS queue {queue} does not exist any more (it is looked up again "
                                  f"on the next call)") from exc

    async def _url(self, name):
        """URL of queue ``name``: cached; otherwise looked up (created if
        allowed) once however many callers ask at the same time. Cancelling
        one caller does not cancel the lookup the others wait for."""
        url = self._urls.get(name)
        if url is not None:
            return url
        waiting = defer.Deferred()
        if name in self._resolving:
            self._resolving[name].append(waiting)
        else:
            self._resolving[name] = [waiting]
            lookup = defer.Deferred.fromCoroutine(self._lookup(name, self._create))
            lookup.addBoth(self._resolved, name)
        return await waiting

    def _resolved(self, result, name):
        waiting = self._resolving.pop(name)
        if not isinstance(result, Failure):
            self._urls[name] = result[0]
        for d in waiting:
            if not d.called:   # a cancelled caller is called already
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(result[0])
        return None

    def _dead_letter_names(self):
        return [p.dead_letter_queue for p in self._redrive.values()]

    async def _lookup(self, name, create):
        """(URL, created) of queue ``name``; creates it (its dead-letter queue
        first) when missing and ``create``, else raises QueueSetupError."""
        try:
            return (await self._call("get_queue_url", QueueName=name))["QueueUrl"], False
        except Exception as exc:
            if error_code(exc) not in MISSING_QUEUE_CODES:
                raise
            if not create:
                raise QueueSetupError(f"SQS queue {name} does not exist: run `nommer aws setup` or set "
                                      f"AWS_CREATE_RESOURCES = True") from exc
        retention = DEAD_LETTER_RETENTION_S if name in self._dead_letter_names() else RETENTION_S
        attributes = {"MessageRetentionPeriod": str(retention)}
        policy = self._redrive.get(name)
        if policy is not None:
            dlq_url = self._urls.get(policy.dead_letter_queue)
            if dlq_url is None:
                dlq_url, _ = await self._lookup(policy.dead_letter_queue, create)
                self._urls[policy.dead_letter_queue] = dlq_url
            attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": await self._arn(dlq_url),
                                                      "maxReceiveCount": policy.max_receive_count})
        try:
            url = (await self._call("create_queue", QueueName=name, Attributes=attributes))["QueueUrl"]
        except Exception as exc:
            if error_code(exc) not in ALREADY_EXISTS_CODES:
                raise
            # Created meanwhile by another process, with other attributes:
            # ensure_resources() is what checks them.
            return (await self._call("get_queue_url", QueueName=name))["QueueUrl"], False
        self.log.info("created SQS queue {queue} ({attributes})", queue=name, attributes=attributes)
        return url, True

    async def _arn(self, url):
        attrs = await self._call("get_queue_attributes", QueueUrl=url, AttributeNames=["QueueArn"])
        return attrs["Attributes"]["QueueArn"]

    # --- set-up ---------------------------------------------------------------

    def _resource_names(self):
        names = self._dead_letter_names() + [self.settings.NEW_JOB_QUEUE_NAME,
                                             self.settings.STATE_CHANGE_QUEUE_NAME] + list(self._redrive)
        return list(dict.fromkeys(names))

    async def ensure_resources(self):
        """Create the queues this configuration names that are missing (the
        dead-letter queues first, whatever AWS_CREATE_RESOURCES says: this is
        the explicit set-up) and check every queue with a redrive policy: its
        RedrivePolicy must name its dead-letter queue's ARN with
        maxReceiveCount = the policy's count (MAX_JOB_ATTEMPTS). Idempotent.
        Returns lines for a person (list of str). Raises QueueSetupError
        naming every queue that does not fit, and how to fix it."""
        lines, problems, retention = [], [], {}
        for name in self._resource_names():
            url, created = await self._lookup(name, create=True)
            self._urls[name] = url
            attrs = (await self._call("get_queue_attributes", QueueUrl=url,
                                      AttributeNames=["MessageRetentionPeriod"])).get("Attributes", {})
            retention[name] = int(attrs.get("MessageRetentionPeriod", 0))
            lines.append(f"{'created' if created else 'checked'} SQS queue {name} "
                         f"(retention {retention[name] / 86400:g} days)")
        for name, policy in self._redrive.items():
            dlq_arn = await self._arn(self._urls[policy.dead_letter_queue])
            attrs = (await self._call("get_queue_attributes", QueueUrl=self._urls[name],
                                      AttributeNames=["RedrivePolicy"])).get("Attributes", {})
            fix = (f"set its RedrivePolicy to deadLetterTargetArn={dlq_arn}, "
                   f"maxReceiveCount={policy.max_receive_count} (MAX_JOB_ATTEMPTS), or delete it and run "
                   f"`nommer aws setup` again")
            try:
                current = json.loads(attrs["RedrivePolicy"]) if attrs.get("RedrivePolicy") else None
            except ValueError:
                current = None
            if current is None:
                problems.append(f"SQS queue {name} has no redrive policy, so failing jobs would never "
                                f"reach {policy.dead_letter_queue}: {fix}")
                continue
            target, count = current.get("deadLetterTargetArn"), current.get("maxReceiveCount")
            if target != dlq_arn:
                problems.append(f"SQS queue {name} dead-letters to {target}, not {dlq_arn}: {fix}")
            elif str(count) != str(policy.max_receive_count):
                problems.append(f"SQS queue {name} dead-letters after {count} receives, not "
                                f"{policy.max_receive_count}: {fix}")
            else:
                lines.append(f"SQS queue {name} dead-letters to {policy.dead_letter_queue} after "
                             f"{policy.max_receive_count} receives")
                if retention.get(policy.dead_letter_queue, 0) < retention.get(name, 0):
                    lines.append(f"note: {policy.dead_letter_queue} keeps messages for less time than "
                                 f"{name}; a dead letter may expire before it is seen")
        if problems:
            raise QueueSetupError("; ".join(problems))
        return lines

    # --- the WorkQueue ----------------------------------------------------

    def _band_of(self, queue, priority):
        """The SQS queue a message of ``priority`` sent to ``queue`` goes to."""
        if queue in self._banded:
            return band_queue(queue, band_of(priority))
        band_of(priority)  # a bad priority is refused here too
        return queue

    async def send(self, queue, body, delay_s=0, priority=None):
        """SendMessage: ``body`` (str); ``delay_s`` seconds (0..900, rounded
        up) before it can be received; ``priority`` (0..100, None: 50)
        chooses the band of a banded queue. Returns the SQS MessageId.
        Raises ValueError for a delay or priority out of range."""
        queue = self._band_of(queue, priority)
        params = {"MessageBody": body}
        delay = math.ceil(delay_s)
        if not 0 <= delay <= MAX_DELAY_S:
            raise ValueError(f"delay_s must be 0..{MAX_DELAY_S} s on SQS, not {delay_s}")
        if delay:
            params["DelaySeconds"] = delay
        return (await self._queue_call(queue, "send_message", **params))["MessageId"]

    async def send_batch(self, queue, bodies, delay_s=0, priority=None):
        """SendMessageBatch, 10 bodies per request (all of ``priority``, as in
        ``send``). Returns the MessageIds in the order of ``bodies``. Entries
        that failed on the server's side are sent once more; if some still
        fail, raises BatchError (the others were sent: at-least-once, a
        caller may send them all again)."""
        queue = self._band_of(queue, priority)
        bodies = list(bodies)
        delay = math.ceil(delay_s)
        if not 0 <= delay <= MAX_DELAY_S:
            raise ValueError(f"delay_s must be 0..{MAX_DELAY_S} s on SQS, not {delay_s}")
        ids, failures = [None] * len(bodies), []
        for start in range(0, len(bodies), MAX_BATCH):
            todo = list(range(start, min(start + MAX_BATCH, len(bodies))))
            for last_try in (False, True):
                entries = [dict({"Id": str(i), "MessageBody": bodies[i]}, **({"DelaySeconds": delay} if delay else {}))
                           for i in todo]
                result = await self._queue_call(queue, "send_message_batch", Entries=entries)
                for ok in result.get("Successful", []):
                    ids[int(ok["Id"])] = ok["MessageId"]
                todo = []
                for f in result.get("Failed", []):
                    if f.get("SenderFault") or last_try:
                        failures.append((int(f["Id"]), f.get("Code"), f.get("Message", "")))
                    else:
                        todo.append(int(f["Id"]))
                if not todo:
                    break
        if failures:
            raise BatchError(f"SendMessageBatch to {queue}", sorted(failures), ids)
        return ids

    async def receive(self, queue, max_messages=1, visibility_timeout_s=30, wait_time_s=0):
        """ReceiveMessage: up to ``max_messages`` (clamped to 1..10) messages,
        each leased for ``visibility_timeout_s`` (rounded up, 0..43200).
        Waits up to ``wait_time_s`` seconds for one (long polls of at most
        20 s each, WaitTimeSeconds rounded up; 0 is a short poll, which on
        SQS may miss messages of a near-empty queue). Returns list[Message]
        (SQS orders a standard queue only approximately), [] if none came.
        Cancellable: the Deferred fails with CancelledError at once; what the
        abandoned call still receives is released (see the module docstring).

        ``queue`` may be a list of names, and a name may be banded: the
        bands and queues are then looked at as the module docstring says.
        Each Message names the SQS queue it came from (``Message.queue``).
        """
        params = {"MaxNumberOfMessages": min(MAX_BATCH, max(1, int(max_messages))),
                  "VisibilityTimeout": _whole_seconds(visibility_timeout_s, MAX_VISIBILITY_S),
                  "MessageSystemAttributeNames": SYSTEM_ATTRIBUTES}
        deadline = self._clock.seconds() + max(0.0, wait_time_s)
        queues = queue_names(queue)
        if len(queues) == 1 and queues[0] not in self._banded:
            return await self._receive_one(queues[0], params, deadline, MAX_WAIT_S)
        while True:
            for band, name in self._look_order(queues):
                got = await self._receive_one(name, params, None, 0)
                if band is not None:
                    self._last_look[band.name] = self._clock.seconds()
                if got:
                    return got
            if deadline - self._clock.seconds() < 1:
                return []
            # Nothing anywhere: wait on one pool's normal band, then look again.
            self._turn += 1
            name = queues[self._turn % len(queues)]
            got = await self._receive_one(name, params, min(deadline, self._clock.seconds() + BAND_POLL_S),
                                          BAND_POLL_S)
            if name in self._banded:
                self._last_look[NORMAL.name] = self._clock.seconds()
            if got:
                return got

    def _look_order(self, queues):
        """``[(Band or None, SQS queue name)]`` to short-poll for one receive
        over ``queues``: bands in ``band_order``, within a band the queues
        from the one after the last served; an unbanded queue once, where
        the normal band comes."""
        self._turn += 1
        start = self._turn % len(queues)
        rotated = queues[start:] + queues[:start]
        now = self._clock.seconds()
        for band in BANDS:  # a band never looked at yet counts from this first receive
            self._last_look.setdefault(band.name, now)
        order = []
        for band in band_order(self._last_look, now, self._aging_s):
            for name in rotated:
                if name in self._banded:
                    order.append((band, band_queue(name, band)))
                elif band is NORMAL:
                    order.append((None, name))
        return order

    async def _receive_one(self, queue, params, deadline, max_wait_s):
        """Messages of the one SQS queue ``queue``: long polls of at most
        ``max_wait_s`` until ``deadline`` (None: one short poll)."""
        url = await self._url(queue)
        while True:
            wait = 0 if deadline is None else _whole_seconds(deadline - self._clock.seconds(), max_wait_s)
            try:
                raw = await self._receive_call(queue, url, dict(params, WaitTimeSeconds=wait))
            except Exception as exc:
                self._raise_if_gone(queue, exc)
                raise
            if raw or wait == 0 or deadline - self._clock.seconds() < 1:
                messages = [_to_message(m, queue) for m in raw]
                for m in messages:
                    self._receipts.received(m.message_id, m.receipt_handle)
                return messages

    def _receive_call(self, queue, url, params):
        """Deferred of the raw message dicts of one ReceiveMessage, run in the
        pool with the release-on-abandon step (which must happen in the
        thread: the reactor may be stopping)."""
        if self._closed:
            return defer.fail(RuntimeError("the SQS work queue is closed"))
        pending = _PendingReceive()
        aws = self.aws

        def work():
            client = aws.client("sqs")
            messages = client.receive_message(QueueUrl=url, **params).get("Messages", [])
            with pending.lock:
                if not pending.abandoned or not messages:
                    pending.abandoned = None   # handed over: the reactor decides
                    return messages, None
            return messages, self._release_in_thread(client, url, messages)

        def cancel(d):
            with pending.lock:
                if pending.abandoned is False:
                    pending.abandoned = True

        outer = defer.Deferred(cancel)

        def deliver(result):
            if not outer.called:
                if isinstance(result, Failure):
                    outer.errback(result)
                else:
                    outer.callback(result[0])
                return None
            # The caller cancelled.
            if isinstance(result, Failure):
                return None
            messages, released = result
            if released is not None:
                self.log.info("released {n} message(s) of {queue} received after the receive was "
                              "cancelled: {outcome}", n=len(messages), queue=queue, outcome=released)
            elif messages and not self._closed:
                # Handed over just before the cancel: release from here.
                release = self._call("change_message_visibility_batch", QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(messages)])
                release.addErrback(lambda f: self.log.warn(
                    "could not release {n} message(s) of {queue} after a cancelled receive: {error}",
                    n=len(messages), queue=queue, error=f.getErrorMessage()))
                return release
            return None

        raw = self.aws.run(work)
        raw.addBoth(deliver)
        self._track(raw)
        return outer

    @staticmethod
    def _release_in_thread(client, url, messages):
        """Make ``messages`` visible again (in the pool thread). Returns a
        short outcome for the log; never raises."""
        try:
            result = client.change_message_visibility_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(messages)])
        except Exception as exc:  # noqa: BLE001 - reported, the lease runs out anyway
            return f"failed ({exc}); they come back after their visibility timeout"
        failed = result.get("Failed", [])
        return f"{len(messages) - len(failed)} released" + (f", {len(failed)} failed" if failed else "")

    async def change_visibility(self, queue, receipt_handle, visibility_timeout_s):
        """ChangeMessageVisibility: the message becomes visible
        ``visibility_timeout_s`` seconds from now (rounded up, clamped to
        0..43200; 0 releases it). Raises ReceiptHandleInvalid for a stale or
        unknown handle."""
        if self._receipts.is_stale(receipt_handle):
            raise ReceiptHandleInvalid(receipt_handle)
        try:
            await self._queue_call(queue, "change_message_visibility", ReceiptHandle=receipt_handle,
                                   VisibilityTimeout=_whole_seconds(visibility_timeout_s, MAX_VISIBILITY_S))
        except Exception as exc:
            if is_receipt_invalid(error_code(exc), _client_error_message(exc)):
                raise ReceiptHandleInvalid(receipt_handle) from exc
            raise

    async def delete(self, queue, receipt_handle):
        """DeleteMessage. Raises ReceiptHandleInvalid for a stale or unknown
        handle (and for one this object already deleted with)."""
        if self._receipts.is_stale(receipt_handle):
            raise ReceiptHandleInvalid(receipt_handle)
        try:
            await self._queue_call(queue, "delete_message", ReceiptHandle=receipt_handle)
        except Exception as exc:
            if is_receipt_invalid(error_code(exc), _client_error_message(exc)):
                raise ReceiptHandleInvalid(receipt_handle) from exc
            raise
        self._receipts.deleted(receipt_handle)

    async def delete_batch(self, queue, receipt_handles):
        """DeleteMessageBatch, 10 handles per request. Returns the handles
        that were stale or unknown (list, possibly empty): the others are
        deleted. Raises BatchError for entries that failed otherwise."""
        handles = list(receipt_handles)
        invalid = [h for h in handles if self._receipts.is_stale(h)]
        todo = [h for h in handles if not self._receipts.is_stale(h)]
        failures = []
        for start in range(0, len(todo), MAX_BATCH):
            chunk = todo[start:start + MAX_BATCH]
            result = await self._queue_call(queue, "delete_message_batch", Entries=[
                {"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)])
            for ok in result.get("Successful", []):
                self._receipts.deleted(chunk[int(ok["Id"])])
            for f in result.get("Failed", []):
                handle = chunk[int(f["Id"])]
                if is_receipt_invalid(f.get("Code"), f.get("Message", "")):
                    invalid.append(handle)
                else:
                    failures.append((handles.index(handle), f.get("Code"), f.get("Message", "")))
        if failures:
            raise BatchError(f"DeleteMessageBatch on {queue}", failures)
        return invalid

    async def depth(self, queue):
        """GetQueueAttributes: ``{"visible": ApproximateNumberOfMessages,
        "in_flight": ...NotVisible, "delayed": ...Delayed}`` (approximate:
        SQS's counts lag by up to a minute); of a banded queue, the sums
        over its bands."""
        if queue in self._banded:
            total = {"visible": 0, "in_flight": 0, "delayed": 0}
            for band in BANDS:
                for key, n in (await self._depth(band_queue(queue, band))).items():
                    total[key] += n
            return total
        return await self._depth(queue)

    async def _depth(self, queue):
        attrs = (await self._queue_call(queue, "get_queue_attributes", AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed"])).get("Attributes", {})
        return {"visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
                "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
                "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0))}
