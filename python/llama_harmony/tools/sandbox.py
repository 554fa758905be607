"""Run untrusted Python code in a bubblewrap sandbox, with limits.

    from llama_harmony.tools.sandbox import PythonSandbox, SandboxLimits

    box = PythonSandbox(SandboxLimits(cpu_seconds=5))
    box.check()                              # SandboxUnavailable if bwrap cannot run here
    result = box.run("print(6 * 7)")
    result.stdout, result.exit_code, result.limit      # '42\\n', 0, None

Runtime requirement: `bubblewrap <https://github.com/containers/bubblewrap>`_ >= 0.7 (the
``bwrap`` program; Debian/Ubuntu ``apt-get install bubblewrap``, Fedora ``dnf install
bubblewrap``; ``scripts/install-sandbox.sh`` installs it when it can) and unprivileged user
namespaces (enabled by default on Debian, Fedora and most kernels; Ubuntu 24.04 restricts them
through AppArmor unless bwrap has a profile).

What one :meth:`PythonSandbox.run` does:

* starts ``bwrap`` (as uid/gid 65534 when the server runs as root: root's bwrap would keep
  capabilities over every root-owned file; see ``run_as``) with new user, pid, network, IPC,
  UTS and cgroup namespaces, no way to create further user namespaces, a new session (no
  terminal injection), an empty environment but for a few fixed variables, and
  ``--die-with-parent`` (the sandbox dies with the server);
* the file system: a read-only ``/usr`` (plus the ``/bin``, ``/lib*`` links or directories and
  the dynamic loader's ``/etc/ld.so.*``), the interpreter's own prefix read-only when it lives
  outside ``/usr``, a fresh ``/proc`` showing only the sandbox's processes, a minimal
  ``/dev``, and two private size-bounded tmpfs: ``/mnt/data`` (the working directory, also
  ``$HOME``; ``/tmp`` links to it) and ``/dev/shm``. Everything else, the root included, is
  read-only and empty: no ``/home``, ``/root``, ``/etc/passwd``, server directory, repository
  or virtualenv. The tmpfs vanish with the sandbox's mount namespace, also when it is killed:
  nothing is ever written to the host's disk;
* runs ``python -I -B -u`` (isolated mode: no environment variables, user site or current
  directory on ``sys.path``) with a small launcher that reads the code from stdin, applies
  the per-process rlimits (CPU time, address space, processes, file size, open files, no
  core dumps) and runs the code as ``__main__`` (tracebacks show the code's lines as
  ``File "<cell>"``; with ``show_last_value`` a final expression's value is printed, as in
  a notebook); the rest of stdin is the code's stdin;
* on the host: stdout and stderr are read as they come, at most ``max_output_bytes`` in all
  (never more is held); the run is killed when that is exceeded or when ``wall_seconds`` pass;
  a kill takes the whole pid namespace down, and :meth:`~PythonSandbox.run` returns only once
  every process of the sandbox is gone.

The network namespace has only a loopback interface of its own: nothing on the host (its
loopback included) and nothing outside is reachable; there is no DNS. The process limit is
counted per sandbox (RLIMIT_NPROC is counted per user namespace), so a fork bomb stops at
``max_processes`` without touching the host or other sandboxes.

Which limit ended a run is reported in :attr:`SandboxResult.limit`: ``"cpu_time"``
(RLIMIT_CPU: SIGXCPU, or SIGKILL one second later), ``"wall_time"``, ``"memory"`` (an
allocation failed under RLIMIT_AS: MemoryError), ``"processes"`` (fork or thread creation
refused at the limit), ``"output"``, ``"file_size"`` (a file over ``max_file_bytes``, or the
tmpfs full). The last three of those are reported by the launcher from the exception that
ended the code, so code that catches them is not reported (it was not stopped either).

The sandbox's processes run at nice 10 (or the server's, if higher) and with ``oom_score_adj`` 1000: they yield the CPU
to the server, and when memory runs out the kernel's OOM killer picks them first.

On x86_64 a seccomp filter (classic BPF, handed to ``bwrap --seccomp``) refuses the kernel
interfaces behind most local privilege escalations that an unprivileged process can still
reach (io_uring, eBPF, perf events, userfaultfd, keyrings, ptrace, mounts, namespaces...; see
``_DENY_X86_64``) and kills a process that uses another syscall ABI (i386 ``int 0x80``, x32).
Other architectures run without it.

Limits not enforced here (stated in the README's security model too): CPU time and address
space are per process, so a run may use up to ``max_processes`` times them until the wall
clock stops it; tmpfs pages count against neither (each tmpfs is bounded by ``tmp_bytes``).
The rest of the kernel stays reachable: a kernel bug in it can break out, as from any
namespace sandbox.
"""

from __future__ import annotations

import errno
import json
import os
import select
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "LIMIT_NAMES",
    "PythonSandbox",
    "SandboxConfigError",
    "SandboxError",
    "SandboxInputError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
]

#: The values :attr:`SandboxResult.limit` takes (besides ``None``).
LIMIT_NAMES = ("cpu_time", "wall_time", "memory", "processes", "output", "file_size")

#: What the python tool's Harmony description promises the model: a time-out after 120 s.
MAX_WALL_SECONDS = 120.0

_MIB = 1 << 20
_STATUS_CAP = 4096          # bytes of launcher status kept (the launcher writes a few bytes)
_READ_CHUNK = 1 << 16
_REAP_GRACE = 5.0           # seconds a killed sandbox gets to disappear before we stop waiting
_NOBODY = (65534, 65534)

# Paths at the root that are links into /usr on merged-/usr systems, directories elsewhere.
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What the dynamic loader and time functions read from /etc (bound read-only when present).
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
# The sandbox's own mounts: no host directory may be bound there.
_SANDBOX_PATHS = ("/tmp", "/mnt", "/proc", "/dev")

_ENV = (
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", "/mnt/data"),
    ("TMPDIR", "/tmp"),
    ("LANG", "C.UTF-8"),
    ("USER", "sandbox"),
    ("LOGNAME", "sandbox"),
    # Numeric libraries otherwise start a thread per core, each counted by RLIMIT_NPROC.
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
    ("MPLBACKEND", "Agg"),
)

# Runs inside the sandbox as ``python -I -B -u -c _LAUNCHER status_fd limits run_id code_len``.
# Reads exactly code_len bytes of code from fd 0 (the rest of stdin stays the code's stdin) and
# forks: the child applies the rlimits (soft = hard: the code cannot raise them) and runs the
# code as __main__ (printing the value of a final expression when asked), reporting on status_fd which limit an uncaught exception comes from; the
# parent waits for it, reports its CPU time (bwrap does not reap its init, so the host cannot
# get it) and exits with its status (128 + N for signal N). Kept compatible with old
# interpreters (no walrus, no match).
_LAUNCHER = r"""
import os, sys
def _limit_of(exc, nproc):
    import errno
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, MemoryError):
            return "memory"
        if isinstance(exc, OSError) and exc.errno in (errno.EFBIG, errno.ENOSPC):
            return "file_size"
        if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
            try:
                alive = sum(1 for d in os.listdir("/proc") if d.isdigit())
            except OSError:
                alive = nproc
            if alive * 4 >= nproc * 3:
                return "processes"
        if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
            return "processes"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
def _report(fd, text):
    try:
        os.write(fd, (text + "\n").encode())
    except OSError:
        pass
def _run(src, lim, status_fd):
    import linecache, resource, traceback
    for name, soft, hard in (
        ("RLIMIT_CPU", lim["cpu"], lim["cpu"] + 1),
        ("RLIMIT_AS", lim["as"], lim["as"]),
        ("RLIMIT_NPROC", lim["nproc"], lim["nproc"]),
        ("RLIMIT_FSIZE", lim["fsize"], lim["fsize"]),
        ("RLIMIT_NOFILE", lim["nofile"], lim["nofile"]),
        ("RLIMIT_CORE", 0, 0),
    ):
        resource.setrlimit(getattr(resource, name), (soft, hard))
    linecache.cache["<cell>"] = (len(src), None, src.splitlines(True), "<cell>")
    sys.argv[:] = [""]
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        import ast
        tree = compile(src, "<cell>", "exec", ast.PyCF_ONLY_AST)
        last = None
        if lim["show_last"] and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), scope)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), scope)
            if value is not None:
                print(repr(value))
    except SystemExit:
        raise
    except BaseException as exc:
        limit = _limit_of(exc, lim["nproc"])
        if limit:  # before the traceback: whoever sees the traceback can see the limit
            _report(status_fd, limit)
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, tb)
        sys.exit(1)
    sys.exit(0)
def _main():
    import json
    status_fd = int(sys.argv[1])
    lim = json.loads(sys.argv[2])
    left = int(sys.argv[4])
    os.set_inheritable(status_fd, False)
    parts = []
    while left > 0:
        chunk = os.read(0, min(left, 65536))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    src = b"".join(parts).decode("utf-8", "replace")
    try:  # under memory pressure the kernel kills sandboxes first; the server's CPU comes first
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
        os.setpriority(os.PRIO_PROCESS, 0, max(10, os.getpriority(os.PRIO_PROCESS, 0)))
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:
        _run(src, lim, status_fd)
    _, status, usage = os.wait4(pid, 0)
    _report(status_fd, "cpu=%.6f" % (usage.ru_utime + usage.ru_stime))
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
_main()
"""


class SandboxError(RuntimeError):
    """Base class of the sandbox's errors."""


class SandboxUnavailable(SandboxError):
    """The sandbox cannot run on this machine (bwrap missing, user namespaces disabled, the
    interpreter unusable...); the message says what to install or change."""


class SandboxConfigError(SandboxError, ValueError):
    """An invalid limit or option; :attr:`field` names it."""

    def __init__(self, field: str, message: str):
        """Set up the SandboxConfigError (the parameters are described in the class docstring)."""
        super().__init__(f"{field}: {message}")
        self.field = field


class SandboxInputError(SandboxError, ValueError):
    """Code or stdin the sandbox refuses before running anything (too large, not text);
    :attr:`field` is ``"code"`` or ``"stdin"``."""

    def __init__(self, field: str, message: str):
        """Set up the SandboxInputError (the parameters are described in the class docstring)."""
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class SandboxLimits:
    """The limits of one run. Defaults suit a model's scratch computations.

    * ``cpu_seconds``: CPU time per process (RLIMIT_CPU; whole seconds).
    * ``wall_seconds``: wall-clock time of the whole run, start-up included; at most 120 (what
      the python tool's description promises the model).
    * ``memory_bytes``: address space per process (RLIMIT_AS; at least 32 MiB, Python needs
      about 20 MiB to start).
    * ``max_processes``: processes and threads of the sandbox together, its init included
      (RLIMIT_NPROC, counted per sandbox).
    * ``max_output_bytes``: stdout and stderr together; more stops the run.
    * ``max_file_bytes``: size of any one written file (RLIMIT_FSIZE).
    * ``tmp_bytes``: size of the private tmpfs ``/mnt/data`` (= ``/tmp``), and of ``/dev/shm``.
    * ``max_open_files``: file descriptors per process (RLIMIT_NOFILE).
    * ``max_input_bytes``: code plus stdin, UTF-8 (checked before anything runs).
    """

    cpu_seconds: int = 10
    wall_seconds: float = 30.0
    memory_bytes: int = 512 * _MIB
    max_processes: int = 32
    max_output_bytes: int = 64 * 1024
    max_file_bytes: int = 16 * _MIB
    tmp_bytes: int = 64 * _MIB
    max_open_files: int = 256
    max_input_bytes: int = 1 * _MIB

    def __post_init__(self) -> None:
        def need(name: str, ok: bool, what: str) -> None:
            if not ok:
                raise SandboxConfigError(name, f"{what} (got {getattr(self, name)!r})")

        ints = ("cpu_seconds", "memory_bytes", "max_processes", "max_output_bytes",
                "max_file_bytes", "tmp_bytes", "max_open_files", "max_input_bytes")
        for name in ints:
            value = getattr(self, name)
            need(name, isinstance(value, int) and not isinstance(value, bool), "must be an int")
        wall = self.wall_seconds
        need("wall_seconds", isinstance(wall, (int, float)) and not isinstance(wall, bool),
             "must be a number")
        need("wall_seconds", 0 < wall <= MAX_WALL_SECONDS,
             f"must be > 0 and <= {MAX_WALL_SECONDS:g} (the python tool promises the model a "
             f"{MAX_WALL_SECONDS:g} s time-out)")
        need("cpu_seconds", 1 <= self.cpu_seconds <= 3600, "must be 1..3600")
        need("memory_bytes", self.memory_bytes >= 32 * _MIB, "must be >= 32 MiB")
        need("max_processes", 2 <= self.max_processes <= 4096, "must be 2..4096")
        need("max_output_bytes", self.max_output_bytes >= 1, "must be >= 1")
        need("max_file_bytes", self.max_file_bytes >= 1, "must be >= 1")
        need("tmp_bytes", self.tmp_bytes >= 4096, "must be >= 4096")
        need("max_open_files", 16 <= self.max_open_files <= 65536, "must be 16..65536")
        need("max_input_bytes", self.max_input_bytes >= 1, "must be >= 1")


@dataclass(frozen=True)
class SandboxResult:
    """What one run produced.

    ``stdout`` / ``stderr`` are text (UTF-8, undecodable bytes replaced), cut where the output
    cap was reached and then ending with a ``[... output truncated ...]`` marker
    (``stdout_truncated`` / ``stderr_truncated`` say which). ``exit_code`` is the code's exit
    status (``128 + N`` when signal N killed it, as in a shell), or ``None`` when the host
    killed the sandbox (wall time, output). ``limit`` is ``None`` or one of
    :data:`LIMIT_NAMES`. ``duration_s`` is wall-clock time, ``cpu_s`` the CPU time of the
    sandbox's processes (those reaped before it ended). ``run_id`` is unique per run and
    appears in the sandbox's process command lines (for logs and leak checks).
    """

    stdout: str
    stderr: str
    exit_code: Optional[int]
    limit: Optional[str]
    duration_s: float
    cpu_s: float
    stdout_truncated: bool
    stderr_truncated: bool
    run_id: str

    @property
    def ok(self) -> bool:
        """The code ran to its end with exit status 0 and no limit was hit."""
        return self.exit_code == 0 and self.limit is None


def _default_python() -> str:
    """The system's ``python3`` (under ``/usr``, which is bound anyway), else the base
    interpreter of the running Python (never its virtualenv)."""
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        path = os.path.join(folder, "python3")
        if os.access(path, os.X_OK):
            return path
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _covered(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _interpreter_paths(python: str) -> List[str]:
    """Directories to bind read-only so ``python`` runs: its virtualenv (when ``python`` is a
    venv's interpreter) and the prefix of the real interpreter, unless under ``/usr``."""
    paths: List[str] = []
    venv = os.path.dirname(os.path.dirname(os.path.abspath(python)))
    if os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
        paths.append(venv)
    paths.append(os.path.dirname(os.path.dirname(os.path.realpath(python))))
    return [p for p in dict.fromkeys(paths) if not _covered(p, ("/usr",))]


_FEATURES: Dict[str, Tuple[bool, bool]] = {}
_FEATURES_LOCK = threading.Lock()


def _bwrap_features(bwrap: str) -> Tuple[bool, bool]:
    """(supports ``--size``, supports ``--disable-userns``), from ``bwrap --help`` (cached)."""
    with _FEATURES_LOCK:
        if bwrap not in _FEATURES:
            try:
                out = subprocess.run([bwrap, "--help"], capture_output=True, text=True,
                                     timeout=30).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                raise SandboxUnavailable(f"cannot run {bwrap}: {exc}") from exc
            _FEATURES[bwrap] = ("--size" in out, "--disable-userns" in out)
        return _FEATURES[bwrap]


# Syscalls the sandbox refuses (EPERM) on x86_64: the kernel interfaces behind most local
# privilege escalations that an unprivileged process can still reach (io_uring, eBPF, perf,
# userfaultfd, keyrings), tracing other processes, namespaces and mounts (already refused for
# lack of capabilities: refused here before any kernel code parses them), module, kexec,
# reboot, swap and raw I/O port calls. clone3 gets ENOSYS: its flags cannot be inspected, and
# glibc then falls back to clone. Other architectures and ABIs (i386 ``int 0x80``, x32) kill
# the process: their syscall numbers differ, so the list would not apply.
_DENY_X86_64 = (
    425, 426, 427,            # io_uring_setup, io_uring_enter, io_uring_register
    321, 298, 323,            # bpf, perf_event_open, userfaultfd
    248, 249, 250,            # add_key, request_key, keyctl
    101, 310, 311, 312,       # ptrace, process_vm_readv, process_vm_writev, kcmp
    272, 308, 165, 166, 155, 161,   # unshare, setns, mount, umount2, pivot_root, chroot
    428, 429, 430, 431, 432, 433, 442,  # open_tree, move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr
    246, 320, 175, 313, 176,  # kexec_load, kexec_file_load, init_module, finit_module, delete_module
    169, 167, 168, 163, 179,  # reboot, swapon, swapoff, acct, quotactl
    303, 304, 300,            # name_to_handle_at, open_by_handle_at, fanotify_init
    154, 134, 172, 173, 103, 212, 153,  # modify_ldt, uselib, iopl, ioperm, syslog, lookup_dcookie, vhangup
)
_CLONE3_X86_64 = 435


def _seccomp_program() -> Optional[bytes]:
    """The classic-BPF seccomp filter bwrap installs (``--seccomp``), for x86_64; ``None``
    elsewhere (no filter: see the module docstring)."""
    if os.uname().machine != "x86_64":
        return None

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06        # BPF_LD|W|ABS, BPF_JMP|JEQ|K, JGE, BPF_RET|K
    kill, errno_, allow = 0x80000000, 0x00050000, 0x7FFF0000   # SECCOMP_RET_KILL_PROCESS, _ERRNO, _ALLOW
    prog = [op(load, 4), op(jeq, 0xC000003E, 1, 0), op(ret, kill),   # arch must be AUDIT_ARCH_X86_64
            op(load, 0), op(jge, 0x40000000, 0, 1), op(ret, kill)]    # no x32 ABI
    for nr in _DENY_X86_64:
        prog += [op(jeq, nr, 0, 1), op(ret, errno_ | errno.EPERM)]
    prog += [op(jeq, _CLONE3_X86_64, 0, 1), op(ret, errno_ | errno.ENOSYS), op(ret, allow)]
    return b"".join(prog)


def _children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


_INSTALL_HINT = ("install bubblewrap: `apt-get install bubblewrap` (Debian/Ubuntu), "
                 "`dnf install bubblewrap` (Fedora), or run scripts/install-sandbox.sh")


class PythonSandbox:
    """Runs Python code in a bubblewrap sandbox (see the module docstring for the isolation).

    ``limits``: :class:`SandboxLimits` (defaults when ``None``). ``python``: the interpreter
    to run (default: the system's ``python3``; a virtualenv's interpreter works too: the venv
    and its base prefix are bound read-only, so packages installed there are importable).
    ``bwrap``: the bubblewrap program (default: ``bwrap`` on ``PATH``, else
    ``/usr/bin/bwrap``). ``ro_paths``: more host directories to expose read-only at the same
    path. ``run_as``: (uid, gid) bwrap is started as when this process is root (root's bwrap
    keeps capabilities inside); ignored otherwise. ``max_concurrent``: runs at once (more
    wait their turn).

    :meth:`run` is thread-safe and blocking.
    """

    def __init__(self, limits: Optional[SandboxLimits] = None, *, python: Optional[str] = None,
                 bwrap: Optional[str] = None, ro_paths: Sequence[str] = (),
                 run_as: Tuple[int, int] = _NOBODY, max_concurrent: int = 4):
        """Set up the PythonSandbox (the parameters are described in the class docstring)."""
        if limits is not None and not isinstance(limits, SandboxLimits):
            raise SandboxConfigError("limits", "must be a SandboxLimits")
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise SandboxConfigError("max_concurrent", f"must be an int >= 1 (got {max_concurrent!r})")
        if (not isinstance(run_as, tuple) or len(run_as) != 2
                or not all(isinstance(x, int) and x > 0 for x in run_as)):
            raise SandboxConfigError("run_as", f"must be a (uid, gid) pair of ints > 0 (got {run_as!r})")
        for p in ro_paths:
            if not isinstance(p, str) or not os.path.isabs(p):
                raise SandboxConfigError("ro_paths", f"must be absolute paths (got {p!r})")
        self.limits = limits or SandboxLimits()
        self.python = python or _default_python()
        self.bwrap = bwrap or shutil.which("bwrap") or "/usr/bin/bwrap"
        self.ro_paths = tuple(os.path.realpath(p) for p in ro_paths)
        for field, paths in (("python", _interpreter_paths(self.python)), ("ro_paths", self.ro_paths)):
            for path in paths:
                if path == "/" or _covered(path, _SANDBOX_PATHS):
                    raise SandboxConfigError(field, f"{path} cannot be exposed: the sandbox has its own "
                                             f"{', '.join(_SANDBOX_PATHS)}")
        self.run_as = run_as
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._check_lock = threading.Lock()
        self._checked = False

    # -- availability ---------------------------------------------------------------------

    def check(self) -> None:
        """Make sure the sandbox can run here (once; later calls return at once).

        Raises :class:`SandboxUnavailable` naming the problem and the fix: bwrap missing or
        too old, the interpreter missing, user namespaces refused by the kernel.
        """
        with self._check_lock:
            if self._checked:
                return
            if not (os.path.isfile(self.bwrap) and os.access(self.bwrap, os.X_OK)):
                raise SandboxUnavailable(f"bubblewrap not found ({self.bwrap}): {_INSTALL_HINT}")
            has_size, _ = _bwrap_features(self.bwrap)
            if not has_size:
                raise SandboxUnavailable(
                    f"{self.bwrap} is too old (no --size option; bubblewrap >= 0.7 is needed to "
                    f"bound the sandbox's tmpfs): {_INSTALL_HINT}")
            if not os.access(self.python, os.X_OK):
                raise SandboxUnavailable(f"python interpreter not found or not executable: {self.python}")
            probe = self._execute("print('sandbox-ok')", "", SandboxLimits(wall_seconds=60))
            if probe.stdout != "sandbox-ok\n" or probe.exit_code != 0:
                raise SandboxUnavailable(self._diagnose(probe))
            self._checked = True

    def _diagnose(self, probe: SandboxResult) -> str:
        err = probe.stderr.strip()
        text = err.lower()
        if "namespace" in text or "uid map" in text or "operation not permitted" in text:
            return ("bubblewrap cannot create an unprivileged user namespace here "
                    f"({err}). Enable them: `sysctl -w kernel.unprivileged_userns_clone=1` "
                    "(older Debian kernels), `sysctl -w user.max_user_namespaces=15000`, or on "
                    "Ubuntu >= 23.10 allow bwrap in AppArmor "
                    "(`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or a profile).")
        who = f" as uid {self.run_as[0]}" if os.geteuid() == 0 else ""
        return (f"the sandbox did not start{who} (exit {probe.exit_code}, limit {probe.limit}): "
                f"{err or probe.stdout.strip() or 'no output'}. The interpreter {self.python} and "
                "its prefix must be readable by that user.")

    # -- running --------------------------------------------------------------------------

    def run(self, code: str, *, stdin: str = "", show_last_value: bool = False) -> SandboxResult:
        """Run ``code`` (Python source) in a fresh sandbox with ``stdin`` as its stdin.

        ``show_last_value``: when the code ends with an expression, print the ``repr`` of its
        value unless it is ``None``, as a Jupyter cell shows it (``6*7`` prints ``42``).

        Blocks until the sandbox is gone. Never raises for anything the code does (errors,
        limits, kills are in the result); raises :class:`SandboxInputError` for code or stdin
        that is not ``str`` or is larger than ``max_input_bytes``, and
        :class:`SandboxUnavailable` when the sandbox cannot run here (see :meth:`check`).
        """
        if not isinstance(code, str):
            raise SandboxInputError("code", f"must be a str (got {type(code).__name__})")
        if not isinstance(stdin, str):
            raise SandboxInputError("stdin", f"must be a str (got {type(stdin).__name__})")
        self.check()
        with self._slots:
            return self._execute(code, stdin, self.limits, show_last_value)

    def _argv(self, limits: SandboxLimits, status_fd: int, run_id: str, code_len: int,
              show_last: bool, seccomp_fd: Optional[int]) -> List[str]:
        _, disable_userns = _bwrap_features(self.bwrap)
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent",
                "--new-session", "--clearenv", "--hostname", "sandbox"]
        if disable_userns:
            argv.append("--disable-userns")
        if seccomp_fd is not None:
            argv += ["--seccomp", str(seccomp_fd)]
        for key, value in _ENV:
            argv += ["--setenv", key, value]
        argv += ["--ro-bind", "/usr", "/usr"]
        for path in _ROOT_LINKS:
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        for path in _ETC_FILES:
            argv += ["--ro-bind-try", path, path]
        for path in _interpreter_paths(self.python) + list(self.ro_paths):
            argv += ["--ro-bind", path, path]
        tmp = str(limits.tmp_bytes)
        argv += ["--proc", "/proc", "--dev", "/dev",
                 "--size", tmp, "--tmpfs", "/dev/shm",
                 "--size", tmp, "--tmpfs", "/mnt/data",
                 "--symlink", "/mnt/data", "/tmp",
                 "--chdir", "/mnt/data",
                 # The root and /dev are bwrap's own (unbounded) tmpfs: no writes there.
                 "--remount-ro", "/dev", "--remount-ro", "/"]
        rlimits = {"cpu": limits.cpu_seconds, "as": limits.memory_bytes,
                   "nproc": limits.max_processes, "fsize": limits.max_file_bytes,
                   "nofile": limits.max_open_files, "show_last": show_last}
        argv += ["--", self.python, "-I", "-B", "-u", "-c", _LAUNCHER,
                 str(status_fd), json.dumps(rlimits), run_id, str(code_len)]
        return argv

    def _execute(self, code: str, stdin: str, limits: SandboxLimits,
                 show_last: bool = False) -> SandboxResult:
        code_bytes = code.encode("utf-8", "replace")
        stdin_bytes = stdin.encode("utf-8", "replace")
        if len(code_bytes) + len(stdin_bytes) > limits.max_input_bytes:
            field = "code" if len(code_bytes) > limits.max_input_bytes else "stdin"
            raise SandboxInputError(field, f"code and stdin are {len(code_bytes) + len(stdin_bytes)} "
                                    f"bytes, over max_input_bytes={limits.max_input_bytes}")
        run_id = "sbx-" + uuid.uuid4().hex
        status_r, status_w = os.pipe()
        child_fds = [status_w]
        seccomp_fd = None
        program = _seccomp_program()
        if program is not None:  # a few hundred bytes: the pipe holds them until bwrap reads
            seccomp_fd, seccomp_w = os.pipe()
            os.write(seccomp_w, program)
            os.close(seccomp_w)
            child_fds.append(seccomp_fd)
        extra: Dict[str, Any] = {}
        if os.geteuid() == 0:
            extra = {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []}
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                self._argv(limits, status_w, run_id, len(code_bytes), show_last, seccomp_fd),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=child_fds, cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True, **extra)
        except OSError as exc:
            os.close(status_r)
            raise SandboxUnavailable(f"cannot start {self.bwrap}: {exc}. {_INSTALL_HINT}") from exc
        finally:
            for fd in child_fds:
                os.close(fd)
        run = _Run(proc, status_r, code_bytes + stdin_bytes, limits, start)
        try:
            run.pump()
        finally:
            run.finish()
        return run.result(run_id)


class _Run:
    """The host side of one sandbox run: feeds stdin, reads the capped output and the
    launcher's status, enforces the wall clock and the output cap, kills, and waits until
    every process of the sandbox is gone.

    bwrap's own process exits as soon as the code's process does, without waiting for the
    sandbox's init (whose exit empties the pid namespace), so the init is tracked through a
    pidfd, found as bwrap's child right after the start.
    """

    def __init__(self, proc: subprocess.Popen, status_r: int, payload: bytes,
                 limits: SandboxLimits, start: float):
        self.proc = proc
        self.limits = limits
        self.start = start
        self.deadline = start + limits.wall_seconds
        self.payload = memoryview(payload)
        self.sent = 0
        self.out = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = {"stdout": False, "stderr": False}
        self.status = bytearray()        # the first _STATUS_CAP bytes the launcher wrote
        self.status_tail = b""           # and its last bytes (the CPU time comes last)
        self.killed_for: Optional[str] = None
        self.reaped = False
        self.init_fd: Optional[int] = None
        # False once found, or when the kernel does not list children (no CONFIG_PROC_CHILDREN)
        self.init_search = os.path.exists(f"/proc/{proc.pid}/task/{proc.pid}/children")
        self.init_gone = False
        self.end = start
        self.sel = selectors.DefaultSelector()
        self.fds: Dict[int, str] = {}
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.files = {proc.stdin.fileno(): proc.stdin, proc.stdout.fileno(): proc.stdout,
                      proc.stderr.fileno(): proc.stderr}
        for name, fd in (("stdout", proc.stdout.fileno()), ("stderr", proc.stderr.fileno()),
                         ("status", status_r)):
            self._watch(fd, selectors.EVENT_READ, name)
        self._watch(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")

    def _watch(self, fd: int, events: int, name: str) -> None:
        os.set_blocking(fd, False)
        self.sel.register(fd, events, name)
        self.fds[fd] = name

    def _close(self, fd: int) -> None:
        if fd in self.fds:
            self.sel.unregister(fd)
            del self.fds[fd]
            if fd in self.files:
                self.files.pop(fd).close()
            else:
                os.close(fd)

    def _done(self) -> bool:
        pipes_open = any(name in ("stdout", "stderr", "status") for name in self.fds.values())
        return not pipes_open and self._reap(block=False) and (self.init_gone or self.init_fd is None)

    def pump(self) -> None:
        """Move data until the sandbox is gone, or a limit stops it."""
        while not self._done():
            if self.init_search:
                self._find_init()
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self._kill("wall_time")
                return
            # Poll while the init is not found yet or only the exit remains to be seen.
            polling = self.init_search or all(n in ("stdin", "init") for n in self.fds.values())
            for key, _ in self.sel.select(min(remaining, 0.01) if polling else remaining):
                name = key.data
                if name == "stdin":
                    self._write_stdin(key.fd)
                elif name == "status":
                    self._read_status(key.fd)
                elif name == "init":
                    self.init_gone = True
                    self.sel.unregister(key.fd)
                    del self.fds[key.fd]
                elif not self._read_output(key.fd, name):
                    self._kill("output")
                    return

    def _find_init(self) -> None:
        """Open a pidfd on bwrap's child (the sandbox's init) once it exists."""
        if self.reaped:
            self.init_search = False
            return
        for pid in _children(self.proc.pid):
            try:
                pidfd = os.pidfd_open(pid)
            except AttributeError:
                self.init_search = False  # no pidfd on this Python: bwrap's exit is the end
                return
            except OSError:
                continue
            # Still bwrap's child once the pidfd is open: the pidfd is that very process.
            if pid in _children(self.proc.pid):
                self.init_fd = pidfd
                self.init_search = False
                self.sel.register(pidfd, selectors.EVENT_READ, "init")
                self.fds[pidfd] = "init"
                return
            os.close(pidfd)

    def _write_stdin(self, fd: int) -> None:
        try:
            self.sent += os.write(fd, self.payload[self.sent:self.sent + _READ_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # the sandbox closed its stdin (or exited): the rest is not wanted
            self._close(fd)
            return
        if self.sent >= len(self.payload):
            self._close(fd)

    def _read_status(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(fd)
            return
        self.status += data[:_STATUS_CAP - len(self.status)]
        self.status_tail = (self.status_tail + data)[-256:]

    def _read_output(self, fd: int, name: str) -> bool:
        """Read what is there; False when the output cap is exceeded."""
        room = self.limits.max_output_bytes - len(self.out["stdout"]) - len(self.out["stderr"])
        try:
            data = os.read(fd, min(_READ_CHUNK, room + 1))
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self._close(fd)
            return True
        if len(data) > room:
            self.out[name] += data[:room]
            self.truncated[name] = True
            return False
        self.out[name] += data
        return True

    def _reap(self, block: bool) -> bool:
        """Reap bwrap; True once done."""
        if not self.reaped:
            pid, _ = os.waitpid(self.proc.pid, 0 if block else os.WNOHANG)
            if pid == 0:
                return False
            self.reaped = True
            self.end = time.monotonic()
            self.proc.returncode = os.waitstatus_to_exitcode(_)
        return True

    def _kill(self, reason: str) -> None:
        """Kill the sandbox's init (its pid namespace goes with it) and bwrap."""
        self.killed_for = reason
        if self.init_search:
            self._find_init()
        if self.init_fd is not None and not self.init_gone:
            try:
                signal.pidfd_send_signal(self.init_fd, signal.SIGKILL)
            except OSError:
                pass
        if not self.reaped:  # unreaped, bwrap's pid (= its group) cannot have been reused
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def finish(self) -> None:
        """Close every pipe, reap bwrap and wait for the sandbox's init to be gone (killing
        the sandbox if this run is being abandoned)."""
        if self.killed_for is None and not self._done():
            self._kill("wall_time")  # only when pump() raised: never leave a sandbox behind
        for fd, name in list(self.fds.items()):
            if name == "status":  # what the launcher wrote before a kill still counts
                self._read_status(fd)
            if name != "init":
                self._close(fd)
        self._reap(block=True)
        if self.init_fd is not None:
            if not self.init_gone:
                # Readable once the init has exited, i.e. after its namespace was emptied.
                self.init_gone = bool(select.select([self.init_fd], [], [], _REAP_GRACE)[0])
            if self.init_fd in self.fds:
                self.sel.unregister(self.init_fd)
                del self.fds[self.init_fd]
            os.close(self.init_fd)
        self.sel.close()

    def result(self, run_id: str) -> SandboxResult:
        code = self.proc.returncode
        text = (bytes(self.status) + b"\n" + self.status_tail).decode("ascii", "replace").split()
        cpu = [float(w[4:]) for w in text if w.startswith("cpu=") and _is_float(w[4:])]
        cpu_s = cpu[-1] if cpu else 0.0
        reported = next((w for w in text if w in LIMIT_NAMES), None)
        if self.killed_for is not None:
            # A flood of output is often the symptom (tracebacks of a fork bomb): the limit
            # the code hit first is the news.
            limit: Optional[str] = reported if self.killed_for == "output" and reported else self.killed_for
            exit_code: Optional[int] = None
        else:
            exit_code = code if code is not None and code >= 0 else None
            if code == 128 + signal.SIGXCPU or (code == 128 + signal.SIGKILL
                                                and cpu_s >= self.limits.cpu_seconds):
                limit = "cpu_time"
            else:
                limit = reported
        texts = {}
        for name in ("stdout", "stderr"):
            texts[name] = self.out[name].decode("utf-8", "replace")
            if self.truncated[name]:
                texts[name] += (f"\n[... output truncated: more than "
                                f"{self.limits.max_output_bytes} bytes]\n")
        return SandboxResult(
            stdout=texts["stdout"], stderr=texts["stderr"], exit_code=exit_code, limit=limit,
            duration_s=round(self.end - self.start, 6), cpu_s=round(cpu_s, 6),
            stdout_truncated=self.truncated["stdout"], stderr_truncated=self.truncated["stderr"],
            run_id=run_id)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.replace(".", "", 1).isdigit()
