"""Job priorities: which waiting job a worker takes next. Pure: numbers in,
an order out; the work queues apply it (``nommer.core.workqueue``).

A job has a ``priority`` from 0 to 100 (ElasticRecode's field; default
DEFAULT_PRIORITY, 50). Higher runs first, but a low job is never starved:

- **Local queue (SQLite): aging.** A job's effective priority grows by one
  point every PRIORITY_AGING_S seconds it waits: ``priority + waited_s /
  aging_s``. The queue hands out the visible message of highest effective
  priority, then the oldest. Since ``now`` is the same for every message,
  that is the order of ``rank = sent_at - priority * aging_s`` (smallest
  first; stored at send, so indexed). Bound: a job of priority ``p`` is
  overtaken by jobs sent after it only during its first ``(100 - p) *
  PRIORITY_AGING_S`` seconds of waiting (``overtaken_for_s``); after that
  only jobs sent before it go first, so it waits at most that long plus the
  time the jobs ahead of it at that moment take (FIFO from there). A
  small PRIORITY_AGING_S weakens priorities (1 s: a point is worth one
  second of waiting), a large one makes them nearly strict.

- **SQS: a queue per priority band** (``BANDS``: high >= 70, normal 30..69,
  low < 30; the normal band is the pool's queue itself, so a deployment
  that never sets a priority keeps its queue). A receive looks at the bands
  highest first and takes from the first that has a message; but a band
  this worker has not looked at for its window (``starvation_window_s``:
  ``(70 - floor) * PRIORITY_AGING_S``, 1,200 s for normal and 2,100 s for
  low with the default 30 s) is looked at first (``band_order``). Bound:
  under sustained load in higher bands, every worker takes from a lower band
  at least once per window plus the job it is running; the head of a band
  waits at most that, a job at position ``k`` of its band at most
  ``ceil(k / workers)`` such periods. Within a band, SQS standard queues are
  only roughly FIFO.
"""

import attr

DEFAULT_PRIORITY = 50
MIN_PRIORITY = 0
MAX_PRIORITY = 100


@attr.s(frozen=True, auto_attribs=True)
class Band:
    """A priority band: priorities from ``floor`` up to the next band's
    floor; its SQS queue is the pool's queue name + ``suffix``."""

    name: str
    floor: int
    suffix: str


#: Highest first. The normal band's suffix is empty: it is the pool's queue.
BANDS = (Band("high", 70, "_high"), Band("normal", 30, ""), Band("low", 0, "_low"))
BAND_NAMES = tuple(b.name for b in BANDS)
#: The band of DEFAULT_PRIORITY.
NORMAL = BANDS[1]


def check_priority(priority):
    """``priority`` as an int 0..100 (None: DEFAULT_PRIORITY). Raises
    ValueError for anything else (bool, float, out of range)."""
    if priority is None:
        return DEFAULT_PRIORITY
    if isinstance(priority, bool) or not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"a priority is an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, not {priority!r}")
    return priority


def band_of(priority):
    """The ``Band`` of ``priority`` (0..100; None: DEFAULT_PRIORITY)."""
    priority = check_priority(priority)
    for band in BANDS:
        if priority >= band.floor:
            return band
    raise AssertionError("the lowest band's floor is 0")


def band_queue(queue, band):
    """The SQS queue of ``band`` (a Band) of the pool queue ``queue``:
    ``media_nommer_high``, ``media_nommer``, ``media_nommer_low``."""
    return queue + band.suffix


def rank(sent_at, priority, aging_s):
    """The local queue's sort key (smaller is taken first): ``sent_at``
    (epoch s) minus ``priority`` (None: DEFAULT_PRIORITY) times ``aging_s``
    (seconds per point)."""
    return sent_at - check_priority(priority) * aging_s


def overtaken_for_s(priority, aging_s):
    """How long (seconds) jobs sent after a job of ``priority`` may still be
    taken before it on the local queue: ``(100 - priority) * aging_s``."""
    return (MAX_PRIORITY - check_priority(priority)) * aging_s


def starvation_window_s(band, aging_s):
    """Seconds after which a worker that has not looked at ``band`` looks at
    it first (0 for the highest band, which is always looked at first)."""
    return (BANDS[0].floor - band.floor) * aging_s


def band_order(last_look, now, aging_s):
    """The bands to look at, in order, for one receive.

    :param last_look: ``{band name: epoch s}`` when this worker last looked
        at each band (a band missing: never, which counts as ``now``: a
        worker just started honours priorities first).
    :param now: epoch seconds. :param aging_s: PRIORITY_AGING_S.
    :return: list of Bands: those overdue (not looked at for their
        ``starvation_window_s``, and with a window) first, longest unseen
        first; then the others, highest first.
    """
    overdue = [b for b in BANDS if starvation_window_s(b, aging_s) > 0
               and now - last_look.get(b.name, now) >= starvation_window_s(b, aging_s)]
    overdue.sort(key=lambda b: last_look.get(b.name, now))
    return overdue + [b for b in BANDS if b not in overdue]

