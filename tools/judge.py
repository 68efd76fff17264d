"""Grading a notebook judged apart: the checks run in a kernel that never runs the submission's code.

Two sandboxed kernels (tools.kernel), started side by side:
- the submission's kernel runs the instructor's cells and the submission's exercise cells, in order, and no check;
- the judge runs the instructor's cells and checks, in order, and no exercise cell: each name an exercise defines
  is, in the judge, a proxy (tools.judge_wire) that calls the submission's function in the submission's kernel.

A call's arguments cross as data, the function runs in the submission's kernel, and its result comes back as data,
with what it changed in place and what it drew from the global random states; the grader relays each call between
the two kernels' sockets and never reads more than a call's size limit. Expected values, comparisons and verdicts
exist only in the judge. So nothing the submission does in its own process (rebinding or patching the check
helpers, writing to the process's memory through NumPy, forging output) reaches a check: the most its code can do
is answer the calls, and answering them rightly is solving the exercise. A check passes when the judge's cell
completed without an exception.

Workers (notebook 05): a check that launches torchrun workers runs them in the judge, where they run the instructor's
script, and the notebook's functions the script imports are proxies too (the judge's `export` writes them with
course_utils.distributed.write_module). Each worker's first call makes the grader ask the submission's kernel for
workers of its own, one per rank of the launch, forked from the kernel (so they hold its functions) and joined in a
process group of their own; each call of the judge's rank r crosses to the submission's rank r, whose function talks
to its peers (dist.send, dist.all_reduce) there. The script, its helpers and its reports stay in the judge's worker,
out of reach of whatever the function does in its own process. When the judge's cell ends, the grader hangs up on
the submission's workers and each ends, wherever it is stuck.

Every notebook is graded this way. (Until session 40 a notebook could also be graded in one kernel, with a guard in
front of the checks in the submission's own process; a submission that wrote to that process's memory through
NumPy got past it, and that mode is gone.)
"""
from __future__ import annotations

import os
import secrets
import selectors
import socket
import struct
import threading
import time
from pathlib import Path

from .judge_wire import MAX_WORLD, WireError, pack_body, parse_body, recv_body, send_body
from .kernel import Limits, SandboxedKernel

WIRE_SOURCE = Path(__file__).with_name("judge_wire.py").read_text()
CALL_LIMIT = 128 << 20                   # bytes of one call or of one reply
SESSION_GRACE = 1.0                      # seconds a serving cell has to end by itself once its cell has ended

# The environment variable that holds the judge's check seed: a number drawn for each grading and set in the judge's
# kernel only (so in the workers it launches, and nowhere the submission's code runs). Check data drawn from it (05's
# `common.check_input`, the ring's vectors) cannot be rebuilt by the submission: a rank's function must receive the
# other ranks' data, not compute it from the notebook's own formula. Unset, as in a plain run, it is 0.
CHECK_SEED_ENV = "WORKBOOK_CHECK_SEED"

# Installed once in each kernel as a module of its own (the repository's tools package is not in either sandbox).
INSTALL = ("import sys as _s, types as _t\n"
           "_m = _t.ModuleType('workbook_wire')\n"
           "_s.modules['workbook_wire'] = _m\n"
           "_m.WIRE_SOURCE = {source!r}\n"
           "exec(compile(_m.WIRE_SOURCE, 'workbook_wire', 'exec'), _m.__dict__)\n"
           "{then}\n"
           "del _s, _t, _m")


def _listen(kernel: SandboxedKernel, name: str) -> tuple[socket.socket, str]:
    """A Unix socket the kernel may connect to, in the folder its sandbox shows it (its only way out)."""
    path = kernel.socket_dir / name
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o666)
    server.listen(2)
    return server, str(path)


def _hang_up(sock) -> None:
    """Shut a socket down (a thread blocked on it wakes) and close it."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


class Relay:
    """The grader between the two kernels: it takes each call from the judge, starts a serving session in the
    submission's kernel when none is running, passes the call on and the reply back."""

    HELLO_SECONDS = 30                    # the submission's workers of a launch connect and say who they are within this

    def __init__(self, judge: SandboxedKernel, submission: SandboxedKernel, limits: Limits):
        self.judge, self.submission, self.limits = judge, submission, limits
        self.judge_server, self.judge_path = _listen(judge, "judge")
        self.sub_server, self.sub_path = _listen(submission, "judge")
        # the judge's torchrun workers, and the submission's workers that answer them (one per rank of a launch)
        self.workers_server, self.workers_path = _listen(judge, "workers")
        self.sub_workers_server, self.sub_workers_path = _listen(submission, "workers")
        self.groups = {}                  # launch -> {rank: the connection of the submission's worker of that rank}
        self.worker_conns = []            # every such connection this cell: hung up when it ends
        self.groups_changed = threading.Condition()
        self.lock = threading.Lock()
        self.forwarding = threading.Lock()   # one call at a time reaches the submission's kernel
        self.conn = None                  # the submission's side of the current session
        self.session = None               # the thread running the session's cell
        self.session_result = None        # how the last session's cell ended
        self.active = False               # True while one of the judge's cells runs: only then may a session start
        self.closed = False
        self.thread = threading.Thread(target=self._accept, args=(self.judge_server, self._serve_judge), daemon=True)
        self.thread.start()
        threading.Thread(target=self._accept, args=(self.workers_server, self._serve_worker), daemon=True).start()
        self.collecting = threading.Lock()    # one launch at a time takes connections on the submission's socket

    # -- the submission's serving sessions -------------------------------------------------------------------
    def _session(self) -> socket.socket:
        with self.lock:
            if self.conn is not None:
                return self.conn
            if not self.active:
                raise ConnectionError("the judge's cell had already ended")
            if self.session is not None:                  # the last session's cell ends first (one client, one cell)
                self.session.join()
                self.session = None
            if not self.submission.alive():
                raise ConnectionError(f"the submission's kernel is gone ({self.submission.dead_reason})")
            source = f"__import__('workbook_wire').serve({self.sub_path!r}, get_ipython().user_ns, {CALL_LIMIT})"
            timeout = self.limits.cell_seconds + 15       # a session lasts at most one of the judge's cells

            def run():
                self.session_result = self.submission.run(source, timeout=timeout)

            self.session_result = None
            self.session = threading.Thread(target=run, daemon=True)
            self.session.start()
            self.sub_server.settimeout(0.5)
            end = time.monotonic() + 30
            while True:
                try:
                    conn, _ = self.sub_server.accept()
                    break
                except (socket.timeout, BlockingIOError):
                    if not self.session.is_alive() or time.monotonic() > end:
                        result = self.session_result
                        raise ConnectionError("the submission's kernel did not start answering calls"
                                              + (f": {result.message[-300:]}" if result and result.message else ""))
            conn.settimeout(None)
            self.conn = conn
            return conn

    def begin(self) -> None:
        with self.lock:
            self.active = True

    def end_session(self) -> None:
        """After each of the judge's cells: the submission's kernel leaves its serving cell, and its workers end."""
        self.end_workers()
        with self.lock:
            self.active = False
            session, self.session = self.session, None
        self.hang_up_session()
        if session is not None:
            # Hung up, a serving cell ends at once, unless the call it serves still runs (a loop, a wait on a peer):
            # the judge's cell has ended, so no one waits for that call. Interrupted, it ends now, not at its own
            # limit (the judge's cell limit + 15 s: a check whose call looped cost 16 s, and a toy of three 51 s).
            session.join(SESSION_GRACE)
            if session.is_alive():
                self.submission.interrupt()
                session.join()

    def _accept(self, server: socket.socket, serve) -> None:
        """Serve each connection to one of the judge's sockets in a thread of its own: on `judge_server` the judge's
        kernel (its own connection, a new one after an interrupted call, one per forked child), on `workers_server`
        its workers' proxies. Until the relay closes (which closes the server, so accept raises)."""
        while not self.closed:
            try:
                conn, _ = server.accept()
            except OSError:
                if self.closed:
                    return
                time.sleep(0.1)                          # (out of file descriptors, say: try again)
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    # -- the judge's calls -----------------------------------------------------------------------------------
    def _serve_judge(self, conn) -> None:
        with conn:
            while not self.closed:
                try:
                    body = recv_body(conn, CALL_LIMIT + 8)
                except (OSError, EOFError, WireError):
                    return                                # closed, or a stream the judge abandoned mid-call
                prefix, call = body[:8], memoryview(body)[8:]
                with self.forwarding:
                    try:
                        sub = self._session()
                        send_body(sub, call)
                        reply = recv_body(sub, CALL_LIMIT)
                    except (OSError, EOFError, WireError, ConnectionError) as err:
                        self.hang_up_session()
                        reply = pack_body({"grader": f"the submission's kernel did not answer the call: {err}"})
                try:
                    send_body(conn, reply, prefix)
                except OSError:
                    return

    # -- workers -----------------------------------------------------------------------------------------------
    def _collect_workers(self, launch: str, group: dict, world: int) -> None:
        """Take the connections of the submission's workers for one launch, each saying its launch and rank first,
        until every rank has one or HELLO_SECONDS have passed. Only here, right after a spawn, are connections to
        the submission's `workers` socket accepted: one thread reads every hello at once, at most 2 x world of
        them pending and 16 x world in all, so a flood of connections holds no more of the grader than that."""
        server, end = self.sub_workers_server, time.monotonic() + self.HELLO_SECONDS
        selector, pending, accepted = selectors.DefaultSelector(), {}, 0
        server.setblocking(False)
        selector.register(server, selectors.EVENT_READ, None)

        def drop(conn):
            selector.unregister(conn)
            pending.pop(conn, None)
            _hang_up(conn)

        def announced(got: bytes):
            """The size a hello announces in its first 8 bytes, once they have come."""
            return struct.unpack(">Q", got[:8])[0] if len(got) >= 8 else None

        try:
            while not self.closed and any(c is None for c in group.values()):
                left = end - time.monotonic()
                if left <= 0:
                    break
                for key, _ in selector.select(min(left, 1.0)):
                    if key.data is None:                # a new connection
                        try:
                            conn, _ = server.accept()
                        except OSError:
                            continue
                        accepted += 1
                        if len(pending) >= 2 * world or accepted > 16 * world:
                            _hang_up(conn)
                            continue
                        conn.setblocking(False)
                        pending[conn] = b""
                        selector.register(conn, selectors.EVENT_READ, conn)
                        continue
                    conn, got = key.data, pending[key.data]
                    size = announced(got)
                    need = 8 if size is None else 8 + size
                    try:
                        chunk = conn.recv(min(need - len(got), 1 << 12))
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk:
                        drop(conn)
                        continue
                    got = pending[conn] = got + chunk
                    size = announced(got)
                    if size is not None and not 0 < size <= 1 << 12:
                        drop(conn)                      # an empty hello, or one over 4 KiB
                    elif size is not None and len(got) == 8 + size:
                        try:
                            hello, _ = parse_body(got[8:])
                        except WireError:
                            hello = {}
                        rank = hello.get("rank")
                        with self.groups_changed:
                            if (hello.get("launch") == launch and type(rank) is int and group.get(rank, False) is None
                                    and self.groups.get(launch) is group):
                                selector.unregister(conn)
                                del pending[conn]
                                conn.setblocking(True)
                                group[rank] = conn
                                self.worker_conns.append(conn)
                                self.groups_changed.notify_all()
                                continue
                        drop(conn)
        finally:
            for conn in list(pending):
                drop(conn)
            selector.close()
            server.setblocking(True)
            with self.groups_changed:                   # a rank whose worker did not come has none
                for rank, conn in group.items():
                    if conn is None:
                        group[rank] = False
                self.groups_changed.notify_all()

    def _worker_peer(self, launch: str, rank: int, world: int) -> socket.socket:
        """The submission's worker for this rank of the judge's launch, its workers forked on the first call."""
        with self.groups_changed:
            group = self.groups.get(launch)
            start = group is None
            if start:
                if len(self.groups) > 256:
                    raise ConnectionError("too many launches of workers in one cell")
                group = self.groups[launch] = dict.fromkeys(range(world))
        if start:
            try:
                with self.forwarding:
                    sub = self._session()
                    send_body(sub, pack_body({"op": "spawn", "world": world, "launch": launch,
                                              "path": self.sub_workers_path}))
                    sub.settimeout(60)                  # (forking takes milliseconds)
                    try:
                        reply, _ = parse_body(recv_body(sub, 1 << 16))
                    finally:
                        sub.settimeout(None)
                if reply.get("ok") is not True:
                    raise ConnectionError(f"the submission's kernel did not start its workers: {reply.get('message', '')}")
                with self.collecting:
                    self._collect_workers(launch, group, world)
            except BaseException:
                self.hang_up_session()                  # (its stream may stop mid-message; the next call starts anew)
                with self.groups_changed:               # the other ranks stop waiting for workers that never come
                    if self.groups.get(launch) is group:
                        del self.groups[launch]
                    self.groups_changed.notify_all()
                raise
        elif len(group) != world:
            raise ConnectionError("workers of one launch that disagree on its world size")
        end = time.monotonic() + self.HELLO_SECONDS + 60
        with self.groups_changed:
            while self.groups.get(launch) is group and group.get(rank) is None:
                if time.monotonic() > end or self.closed:
                    raise ConnectionError(f"the submission's worker of rank {rank} did not start")
                self.groups_changed.wait(0.5)
            conn = group.get(rank) if self.groups.get(launch) is group else None
            group[rank] = False                         # taken: one judge's worker per rank
        if not conn:
            raise ConnectionError(f"no worker of the submission's connected for rank {rank} (or another judge's worker "
                                  f"of that rank took it)")
        return conn

    def _serve_worker(self, conn) -> None:
        """A worker of the judge's: its hello (launch, rank, world size), then its calls, each passed to the
        submission's worker of the same rank and the reply back. Either side hanging up ends both."""
        peer = None
        with conn:
            try:
                conn.settimeout(30)
                hello, _ = parse_body(recv_body(conn, 1 << 12))
                conn.settimeout(None)
                launch, rank, world = hello.get("launch"), hello.get("rank"), hello.get("world")
                if not (type(launch) is str and type(world) is int and 1 <= world <= MAX_WORLD and type(rank) is int
                        and 0 <= rank < world):
                    return
            except (OSError, EOFError, WireError):
                return
            while not self.closed:
                try:
                    body = recv_body(conn, CALL_LIMIT + 8)
                except (OSError, EOFError, WireError):
                    break
                prefix, call = body[:8], memoryview(body)[8:]
                try:
                    if peer is None:
                        peer = self._worker_peer(launch, rank, world)
                    send_body(peer, call)
                    reply = recv_body(peer, CALL_LIMIT)
                except (OSError, EOFError, WireError, ConnectionError) as err:
                    reply = pack_body({"grader": f"the submission's worker of rank {rank} did not answer the call: {err}"})
                    _hang_up(peer)
                    peer = False
                try:
                    send_body(conn, reply, prefix)
                except OSError:
                    break
                if peer is False:
                    break
        _hang_up(peer or None)

    def end_workers(self) -> None:
        """After each of the judge's cells: the submission's workers are hung up on (each then ends, wherever it is)."""
        with self.groups_changed:
            conns, self.groups, self.worker_conns = self.worker_conns, {}, []
            self.groups_changed.notify_all()
        for conn in conns:
            _hang_up(conn)

    def hang_up_session(self) -> None:
        """Close the submission's side of the current session (its serving cell then ends)."""
        with self.lock:
            conn, self.conn = self.conn, None
        _hang_up(conn)

    def close(self) -> None:
        self.closed = True
        self.end_session()
        for server in (self.judge_server, self.sub_server, self.workers_server, self.sub_workers_server):
            _hang_up(server)


def run_steps_apart(steps, limits: Limits, kernel_factory=SandboxedKernel, hidden: frozenset = frozenset()) -> dict:
    """Run the plan (tools.grade.plan) with the checks in a judge of their own:
    {"checks": {id: [(passed, message, withheld)]}, "errors": [...], "run": str,
    "protections": {...}} (the protections are the submission's kernel's)."""
    outcome = {"checks": {}, "errors": [], "run": "finished", "protections": {"on": [], "off": {}}}
    submission, judge, relay = kernel_factory(limits), kernel_factory(limits), None
    try:
        kernels = ((submission, "the kernel"), (judge, "the judge's kernel"))
        for step_name in ("launch", "wait_ready"):        # both boot side by side: about half the wait
            for kernel, who in kernels:
                try:
                    getattr(kernel, step_name)()
                except Exception as err:                 # noqa: BLE001 (reported, never raised)
                    outcome["run"] = f"{who} did not start: {err}"
                    return outcome
        outcome["protections"] = submission.protections
        relay = Relay(judge, submission, limits)
        boot_timeout = max(limits.cell_seconds, 120)
        for kernel, then, who in ((submission, "", "the kernel"),
                                  (judge, f"_m.CLIENT = _m.Client({relay.judge_path!r}, {CALL_LIMIT}, get_ipython().user_ns, "
                                         f"workers={relay.workers_path!r})\n"
                                         f"__import__('os').environ[{CHECK_SEED_ENV!r}] = '{secrets.randbelow(2**64 - 1) + 1}'",
                                   "the judge")):
            boot = kernel.run(INSTALL.format(source=WIRE_SOURCE, then=then), timeout=boot_timeout)
            if boot.status != "ok":
                outcome["run"] = (kernel.dead_reason if not kernel.alive() else
                                  f"the grader's set-up failed in {who}: {boot.message[-500:]}")
                return outcome

        def in_judge(source: str):
            relay.begin()
            try:
                return judge.run(source)
            finally:
                relay.end_session()

        def stopped() -> str:
            if not submission.alive():
                return submission.dead_reason
            return "" if judge.alive() else f"the judge's kernel stopped: {judge.dead_reason}"

        after_hidden = False
        for step in steps:
            if stopped():
                break
            if step.kind == "check":
                after_hidden = after_hidden or step.id in hidden
                r = in_judge(step.source)
                ok = r.status == "ok"
                outcome["checks"].setdefault(step.id, []).append(
                    (True, "", False) if ok else (False, r.message[-2000:] or "the check did not complete",
                                                  after_hidden and step.id not in hidden))
                continue
            if step.kind == "setup":
                # An instructor cell: both kernels run it, one after the other (side by side, two copies of a
                # benchmark that starts threads on every core took 300 s in place of 5 on notebook 07). The judge's
                # error is the one reported: the submission's kernel may lack names that check cells defined, since
                # it never runs them.
                submission.run(step.source)
                j = in_judge(step.source)
                if j.status != "ok":
                    outcome["errors"].append({"cell": step.index, "message": j.message[-600:], "after_hidden": after_hidden})
                continue
            r = submission.run(step.source)
            if step.kind == "exercise":
                if r.status != "ok":
                    outcome["errors"].append({"cell": step.index, "message": r.message[-600:], "after_hidden": after_hidden})
                names = "\n".join(f"{n} = __import__('workbook_wire').CLIENT.proxy({n!r})" for n in sorted(step.names))
                j = judge.run(names or "pass")
                if j.status != "ok":
                    # a kernel stopped (the overall limit, which ends the judge's cell too when it ran out in the
                    # exercise cell) says so first: which of the two saw the deadline first was a race
                    outcome["run"] = stopped() or f"the grader's proxies failed in the judge: {j.message[-300:]}"
                    break
                continue
        if outcome["run"] == "finished":                 # (a failure of the proxies' own cell says so instead)
            outcome["run"] = stopped() or "finished"
    finally:
        for kernel in (judge, submission):               # both killed first: their teardowns overlap
            kernel.signal_kill()
        if relay is not None:
            relay.close()
        judge.close()
        submission.close()
    return outcome


def check_notebook(path: Path, out_dir: Path, quick: bool = True, cell_timeout: int = 300) -> list[dict]:
    """Grade `path` as its own submission, then once per round of its
    plausible wrong answers (round k puts each exercise's k-th wrong answer in, cycling): one row per grading,
    {"what", "score", "total", "run", "earned"}, where "earned" lists the exercises whose checks all passed (for a
    wrong answer, a check that cannot tell it apart)."""
    import nbformat

    from .exercises import find_exercises
    from .grade import grade
    from .notebooks import quick_parameters, read
    from .teeth import variants_of

    nb = read(path)
    exercises = find_exercises(nb)
    wrongs = {ex.id: [v for name, v in variants_of(nb, ex) if name.startswith("wrong")] for ex in exercises}
    instructor_dir = out_dir / "instructor"
    instructor_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(instructor_dir / path.name))
    parameters = quick_parameters(nb) if quick else None
    rows = []
    for k in range(-1, max((len(w) for w in wrongs.values()), default=0)):
        sub = read(path)
        used = set()
        for ex in exercises:
            if k >= 0 and wrongs[ex.id]:
                sub.cells[ex.cell].source = wrongs[ex.id][k % len(wrongs[ex.id])]
                used.add(ex.id)
        what = "solution" if k < 0 else f"wrong answers, round {k + 1}"
        submission = out_dir / f"{'solution' if k < 0 else f'wrong{k + 1}'}_{path.name}"
        nbformat.write(sub, str(submission))
        report = grade(submission, instructor_dir, out_dir / "grades", cell_timeout=cell_timeout, parameters=parameters,
                       expected=path.name)
        passed = {c["id"] for c in report["checks"] if c["passed"]}
        earned = [ex.id for ex in exercises if set(ex.checks) <= passed and (k < 0 or ex.id in used)]
        rows.append({"what": what, "score": report["score"], "total": report["total"], "run": report["run"],
                     "earned": earned, "seconds": report["seconds"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.judge NOTEBOOK...`: grade a notebook as a class would be graded, at its quick sizes: its
    solution must get full marks and no round of its wrong answers (tools.teeth's variants) may earn an exercise."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--default-sizes", action="store_true", help="grade at the notebook's default sizes")
    args = parser.parse_args(argv)
    failed = False
    for path in args.notebooks:
        with tempfile.TemporaryDirectory(prefix="judge-check-") as tmp:
            for row in check_notebook(path, Path(tmp), quick=not args.default_sizes):
                solution = row["what"] == "solution"
                bad = (row["score"] != row["total"] or row["run"] != "finished") if solution else bool(row["earned"])
                failed = failed or bad
                line = f"{path.name}: {row['what']}: {row['score']}/{row['total']} in {row['seconds']:.0f} s"
                if not solution:
                    line += f"; exercises earned: {', '.join(row['earned']) or 'none'}"
                if bad:
                    line += f"  <-- not full marks ({row['run']})" if solution else "  <-- a wrong answer earned marks"
                print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
