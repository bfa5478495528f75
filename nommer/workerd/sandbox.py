"""The sandbox every ffmpeg and ffprobe of a worker runs in.

``Sandbox(settings).wrap(argv, writable=..., readable=..., cwd=...)`` turns the
argv of one ffmpeg/ffprobe run into a ``Launch``: the argv, environment and
working directory to hand ``reactor.spawnProcess`` (``ProcessRunner`` does it
when given ``sandbox=``). With ``FFMPEG_SANDBOX = "bwrap"`` the argv becomes::

    bwrap --unshare-all --die-with-parent --new-session --cap-drop ALL
          --clearenv --setenv PATH /usr/bin:/bin
          --ro-bind /usr /usr  --symlink usr/bin /bin  (same for /sbin, /lib*)
          --ro-bind-try /etc/ld.so.cache ...  /etc/alternatives  /etc/fonts
                        /var/cache/fontconfig
          --proc /proc --remount-ro /proc --dev /dev --tmpfs /tmp
          --bind SCRATCH SCRATCH          (writable: the job's scratch dir)
          --ro-bind INPUT INPUT           (readable: an input outside it)
          --chdir CWD --
          /usr/bin/prlimit --cpu=S --as=B --fsize=B --nproc=N --
          /usr/bin/ffmpeg ...

What that gives the child:

* no network at all (a new network namespace holds only a loopback
  interface), its own pid, ipc, uts and cgroup namespaces (and a user
  namespace when the worker is not root), no capabilities, a new session (no
  terminal to inject keys into);
* a file system holding only /usr (and the /bin, /lib... links to it), the
  dynamic linker's cache, /etc/alternatives (Debian links BLAS/LAPACK
  through it), fontconfig, a fresh read-only /proc (bwrap leaves /proc/sys
  writable to a child of a root worker: kernel.core_pattern would run a
  program of the job's as root on the host), /dev (null, zero, urandom...) and
  an empty /tmp; none of /etc, /home, /root, DATA_DIR or other jobs' scratch
  directories; writable only: the directories in ``writable``;
* an empty environment but PATH, and bwrap itself is spawned with an empty
  environment too: bwrap stays in the sandbox as its pid 1, and the child
  could read pid 1's ``/proc/1/environ``;
* resource limits (setrlimit through util-linux ``prlimit``, which sets them
  on itself then execs ffmpeg): FFMPEG_RLIMIT_CPU_S, FFMPEG_RLIMIT_AS_BYTES,
  FFMPEG_RLIMIT_FSIZE_BYTES, FFMPEG_RLIMIT_NPROC;
* ``--die-with-parent``: if the worker dies, even of SIGKILL, the kernel
  kills bwrap and with it everything in the sandbox. SIGTERM or SIGKILL to
  the spawned bwrap (``ProcessRunner.terminate()``) ends the sandbox and
  every process in it at once: bwrap does not forward signals, its pid 1
  dies of its parent's death and a pid namespace dies with its pid 1.

bwrap reports a child killed by signal N as exit status 128 + N;
``Launch.signal_exit_codes`` tells ``ProcessRunner`` to read it back as the
signal.

With ``FFMPEG_SANDBOX = "none"`` the argv is left as it is (no isolation, no
rlimits) and only the environment is emptied (PATH kept); the worker logs a
warning at every start. ``check(reactor, settings)`` runs a trivial command
through the same launcher and raises ``SandboxUnavailable`` with what to do
when it cannot start; the worker refuses to start then.
"""

import os
import shutil

import attr

#: FFMPEG_SANDBOX values: run ffmpeg under bubblewrap, or as it is. The
#: settings accept exactly these names (``nommer.conf.schema``).
MODES = ("bwrap", "none")

#: PATH inside the sandbox (executables are given as absolute paths anyway).
SANDBOX_PATH = "/usr/bin:/bin"

#: Top-level directories that are, on merged-/usr systems, symlinks into
#: /usr: recreated as the same symlinks, or bound read-only if real.
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

#: Files and directories of /etc and /var ffmpeg needs, bound read-only when
#: present: the dynamic linker's cache, Debian's alternatives (libblas.so.3
#: and liblapack.so.3 link through them), fontconfig (drawtext, subtitles).
_SYSTEM_READ_ONLY = ("/etc/ld.so.cache", "/etc/alternatives", "/etc/fonts",
                     "/var/cache/fontconfig")

#: How to fix a sandbox that cannot start (in every message about it).
HOW_TO_FIX = ("install bubblewrap (apt-get install bubblewrap) and util-linux's prlimit, "
              "set BWRAP_BIN to its path, or set FFMPEG_SANDBOX = \"none\" to run ffmpeg "
              "unsandboxed (not recommended: callers are untrusted)")

#: The command ``check`` runs, and its time limit, seconds.
CHECK_TIMEOUT_S = 30.0


class SandboxUnavailable(Exception):
    """The sandbox cannot start on this machine; the message says why and
    how to fix it."""


@attr.s(auto_attribs=True, frozen=True)
class Launch:
    """What to spawn: ``argv`` (list of str; ``argv[0]`` an absolute path),
    ``env`` (dict), ``cwd`` (str, the directory to spawn in, on the host),
    ``signal_exit_codes`` (bool: exit status 128 + N means killed by signal N)."""

    argv: list
    env: dict
    cwd: object
    signal_exit_codes: bool = False


def _which(name, path=None):
    """Absolute path of the executable ``name`` (a bare name is looked up on
    ``path``, default our PATH), or None."""
    if os.sep in name:
        name = os.path.abspath(name)
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    found = shutil.which(name, path=path if path is not None else os.environ.get("PATH", os.defpath))
    return os.path.abspath(found) if found else None


def _under(path, directory):
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


class Sandbox:
    """Builds sandboxed launches from ``settings`` (FFMPEG_SANDBOX, BWRAP_BIN,
    FFMPEG_RLIMIT_*). Pure but for looking executables up on PATH."""

    def __init__(self, settings):
        self.mode = getattr(settings, "FFMPEG_SANDBOX", "bwrap")
        if self.mode not in MODES:
            raise SandboxUnavailable(f"FFMPEG_SANDBOX = {self.mode!r}: must be "
                                     + " or ".join(f'"{m}"' for m in MODES))
        self.bwrap_bin = settings.BWRAP_BIN
        self.limits = {"cpu": int(settings.FFMPEG_RLIMIT_CPU_S),
                       "as": int(settings.FFMPEG_RLIMIT_AS_BYTES),
                       "fsize": int(settings.FFMPEG_RLIMIT_FSIZE_BYTES),
                       "nproc": int(settings.FFMPEG_RLIMIT_NPROC)}

    @property
    def enabled(self):
        return self.mode != "none"

    def wrap(self, argv, *, writable=(), readable=(), cwd=None):
        """The ``Launch`` running ``argv`` in the sandbox.

        :param argv: list of str; ``argv[0]`` (ffmpeg, ffprobe) is looked up
            on our PATH when it is not a path.
        :param writable: directories the child may write (bound read-write at
            the same path), e.g. the job's scratch directory.
        :param readable: files or directories it may read (bound read-only),
            e.g. an input outside ``writable``. Paths that do not exist, and
            symlinks, are skipped (the child then reports them missing).
        :param cwd: the child's working directory (default: the first of
            ``writable``, else ``/``).
        :raises FileNotFoundError: ``argv[0]`` (or, sandboxed, bwrap or
            prlimit) cannot be found.
        """
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("argv must name an executable")
        exe = _which(argv[0])
        if exe is None:
            raise FileNotFoundError(f"executable not found: {argv[0]}")
        writable = [os.path.abspath(str(p)) for p in writable]
        readable = [os.path.abspath(str(p)) for p in readable]
        if cwd is None:
            cwd = writable[0] if writable else "/"
        cwd = os.path.abspath(str(cwd))
        if not self.enabled:
            env = {"PATH": os.environ.get("PATH", os.defpath)}
            return Launch([exe] + argv[1:], env, cwd if os.path.isdir(cwd) else None)
        bwrap = _which(self.bwrap_bin)
        if bwrap is None:
            raise FileNotFoundError(f"BWRAP_BIN not found: {self.bwrap_bin}")
        prlimit = _which("prlimit", SANDBOX_PATH)
        if prlimit is None:
            raise FileNotFoundError("prlimit (util-linux) not found in /usr/bin or /bin")
        return Launch(self._bwrap_argv(bwrap, prlimit, exe, argv[1:], writable, readable, cwd),
                      {}, "/", signal_exit_codes=True)

    def _bwrap_argv(self, bwrap, prlimit, exe, args, writable, readable, cwd):
        out = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
               "--clearenv", "--setenv", "PATH", SANDBOX_PATH,
               "--ro-bind", "/usr", "/usr"]
        for path in _ROOT_LINKS:
            if os.path.islink(path):
                out += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                out += ["--ro-bind", path, path]
        for path in _SYSTEM_READ_ONLY:
            out += ["--ro-bind-try", path, path]
        # /proc read-only: bwrap leaves /proc/sys writable to a root worker's child, and
        # kernel.core_pattern there runs any program as root on the host.
        out += ["--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        # An executable outside /usr (a static ffmpeg in /opt, say): that file only.
        real_exe = os.path.realpath(exe)
        if not _under(real_exe, "/usr"):
            out += ["--ro-bind", real_exe, real_exe]
            exe = real_exe
        for path in writable:
            out += ["--bind", path, path]
        for path in readable:
            # Not a symlink: bwrap would resolve it on the host and bind its target, and
            # one left by an earlier sandboxed run may point anywhere the worker can read.
            if not any(_under(path, w) for w in writable) and not os.path.islink(path):
                out += ["--ro-bind-try", path, path]
        out += ["--chdir", cwd, "--", prlimit,
                f"--cpu={self.limits['cpu']}", f"--as={self.limits['as']}",
                f"--fsize={self.limits['fsize']}", f"--nproc={self.limits['nproc']}",
                "--", exe]
        return out + list(args)


def sandbox_failure(result):
    """bwrap's own error (str) when ``result`` (a ``ProcessResult``) is the
    sandbox failing to start rather than its child failing, else None: bwrap
    then exits 1 having written only its "bwrap: ..." line. The machine, not
    the job, is at fault: callers treat it as transient."""
    if result.exit_code != 1 or result.signal is not None:
        return None
    lines = [line for line in result.stderr_tail.splitlines() if line.strip()]
    if len(lines) == 1 and lines[0].startswith("bwrap: "):
        return lines[0]
    return None


def describe(settings):
    """One line for the worker's start-up log: what the sandbox is."""
    if getattr(settings, "FFMPEG_SANDBOX", "bwrap") == "none":
        return ("FFMPEG_SANDBOX = \"none\": ffmpeg and ffprobe run UNSANDBOXED (network, the "
                "worker's files and no resource limits): set FFMPEG_SANDBOX = \"bwrap\" "
                "(apt-get install bubblewrap)")
    s = settings
    return (f"ffmpeg and ffprobe run in a bubblewrap sandbox ({s.BWRAP_BIN}): no network, only the "
            f"job's scratch writable, empty environment; limits cpu {s.FFMPEG_RLIMIT_CPU_S} s, "
            f"address space {s.FFMPEG_RLIMIT_AS_BYTES} B, file size {s.FFMPEG_RLIMIT_FSIZE_BYTES} B, "
            f"{s.FFMPEG_RLIMIT_NPROC} processes")


async def check(reactor, settings):
    """Run ``FFMPEG_BIN -version`` through the sandbox, as jobs do (spawned
    from the reactor, never blocking it). Returns the ffmpeg version line.

    Raises ``SandboxUnavailable`` (naming FFMPEG_SANDBOX/BWRAP_BIN and how to
    fix it) when the sandbox cannot start: bwrap or prlimit missing, user
    namespaces refused (a systemd unit with RestrictNamespaces=yes, a kernel
    with unprivileged user namespaces off), a mount refused...
    """
    from nommer.workerd.process import ProcessRunner

    try:
        sandbox = Sandbox(settings)
    except SandboxUnavailable as e:
        raise SandboxUnavailable(f"{e}; {HOW_TO_FIX}") from None
    if not sandbox.enabled:
        return None
    if _which(settings.FFMPEG_BIN) is None:
        raise SandboxUnavailable(f"FFMPEG_BIN not found: {settings.FFMPEG_BIN} (apt-get install ffmpeg, "
                                 "or set FFMPEG_BIN to its path)")
    what = f"the ffmpeg sandbox (FFMPEG_SANDBOX = \"bwrap\", BWRAP_BIN = {settings.BWRAP_BIN!r})"
    runner = ProcessRunner(reactor, [settings.FFMPEG_BIN, "-hide_banner", "-version"],
                           timeout_s=CHECK_TIMEOUT_S, kill_grace_s=1.0, sandbox=sandbox,
                           stderr_tail_lines=5, max_stdout_bytes=4096)
    try:
        result = await runner.start()
    except OSError as e:
        raise SandboxUnavailable(f"{what} cannot start: {e}; {HOW_TO_FIX}") from None
    if not result.ok:
        said = " ".join(result.stderr_tail.split())[-500:] or "no message"
        status = (f"exit status {result.exit_code}" if result.signal is None
                  else f"signal {result.signal}")
        if result.timed_out:
            status = f"no answer within {CHECK_TIMEOUT_S:g} s"
        raise SandboxUnavailable(f"{what} does not work ({status}: {said}); {HOW_TO_FIX}")
    first = (result.stdout or b"").decode("utf-8", "replace").strip().splitlines()
    return first[0] if first else ""
