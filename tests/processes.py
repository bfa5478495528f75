"""Subprocess helpers for tests and benchmarks (no Twisted import, so the
moto, DynamoDB Local and fake IMDS launchers and bench scripts can use them)."""

import subprocess


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
