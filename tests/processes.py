"""Subprocess helpers for tests and benchmarks (no Twisted import, so the
moto, DynamoDB Local and fake IMDS launchers and bench scripts can use them):
a free loopback port for a server to listen on, and stopping a process."""

import socket
import subprocess


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick,
    released at once): for a server started next, or for a refused connection."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, grace_s=10.0):
    """End ``proc`` (a ``subprocess.Popen``): SIGTERM, then SIGKILL if it is
    still alive ``grace_s`` seconds later; reaps it. No-op once it exited."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
