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

When the worker runs as root (CI, ``make run`` as root) the child must not
stay root: the kernel exempts uid 0 from RLIMIT_NPROC (a fork bomb would
reach the host) and a root child could leave setuid-root files in scratch.
bwrap then starts without a user namespace (``--unshare-ipc --unshare-pid
--unshare-net --unshare-uts --unshare-cgroup-try`` instead of
``--unshare-all``: the user namespace a root bwrap makes maps uid 0 alone,
so no other uid could be taken in it), still binding paths under root's
0700 directories, and keeps only the capabilities needed to switch users
(``--cap-drop ALL --cap-add CAP_SETUID --cap-add CAP_SETGID --cap-add CAP_SETPCAP --cap-add
CAP_DAC_READ_SEARCH``: SETPCAP to empty the bounding set, DAC_READ_SEARCH
for ``--chdir`` into a scratch dir owned by the sandbox user), creates the
parents of every bound path mode 0755 (``--perms 0755 --dir P``; bwrap would
make them 0700, out of the sandbox user's reach) and its own /tmp mode 1777
(``--perms 1777 --tmpfs /tmp``), and the command becomes::

          /usr/bin/setpriv --reuid=U --regid=G --clear-groups
                  --inh-caps=-all --bounding-set=-all --no-new-privs --
          /usr/bin/prlimit ... -- /usr/bin/ffmpeg ...

with U and G the uid and gid of ``SANDBOX_USER`` (``nobody``, 65534), looked
up at start; once no uid is 0 the kernel empties the permitted and effective
sets, so the child has no capability at all (bounding set included) and its
processes count against RLIMIT_NPROC. ``Sandbox.prepare`` (the runner calls
it before each launch) gives the ``writable`` directories to U (so the
outputs ffmpeg writes belong to U; the root worker reads, moves and removes
them) and, for a ``readable`` file of the worker's in scratch U cannot read
(umask 027), the file; it follows no symlink. When the worker is not root,
none of this applies: bwrap's user namespace maps the worker's own uid, and
RLIMIT_NPROC applies to that user.

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
  directories; writable only: the directories in ``writable``; read-only,
  the ``readable`` paths, but never ``/`` nor a directory holding DATA_DIR
  or SCRATCH_DIR (those are dropped: a program given a wide tree, such as
  an interpreter's prefix, still cannot see the job store or other jobs);
* a Python program (the captions' transcription runner): the worker's
  interpreter run by the path given (a venv's ``bin/python``, so Python
  finds its venv) when that path is inside a ``readable`` directory, its
  prefixes and site-packages bound read-only by the caller
  (``nommer.workerd.outputs.captions.interpreter_paths``);
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

Size (issue 10: about 400 lines at most, or a reason): kept whole on
purpose. It is a security boundary, and this docstring (a fifth of it) is
its threat model: the argv it builds, the root worker's variant and
``prepare`` implement the one policy written above, and stay beside it.
"""

import os
import stat

import attr

from nommer.core.paths import is_within
from nommer.workerd.process import ProcessRunner, which

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

#: The user (and its primary group) a root worker's sandboxed children run as.
SANDBOX_USER = "nobody"

#: What a root worker's bwrap keeps until setpriv switches users (then none is left).
_ROOT_BWRAP_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_READ_SEARCH")

#: The namespaces of --unshare-all but the user one (a root worker's bwrap).
_UNSHARE_BUT_USER = ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                     "--unshare-cgroup-try")

#: Where bwrap itself provides the directories (never made with --dir).
_PROVIDED = ("/usr", "/proc", "/dev") + _ROOT_LINKS


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


_users = {}


def sandbox_user():
    """(uid, gid) of ``SANDBOX_USER`` and its primary group (looked up once
    per name). Raises ``SandboxUnavailable`` when there is no such user or it
    is root."""
    import pwd

    if SANDBOX_USER in _users:
        return _users[SANDBOX_USER]
    try:
        entry = pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        raise SandboxUnavailable(
            f"the worker runs as root and its ffmpeg must not: there is no user {SANDBOX_USER!r} "
            f"to run it as (create it: useradd --system --no-create-home {SANDBOX_USER})") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise SandboxUnavailable(f"user {SANDBOX_USER!r} has uid {entry.pw_uid} and gid "
                                 f"{entry.pw_gid}: the sandbox needs an unprivileged user")
    _users[SANDBOX_USER] = entry.pw_uid, entry.pw_gid
    return _users[SANDBOX_USER]


def _open_exactly(path, flags):
    """A descriptor of ``path`` itself, or None: the last component is not
    followed if a symlink (O_NOFOLLOW) and the file opened must sit at
    ``path`` with its parents resolved (no parent swapped for a link
    meanwhile). Missing files: None."""
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    try:
        fd = os.open(real, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None  # missing, a symlink (ELOOP), ...: bwrap or the child will say
    try:
        if os.readlink(f"/proc/self/fd/{fd}") == real:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _readable_by(st, uid, gid):
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


class Sandbox:
    """Builds sandboxed launches from ``settings`` (FFMPEG_SANDBOX, BWRAP_BIN,
    FFMPEG_RLIMIT_*, SCRATCH_DIR). Pure but for looking executables and the
    sandbox user up; ``prepare`` changes owners.

    ``as_root``: whether the worker runs as root (default: its euid is 0);
    then the child runs as ``SANDBOX_USER`` (see the module docstring).
    """

    def __init__(self, settings, *, as_root=None):
        self.mode = getattr(settings, "FFMPEG_SANDBOX", "bwrap")
        if self.mode not in MODES:
            raise SandboxUnavailable(f"FFMPEG_SANDBOX = {self.mode!r}: must be "
                                     + " or ".join(f'"{m}"' for m in MODES))
        self.bwrap_bin = settings.BWRAP_BIN
        self.scratch_dir = getattr(settings, "SCRATCH_DIR", None)
        self.data_dir = getattr(settings, "DATA_DIR", None)
        self.as_root = (os.geteuid() == 0) if as_root is None else bool(as_root)
        self.run_as = None  # (uid, gid) the child runs as, when the worker is root
        self._no_user = None
        if self.enabled and self.as_root:
            try:
                self.run_as = sandbox_user()
            except SandboxUnavailable as e:
                self._no_user = str(e)
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
            e.g. an input outside ``writable``. Paths that do not exist,
            symlinks, ``/`` and directories holding DATA_DIR or SCRATCH_DIR
            are skipped (the child then reports them missing).
        :param cwd: the child's working directory (default: the first of
            ``writable``, else ``/``).
        :raises FileNotFoundError: ``argv[0]`` (or, sandboxed, bwrap,
            prlimit, setpriv or, for a root worker, ``SANDBOX_USER``) cannot
            be found.
        """
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("argv must name an executable")
        exe = which(argv[0])
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
        bwrap = which(self.bwrap_bin)
        if bwrap is None:
            raise FileNotFoundError(f"BWRAP_BIN not found: {self.bwrap_bin}")
        prlimit = which("prlimit", SANDBOX_PATH)
        if prlimit is None:
            raise FileNotFoundError("prlimit (util-linux) not found in /usr/bin or /bin")
        setpriv = None
        if self.as_root:
            if self.run_as is None:
                raise FileNotFoundError(self._no_user)
            setpriv = which("setpriv", SANDBOX_PATH)
            if setpriv is None:
                raise FileNotFoundError("setpriv (util-linux) not found in /usr/bin or /bin: a root "
                                        "worker needs it to run ffmpeg as an unprivileged user")
        return Launch(self._bwrap_argv(bwrap, prlimit, setpriv, exe, argv[1:], writable, readable,
                                       cwd),
                      {}, "/", signal_exit_codes=True)

    def prepare(self, writable=(), readable=()):
        """Before a launch by a root worker: give the ``writable`` directories
        to the sandbox user (ffmpeg writes there as that user), and a
        ``readable`` regular file in one of them or under SCRATCH_DIR that
        the user could not read (a source the worker wrote with umask 027)
        to that user too. No symlink is followed, at the end of a path or
        in its parents; what is missing or not as expected is left alone
        (bwrap or the child then reports it). Not root, or unsandboxed:
        nothing. A few system calls: run from the reactor thread like the
        spawn itself. Raises ``OSError`` if an owner cannot be changed."""
        if not self.enabled or self.run_as is None:
            return
        uid, gid = self.run_as
        writable = [os.path.abspath(str(p)) for p in writable]
        for path in writable:
            fd = _open_exactly(path, os.O_RDONLY | os.O_DIRECTORY)
            if fd is None:
                continue
            try:
                st = os.fstat(fd)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.fchown(fd, uid, gid)
            finally:
                os.close(fd)
        ours = writable + ([os.path.abspath(self.scratch_dir)] if self.scratch_dir else [])
        for path in (os.path.abspath(str(p)) for p in readable):
            if not any(is_within(path, d) and path != d for d in ours):
                continue  # not the worker's job file: never given away
            fd = _open_exactly(path, os.O_RDONLY)
            if fd is None:
                continue
            try:
                st = os.fstat(fd)
                # One link only: not a job file linked under another name by the sandbox.
                if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and not _readable_by(st, uid, gid):
                    os.fchown(fd, uid, -1)
            finally:
                os.close(fd)

    def _may_bind(self, path, writable):
        """Whether the ``readable`` ``path`` is bound: not inside a writable
        directory (bound already), not a symlink (bwrap would resolve it on
        the host and bind its target, and one left by an earlier sandboxed
        run may point anywhere the worker can read), and not ``/`` nor a
        directory holding DATA_DIR or SCRATCH_DIR (every job's files and
        the store: a tree such as an interpreter's prefix given as readable
        must never bring them in)."""
        if any(is_within(path, w) for w in writable) or os.path.islink(path):
            return False
        for kept in (self.data_dir, self.scratch_dir):
            if kept and is_within(os.path.realpath(kept), os.path.realpath(path)):
                return False
        return path != "/"

    def _parents(self, path, made, writable):
        """``--perms 0755 --dir P`` for the parents of a bound ``path`` not yet
        made (a root worker's bwrap, which would make them 0700 root's: the
        sandbox user could not reach what is bound there)."""
        out = []
        parent = os.path.dirname(path)
        chain = []
        while parent not in ("/", ""):
            chain.append(parent)
            parent = os.path.dirname(parent)
        for p in reversed(chain):
            if p in made or p == "/tmp" or any(is_within(p, d) for d in _PROVIDED) \
                    or any(is_within(p, w) for w in writable):
                continue
            made.add(p)
            out += ["--perms", "0755", "--dir", p]
        return out

    def _bwrap_argv(self, bwrap, prlimit, setpriv, exe, args, writable, readable, cwd):
        root = setpriv is not None
        out = [bwrap]
        out += list(_UNSHARE_BUT_USER) if root else ["--unshare-all"]
        out += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        if root:
            for cap in _ROOT_BWRAP_CAPS:
                out += ["--cap-add", cap]
        out += ["--clearenv", "--setenv", "PATH", SANDBOX_PATH,
                "--ro-bind", "/usr", "/usr"]
        made = set()

        def parents(path, inside=()):
            return self._parents(path, made, inside) if root else []
        for path in _ROOT_LINKS:
            if os.path.islink(path):
                out += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                out += ["--ro-bind", path, path]
        for path in _SYSTEM_READ_ONLY:
            out += parents(path) + ["--ro-bind-try", path, path]
        # /proc read-only: bwrap leaves /proc/sys writable to a root worker's child, and
        # kernel.core_pattern there runs any program as root on the host.
        out += ["--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev"]
        # The sandbox user of a root worker writes its /tmp too (bwrap makes it root's 0755).
        out += (["--perms", "1777"] if root else []) + ["--tmpfs", "/tmp"]
        bound = [p for p in readable if self._may_bind(p, writable)]
        # An executable outside /usr (a static ffmpeg in /opt, say): that file only. Run by
        # the path given when that path is in a bound directory (a venv's bin/python, a
        # symlink to its base interpreter: Python finds the venv by the path it was run as,
        # and the link resolves inside the sandbox, among what is bound).
        real_exe = os.path.realpath(exe)
        if not is_within(real_exe, "/usr"):
            out += parents(real_exe) + ["--ro-bind", real_exe, real_exe]
            if not any(is_within(exe, p) and exe != p for p in bound):
                exe = real_exe
        for path in writable:
            out += parents(path, [w for w in writable if w != path]) + ["--bind", path, path]
        for path in bound:
            out += parents(path, writable) + ["--ro-bind-try", path, path]
        out += ["--chdir", cwd, "--"]
        if root:
            uid, gid = self.run_as
            out += [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        out += [prlimit,
                f"--cpu={self.limits['cpu']}", f"--as={self.limits['as']}",
                f"--fsize={self.limits['fsize']}", f"--nproc={self.limits['nproc']}",
                "--", exe]
        return out + list(args)


def sandbox_failure(result):
    """bwrap's own error (str) when ``result`` (a ``ProcessResult``) is the
    sandbox failing to start rather than its child failing, else None: bwrap
    then exits 1 having written only its "bwrap: ..." line (setpriv, for a
    root worker: exit status 127 and one "setpriv: ..." line). The machine,
    not the job, is at fault: callers treat it as transient."""
    if result.exit_code not in (1, 127) or result.signal is not None:
        return None
    lines = [line for line in result.stderr_tail.splitlines() if line.strip()]
    prefix = "bwrap: " if result.exit_code == 1 else "setpriv: "
    if len(lines) == 1 and lines[0].startswith(prefix):
        return lines[0]
    return None


def describe(settings):
    """One line for the worker's start-up log: what the sandbox is."""
    if getattr(settings, "FFMPEG_SANDBOX", "bwrap") == "none":
        return ("FFMPEG_SANDBOX = \"none\": ffmpeg and ffprobe run UNSANDBOXED (network, the "
                "worker's files and no resource limits): set FFMPEG_SANDBOX = \"bwrap\" "
                "(apt-get install bubblewrap)")
    s = settings
    user = f" as user {SANDBOX_USER} (the worker is root)" if os.geteuid() == 0 else ""
    return (f"ffmpeg and ffprobe run in a bubblewrap sandbox ({s.BWRAP_BIN}){user}: no network, only the "
            f"job's scratch writable, empty environment; limits cpu {s.FFMPEG_RLIMIT_CPU_S} s, "
            f"address space {s.FFMPEG_RLIMIT_AS_BYTES} B, file size {s.FFMPEG_RLIMIT_FSIZE_BYTES} B, "
            f"{s.FFMPEG_RLIMIT_NPROC} processes")


async def check(reactor, settings):
    """Run ``FFMPEG_BIN -version`` through the sandbox, as jobs do (spawned
    from the reactor, never blocking it). Returns the ffmpeg version line.

    Raises ``SandboxUnavailable`` (naming FFMPEG_SANDBOX/BWRAP_BIN and how to
    fix it) when the sandbox cannot start: bwrap or prlimit missing, user
    namespaces refused (a systemd unit with RestrictNamespaces=yes, a kernel
    with unprivileged user namespaces off), a mount refused, a root worker
    with no ``SANDBOX_USER`` to run ffmpeg as, or setpriv failing...
    """
    try:
        sandbox = Sandbox(settings)
    except SandboxUnavailable as e:
        raise SandboxUnavailable(f"{e}; {HOW_TO_FIX}") from None
    if not sandbox.enabled:
        return None
    if sandbox.as_root and sandbox.run_as is None:
        raise SandboxUnavailable(f"{sandbox._no_user}; or set FFMPEG_SANDBOX = \"none\" to run "
                                 "ffmpeg unsandboxed (not recommended: callers are untrusted)")
    if which(settings.FFMPEG_BIN) is None:
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
