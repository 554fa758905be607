"""The python tool's sandbox (llama_harmony.tools.sandbox): real bubblewrap, real escapes.

Every test runs real code in a real ``bwrap`` sandbox (scripts/install-sandbox.sh installs
bubblewrap; without it these tests fail with the install instructions). Limits are made small
per test so each limit test ends in about a second. After every run that could leave
processes behind, the test checks that no process carries the run's id any more.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llama_harmony.tools import sandbox as sb
from llama_harmony.tools.sandbox import (
    PythonSandbox, SandboxConfigError, SandboxInputError, SandboxLimits, SandboxUnavailable,
)

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def small(**kw) -> SandboxLimits:
    base = dict(cpu_seconds=1, wall_seconds=20, memory_bytes=256 * MIB, max_processes=16,
                max_output_bytes=64 * 1024)
    base.update(kw)
    return SandboxLimits(**base)


@pytest.fixture(scope="module")
def box() -> PythonSandbox:
    b = PythonSandbox(small())
    b.check()
    return b


def leftovers(run_id: str) -> list:
    """Pids whose command line holds ``run_id`` (the sandbox's bwrap, init and python)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if run_id.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def run(box: PythonSandbox, code: str, **kw):
    result = box.run(textwrap.dedent(code), **kw)
    assert leftovers(result.run_id) == [], "sandbox processes outlived run()"
    return result


def test_print_runs(box):
    r = run(box, "print(6*7)")
    assert (r.stdout, r.stderr, r.exit_code, r.limit, r.ok) == ("42\n", "", 0, None, True)


def test_stdin_and_exit_status(box):
    r = run(box, "import sys\nprint(input().upper())\nsys.exit(3)", stdin="hello\n")
    assert (r.stdout, r.exit_code, r.limit, r.ok) == ("HELLO\n", 3, None, False)


def test_show_last_value_like_a_notebook(box):
    assert run(box, "x = 6\nx * 7", show_last_value=True).stdout == "42\n"
    assert run(box, "x = 6\nx * 7").stdout == ""  # a script prints nothing
    assert run(box, "print('a')\nNone", show_last_value=True).stdout == "a\n"
    assert run(box, "'text'", show_last_value=True).stdout == "'text'\n"
    r = run(box, "x = [1]\nx[5]", show_last_value=True)
    assert 'File "<cell>", line 2' in r.stderr and "IndexError" in r.stderr


def test_traceback_shows_the_code(box):
    r = run(box, "x = 1\ny = x / 0\n")
    assert r.exit_code == 1 and r.limit is None
    assert 'File "<cell>", line 2, in <module>' in r.stderr
    assert "y = x / 0" in r.stderr and r.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "_LAUNCHER" not in r.stderr and "_run" not in r.stderr
    r = run(box, "def f(:\n    pass\n")
    assert r.exit_code == 1 and "SyntaxError" in r.stderr


def test_host_loopback_port_unreachable(box):
    """A port the test listens on (host loopback) and the host's own address: both unreachable."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = f"""
        import socket
        for host in ("127.0.0.1", "localhost", "::1"):
            try:
                socket.create_connection((host, {port}), timeout=3)
                print(host, "CONNECTED")
            except OSError as e:
                print(host, type(e).__name__)
        """
    try:
        r = run(box, code)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()
    lines = r.stdout.split("\n")
    assert "CONNECTED" not in r.stdout, r.stdout
    assert lines[0] == "127.0.0.1 ConnectionRefusedError"
    assert lines[1].startswith("localhost ")  # no /etc/hosts: no name, or refused
    assert len(lines) == 4 and r.exit_code == 0


def test_no_dns_no_internet(box):
    code = """
        import socket
        try:
            socket.getaddrinfo("example.com", 443)
            print("dns RESOLVED")
        except OSError as e:
            print("dns", type(e).__name__)
        for addr in ("1.1.1.1", "8.8.8.8"):
            try:
                socket.create_connection((addr, 53), timeout=3)
                print(addr, "CONNECTED")
            except OSError as e:
                print(addr, e.errno)
        import os
        print(sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else "no /sys")
        """
    r = run(box, code)
    import errno
    assert r.stdout.split("\n")[:4] == ["dns gaierror", f"1.1.1.1 {errno.ENETUNREACH}",
                                        f"8.8.8.8 {errno.ENETUNREACH}", "no /sys"], r.stdout + r.stderr


def test_writes_outside_do_not_reach_the_host(box, tmp_path):
    tag = uuid.uuid4().hex
    targets = [str(tmp_path / f"escape-{tag}"), f"/tmp/escape-{tag}", str(ROOT / f"escape-{tag}"),
               f"/etc/escape-{tag}", f"/usr/escape-{tag}", f"/escape-{tag}", f"/dev/escape-{tag}",
               f"/var/tmp/escape-{tag}", f"/root/escape-{tag}", f"/mnt/data/inside-{tag}"]
    code = f"""
        for path in {targets!r}:
            try:
                with open(path, "w") as f:
                    f.write("x")
                print("wrote")
            except OSError as e:
                print(type(e).__name__)
        """
    r = run(box, code)
    outcome = dict(zip(targets, r.stdout.split("\n")))
    # Only the sandbox's own tmpfs is writable (/tmp is a link to /mnt/data there).
    assert [t for t in targets if outcome[t] == "wrote"] == [f"/tmp/escape-{tag}", f"/mnt/data/inside-{tag}"]
    for path in targets:
        assert not os.path.exists(path), path
    for folder in ("/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir(), "/mnt"):
        assert not any(tag in name for name in os.listdir(folder)), folder


def test_server_files_and_environment_unreadable(box, tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    monkeypatch.setenv("LLAMA_HARMONY_TEST_SECRET", "TOPSECRET")
    paths = [str(secret), str(tmp_path), str(ROOT / "pyproject.toml"), str(ROOT), "/root",
             "/home", "/etc/passwd", "/etc/shadow", "/work", sys.prefix]
    if os.getcwd() != "/":
        paths.append(os.getcwd())
    code = f"""
        import os
        for path in {paths!r}:
            try:
                if os.path.isdir(path):
                    print(path, "LISTED", os.listdir(path))
                else:
                    print(path, "READ", open(path).read()[:20])
            except OSError as e:
                print(path, type(e).__name__)
        print("env", sorted(os.environ))
        procs = [p for p in os.listdir("/proc") if p.isdigit()]
        print("procs", len(procs), [open("/proc/%s/cmdline" % p, "rb").read()[:12] for p in procs])
        """
    r = run(box, code)
    assert "TOPSECRET" not in r.stdout
    for line in r.stdout.split("\n")[:len(paths)]:
        path, outcome = line.split(" ")[:2]
        assert outcome == "FileNotFoundError", line
    env_line = next(x for x in r.stdout.split("\n") if x.startswith("env "))
    assert env_line == "env " + str(sorted([k for k, _ in sb._ENV] + ["PWD"]))  # bwrap sets PWD
    procs_line = next(x for x in r.stdout.split("\n") if x.startswith("procs "))
    # Only the sandbox's own processes: bwrap's init, the launcher and the code.
    assert procs_line.startswith("procs 3 "), procs_line


def test_not_root_on_the_host_no_capabilities_no_nested_namespaces(box):
    code = """
        import ctypes, time
        status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
        print(status["CapEff"].strip(), status["NoNewPrivs"].strip())
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.unshare(0x10000000), ctypes.get_errno() != 0)   # CLONE_NEWUSER
        time.sleep(1.5)
        """
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run, box, code)
        seen = {}
        while not future.done():   # the sandbox's processes, seen from the host
            for pid in leftovers("def _limit_of(exc, nproc)"):
                try:
                    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
                except OSError:
                    continue
                fields = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
                seen[pid] = (fields["Uid"].split(), fields["CapEff"])
        r = future.result()
    assert r.stdout.split("\n")[:2] == ["0000000000000000 1", "-1 True"], r.stdout + r.stderr
    expected = str(box.run_as[0] if os.geteuid() == 0 else os.geteuid())
    assert len(seen) >= 2  # the launcher and the code
    assert all(uids == [expected] * 4 and caps == "0000000000000000" for uids, caps in seen.values()), seen


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter exists for x86_64 only")
def test_seccomp_refuses_the_risky_kernel_interfaces(box):
    code = """
        import ctypes, errno, threading, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        for name, nr in [("io_uring_setup", 425), ("bpf", 321), ("perf_event_open", 298),
                         ("userfaultfd", 323), ("keyctl", 250), ("ptrace", 101), ("mount", 165),
                         ("open_by_handle_at", 304), ("clone3", 435)]:
            ctypes.set_errno(0)
            rc = libc.syscall(nr, 0, 0, 0, 0, 0)
            print(name, rc, errno.errorcode.get(ctypes.get_errno()))
        t = threading.Thread(target=print, args=("thread ok",))   # clone3 refused: clone is used
        t.start(); t.join()
        print(subprocess.run(["/bin/echo", "subprocess ok"], capture_output=True, text=True).stdout.strip())
        """
    r = run(box, code)
    assert r.stdout.split("\n") == [
        "io_uring_setup -1 EPERM", "bpf -1 EPERM", "perf_event_open -1 EPERM", "userfaultfd -1 EPERM",
        "keyctl -1 EPERM", "ptrace -1 EPERM", "mount -1 EPERM", "open_by_handle_at -1 EPERM",
        "clone3 -1 ENOSYS", "thread ok", "subprocess ok", ""], r.stdout + r.stderr


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter exists for x86_64 only")
def test_seccomp_kills_other_syscall_abis(box):
    """i386 syscalls (``int 0x80``) have other numbers: the filter kills the process (SIGSYS)."""
    code = """
        import ctypes, mmap
        page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(b"\\xb8\\x14\\x00\\x00\\x00\\xcd\\x80\\xc3")   # mov eax, 20 (getpid); int 0x80; ret
        getpid_i386 = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
        print("before", flush=True)
        print("i386 getpid returned", getpid_i386())
        """
    r = run(box, code)
    assert (r.stdout, r.exit_code, r.limit) == ("before\n", 128 + 31, None)  # SIGSYS
    r = run(box, "import ctypes\nprint('before', flush=True)\nctypes.CDLL(None).syscall(0x40000000 + 39)\n")
    assert (r.stdout, r.exit_code) == ("before\n", 128 + 31)  # the x32 ABI's getpid


def test_sandbox_yields_cpu_and_is_killed_first_on_oom(box):
    r = run(box, "import os\nprint(open('/proc/self/oom_score_adj').read().strip(), os.nice(0))")
    assert r.stdout == f"1000 {max(10, os.nice(0))}\n"  # nice 10, or the server's if higher


def test_sandbox_dies_with_the_server(tmp_path):
    """SIGKILL the process running a sandbox: its bwrap and everything inside go too."""
    server = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        from llama_harmony.tools.sandbox import PythonSandbox, SandboxLimits
        PythonSandbox(SandboxLimits(wall_seconds=100)).run("import time\\ntime.sleep(100)")
        """)])
    try:
        inside: list = []
        for _ in range(600):  # wait (generously) for the sandbox's python to run
            inside = [pid for pid in leftovers("def _limit_of(exc, nproc)") if server.pid in ancestors(pid)]
            if len(inside) >= 4:  # bwrap, its init, the launcher, the code
                break
            time.sleep(0.05)
        assert len(inside) >= 4, inside
    finally:
        server.kill()
        server.wait()
    for _ in range(200):
        alive = [pid for pid in inside if running(pid)]
        if not alive:
            break
        time.sleep(0.05)
    assert alive == []


def ancestors(pid: int) -> list:
    chain = []
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        chain.append(pid)
    return chain


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_fork_bomb_is_contained(box):
    r = run(box, "import os\nwhile True:\n    os.fork()\n")
    assert r.limit == "processes", (r.limit, r.stderr[-500:])
    assert r.exit_code == 1 and "BlockingIOError" in r.stderr
    assert run(box, "print(6*7)").stdout == "42\n"  # the host is fine


def test_fork_bomb_that_ignores_errors_is_stopped():
    b = PythonSandbox(small(wall_seconds=3))
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run(b, code)
    assert r.limit in ("cpu_time", "wall_time"), (r.limit, r.stderr[-300:])


def test_thread_bomb_is_contained(box):
    code = "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    r = run(box, code)
    assert r.limit == "processes" and "can't start new thread" in r.stderr


def test_allocating_4_gb_hits_memory(box):
    r = run(box, "x = bytearray(4 * 1024**3)\nprint('allocated')")
    assert (r.limit, r.exit_code, r.stdout) == ("memory", 1, "")
    assert r.stderr.rstrip().endswith("MemoryError")
    r = run(box, "keep = []\nwhile True:\n    keep.append(bytearray(8 << 20))\n")
    assert r.limit == "memory", r.stderr[-300:]


def test_infinite_loop_hits_cpu_time(box):
    r = run(box, "while True:\n    pass\n")
    assert (r.limit, r.exit_code) == ("cpu_time", 128 + 24)  # SIGXCPU
    assert r.cpu_s >= 0.5  # measured (RLIMIT_CPU samples at the tick)
    # Ignoring SIGXCPU only postpones the kill to the hard limit, one second later.
    r = run(box, "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n")
    assert (r.limit, r.exit_code) == ("cpu_time", 128 + 9) and r.cpu_s >= 1.0  # killed at the hard limit, 1 s later


def test_sleeping_forever_hits_wall_time():
    b = PythonSandbox(small(wall_seconds=1.5))
    r = run(b, "import time\nprint('start')\ntime.sleep(3600)\n")
    assert (r.limit, r.exit_code, r.stdout) == ("wall_time", None, "start\n")
    # A process that closes its output and keeps running is still found and stopped.
    r = run(b, "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(3600)\n")
    assert (r.limit, r.exit_code) == ("wall_time", None)


def test_printing_100_mb_hits_output_and_is_never_buffered(box):
    tracemalloc.start()
    try:
        r = run(box, "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cap = box.limits.max_output_bytes
    assert (r.limit, r.exit_code, r.stdout_truncated) == ("output", None, True)
    assert r.stdout.startswith("x" * cap) and r.stdout[cap:].startswith("\n[... output truncated")
    assert peak < 2 * MIB, peak  # what the host held, at most: the cap and one read


def test_output_cap_is_shared_by_stdout_and_stderr():
    b = PythonSandbox(small(max_output_bytes=100))
    r = run(b, "import sys\nsys.stderr.write('e' * 60)\nsys.stderr.flush()\nimport time\ntime.sleep(0.2)\nprint('o' * 60)\n")
    assert r.limit == "output" and r.stderr == "e" * 60 and r.stdout.startswith("o" * 40 + "\n[...")
    r = run(b, "print('o' * 99)")  # exactly the cap (99 + newline): no limit
    assert (r.limit, r.stdout, r.stdout_truncated) == (None, "o" * 99 + "\n", False)


def test_file_size_and_tmpfs_limits():
    b = PythonSandbox(small(max_file_bytes=1 * MIB, tmp_bytes=4 * MIB))
    r = run(b, "open('big', 'wb').write(b'x' * (2 << 20))")
    assert r.limit == "file_size" and "File too large" in r.stderr
    r = run(b, "for i in range(8):\n    open(f'/tmp/f{i}', 'wb').write(b'x' * 1000000)\n")
    assert r.limit == "file_size" and "No space left on device" in r.stderr
    r = run(b, "for i in range(8):\n    open(f'/dev/shm/f{i}', 'wb').write(b'x' * 1000000)\n")
    assert r.limit == "file_size" and "No space left on device" in r.stderr


def test_work_dir_is_private_and_gone_afterwards(box):
    tag = uuid.uuid4().hex
    r = run(box, f"import os\nopen('mark-{tag}', 'w').write('x')\nprint(os.getcwd(), os.listdir('.'), os.listdir('/tmp'))")
    assert r.stdout == f"/mnt/data ['mark-{tag}'] ['mark-{tag}']\n"
    r = run(box, "import os\nprint(os.listdir('.'), os.listdir('/dev/shm'))")
    assert r.stdout == "[] []\n"  # a fresh, empty work dir every run
    for folder in ("/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir()):
        assert not any(tag in name for name in os.listdir(folder))


def test_four_runs_in_parallel(box):
    code = "import sys, time\ntime.sleep(0.3)\nprint(sum(range(int(sys.stdin.read()))))"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: run(box, code, stdin=str(n)), [10, 100, 1000, 10000]))
    assert [r.stdout for r in results] == ["45\n", "4950\n", "499500\n", "49995000\n"]
    assert len({r.run_id for r in results}) == 4


def test_big_stdin_and_code_round_trip(box):
    data = "y" * 300_000
    r = run(box, "# " + "z" * 200_000 + "\nimport sys\nprint(len(sys.stdin.read()))", stdin=data)
    assert r.stdout == "300000\n"


def test_limits_are_validated():
    for kw, field in [({"wall_seconds": 121}, "wall_seconds"), ({"wall_seconds": 0}, "wall_seconds"),
                      ({"cpu_seconds": 0}, "cpu_seconds"), ({"cpu_seconds": 1.5}, "cpu_seconds"),
                      ({"memory_bytes": 1000}, "memory_bytes"), ({"max_processes": 1}, "max_processes"),
                      ({"max_output_bytes": 0}, "max_output_bytes"), ({"tmp_bytes": True}, "tmp_bytes")]:
        with pytest.raises(SandboxConfigError) as info:
            SandboxLimits(**kw)
        assert info.value.field == field and field in str(info.value)
    assert SandboxLimits(wall_seconds=120).wall_seconds == 120
    with pytest.raises(SandboxConfigError) as info:
        PythonSandbox(run_as=(0, 0))
    assert info.value.field == "run_as"
    with pytest.raises(SandboxConfigError) as info:
        PythonSandbox(ro_paths=["relative/dir"])
    assert info.value.field == "ro_paths"
    for path in ("/tmp/x", "/proc", "/"):
        with pytest.raises(SandboxConfigError, match="cannot be exposed") as info:
            PythonSandbox(ro_paths=[path])
        assert info.value.field == "ro_paths"
    with pytest.raises(SandboxConfigError, match="cannot be exposed") as info:
        PythonSandbox(python="/tmp/venv/bin/python")
    assert info.value.field == "python"


def test_bad_input_is_refused_before_running(box):
    with pytest.raises(SandboxInputError) as info:
        box.run(b"print(1)")  # type: ignore[arg-type]
    assert info.value.field == "code"
    with pytest.raises(SandboxInputError) as info:
        box.run("print(1)", stdin=None)  # type: ignore[arg-type]
    assert info.value.field == "stdin"
    b = PythonSandbox(small(max_input_bytes=1000))
    with pytest.raises(SandboxInputError) as info:
        b.run("x" * 1001)
    assert info.value.field == "code"
    with pytest.raises(SandboxInputError) as info:
        b.run("print(1)", stdin="x" * 1000)
    assert info.value.field == "stdin"


def test_missing_bwrap_is_a_clear_error(tmp_path):
    with pytest.raises(SandboxUnavailable, match="bubblewrap not found.*apt-get install bubblewrap"):
        PythonSandbox(bwrap=str(tmp_path / "bwrap")).check()
    with pytest.raises(SandboxUnavailable, match="python interpreter not found"):
        PythonSandbox(python="/nonexistent/bin/python3").check()


def test_a_virtualenv_interpreter_runs_with_its_prefix(tmp_path):
    """``python=`` a venv: the venv and its base are bound read-only; its packages import."""
    # Readable by the sandbox's uid, and not under /tmp (the sandbox has its own /tmp).
    base = Path(tempfile.mkdtemp(prefix="lh-venv-", dir="/var/tmp"))
    try:
        os.chmod(base, 0o755)
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(base / "v")], check=True)
        site = next((base / "v" / "lib").glob("python3*")) / "site-packages"
        (site / "lh_probe.py").write_text("VALUE = 'from the venv'\n")
        for p in base.rglob("*"):
            if not p.is_symlink():
                os.chmod(p, 0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)
        b = PythonSandbox(small(), python=str(base / "v" / "bin" / "python"))
        r = run(b, "import sys, lh_probe\nprint(sys.prefix, lh_probe.VALUE)")
        assert r.stdout == f"{base / 'v'} from the venv\n", r.stderr
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="the whole suite already runs unprivileged")
def test_runs_the_same_for_an_unprivileged_server(tmp_path):
    """As root the sandbox starts bwrap as uid 65534; a normal user's server starts it as
    itself. Run the module (standard library only) as uid 65534 through setpriv: hello, the
    fork bomb."""
    base = Path(tempfile.mkdtemp(prefix="lh-unpriv-"))
    try:
        os.chmod(base, 0o755)
        shutil.copy(sb.__file__, base / "sandbox_copy.py")
        os.chmod(base / "sandbox_copy.py", 0o644)
        script = textwrap.dedent("""
            import json, os, sandbox_copy as s
            b = s.PythonSandbox(s.SandboxLimits(cpu_seconds=1, wall_seconds=20, max_processes=16))
            b.check()
            out = {"uid": os.getuid()}
            for name, code in [("hello", "print(6*7)"), ("bomb", "import os\\nwhile True: os.fork()"),
                               ]:
                r = b.run(code)
                out[name] = [r.stdout, r.limit]
            print(json.dumps(out))
            """)
        proc = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
             "/usr/bin/python3", "-I", "-c", f"import sys; sys.path.insert(0, {str(base)!r})\n" + script],
            capture_output=True, text=True, cwd="/", timeout=120)
        assert proc.returncode == 0, proc.stderr
        import json
        out = json.loads(proc.stdout)
        assert out["uid"] == 65534
        assert out["hello"] == ["42\n", None]
        assert out["bomb"][1] == "processes"
    finally:
        shutil.rmtree(base)
