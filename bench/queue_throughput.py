"""Local (SQLite) work queue throughput: send, then receive + delete, in one
process through the real adbapi thread. Prints messages per second."""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, reactor  # noqa: E402

from nommer.core.workqueue.local import LocalWorkQueue  # noqa: E402

N = int(os.environ.get("BENCH_MESSAGES", "2000"))


async def run():
    queue = LocalWorkQueue(os.path.join(tempfile.mkdtemp(), "queue.sqlite"), reactor)
    t0 = time.perf_counter()
    for i in range(N):
        await queue.send("bench", str(i))
    t1 = time.perf_counter()
    got = 0
    while got < N:
        for m in await queue.receive("bench", max_messages=10, visibility_timeout_s=30):
            await queue.delete("bench", m.receipt_handle)
            got += 1
    t2 = time.perf_counter()
    queue.close()
    print(f"messages: {N}")
    print(f"send: {N / (t1 - t0):.0f} msg/s")
    print(f"receive(10)+delete: {N / (t2 - t1):.0f} msg/s")


def main():
    d = defer.Deferred.fromCoroutine(run())
    d.addErrback(lambda f: (f.printTraceback(), setattr(main, "failed", True)))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if getattr(main, "failed", False):
        sys.exit(1)


if __name__ == "__main__":
    main()
