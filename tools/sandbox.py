"""Run one untrusted program (a submission's kernel) in a sandbox built from what Linux gives without root.

    python -m tools.sandbox SPEC.json -- PROGRAM ARGS...

SPEC (JSON, written by the grader) says what the program may see and use. The launcher (this process, trusted)
unshares user (when not root), mount, network, IPC and PID namespaces and forks the namespace's first process, which
    - builds a new root file system on a tmpfs holding only read-only views of what a notebook needs (the system's
      /usr, /lib, /etc..., the Python installation, the virtual environment, `course_utils` and `data` at their own
      paths) plus a size-limited scratch folder (its home and working folder) and the grader's socket folder;
      pivot_root then detaches the old root, so the instructor notebooks, hidden checks, other submissions, other
      reports and the grader's files are not there to read or write; everything it can write is mounted noexec, and
      a seccomp filter refuses anonymous memory files (memfd), so it cannot load native code of its own, and the
      kernel's keyrings, which would outlive the grading;
    - mounts a /proc of its own (the PID namespace: no process outside the sandbox can be seen or signalled, and
      when the sandbox's first process ends every process the submission started ends with it);
    - brings the loopback interface up in an empty network namespace (no route out; torch.distributed on 127.0.0.1
      still works);
    - forks the program with resource limits (address space, CPU seconds, processes, file size, open files), as an
      unprivileged user of its own when the launcher runs as root (a uid no other sandbox uses), and with no new
      privileges.
Each protection that Linux refuses here (a container that blocks namespaces, say) is left off and the grading goes
on: the JSON status file names what was on and what was off, and why, for the report.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import random
import resource
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
CLONE_NEWIPC = 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 1, 38, 4
NOBODY = 65534
# When the launcher is root, each sandbox runs as a user of its own, drawn from this range (no account needed):
# Linux counts the process limit per user and lets a user signal only its own processes, so two submissions graded
# side by side can neither exhaust each other's process budget nor kill each other.
SANDBOX_UIDS = range(1 << 20, 1 << 21)
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}          # system call numbers
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _call(name: str, *args) -> None:
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()
    _call("mount", enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))


def default_spec(**overrides) -> dict:
    """The limits a grade runs under unless the grader says otherwise."""
    spec = {
        "memory_bytes": 6 << 30,          # address space of each process (torch reserves more than it touches)
        "cpu_seconds": 3600,              # CPU time of each process
        "processes": 256,                 # processes and threads it may add to those its user already runs
        "sandbox_memory_bytes": 6 << 30,  # memory of all its processes together, tmpfs pages included (a cgroup)
        "cgroup": None,                   # when root: the name of the cgroup the sandbox runs in (the grader removes it)
        "file_bytes": 256 << 20,          # largest file it may write
        "open_files": 1024,
        "scratch_bytes": 1 << 30,         # its home and working folder (a tmpfs)
        "readonly": [],                   # extra host paths shown read-only at the same place
        "socket_dir": None,               # host folder shown read-write at the same place (the kernel's sockets)
        "status_file": None,              # where the launcher writes what was on and off
        "scratch": "/home/student",       # the program's home and working folder, inside
        "root_dir": None,                 # an empty host folder to build the new root on (the grader removes it)
        "pythonpath": [],                 # folders the program's Python imports from first (course_utils' home)
        "uid": None,                      # when root: the user to run as (default: one drawn from SANDBOX_UIDS)
        "namespaces": True,               # False: as where Linux refuses them (tests of that path)
        "threads": None,                  # OMP_NUM_THREADS, torch's threads per process (None: as the grader's own)
    }
    unknown = set(overrides) - set(spec)
    if unknown:
        raise ValueError(f"unknown sandbox settings: {sorted(unknown)}")
    spec.update(overrides)
    threads = spec["threads"]
    if threads is not None and (type(threads) is not int or threads < 1):
        raise ValueError(f"sandbox setting threads must be a positive whole number or None, got {threads!r}")
    return spec


def python_paths() -> list[str]:
    """What this interpreter needs to start: its installation and its virtual environment."""
    paths = sorted({sys.base_prefix, sys.prefix, os.path.realpath(sys.executable)})
    inside = lambda p, d: p == d or p.startswith(d.rstrip("/") + "/")
    return [p for p in paths if not any(inside(p, d) for d in SYSTEM_DIRS) and not any(inside(p, q) for q in paths if q != p)]


class _Status:
    def __init__(self):
        self.on: list[str] = []
        self.off: dict[str, str] = {}

    def attempt(self, name: str, action) -> bool:
        try:
            action()
        except (OSError, ValueError) as err:
            self.off[name] = str(err)
            return False
        self.on.append(name)
        return True


CGROUP_ROOT = "/sys/fs/cgroup"
CPU_SHARE = "CPU shared equally with every other sandbox (cgroup cpu)"


def _cgroup_dirs(name: str) -> list[tuple[str, dict]]:
    """Where the cgroup `name` lives and what to write there: cgroup v1's memory and pids hierarchies, or v2's
    unified one."""
    v1 = [os.path.join(CGROUP_ROOT, c) for c in ("memory", "pids")]
    if all(os.path.isfile(os.path.join(d, "cgroup.procs")) for d in v1):
        return [(os.path.join(v1[0], name), {"memory.limit_in_bytes": "memory"}),
                (os.path.join(v1[1], name), {"pids.max": "pids"})]
    controllers = os.path.join(CGROUP_ROOT, "cgroup.controllers")
    if os.path.isfile(controllers) and {"memory", "pids"} <= set(Path(controllers).read_text().split()):
        return [(os.path.join(CGROUP_ROOT, name), {"memory.max": "memory", "memory.swap.max": "swap", "pids.max": "pids"})]
    raise OSError("no cgroup memory and pids controllers this process can use")


def _join_cgroup(spec: dict) -> None:
    """Put this process (and so everything the sandbox starts) in a cgroup of its own, limited in memory (resident
    and tmpfs pages, all processes together) and in the number of processes and threads."""
    if not spec["cgroup"]:
        raise OSError("no cgroup name given")
    values = {"memory": int(spec["sandbox_memory_bytes"]), "pids": int(spec["processes"]), "swap": 0}
    for path, files in _cgroup_dirs(spec["cgroup"]):
        os.makedirs(path, exist_ok=True)
        for file, key in files.items():
            target = Path(path, file)
            if target.exists():
                target.write_text(str(values[key]))
        Path(path, "cgroup.procs").write_text(str(os.getpid()))


def _cpu_cgroup_dir(name: str) -> tuple[str, str, str]:
    """Where the sandbox's CPU cgroup lives, the file that sets its share and the share: cgroup v1's cpu hierarchy
    (cpu.shares) or v2's unified one (cpu.weight), each at its default, the same for every sandbox."""
    v1 = os.path.join(CGROUP_ROOT, "cpu")
    if os.path.isfile(os.path.join(v1, "cgroup.procs")):
        return os.path.join(v1, name), "cpu.shares", "1024"
    controllers = os.path.join(CGROUP_ROOT, "cgroup.subtree_control")
    if os.path.isfile(controllers) and "cpu" in Path(controllers).read_text().split():
        return os.path.join(CGROUP_ROOT, name), "cpu.weight", "100"
    raise OSError("no cgroup cpu controller this process can use")


def _join_cpu_cgroup(spec: dict) -> None:
    """Put this process in a CPU cgroup of its own, at the same share as every other sandbox's. The kernel's
    scheduler divides the machine fairly between cgroups first, so however many processes a sandbox runs, it takes
    no more than its share from a sandbox graded beside it (red team round 2, session 42: 120 busy loops, each in a
    session of its own to escape the scheduler's grouping by session, made a correct submission graded beside them
    time out and lose a mark)."""
    if not spec["cgroup"]:
        raise OSError("no cgroup name given")
    path, file, share = _cpu_cgroup_dir(spec["cgroup"])
    os.makedirs(path, exist_ok=True)
    Path(path, file).write_text(share)
    Path(path, "cgroup.procs").write_text(str(os.getpid()))


def remove_cgroup(name: str | None, wait: float = 5.0) -> None:
    """Remove the cgroup once its processes are gone (the grader calls this after killing the sandbox)."""
    if not name:
        return
    try:
        paths = [path for path, _ in _cgroup_dirs(name)]
    except OSError:
        paths = []
    try:
        paths.append(_cpu_cgroup_dir(name)[0])
    except OSError:
        pass
    deadline = time.monotonic() + wait
    for path in paths:
        while os.path.isdir(path):
            try:
                os.rmdir(path)
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)


# Not root: the launcher's own user is mapped to this id inside its user namespace, not to 0. The launcher keeps the
# capabilities it needs to build the sandbox (a user namespace's creator holds them all until it execs), but the
# program it execs is no namespace root: with the kernel not dumpable, /proc/self/mem then belongs to a root the
# program is not, so code in the kernel cannot rewrite the kernel's own memory (mapped to 0, it could).
INSIDE_ID = 1000


def _write_ids(uid: int, gid: int) -> None:
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{INSIDE_ID} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{INSIDE_ID} {gid} 1")


def _bind(host: str, root: str, writable: bool = False) -> None:
    """Show `host` at the same path under `root` (read-only unless `writable`)."""
    target = root + host
    if os.path.isdir(host):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Path(target).touch()
    _mount(host, target, None, MS_BIND | MS_REC)
    if not writable:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    elif os.path.isdir(host):                          # what the program can write, it cannot map as code
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _new_root(spec: dict) -> None:
    """Build the sandbox's file system on a tmpfs and make it the root; the old root is detached."""
    _call("unshare", ctypes.c_int(CLONE_NEWNS))
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = spec["root_dir"]
    # Every place the program can write is mounted noexec: a file it writes there (a compiled extension module,
    # say) cannot be mapped as code, so it cannot run native code of its own (which no audit hook would see).
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64m,mode=755")
    for d in ("/dev/shm", "/tmp", spec["scratch"]):       # first: the views below may lie inside /tmp
        os.makedirs(root + d, exist_ok=True)
        _mount("tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={int(spec['scratch_bytes'])},mode=1777")
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            os.symlink(os.readlink(d), root + d)
        elif os.path.isdir(d):
            _bind(d, root)
    for path in python_paths() + [str(Path(p).resolve()) for p in spec["readonly"]]:
        if os.path.exists(path):
            _bind(path, root)
    if spec["socket_dir"]:
        _bind(spec["socket_dir"], root, writable=True)
    os.makedirs(root + "/dev", exist_ok=True)
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            _bind("/dev/" + name, root, writable=True)
    os.makedirs(root + "/proc", exist_ok=True)
    # this PID namespace's own /proc; mounted before the old root goes, since Linux lets a user namespace mount a
    # proc only while another proc is fully visible to it
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV)
    os.makedirs(root + "/.old-root", exist_ok=True)
    number = PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root's system call number on {platform.machine()} is not known here")
    _call("syscall", ctypes.c_long(number), root.encode(), (root + "/.old-root").encode())
    os.chdir("/")
    _call("umount2", b"/.old-root", ctypes.c_int(MNT_DETACH))
    os.rmdir("/.old-root")


# The audit architecture seccomp sees, and the system calls the filter refuses, per machine: memfd_create, then
# add_key, request_key and keyctl.
REFUSED_CALLS = {"x86_64": (0xC000003E, (319, 248, 249, 250)), "aarch64": (0xC00000B7, (279, 217, 218, 219))}


def _refuse_calls() -> None:
    """A seccomp filter that answers a few system calls with EPERM; inherited by every child, kept across exec.
    memfd_create: an anonymous memory file lives on no mount, so noexec does not cover it, and a library written
    into one could be loaded (vm.memfd_noexec only stops execve, not a loader's executable mapping). The kernel's
    keyrings (add_key, request_key, keyctl): a user's keyring outlives the grading, and a later sandbox given the
    same uid reads it (red team, session 42: a note from one grading to the next). Nothing the notebooks run needs
    either."""
    machine = platform.machine()
    if machine not in REFUSED_CALLS:
        raise OSError(f"the system call numbers on {machine} are not known here")
    arch, numbers = REFUSED_CALLS[machine]
    numbers = [n for number in numbers for n in (number, number | 0x40000000)]   # and x32's numbering of each
    LD_ABS, JEQ, RET = 0x20, 0x15, 0x06                       # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    ALLOW, EPERM = 0x7FFF0000, 0x00050000 | 1                 # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    count = len(numbers)
    program = [(LD_ABS, 0, 0, 4),                             # the architecture
               (JEQ, 0, count + 1, arch),                     # another one (a 32-bit call): allow
               (LD_ABS, 0, 0, 0)]                             # the system call's number
    program += [(JEQ, count - i, 0, n) for i, n in enumerate(numbers)]   # one of them: refuse
    program += [(RET, 0, 0, ALLOW), (RET, 0, 0, EPERM)]
    filters = (ctypes.c_ubyte * (8 * len(program)))()
    for i, (code, jt, jf, k) in enumerate(program):
        struct.pack_into("HBBI", filters, 8 * i, code, jt, jf, k)
    fprog = struct.pack("HxxxxxxP", len(program), ctypes.addressof(filters))
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    _call("prctl", ctypes.c_int(PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    _call("prctl", ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.c_char_p(fprog), ctypes.c_ulong(0),
          ctypes.c_ulong(0))


def _drop_capabilities() -> None:
    """Empty the bounding set: whatever uid the program runs as (root of its user namespace, say), it execs with
    no capabilities, so it can neither remount the read-only views nor undo any other protection."""
    PR_CAPBSET_DROP = 24
    for cap in range(64):
        if _libc.prctl(ctypes.c_int(PR_CAPBSET_DROP), ctypes.c_ulong(cap), 0, 0, 0) != 0 and ctypes.get_errno() != 22:
            err = ctypes.get_errno()
            raise OSError(err, f"dropping capability {cap}: {os.strerror(err)}")


def _loopback_up() -> None:
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def processes_of(uid: int) -> int:
    """How many processes (threads included) `uid` runs now: Linux counts RLIMIT_NPROC over all of them."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if fields.get("Uid", "").split()[:1] == [str(uid)]:
                count += int(fields.get("Threads", "1").strip() or 1)
    return count


def _limits(spec: dict, already: int) -> None:
    """Set in the program's process; their failures cannot reach the status file any more, so they raise.
    The process limit counts every process of the user the program runs as: `already` of them exist."""
    for name, key in (("RLIMIT_AS", "memory_bytes"), ("RLIMIT_CPU", "cpu_seconds"), ("RLIMIT_NPROC", "processes"),
                      ("RLIMIT_FSIZE", "file_bytes"), ("RLIMIT_NOFILE", "open_files")):
        value = int(spec[key]) + (already if key == "processes" else 0)
        resource.setrlimit(getattr(resource, name), (value, value))


def _forward(signals, to_pid: int) -> None:
    for sig in signals:
        signal.signal(sig, lambda s, _f: os.kill(to_pid, s))


def _wait_and_exit(pid: int) -> None:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) % 256 if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def run(spec: dict, argv: list[str]) -> None:
    """Never returns: execs `argv` in the sandbox (in a grandchild) and exits with its status."""
    status = _Status()
    parent = os.getppid()
    _call("prctl", ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL))   # dies with the grader
    if os.getppid() != parent:
        os._exit(137)
    root_user = os.geteuid() == 0
    uid, gid = os.getuid(), os.getgid()
    run_as = int(spec["uid"]) if spec["uid"] is not None else random.choice(SANDBOX_UIDS)
    already = processes_of(run_as if root_user else uid)     # counted while the whole /proc is still visible
    whole = "memory and processes limited for the whole sandbox (cgroup)"
    if root_user:
        status.attempt(whole, lambda: _join_cgroup(spec))
        status.attempt(CPU_SHARE, lambda: _join_cpu_cgroup(spec))
    else:
        status.off[whole] = "not root: no cgroup to create (each process is still limited on its own)"
        status.off[CPU_SHARE] = "not root: no cgroup to create"
    # IPC: System V shared memory, semaphores and message queues of its own, gone with the namespace. On the host's,
    # a segment outlives the grading (red team, session 42: one submission left a note that the next one read, and
    # 64 MiB held after the grader had exited).
    flags = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | (0 if root_user else CLONE_NEWUSER)
    def isolate():
        if not spec["namespaces"]:
            raise OSError("turned off by the sandbox settings")
        _call("unshare", ctypes.c_int(flags))
    isolated = status.attempt("namespaces: pid, network, ipc" + ("" if root_user else ", user"), isolate)
    if isolated and not root_user:
        isolated = status.attempt("user namespace id maps", lambda: _write_ids(uid, gid))
    first = os.fork()                                   # pid 1 of the new PID namespace, when there is one
    if first:
        _forward((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT), first)
        _wait_and_exit(first)
    _call("prctl", ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL))
    home = spec["scratch"]
    private_root = "private root file system (read-only views, scratch tmpfs, own /proc)"
    if isolated and spec["root_dir"]:
        private = status.attempt(private_root, lambda: _new_root(spec))
    else:
        private = False
        status.off[private_root] = "no namespaces" if not isolated else "no root_dir"
    if isolated:
        status.attempt("network: loopback only", _loopback_up)
    status.attempt("no anonymous memory files or kernel keyrings (memfd_create, add_key, request_key, keyctl "
                   "refused)", _refuse_calls)
    if not private:
        # no private root: a home of its own in the grader's folder for this run, never a shared path
        home = os.path.join(spec["root_dir"] or tempfile.mkdtemp(prefix="sandbox-home-"), "home")
        os.makedirs(home, exist_ok=True)
    status.attempt("no capabilities", _drop_capabilities)
    if root_user:
        status.attempt(f"unprivileged user of its own (uid {run_as})", lambda: os.chown(home, run_as, run_as))
    status.on.append("limits: " + ", ".join(f"{k} {spec[k]}" for k in ("memory_bytes", "cpu_seconds", "processes", "file_bytes", "open_files")))
    if spec["status_file"]:
        try:
            Path(spec["status_file"]).write_text(json.dumps({"on": status.on, "off": status.off}))
        except OSError:
            pass
    program = os.fork()
    if program:
        _forward((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT), program)
        _wait_and_exit(program)                       # pid 1 exits: the kernel kills the rest of the namespace
    _call("prctl", ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL))
    _limits(spec, already)
    if root_user:
        os.setgroups([])
        os.setgid(run_as)
        os.setuid(run_as)
    _call("prctl", ctypes.c_int(PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    os.chdir(home)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONHASHSEED", "OMP_NUM_THREADS")}
    env.update(HOME=home, TMPDIR=home, USER="student", MPLBACKEND="Agg", MPLCONFIGDIR=f"{home}/.matplotlib",
               IPYTHONDIR=f"{home}/.ipython", JUPYTER_RUNTIME_DIR=f"{home}/.jupyter", TQDM_DISABLE="1",
               PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1")
    if spec["threads"] is not None:
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    if private:                                     # its own PID namespace and /proc: every process there is the sandbox's
        env["WORKBOOK_PID_NAMESPACE"] = "1"
    if spec["pythonpath"]:
        env["PYTHONPATH"] = os.pathsep.join(spec["pythonpath"])
    try:
        os.execve(argv[0], argv, env)
    except OSError as err:
        print(f"sandbox: cannot run {argv[0]}: {err}", file=sys.stderr)
        os._exit(127)


def main(args: list[str] | None = None) -> None:
    args = sys.argv[1:] if args is None else args
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m tools.sandbox SPEC.json -- PROGRAM ARGS...", file=sys.stderr)
        sys.exit(2)
    spec = default_spec(**json.loads(Path(args[0]).read_text()))
    run(spec, args[2:])


if __name__ == "__main__":
    main()
