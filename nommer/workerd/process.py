"""Run one child process from the reactor, without blocking it.

``ProcessRunner`` spawns a child with ``reactor.spawnProcess`` and a
``ProcessProtocol``; ``run_process`` is the one-call form. What it does for
its caller:

* ffmpeg's ``-progress pipe:1`` output: when ``on_progress_line`` is given,
  stdout is read as ``key=value`` lines and the callback gets one dict per
  progress block (``{"frame": "50", "out_time_us": "1960078", ...,
  "progress": "continue"}``; all values are ``str``), at each
  ``progress=continue`` / ``progress=end`` line. Otherwise stdout is kept
  (up to ``max_stdout_bytes``) and returned, e.g. ffprobe's JSON.
* stderr: only the last ``stderr_tail_lines`` lines are kept (bounded memory,
  however chatty the child).
* a runtime limit: after ``timeout_s`` seconds the child gets SIGTERM, then
  SIGKILL ``kill_grace_s`` seconds later if it is still there.
* ``terminate()``: the same TERM-then-KILL on demand (job canceled, worker
  shutting down).
* ``sandbox``: a ``nommer.workerd.sandbox.Sandbox``; the child then runs in
  it, with ``writable`` directories and ``readable`` paths (see
  ``Sandbox.wrap``; with a root worker, ``Sandbox.prepare`` first gives the
  ``writable`` directories to the sandbox user). The signals go to the sandbox
  (bwrap), which ends with everything in it; an exit status 128 + N from it is
  reported as signal N.

All time comes from the injected reactor (``callLater``), so tests can drive
the timers with ``twisted.internet.task.Clock``.
"""

import collections
import os
import shutil

import attr
from twisted.internet import defer, error, protocol
from twisted.logger import Logger

log = Logger()

#: Longest partial line (bytes) kept while waiting for its newline; a child
#: writing megabytes without a newline cannot make us hold them all.
MAX_PARTIAL_LINE_BYTES = 64 * 1024


@attr.s(auto_attribs=True, frozen=True)
class ProcessResult:
    """How a child process ended.

    ``exit_code``: int, or None when the child died of a signal.
    ``signal``: signal number (int) that killed the child, or None.
    ``stdout``: bytes the child wrote on stdout, or None when stdout was read
    as progress lines (``on_progress_line`` given) or nothing ran.
    ``stderr_tail``: the last lines of stderr (str, newline-joined, decoded as
    UTF-8 with replacement).
    ``timed_out``: True if the runtime limit was hit (we sent the signals).
    ``terminated``: True if ``terminate()`` was called (we sent the signals).
    ``stdout_truncated``: True if stdout went past ``max_stdout_bytes``.
    """

    exit_code: object
    signal: object
    stdout: object
    stderr_tail: str
    timed_out: bool = False
    terminated: bool = False
    stdout_truncated: bool = False

    @property
    def ok(self):
        """True when the child exited by itself with status 0."""
        return self.exit_code == 0 and self.signal is None and not self.timed_out

    @property
    def signaled_by_us(self):
        """True when we asked the child to stop (timeout or ``terminate()``)."""
        return self.timed_out or self.terminated


class _LineSplitter:
    """Bytes in, complete lines (bytes, without line ending) out."""

    def __init__(self):
        self._partial = b""

    def feed(self, data):
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_PARTIAL_LINE_BYTES:
            self._partial = self._partial[-MAX_PARTIAL_LINE_BYTES:]
        return [line.rstrip(b"\r") for line in lines]

    def flush(self):
        rest, self._partial = self._partial, b""
        return [rest.rstrip(b"\r")] if rest else []


class _RunnerProtocol(protocol.ProcessProtocol):
    """Feeds what the child writes and how it ends back to its runner."""

    def __init__(self, runner):
        self.runner = runner

    def connectionMade(self):
        # ffmpeg runs with -nostdin; give the child an immediate EOF anyway.
        self.transport.closeStdin()

    def childDataReceived(self, childFD, data):
        if childFD == 1:
            self.runner._stdout_received(data)
        elif childFD == 2:
            self.runner._stderr_received(data)

    def processEnded(self, reason):
        self.runner._ended(reason)


def which(name, path=None):
    """Absolute path of the executable ``name`` (a bare name is looked up on
    ``path``, default our PATH), or None."""
    if os.sep in name:
        name = os.path.abspath(name)
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    found = shutil.which(name, path=path if path is not None else os.environ.get("PATH", os.defpath))
    return os.path.abspath(found) if found else None


class ProcessRunner:
    """One run of one child process; see the module docstring.

    :param reactor: provides ``IReactorProcess`` and ``IReactorTime``.
    :param argv: list of str; ``argv[0]`` is the executable, looked up on PATH
        when it is not a path.
    :param timeout_s: runtime limit in seconds (None: no limit).
    :param kill_grace_s: seconds between SIGTERM and SIGKILL.
    :param on_progress_line: callable(dict of str -> str) called once per
        ``-progress`` block; exceptions it raises are logged and ignored.
    :param cwd: working directory of the child (None: ours).
    :param stderr_tail_lines: how many last lines of stderr to keep.
    :param max_stdout_bytes: most stdout bytes kept when stdout is collected.
    :param env: environment of the child (None: a copy of ours).
    :param log_fields: dict of extra fields for this runner's log events
        (e.g. ``{"job_id": ...}``).
    :param sandbox: a ``nommer.workerd.sandbox.Sandbox`` to run the child in
        (None: run it as it is). ``env`` is then ignored: the sandbox's is used.
    :param writable: directories the sandboxed child may write.
    :param readable: paths the sandboxed child may read.
    """

    def __init__(self, reactor, argv, *, timeout_s, kill_grace_s, on_progress_line=None,
                 cwd=None, stderr_tail_lines=40, max_stdout_bytes=16 * 1024 * 1024,
                 env=None, log_fields=None, sandbox=None, writable=(), readable=()):
        if not argv:
            raise ValueError("argv must name an executable")
        self.reactor = reactor
        self.argv = [str(a) for a in argv]
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self.on_progress_line = on_progress_line
        self.cwd = cwd
        self.max_stdout_bytes = max_stdout_bytes
        self.env = dict(os.environ) if env is None else dict(env)
        self.log_fields = dict(log_fields or {})
        self.sandbox = sandbox
        self.writable = list(writable)
        self.readable = list(readable)
        self._signal_exit_codes = False
        self._stderr_lines = collections.deque(maxlen=max(1, stderr_tail_lines))
        self._stderr_split = _LineSplitter()
        self._stdout_split = _LineSplitter()
        self._stdout_chunks = []
        self._stdout_len = 0
        self._stdout_truncated = False
        self._block = {}
        self._transport = None
        self._deferred = None
        self._timeout_call = None
        self._kill_call = None
        self._timed_out = False
        self._terminated = False
        self._ended_already = False

    # -- public ---------------------------------------------------------------

    @property
    def running(self):
        """True between ``start()`` and the child's end."""
        return self._transport is not None and not self._ended_already

    def start(self):
        """Spawn the child. Returns a Deferred firing with a ``ProcessResult``
        once the child has exited and its pipes are closed (whatever the exit
        status: judging it is the caller's business).

        Fails with ``FileNotFoundError`` if the executable cannot be found, or
        with the ``OSError`` spawning raised. Cancelling the Deferred calls
        ``terminate()``. If ``terminate()`` was called before ``start()``,
        nothing is spawned and the result says ``terminated=True``.
        """
        if self._deferred is not None:
            raise RuntimeError("a ProcessRunner runs once")
        self._deferred = defer.Deferred(lambda d: self.terminate())
        if self._terminated:
            self._ended_already = True
            self._deferred.callback(self._result(None, None))
            return self._deferred
        argv, env, cwd = self.argv, self.env, self.cwd
        if self.sandbox is not None:
            try:
                launch = self.sandbox.wrap(self.argv, writable=self.writable,
                                           readable=self.readable, cwd=self.cwd)
                # A root worker's child runs as the sandbox user: give it its files.
                self.sandbox.prepare(self.writable, self.readable)
            except OSError as e:
                self._ended_already = True
                self._deferred.errback(e)
                return self._deferred
            argv, env, cwd = launch.argv, launch.env, launch.cwd
            self._signal_exit_codes = launch.signal_exit_codes
        executable = self._resolve(argv[0])
        if executable is None:
            self._ended_already = True
            self._deferred.errback(FileNotFoundError(f"executable not found: {argv[0]}"))
            return self._deferred
        try:
            self._transport = self.reactor.spawnProcess(
                _RunnerProtocol(self), executable, argv, env=env, path=cwd,
                childFDs={0: "w", 1: "r", 2: "r"})
        except OSError as e:
            self._ended_already = True
            self._deferred.errback(e)
            return self._deferred
        if self.timeout_s is not None:
            self._timeout_call = self.reactor.callLater(self.timeout_s, self._on_timeout)
        return self._deferred

    def terminate(self):
        """Ask the child to stop: SIGTERM now, SIGKILL after ``kill_grace_s``
        if it is still running. Safe to call at any time, any number of times."""
        self._terminated = True
        self._stop()

    # -- internals ------------------------------------------------------------

    def _resolve(self, name):
        """Absolute path of the executable (PATH of the child's environment
        for a bare name), or None."""
        return which(name, self.env.get("PATH", os.defpath))

    def _on_timeout(self):
        self._timeout_call = None
        self._timed_out = True
        log.warn("process ran longer than {timeout_s} s, stopping it: {argv0}",
                 timeout_s=self.timeout_s, argv0=self.argv[0], **self.log_fields)
        self._stop()

    def _stop(self):
        if not self.running:
            return
        self._signal("TERM")
        if self._kill_call is None:
            self._kill_call = self.reactor.callLater(self.kill_grace_s, self._kill)

    def _kill(self):
        self._kill_call = None
        if self.running:
            log.warn("process ignored SIGTERM for {grace} s, killing it: {argv0}",
                     grace=self.kill_grace_s, argv0=self.argv[0], **self.log_fields)
            self._signal("KILL")

    def _signal(self, name):
        try:
            self._transport.signalProcess(name)
        except (error.ProcessExitedAlready, OSError):
            pass

    def _stdout_received(self, data):
        if self.on_progress_line is not None:
            for line in self._stdout_split.feed(data):
                self._progress_line(line)
            return
        room = self.max_stdout_bytes - self._stdout_len
        if len(data) > room:
            data = data[:max(room, 0)]
            self._stdout_truncated = True
        if data:
            self._stdout_chunks.append(data)
            self._stdout_len += len(data)

    def _progress_line(self, line):
        text = line.decode("utf-8", "replace").strip()
        if "=" not in text:
            return
        key, _, value = text.partition("=")
        key, value = key.strip(), value.strip()
        self._block[key] = value
        if key == "progress":
            block, self._block = self._block, {}
            try:
                self.on_progress_line(block)
            except Exception:
                log.failure("progress callback failed", **self.log_fields)

    def _stderr_received(self, data):
        for line in self._stderr_split.feed(data):
            self._stderr_lines.append(line)

    def _ended(self, reason):
        self._ended_already = True
        for call in (self._timeout_call, self._kill_call):
            if call is not None and call.active():
                call.cancel()
        self._timeout_call = self._kill_call = None
        for line in self._stderr_split.flush():
            self._stderr_lines.append(line)
        if self.on_progress_line is not None:
            for line in self._stdout_split.flush():
                self._progress_line(line)
        value = reason.value
        exit_code = getattr(value, "exitCode", None)
        sig = getattr(value, "signal", None)
        if isinstance(value, error.ProcessDone):
            exit_code, sig = 0, None
        if self._signal_exit_codes and sig is None and exit_code is not None \
                and 128 < exit_code <= 128 + 64:
            exit_code, sig = None, exit_code - 128  # bwrap: its child died of a signal
        if not self._deferred.called:
            self._deferred.callback(self._result(exit_code, sig))

    def _result(self, exit_code, sig):
        stdout = None
        if self.on_progress_line is None and self._transport is not None:
            stdout = b"".join(self._stdout_chunks)
        tail = "\n".join(line.decode("utf-8", "replace") for line in self._stderr_lines)
        return ProcessResult(exit_code=exit_code, signal=sig, stdout=stdout,
                             stderr_tail=tail, timed_out=self._timed_out,
                             terminated=self._terminated,
                             stdout_truncated=self._stdout_truncated)


async def run_process(reactor, argv, *, timeout_s, kill_grace_s, on_progress_line=None,
                      cwd=None, stderr_tail_lines=40, sandbox=None, writable=(), readable=()):
    """Run ``argv`` to its end and return its ``ProcessResult``.

    Same arguments as ``ProcessRunner``; use the class when the run must be
    stoppable from outside. Raises ``FileNotFoundError`` when the executable
    is missing.
    """
    runner = ProcessRunner(reactor, argv, timeout_s=timeout_s, kill_grace_s=kill_grace_s,
                           on_progress_line=on_progress_line, cwd=cwd,
                           stderr_tail_lines=stderr_tail_lines, sandbox=sandbox,
                           writable=writable, readable=readable)
    return await runner.start()
