"""tools.sandbox on its own, with a shell as the program: what it can see, write, and be."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.notebooks import ROOT
from tools.sandbox import default_spec, remove_cgroup

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux's")


@pytest.fixture
def tmp_path():
    """A folder the sandbox's own user can pass through (pytest's lie in a folder only its user may enter), as
    the grader's are."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sandboxed(tmp_path, script, **settings):
    sockets, root = tmp_path / "ipc", tmp_path / "root"
    sockets.mkdir()
    root.mkdir()
    os.chmod(tmp_path, 0o711)
    os.chmod(sockets, 0o777)
    if os.geteuid() == 0:
        settings.setdefault("cgroup", f"workbook-test-{os.getpid()}-{tmp_path.name}")
    settings.setdefault("readonly", [str(ROOT / "course_utils")])
    spec = default_spec(socket_dir=str(sockets), root_dir=str(root), status_file=str(sockets / "status.json"), **settings)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    try:
        done = subprocess.run([sys.executable, "-m", "tools.sandbox", str(tmp_path / "spec.json"), "--", "/bin/sh", "-c", script],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        remove_cgroup(spec["cgroup"])
    return done, json.loads((sockets / "status.json").read_text())


def test_the_program_sees_only_its_views_and_cannot_write_them(tmp_path):
    done, status = sandboxed(tmp_path, f"id -u; ls {ROOT}; ls /proc | grep -c '^[0-9]'; "
                                       f"touch {ROOT}/course_utils/x 2>&1; touch $HOME/mine && echo home-ok")
    if any(k.startswith("namespaces") for k in status["off"]):
        pytest.skip(f"Linux refuses this user namespaces here: {status['off']}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if os.geteuid() == 0:
        assert lines[0] != "0", "the program runs as root"
    assert "notebooks" not in done.stdout and "course_utils" in done.stdout      # only what it was shown
    assert int(lines[-3]) <= 5, "it sees processes outside its PID namespace"
    assert "Read-only file system" in done.stdout and lines[-1] == "home-ok"
    assert not status["off"], status


def test_without_namespaces_the_rest_still_applies_and_the_status_says_so(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("without namespaces, a user of its own needs a root launcher")
    done, status = sandboxed(tmp_path, "id -u; pwd; awk '/Max processes/ {print $3}' /proc/self/limits; touch here && echo wrote", namespaces=False)
    assert done.returncode == 0, done.stderr
    uid, home, nproc, wrote = (done.stdout.split() + [""] * 4)[:4]
    assert wrote == "wrote", done.stdout + done.stderr
    assert uid != "0" and home.startswith(str(tmp_path / "root")) and wrote == "wrote"
    assert nproc.isdigit() and int(nproc) < 100_000, f"no process limit: {nproc}"
    assert status["off"]["namespaces: pid, network, ipc"] == "turned off by the sandbox settings"
    assert any(k.startswith("private root") for k in status["off"])
    assert any(p.startswith("unprivileged user of its own") for p in status["on"])


def test_shared_memory_the_program_makes_is_its_own_and_ends_with_it(tmp_path):
    # red team, session 42: on the host's IPC namespace a System V segment outlived the grading, a note from one
    # submission to the next (a hidden check's inputs reached a later submission's feedback) and memory held after
    # the grader exited
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x5EC0000 + os.getpid() % 0xFFFF
    libc.shmget.restype = ctypes.c_int
    make = (f"python3 -c 'import ctypes; libc = ctypes.CDLL(None); "
            f"print(libc.shmget(ctypes.c_int({key}), ctypes.c_size_t(4096), ctypes.c_int(0o1666)))'")
    done, status = sandboxed(tmp_path, make)
    if any(k.startswith("namespaces") for k in status["off"]):
        pytest.skip(f"Linux refuses this user namespaces here: {status['off']}")
    assert done.returncode == 0 and int(done.stdout.split()[-1]) >= 0, done.stdout + done.stderr   # it made one
    left = libc.shmget(ctypes.c_int(key), ctypes.c_size_t(0), ctypes.c_int(0))
    if left >= 0:
        libc.shmctl(ctypes.c_int(left), ctypes.c_int(0), None)              # IPC_RMID: not left on this machine
    assert left == -1, f"the program's shared memory segment (key {key:#x}) is on the host after it ended"


def test_the_program_cannot_keep_a_note_in_the_kernel_s_keyrings(tmp_path):
    # red team, session 42: a key added to the user's keyring outlived the sandbox, and a later one given the same uid
    # (a root grader draws it from a pool) read it back
    import platform

    numbers = {"x86_64": (248, 249, 250), "aarch64": (217, 218, 219)}      # add_key, request_key, keyctl
    if platform.machine() not in numbers:
        pytest.skip(f"no system call numbers for {platform.machine()}")
    add_key, request_key, keyctl = numbers[platform.machine()]
    script = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
              f"r = libc.syscall({add_key}, b'user', b'note', b'from one grading', 16, -4); e = ctypes.get_errno(); "
              f"s = libc.syscall({request_key}, b'user', b'note', None, 0); f = ctypes.get_errno(); "
              f"k = libc.syscall({keyctl}, 0, -4, 0); g = ctypes.get_errno(); print(r, e, s, f, k, g)")
    done, status = sandboxed(tmp_path, f"{sys.executable} -c \"{script}\"")
    assert done.returncode == 0, done.stdout + done.stderr
    results = [int(x) for x in done.stdout.split()]
    assert results == [-1, 1, -1, 1, -1, 1], f"add_key, request_key, keyctl: (result, errno) {results}: not all refused (EPERM)"
    assert any("keyrings" in p for p in status["on"]), status


def test_the_program_runs_in_a_cpu_cgroup_of_its_own_at_the_common_share(tmp_path):
    # red team round 2, session 42: 120 busy loops, each in a session of its own, starved the submission graded beside
    # them (-j 2) until it timed out. Each sandbox now has a CPU cgroup at the same share, and the scheduler divides
    # the machine between cgroups first. (How fast a neighbour then runs is a timing, not asserted here.)
    from tools.sandbox import CPU_SHARE

    if os.geteuid() != 0:
        pytest.skip("a cgroup of its own needs a root grader")
    name = f"workbook-test-{os.getpid()}-{tmp_path.name}"
    done, status = sandboxed(tmp_path, "cat /proc/self/cgroup", cgroup=name)
    if CPU_SHARE in status["off"]:
        pytest.skip(f"no cgroup cpu controller here: {status['off'][CPU_SHARE]}")
    assert CPU_SHARE in status["on"], status
    lines = done.stdout.splitlines()
    cpu = [l for l in lines if "cpu" in l.split(":")[1].split(",")] or [l for l in lines if l.startswith("0::")]  # v1, or v2
    assert len(cpu) == 1 and cpu[0].endswith("/" + name), done.stdout


def test_all_its_processes_together_stay_within_the_sandbox_memory(tmp_path):
    # Each process is limited on its own (address space), so forking multiplies what a program may take; the
    # sandbox's cgroup bounds them all together: 4 children touching 400 MB each do not all fit in 1 GiB.
    if os.geteuid() != 0:
        pytest.skip("a cgroup of its own needs a root grader")
    program = ("import os, time\nkids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
               "        block = bytearray(400 << 20)\n        for i in range(0, len(block), 4096):\n            block[i] = 1\n"
               "        time.sleep(1)\n        os._exit(0)\n    kids.append(pid)\n"
               "print(sorted(os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) for k in kids))\n")
    (tmp_path / "fork.py").write_text(program)
    os.chmod(tmp_path / "fork.py", 0o644)
    done, status = sandboxed(tmp_path, f"{sys.executable} {tmp_path}/fork.py", readonly=[str(ROOT / "course_utils"), str(tmp_path / "fork.py")],
                             memory_bytes=3 << 30, sandbox_memory_bytes=1 << 30)
    whole = "memory and processes limited for the whole sandbox (cgroup)"
    if whole in status["off"]:
        pytest.skip(f"no cgroup here: {status['off'][whole]}")
    assert whole in status["on"], status
    codes = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    assert codes is not None and -9 in codes, (done.stdout, done.stderr)     # the cgroup's OOM killer stopped some


NATIVE_PROBE = r"""
import glob, importlib.machinery, importlib.util, os, shutil, sys
ext = sorted(glob.glob(os.path.join(sys.base_prefix, "lib", "python3*", "lib-dynload", "_json*.so")))[0]
def load(path):
    try:
        spec = importlib.util.spec_from_loader("_json", importlib.machinery.ExtensionFileLoader("_json", path))
        importlib.util.module_from_spec(spec)
        return "loaded"
    except ImportError as err:
        return "refused: " + str(err)[-60:]
copy = os.path.join(os.environ["HOME"], "_json.so")
shutil.copy(ext, copy)
print("scratch", load(copy))
try:
    fd = os.memfd_create("ext")
except OSError as err:
    print("memfd refused: memfd_create:", err)
else:
    with open(ext, "rb") as f:
        os.write(fd, f.read())
    print("memfd", load(f"/proc/self/fd/{fd}"))
"""


def test_the_program_cannot_load_native_code_it_wrote(tmp_path):
    # A copy of a standard extension module stands in for a compiled one: outside the sandbox both copies load
    # (the control), inside neither the scratch folder's (noexec) nor a memory file's (memfd_create refused) does.
    (tmp_path / "probe.py").write_text(NATIVE_PROBE)
    os.chmod(tmp_path / "probe.py", 0o644)
    control = subprocess.run([sys.executable, str(tmp_path / "probe.py")], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, HOME=str(tmp_path)))
    assert control.stdout.split() == ["scratch", "loaded", "memfd", "loaded"], control.stdout + control.stderr
    done, status = sandboxed(tmp_path, f"{sys.executable} {tmp_path}/probe.py", readonly=[str(ROOT / "course_utils"), str(tmp_path / "probe.py")])
    if any(k.startswith("namespaces") for k in status["off"]):
        pytest.skip(f"Linux refuses this user namespaces here: {status['off']}")
    assert not status["off"], status
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines.get("scratch", "").startswith("refused"), f"an extension module copied to the scratch folder loaded: {done.stdout}{done.stderr}"
    assert lines.get("memfd", "").startswith("refused"), f"an extension module in a memfd loaded: {done.stdout}{done.stderr}"


MEMORY_PROBE = r"""
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)          # PR_SET_DUMPABLE = 0: a process that protects its memory
buf = ctypes.create_string_buffer(b"ORIGINAL")
addr = ctypes.addressof(buf)
writer = (f"import os\nfd = os.open('/proc/{os.getpid()}/mem', os.O_RDWR)\nos.lseek(fd, {addr}, 0)\n"
          f"os.write(fd, b'FORGED!!')\n")
child = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True)
print("child", "refused" if "PermissionError" in child.stderr else "wrote", buf.value.decode())
try:
    fd = os.open("/proc/self/mem", os.O_RDWR)
    os.lseek(fd, addr, 0)
    os.write(fd, b"FORGED!!")
    print("self wrote", buf.value.decode())
except PermissionError:
    print("self refused", buf.value.decode())
"""


@pytest.mark.parametrize("launcher", ["root", "an ordinary user"])
def test_the_program_cannot_rewrite_its_own_memory_or_have_a_child_rewrite_it(tmp_path, launcher):
    # A sandboxed program that makes itself not dumpable keeps its memory from its children and from writes
    # through /proc/self/mem: inside the sandbox it runs as no root of any namespace, so Linux refuses both, whether
    # the grader runs as root or as an ordinary user (mapped to root of its user namespace, the program could write
    # its own memory: seen before INSIDE_ID). The grader's checks no longer run in a submission's process (they
    # did, behind a guard that set this, until session 40); what is tested is the sandbox's user mapping.
    import shutil
    import tempfile

    if os.geteuid() != 0 and launcher == "root":
        pytest.skip("needs a root grader")
    if os.geteuid() != 0 or launcher == "root":
        launch, demote = [sys.executable, "-m", "tools.sandbox"], None
    else:                                   # an ordinary user's grader: the system Python, sandbox.py copied where it can read it
        home = Path(tempfile.mkdtemp(prefix="sandbox-user-"))
        (home / "tools").mkdir()
        shutil.copy(ROOT / "tools" / "sandbox.py", home / "tools" / "sandbox.py")
        (home / "tools" / "__init__.py").write_text("")
        os.chmod(home, 0o755)
        launch, demote = ["/usr/bin/python3", "-m", "tools.sandbox"], lambda: (os.setgid(65534), os.setuid(65534))
    probe = tmp_path / "memory.py"
    probe.write_text(MEMORY_PROBE)
    root = tmp_path / "root"
    root.mkdir()
    for path in (tmp_path, root):
        os.chmod(path, 0o777)
    os.chmod(probe, 0o644)
    spec = default_spec(root_dir=str(root), readonly=[str(probe)])
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    os.chmod(tmp_path / "spec.json", 0o644)
    done = subprocess.run(launch + [str(tmp_path / "spec.json"), "--", "/usr/bin/python3", str(probe)],
                          cwd=home if demote else ROOT, capture_output=True, text=True, timeout=60, preexec_fn=demote)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["child", "refused", "ORIGINAL", "self", "refused", "ORIGINAL"], done.stdout + done.stderr[-1000:]


def test_threads_sets_the_program_s_omp_threads_and_bad_values_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")               # the grader's own, passed on unless threads is set
    done, _ = sandboxed(tmp_path, 'echo "threads=$OMP_NUM_THREADS"', threads=1)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "threads=1", (done.stdout, done.stderr)
    for bad in (0, -2, 1.5, "2", True):
        with pytest.raises(ValueError, match="sandbox setting threads must be a positive whole number or None"):
            default_spec(threads=bad)


def test_without_threads_the_program_keeps_the_grader_s_omp_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    done, _ = sandboxed(tmp_path, 'echo "threads=$OMP_NUM_THREADS"')
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "threads=7", (done.stdout, done.stderr)
