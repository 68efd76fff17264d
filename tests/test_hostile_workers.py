"""The hostile-submission suite, continued: notebook 05's workers (a toy whose check launches two torchrun workers).

In a file of its own so that pytest-xdist (which hands each file whole to one worker) grades it beside the rest of
tests/test_hostile_submissions.py instead of after it.
"""
import pytest

from tests.test_hostile_submissions import grade_toy
from tools.kernel import Limits


# Session 34: notebook 05's checks launch worker processes that import the submission's functions (written by
# write_module) and report their outputs. Two ways through, each seen to earn full marks on notebook 05 with a wrong
# ring_reduce_scatter: rewriting the worker script from the exercise cell (the workers read it in another
# process), and, inside a worker, rebinding the script's `report` to one that sends the right sums. A toy whose
# check launches two workers; every attack answers double() wrongly (3x). Some act in the exercise cell (the
# kernel's guard checks the files beside the script and the environment at each launch), the rest inside the
# function, which runs in the workers (course_utils.worker_guard).
WORKER95 = (
    "import sys\nfrom course_utils.distributed import finish_worker, init_worker, report\nimport helper95\n"
    "from notebook95 import double\n"
    "w = init_worker(device='cpu')\nx = w.rank + 1\n"
    "report({'rank': w.rank, 'out': helper95.as_number(double(x))})\nfinish_worker()\n")
WORKERS_TOY = (
    ("import sys, pathlib, tempfile\nfrom course_utils import check_equal\n"
     "from course_utils.distributed import launch, write_module\n"
     "WORK = pathlib.Path(tempfile.mkdtemp(prefix='toy95-'))\nsys.path.insert(0, str(WORK))", ()),
    (f"(WORK / 'twice95.py').write_text({WORKER95!r})\n"
     "(WORK / 'helper95.py').write_text('def as_number(v):\\n    return float(v)\\n')", ()),
    ("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION", ("exercise-ex95.1",)),
    ("write_module(WORK / 'notebook95.py', double)\nrun = launch(WORK / 'twice95.py', 2, timeout=90, check=False)\n"
     "check_equal(run.returncode, 0, 'the workers finished', hint=run.output[-1000:] + str([f.what for f in run.failures]))\n"
     "check_equal({r: [row['out'] for row in rows] for r, rows in run.results.items()}, {0: [2.0], 1: [4.0]}, "
     "'what each rank reported: double(rank + 1)', hint=run.output[-1000:] + str([f.what for f in run.failures]))",
     ("check-ex95.1",)),
)
WRONG_TRIPLE_95 = "def double(x):\n    return 3 * x\n"
FORGE_95 = ("    import os\n    from course_utils import distributed\n"
            "    row = {'rank': int(os.environ['RANK']), 'out': 2.0 * x}\n")
WORKER_ATTACKS = {
    # in the exercise cell, in the kernel
    "rewrites the worker script": WRONG_TRIPLE_95 +
        "(WORK / 'twice95.py').write_text((WORK / 'twice95.py').read_text().replace('double(x)', '2 * x'))\n",
    "plants a module beside the worker script that shadows the helper": WRONG_TRIPLE_95 +
        "(WORK / 'helper95.py').write_text('def as_number(v):\\n    return float(v) * 2 / 3\\n')\n",
    "sets PYTHONPATH so that the workers import a module of its own first": WRONG_TRIPLE_95 +
        "import os, tempfile, pathlib\n_d = pathlib.Path(tempfile.mkdtemp())\n"
        "(_d / 'helper95.py').write_text('def as_number(v):\\n    return float(v) * 2 / 3\\n')\n"
        "os.environ['PYTHONPATH'] = str(_d) + os.pathsep + os.environ.get('PYTHONPATH', '')\n",
    # inside the function, in the workers
    "calls report with the right answer, then ends the worker": "def double(x):\n" + FORGE_95 +
        "    distributed.report(row)\n    raise distributed.WorkerFinished()\n",
    "writes its own report file, then ends the worker": "def double(x):\n" + FORGE_95 +
        "    import json\n    folder = os.environ['WORKBOOK_RESULTS_DIR']\n"
        "    with open(os.path.join(folder, f\"rank{row['rank']}.jsonl\"), 'a') as f:\n        f.write(json.dumps(row) + '\\n')\n"
        "    raise distributed.WorkerFinished()\n",
    "rebinds a helper the worker script calls afterwards": "def double(x):\n"
        "    import helper95\n    helper95.as_number = lambda v: float(v) * 2 / 3\n    return 3 * x\n",
    "turns off the guard's flag and sys.audit, so that report writes the file itself": "def double(x):\n"
        "    import sys\n    from course_utils import distributed\n    distributed._GUARDED = False\n"
        "    sys.audit = lambda *args: None\n    return 3 * x\n",
    "patches a class the report is encoded with": "def double(x):\n    import json\n"
        "    json.JSONEncoder.encode = lambda self, o: '{\"rank\": %d, \"out\": %r}' % (o['rank'], o['out'] * 2 / 3)\n"
        "    return 3 * x\n",
    "rebinds the script's helper through the caller's frame": "def double(x):\n    import sys\n"
        "    sys._getframe(1).f_globals['helper95'] = type(sys)('h')\n    return 3 * x\n",
    "reports the right answer from a thread it starts (no frame of its own on that thread's stack)": "def double(x):\n"
        + FORGE_95 + "    import threading\n    t = threading.Thread(target=distributed.report, args=(row,))\n"
        "    t.start()\n    t.join()\n    raise distributed.WorkerFinished()\n",
    # red-team round 8 (session 34), each seen earning the mark against the first version of these rules
    "rebinds float with a function that puts float back once the script has called it": "def double(x):\n"
        "    import builtins\n    orig = builtins.float\n    def fake(v):\n        builtins.float = orig\n"
        "        return orig(v) * 2 / 3\n    builtins.float = fake\n    return 3 * x\n",
    "walks to the script's frame through library code and replaces the guard's method": "def double(x):\n"
        "    import collections, traceback\n    frames = collections.Counter(traceback.walk_stack(None))\n"
        "    script = next(iter(frames))[0]\n    guard = script.f_back.f_locals['guard']\n"
        "    guard.plain = lambda value, depth=0: {'rank': value['rank'], 'out': value['out'] * 2 / 3}\n    return 3 * x\n",
    "reports from code compiled under the script's file name, on a thread": "def double(x):\n"
        "    import code, os, threading\n    from course_utils import distributed\n"
        "    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'twice95.py')\n"
        "    row = {'rank': int(os.environ['RANK']), 'out': 2.0 * x}\n"
        "    console = code.InteractiveConsole({'report': distributed.report, 'row': row}, filename=script)\n"
        "    t = threading.Thread(target=console.push, args=('report(row)',))\n    t.start()\n    t.join()\n"
        "    raise distributed.WorkerFinished()\n",
    "puts a package folder beside the worker script that shadows the helper module": WRONG_TRIPLE_95 +
        "(WORK / 'helper95').mkdir(exist_ok=True)\n"
        "(WORK / 'helper95' / '__init__.py').write_text('def as_number(v):\\n    return float(v) * 2 / 3\\n')\n",
    # (not seen earning the mark either: reading __kwdefaults__ raises an audit event, which is why the wrapper keeps
    # sys.audit there and not in its globals or a closure, which raise none)
    "changes the default of its wrapper's call so that the wrapper tells the guard nothing": "def double(x):\n"
        "    import notebook95\n    type(notebook95.double).__call__.__kwdefaults__['_audit'] = print\n    return 3 * x\n",
    # red-team round 9 (session 34), each seen earning the mark against round 8's version
    'writes its report file through a bytes path':
        'def double(x):\n    import os\n    from course_utils import distributed\n    rank = int(os.environ[\'RANK\'])\n    path = os.path.join(os.environ[\'WORKBOOK_RESULTS_DIR\'], f\'rank{rank}.jsonl\')\n    with open(os.fsencode(path), \'a\') as f:\n        f.write(\'{"rank": %d, "out": %r}\\n\' % (rank, 2.0 * x))\n    raise distributed.WorkerFinished()\n    return 3 * x\n',
    'writes its report file through a str subclass path':
        'def double(x):\n    import os\n    from course_utils import distributed\n    class P(str):\n        pass\n    rank = int(os.environ[\'RANK\'])\n    path = P(os.path.join(os.environ[\'WORKBOOK_RESULTS_DIR\'], f\'rank{rank}.jsonl\'))\n    with open(path, \'a\') as f:\n        f.write(\'{"rank": %d, "out": %r}\\n\' % (rank, 2.0 * x))\n    raise distributed.WorkerFinished()\n    return 3 * x\n',
    "opens its report file on a thread, relative to the results folder's descriptor":
        'def double(x):\n    import os, threading\n    from course_utils import distributed\n    rank = int(os.environ[\'RANK\'])\n    dfd = os.open(os.environ[\'WORKBOOK_RESULTS_DIR\'], os.O_RDONLY)\n    box = []\n    # a library-only stack on the thread: threading -> os.open (the guard sees no notebook frame)\n    t = threading.Thread(target=os.open, args=(f\'rank{rank}.jsonl\', os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),\n                         kwargs={\'dir_fd\': dfd})\n    t.start(); t.join()\n    fd = dfd + 1                      # the next descriptor, as os.open hands out the lowest free one\n    os.write(fd, b\'{"rank": %d, "out": %r}\\n\' % (rank, 2.0 * x))\n    raise distributed.WorkerFinished()\n    return 3 * x\n',
    'opens its report file on a thread through /proc/self/root':
        'def double(x):\n    import os, threading\n    from course_utils import distributed\n    rank = int(os.environ[\'RANK\'])\n    path = \'/proc/self/root\' + os.path.join(os.environ[\'WORKBOOK_RESULTS_DIR\'], f\'rank{rank}.jsonl\')\n    probe = os.open(\'/dev/null\', os.O_RDONLY)\n    os.close(probe)                           # the lowest free descriptor: what os.open hands out next\n    t = threading.Thread(target=os.open, args=(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))\n    t.start(); t.join()\n    os.write(probe, b\'{"rank": %d, "out": %r}\\n\' % (rank, 2.0 * x))\n    raise distributed.WorkerFinished()\n',
    "puts a key in its module whose __eq__ the guard's comparison runs, and edits the report from there":
        "def double(x):\n    import sys\n\n    class Key:\n        # a key of this module's namespace whose hash collides with '__name__': the guard's comparison\n        # (namespace.keys() - every, in stale()) calls __eq__ from inside its audit hook, where its busy flag\n        # lets every event through\n        def __hash__(self):\n            return hash('__name__')\n\n        def __eq__(self, other):\n            try:\n                frame = sys._getframe(0)     # refused outside the guard's hook: then do nothing\n            except RuntimeError:\n                return False\n            while frame is not None:\n                if frame.f_code.co_name == '_audit' and frame.f_locals.get('event') == 'course_utils.distributed.report':\n                    row = frame.f_locals['args'][0]\n                    if not getattr(self, 'done', False):\n                        row['out'] = row['out'] * 2 / 3\n                        self.done = True\n                    break\n                frame = frame.f_back\n            return False\n\n    globals()[Key()] = None\n    return 3 * x\n",
    "edits the report from a timer signal's handler":
        "def double(x):\n    import signal\n    state = {'done': False}\n\n    def handler(signum, frame):\n        # fires wherever the main thread is (inside report, or inside the guard's 15 ms comparison): f_back and\n        # f_locals raise no audit event, so the handler finds the report's dict and changes it in place\n        if state['done']:\n            return\n        while frame is not None:\n            local = frame.f_locals\n            row = local.get('result') if 'result' in local else None\n            if row is None and local.get('event') == 'course_utils.distributed.report':\n                row = local['args'][0]\n            if type(row) is dict and 'out' in row:\n                row['out'] = row['out'] * 2 / 3\n                state['done'] = True\n                signal.setitimer(signal.ITIMER_REAL, 0)\n                return\n            frame = frame.f_back\n\n    signal.signal(signal.SIGALRM, handler)\n    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)\n    return 3 * x\n",
    "replaces the guard's methods from a timer signal's handler":
        "def double(x):\n    import signal\n    state = {'done': False}\n\n    def handler(signum, frame):\n        # a timer signal that lands inside the guard's hook: its frame's f_locals hand over the guard itself\n        if state['done']:\n            return\n        while frame is not None:\n            guard = frame.f_locals.get('self')\n            if type(guard).__name__ == 'WorkerGuard':\n                guard.changed = lambda: []\n                guard.plain = lambda value, depth=0: {'rank': value['rank'], 'out': value['out'] * 2 / 3}\n                state['done'] = True\n                signal.setitimer(signal.ITIMER_REAL, 0)\n                return\n            frame = frame.f_back\n\n    signal.signal(signal.SIGALRM, handler)\n    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)\n    return 3 * x\n",
    'returns an int subclass whose __float__ gives the script another number':
        'def double(x):\n    class Three(int):\n        def __float__(self):\n            return int(self) * 2 / 3\n    return Three(3 * x)\n',
    # red-team round 10 (session 34), each seen earning the mark against round 9's version
    "returns an int subclass whose __float__ is a functools.partial":
        "def double(x):\n    import functools\n    class Three(int):\n        __float__ = functools.partial(float, 2.0 * x)\n"
        "    return Three(3 * x)\n",
    "returns an int subclass whose __float__ is a bound method of a float":
        "def double(x):\n    class Three(int):\n        __float__ = (2.0 * x).__float__\n    return Three(3 * x)\n",
    "returns an int subclass whose __float__ is its own lambda behind functools.lru_cache":
        "def double(x):\n    import functools\n    class Three(int):\n"
        "        __float__ = functools.lru_cache()(lambda self: int(self) * 2 / 3)\n    return Three(3 * x)\n",
    # red-team round 11 (session 34), each seen earning the mark against round 10's version
    "leaves a TorchFunctionMode on, which changes the script's float() of the tensor it returns": "def double(x):\n"
        "    import torch\n    from torch.overrides import TorchFunctionMode\n    class M(TorchFunctionMode):\n"
        "        def __torch_function__(self, func, types, args=(), kwargs=None):\n"
        "            r = func(*args, **(kwargs or {}))\n"
        "            if getattr(func, '__name__', '') == '__float__':\n                return r * 2 / 3\n            return r\n"
        "    M().__enter__()\n    return torch.tensor(3 * x)\n",
    "leaves a TorchDispatchMode on, which changes the script's float() of the tensor it returns": "def double(x):\n"
        "    import torch\n    from torch.utils._python_dispatch import TorchDispatchMode\n    class M(TorchDispatchMode):\n"
        "        def __torch_dispatch__(self, func, types, args=(), kwargs=None):\n"
        "            r = func(*args, **(kwargs or {}))\n"
        "            if 'local_scalar_dense' in str(func):\n                return r * 2 // 3\n            return r\n"
        "    M().__enter__()\n    return torch.tensor(3 * x)\n",
    # (round 11 saw these two in the code; the toy's float() cannot be fooled by them, so they are not seen earning
    # the mark here: they are refused by the rules written for them)
    "returns a dict whose key is an object of a class it made": "def double(x):\n    class K(str):\n        pass\n"
        "    return {K('k'): 3 * x}\n",
    "returns an object of a class it made, nested nine levels deep": "def double(x):\n    class T(int):\n        pass\n"
        "    v = T(3 * x)\n    for _ in range(9):\n        v = [v]\n    return v\n",
    # (not seen earning the mark: the toy's script leaves no time between the call and the report; in 05's scripts
    # there is. Python 3.11 raises no audit event for a thread start: the guard counts the threads instead.)
    "leaves a thread that rebinds float while the script computes, then puts it back": "def double(x):\n"
        "    import builtins, threading, time\n    orig = builtins.float\n"
        "    def flip():\n        builtins.float = lambda v: orig(v) * 2 / 3\n        time.sleep(1.0)\n"
        "        builtins.float = orig\n    threading.Thread(target=flip, daemon=True).start()\n    return 3 * x\n",
    # red-team round 12 (session 35), each seen earning the mark against session 34's last version
    "registers a Python kernel for the operator float(tensor) runs": "def double(x, _keep=[]):\n    import torch\n    if not _keep:\n        m = torch._C._dispatch_library('IMPL', 'aten', 'CPU', 'x', 1)\n        m.impl('_local_scalar_dense', 'CPU', lambda t: t.tolist() * 2 / 3, False)\n        _keep.append(m)\n    return torch.tensor(3.0 * x)\n",
    "leaves a finalizer that rewrites its report after the script, through a path that begins with //": 'def double(x):\n    import os, pathlib\n    from multiprocessing import util\n    folder = os.path.abspath(os.environ[\'WORKBOOK_RESULTS_DIR\'])\n    rank = int(os.environ[\'RANK\'])\n    target = pathlib.Path(\'/\' + folder + f\'/rank{rank}.jsonl\')\n    util.Finalize(None, target.write_text, args=(\'{"rank": %d, "out": %r}\\n\' % (rank, 2.0 * x),), exitpriority=100)\n    return 3 * x\n',
    # (mine, after round 12's: also seen earning the mark against session 34's version)
    "leaves finalizers that link a name to its report, then write through the link": 'def double(x):\n    import os, pathlib\n    from multiprocessing import util\n    rank = int(os.environ[\'RANK\'])\n    report = os.path.join(os.environ[\'WORKBOOK_RESULTS_DIR\'], f\'rank{rank}.jsonl\')\n    alias = f\'/tmp/alias-{rank}-{os.getpid()}\'\n    util.Finalize(None, os.symlink, args=(report, alias), exitpriority=101)\n    util.Finalize(None, pathlib.Path(alias).write_text,\n                  args=(\'{"rank": %d, "out": %r}\\n\' % (rank, 2.0 * x),), exitpriority=100)\n    return 3 * x\n',
    # red-team round 13 (session 35), each seen earning the mark against round 12's fix
    "puts a hook dict of its own class in torch, whose __len__ rebinds float inside the guard's hook": "def double(x):\n    import builtins\n    import torch.nn.modules.module as mm\n    orig = builtins.float\n    state = {'armed': True}\n\n    def fake(v):\n        builtins.float = orig                 # put float back before the report's comparison\n        return orig(v) * 2 / 3\n\n    class Hooks(type(mm._global_forward_hooks)):\n        # the guard's torch_hooks() calls len() on this dict, after changed() has compared the modules\n        def __len__(self):\n            if state['armed']:\n                state['armed'] = False\n                builtins.float = fake\n            return dict.__len__(self)\n\n    h = Hooks()\n    h.update(mm._global_forward_hooks)\n    mm._global_forward_hooks = h\n    return 3 * x\n",
    "returns an int subclass whose metaclass's __eq__ says it is int": "def double(x):\n    class Meta(type):\n        # the guard's return check asks `type(value) not in (int, float, ...)`: the tuple's `in` compares\n        # int == kind, and Python tries the reflected Meta.__eq__ first (Meta is a subclass of int's metaclass)\n        def __eq__(cls, other):\n            return other is int\n        __hash__ = type.__hash__\n\n    class Three(int, metaclass=Meta):\n        def __float__(self):\n            return int(self) * 2 / 3\n\n    return Three(3 * x)\n",
    "rebinds float to a library closure (functools.singledispatch) whose __wrapped__ it set to float": 'def double(x):\n    import builtins, functools\n    orig = builtins.float\n\n    def fake(*args):\n        if len(args) == 1 and type(args[0]) is int:\n            return orig(args[0]) * 2 / 3\n        return orig(*args)\n\n    # functools.singledispatch returns `wrapper`, a closure defined in the stdlib\'s functools.py that calls fake;\n    # the guard\'s wraps() takes a FunctionType from a library file whose __wrapped__ is the original for\n    # "a library\'s own wrapper round it" (as torch.optim\'s step), so builtins.float stays rebound\n    wrapper = functools.singledispatch(fake)\n    wrapper.__wrapped__ = orig\n    builtins.float = wrapper\n    return 3 * x\n',
    "takes a key out of the helper's module and puts a global float in, keeping the count": "def double(x):\n    import helper95\n    orig = float\n\n    def fake(v):\n        return orig(v) * 2 / 3\n\n    # the guard looks for new keys in a module's namespace only when its length changed: take one\n    # unwatched key out (a str, never compared) and put a global `float` in, which as_number finds first\n    del helper95.__cached__\n    helper95.float = fake\n    return 3 * x\n",
    # red-team round 14 (session 35), seen earning the mark against round 13's fix
    "leaves a gc callback that rebinds float inside the guard's hook, after the comparison has passed builtins": "def double(x):\n    import builtins, gc, sys\n    orig = builtins.float\n    old = gc.get_threshold()\n    state = {'n': 0, 'done': False}\n\n    def fake(v):\n        builtins.float = orig             # put float back before the report's comparison\n        gc.set_threshold(*old)\n        return orig(v) * 2 / 3\n\n    def cb(phase, info):\n        # a gc callback: runs at whatever allocation makes a collection due, even inside the guard's hook\n        if state['done'] or phase != 'start':\n            return\n        try:\n            sys.audit('rt14.probe')       # outside the hook: passes; inside it: refused (raised, not recorded)\n            return\n        except RuntimeError:\n            pass\n        state['n'] += 1\n        if state['n'] >= 100:             # well past builtins' entry (2nd module) in changed(), long before its end\n            state['done'] = True\n            builtins.float = fake\n\n    gc.callbacks.append(cb)\n    gc.set_threshold(1, 1000000, 1000000)\n    return 3 * x\n",
}


# Known open, as KNOWN_OPEN above, in a worker (session 35, after red-team round 12): the grader's helper keeps its
# identity while NumPy's as_strided overwrites its bytecode and constants in memory. Strict xfail.
KNOWN_OPEN_WORKERS = {
    "overwrites the bytecode of the helper the script calls, in memory through NumPy's as_strided": "def double(x, _keep=[]):\n    import numpy as np\n    from numpy.lib.stride_tricks import as_strided\n    import helper95\n    anchor = np.zeros(8, dtype=np.uint8)\n    base = anchor.__array_interface__['data'][0]\n    def view(addr):\n        return as_strided(anchor, shape=(2,), strides=(addr - base,))\n    def read(addr, n):\n        return bytes(int(view(addr + i)[1]) for i in range(n))\n    def write(addr, data):\n        for i, b in enumerate(data):\n            view(addr + i)[1] = b\n    def pointer(addr):\n        return int.from_bytes(read(addr, 8), 'little')\n    if not _keep:\n        code = pointer(id(helper95.as_number) + 48)        # PyFunctionObject.func_code (CPython 3.11)\n        consts = pointer(code + 24)                         # PyCodeObject.co_consts\n        offset = read(code, 400).find(bytes([151, 0]), 150)  # co_code_adaptive begins with RESUME 0\n        _keep.append(2 / 3); keep = _keep[0]\n        write(consts + 24, id(keep).to_bytes(8, 'little'))  # co_consts[0] -> 2/3\n        # RESUME 0; LOAD_FAST 0; LOAD_CONST 0; BINARY_OP 5 (*) + 1 cache unit; RETURN_VALUE\n        write(code + offset, [151, 0, 124, 0, 100, 0, 122, 5, 0, 0, 83, 0])\n    return 3 * x\n",
}


@pytest.fixture(scope="module")
def workers_toy(tmp_path_factory):
    answers = {"victim": WORKERS_TOY[2][0], "wrong": WRONG_TRIPLE_95, **WORKER_ATTACKS, **KNOWN_OPEN_WORKERS}
    return grade_toy(tmp_path_factory.mktemp("workers"), WORKERS_TOY, "95_workers.ipynb", answers,
                     Limits(cell_seconds=60, total_seconds=120))


def test_workers_report_a_right_answer_and_not_a_wrong_one(workers_toy):
    assert (workers_toy["victim"]["score"], workers_toy["victim"]["total"]) == (1, 1), workers_toy["victim"]["checks"]
    assert workers_toy["wrong"]["score"] == 0
    assert "what each rank reported" in workers_toy["wrong"]["checks"][0]["message"], workers_toy["wrong"]["checks"]


@pytest.mark.xfail(strict=True, reason="known open in one kernel: writes to the worker's memory through NumPy (see "
                                       "KNOWN_OPEN); a notebook whose checks launch workers is judged apart (below)")
@pytest.mark.parametrize("attack", list(KNOWN_OPEN_WORKERS))
def test_a_known_open_attack_on_the_workers_still_earns_the_mark_in_one_kernel(workers_toy, attack):
    report = workers_toy[attack]
    assert report["total"] == 1 and report["score"] == 0, f"{attack}: scored {report['score']}/1 with a wrong double()"


@pytest.mark.parametrize("attack", list(WORKER_ATTACKS))
def test_a_worker_s_report_cannot_be_forged(workers_toy, attack):
    report = workers_toy[attack]
    assert report["total"] == 1 and report["score"] == 0, (attack, report["checks"], report["errors"])
    message = " ".join(c["message"] for c in report["checks"]) + " ".join(e["message"] for e in report["errors"])
    expected = {
        "rewrites the worker script": "is not a file the grader's cells left there",
        "plants a module beside the worker script that shadows the helper": "is not a file the grader's cells left there",
        "sets PYTHONPATH so that the workers import a module of its own first": "environment variable PYTHONPATH",
        "calls report with the right answer, then ends the worker": "may not use course_utils.distributed.report",
        "writes its own report file, then ends the worker": "only course_utils.distributed.report writes",
        "rebinds a helper the worker script calls afterwards": "rebound helper95.as_number",
        "turns off the guard's flag and sys.audit, so that report writes the file itself": "rebound sys.audit",
        "patches a class the report is encoded with": "rebound JSONEncoder.encode",
        "rebinds the script's helper through the caller's frame": "may not use sys._getframe",
        "reports the right answer from a thread it starts (no frame of its own on that thread's stack)":
            "course_utils.distributed.report (from a thread started while the worker ran",
        "rebinds float with a function that puts float back once the script has called it":
            "a function of the notebook's rebound builtins.float",
        "walks to the script's frame through library code and replaces the guard's method": "may not use sys._getframe",
        "reports from code compiled under the script's file name, on a thread": "compile() under the name",
        "puts a package folder beside the worker script that shadows the helper module": "is a folder beside the worker script",
        "leaves a thread that rebinds float while the script computes, then puts it back": "still running",
        'writes its report file through a bytes path': 'only course_utils.distributed.report writes',
        'writes its report file through a str subclass path': 'only course_utils.distributed.report writes',
        "opens its report file on a thread, relative to the results folder's descriptor": 'a thread started while the worker ran',
        # (since round 12 the report is known by its folder's inode, whatever path names it: refused before the
        # thread rule applies)
        'opens its report file on a thread through /proc/self/root': 'only course_utils.distributed.report writes',
        "puts a key in its module whose __eq__ the guard's comparison runs, and edits the report from there": 'a key that is not a str',
        "edits the report from a timer signal's handler": 'may not use course_utils.worker_guard.signal',
        "replaces the guard's methods from a timer signal's handler": 'may not use course_utils.worker_guard.signal',
        'returns an int subclass whose __float__ gives the script another number': "a class made after its module was imported",
        "changes the default of its wrapper's call so that the wrapper tells the guard nothing":
            "may not use object.__getattr__ (__kwdefaults__)",
        "returns an int subclass whose __float__ is a functools.partial": "a class made after its module was imported",
        "leaves a TorchFunctionMode on, which changes the script's float() of the tensor it returns":
            "torch-function modes (0 -> 1)",
        "leaves a TorchDispatchMode on, which changes the script's float() of the tensor it returns": "dispatch modes (0 -> 1)",
        "returns a dict whose key is an object of a class it made": "a class made after its module was imported",
        "returns an object of a class it made, nested nine levels deep": "nested more than 8 levels deep",
        "returns an int subclass whose __float__ is a bound method of a float": "a class made after its module was imported",
        "returns an int subclass whose __float__ is its own lambda behind functools.lru_cache":
            "a class made after its module was imported",
        "registers a Python kernel for the operator float(tensor) runs":
            "torch._C._dispatch_library (registering a kernel in PyTorch's dispatcher)",
        "leaves a finalizer that rewrites its report after the script, through a path that begins with //":
            "only course_utils.distributed.report writes a worker's reports; '//",
        "leaves finalizers that link a name to its report, then write through the link":
            "only course_utils.distributed.report writes a worker's reports; os.symlink",
        "puts a hook dict of its own class in torch, whose __len__ rebinds float inside the guard's hook":
            "rebound torch.nn.modules.module._global_forward_hooks",
        "returns an int subclass whose metaclass's __eq__ says it is int": "a class made after its module was imported",
        "rebinds float to a library closure (functools.singledispatch) whose __wrapped__ it set to float":
            "rebound builtins.float",
        "takes a key out of the helper's module and puts a global float in, keeping the count":
            "helper95.float (shadows the builtin)",
        "leaves a gc callback that rebinds float inside the guard's hook, after the comparison has passed builtins":
            "gc.callbacks (0 -> 1)",
    }[attack]
    assert expected in message, message[-3000:]
