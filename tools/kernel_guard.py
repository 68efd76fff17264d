"""Code the grader runs inside a submission's kernel, before any submitted code and again around every exercise and
check.

`install(modules)` runs first (with globals of its own, not the notebook's): it snapshots what a check depends on
(the builtins, the check helpers, every loaded module, sys hooks, the IPython shell's transformers, event
callbacks, exception handlers and methods, the kernel's request handlers) and keeps the grader's entry points
inside its audit hook, reached through `sys.audit('workbook.guard', nonce, entry, ...)`. Each, once done, prints a
keyed hash of (entry, nonce, arguments): code that merely echoes what the grader sent cannot produce that.
`prove` restores everything before a check, so whatever a submission
rebound, patched or installed (a fake `check_that`, a patched `numpy.all`, an `AssertionError` that is not one, an
input transformer that rewrites the checks, a custom exception handler, a trace function, a name that shadows a
builtin) is undone before the check runs, the helpers' own code included.
`snapshot` and `restore_names` bracket an exercise cell: the names the notebook had bound before it, other than the
ones the exercise defines, are bound back after it.

`check` runs a check cell: it restores, then executes the check in a copy of the notebook's namespace (the
submission's functions, whose globals are the notebook's namespace, cannot rebind the check's own variables), and
proves completion only if, while the check ran, the submission's code did not patch a module, a class or a name of
the notebook that the checks use, and no thread the submission started is still running.
An audit hook (PEP 578, which Python cannot remove) refuses, to code a submission wrote, what reaching into a running
check takes: frames (sys._getframe, tb_frame, gi_frame, sys._current_frames), trace and profile functions, the
garbage collector's object lists, ctypes, new code and function objects, assigning __class__ or __code__, and code
compiled under the name of a file it did not come from. Submission code is code compiled while an exercise cell
ran, or from files outside the read-only library folders; the hook looks at the three frames nearest the event, so
a library the submission calls deep down (a lazy import inside torch) is not refused.

Every builtin the guard uses is captured at install time, so a submission that replaces `vars` or `setattr` does
not turn the restore into a no-op. This is defence in depth: the grader also builds the run from the instructor's
cells, judges a check by the kernel's reply and a token the check must print on completion, and runs the kernel in
a sandbox.
"""


def install(module_names):
    import builtins
    import ctypes
    import hashlib
    import hmac
    import importlib
    import importlib.machinery
    import secrets
    import sys
    import threading
    import types
    import functools

    # the builtins the guard calls, as they are now (before any submitted code)
    _vars, _setattr, _getattr, _delattr, _hasattr = vars, setattr, getattr, delattr, hasattr
    _dict, _list, _set, _print = dict, list, set, print
    _type, _subclass, _len, _any = type, issubclass, len, any   # (audit() calls them: a replaced builtins.len
                                                                 # would run inside the hook, where it is trusted)

    def _isinstance(value, types_):
        """isinstance by the object's real type: isinstance itself asks a value for its __class__, which a
        submission's class may compute with code of its own (run inside the guard)."""
        return _subclass(_type(value), types_)
    _ModuleType, _new = types.ModuleType, hmac.new
    _sha256, _settrace, _setprofile = hashlib.sha256, sys.settrace, sys.setprofile
    _tsettrace, _tsetprofile = threading.settrace, threading.setprofile
    builtin_names = _set(_vars(builtins))

    try:                                     # other processes of the same user cannot read or trace this one
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)   # PR_SET_DUMPABLE = 0
    except Exception:
        pass
    shell = get_ipython()                    # noqa: F821 (the kernel's shell, passed in the guard's globals)
    kernel = _getattr(shell, "kernel", None)
    modules = {}
    for name in ["builtins", "sys", "math", "course_utils", "course_utils.checks"] + _list(module_names):
        try:
            modules[name] = importlib.import_module(name)
        except Exception:
            pass
    for extra in ("numpy.testing", "torch.testing", "numpy.linalg"):
        if extra.split(".")[0] in modules:
            try:
                modules[extra] = importlib.import_module(extra)
            except Exception:
                pass
    # course_utils binds its public names lazily (PEP 562): the first use adds one to its module. Those whose home
    # submodule is loaded are bound now (part of the snapshot); a later binding is recognised in benign().
    cu_homes = _dict(_getattr(modules.get("course_utils"), "_HOME", None) or {})
    cu_submodules = frozenset(_getattr(modules.get("course_utils"), "_SUBMODULES", None) or ())   # (builtins still pristine here)
    for name, home in cu_homes.items():
        if f"course_utils.{home}" in sys.modules:
            try:
                _getattr(modules["course_utils"], name)
            except Exception:
                pass

    def module_snapshots(skip=()):
        """Every module loaded now (numpy's and torch's submodules too: np.all calls helpers that live there),
        except the notebook's own namespace."""
        return {name: (m, _dict(_vars(m))) for name, m in _list(sys.modules.items())
                if _isinstance(m, _ModuleType) and name not in skip and name not in ("__main__", "__mp_main__")
                and _vars(m) is not shell.user_ns}

    # A signal handler is handed the frame it interrupts (no audit event covers signal.signal): submitted code may
    # not install one. The wrappers go in before the snapshot, so restoring the modules keeps them.
    import _signal as signal_c
    import signal as signal_module

    # The wrappers the guard puts where a submission can reach them (module attributes, IPython's callbacks) are
    # closures over nothing but the original and sys.audit: the audit hook, which no Python code can reach, does
    # the judging. (Closures over the guard's own state let a submission walk __closure__, which raises no audit
    # event, to the sets that say which code is trusted: red-team round 5.) Their cells are restored with the
    # library functions' (see function_internals).
    _audit = sys.audit
    guard_wrappers = []

    def no_handlers_for_submissions(original):
        def signal(signalnum, handler):
            _audit("workbook.wrapper", "signal.signal (a handler is handed the frame it interrupts)")
            return original(signalnum, handler)
        guard_wrappers.append(signal)
        return signal

    signal_module.signal = no_handlers_for_submissions(signal_module.signal)
    signal_c.signal = no_handlers_for_submissions(signal_c.signal)
    saved_modules = module_snapshots()
    checks_module = modules.get("course_utils.checks")
    saved_refs = []                           # the helpers' captured references (a namespace object of NumPy functions)
    if checks_module is not None and _hasattr(checks_module, "_np"):
        saved_refs.append((checks_module._np, _dict(_vars(checks_module._np))))
    hook_registries = []                      # torch's global hooks (every optimizer step, every module call)
    for name, (module, snapshot) in _list(saved_modules.items()):
        if name.startswith(("torch", "numpy")):
            for key, value in snapshot.items():
                if "hook" in key.lower() and _isinstance(value, (dict, list)):
                    hook_registries.append((f"{name}.{key}", value, _list(value.items()) if _isinstance(value, dict) else _list(value)))
    torch_c = _getattr(modules.get("torch"), "_C", None)

    def registry_changes():
        found = []
        for label, registry, contents in hook_registries:
            now = _list(registry.items()) if _isinstance(registry, dict) else _list(registry)
            flat = lambda items: [x for item in items for x in (item if _isinstance(registry, dict) else (item,))]
            if _len(now) != _len(contents) or _any(a is not b for a, b in _zip(flat(now), flat(contents))):
                found.append(label)               # (identity only: a hook's own __eq__ is never asked)
        return found

    def mode_depths():
        if torch_c is None:
            return 0, 0
        return torch_c._len_torch_function_stack(), torch_c._len_torch_dispatch_stack()

    helper_code = {}                          # the check helpers' own code, defaults and closures
    if checks_module is not None:
        for value in _list(_vars(checks_module).values()):
            if _isinstance(value, types.FunctionType) and value.__module__ == checks_module.__name__:
                helper_code[value] = (value.__code__, value.__defaults__, value.__kwdefaults__)   # (that dict's
                # contents are saved and put back with every library function's: function_changes)
    _getsignal, _signal, _setitimer = signal_module.getsignal, signal_module.signal, signal_module.setitimer
    saved_signals = {}
    for number in signal_module.valid_signals():
        try:
            saved_signals[number] = _getsignal(number)
        except (ValueError, OSError):
            pass

    def signal_changes():
        return [number for number, handler in saved_signals.items() if _getsignal(number) is not handler]
    classes = []
    for owner in (type(shell), type(kernel)) if kernel is not None else (type(shell),):
        classes += [c for c in owner.__mro__ if c is not object]
    if "torch" in modules:
        classes += [modules["torch"].Tensor, modules["torch"].nn.Module]
    saved_classes = {c: _dict(_vars(c)) for c in classes}
    saved_sys = {k: _getattr(sys, k) for k in ("excepthook", "displayhook", "breakpointhook", "stdout", "stderr",
                                                "unraisablehook") if _hasattr(sys, k)}
    saved_meta_path, saved_path_hooks = _list(sys.meta_path), _list(sys.path_hooks)
    saved_lists = {a: _list(_getattr(shell, a)) for a in ("input_transformers_cleanup", "input_transformers_post",
                                                          "ast_transformers") if _hasattr(shell, a)}
    saved_events = {e: _list(cbs) for e, cbs in shell.events.callbacks.items()}
    saved_instance = [(obj, _set(_vars(obj))) for obj in (shell, kernel) if obj is not None]
    saved_custom = (shell.custom_exceptions, shell.CustomTB)
    user_modules = {}
    instructor_shadows = {}                   # names of builtins an instructor cell bound on purpose
    namespace = {}
    secret = secrets.token_hex(16).encode()

    # -- who wrote the code on the stack -----------------------------------------------------------------------
    import os
    import sysconfig
    _getframe, _get_ident, _frozenset, _str, _open = sys._getframe, threading.get_ident, frozenset, str, open
    _RuntimeError, _startswith = RuntimeError, str.startswith
    _CodeType = types.CodeType
    import gc as _gc
    _compile, _exec, _repr, _bytes, _bytearray, _zip = compile, exec, repr, bytes, bytearray, zip
    # The library folders: in the sandbox they are read-only views (wherever they lie: a clone under /tmp keeps its
    # virtual environment there), so a file under them is the library's own; without the sandbox the report says
    # that protection was off.
    library = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            library.add(os.path.realpath(path).rstrip("/") + "/")
            library.add(path.rstrip("/") + "/")
    if "course_utils" in modules and _getattr(modules["course_utils"], "__file__", None):
        library.add(os.path.dirname(modules["course_utils"].__file__).rstrip("/") + "/")
    library = tuple(library)
    trusted_cells = {"workbook_guard"}         # cells the grader ran (compiled with no submission code on the stack)
    untrusted_cells = set()                    # cells compiled while an exercise cell ran
    state = {"exercise": False, "guard": False, "checking": False, "any_exercise": False}
    # Module files an instructor cell (or a check) wrote, e.g. notebook 05's %%writefile {WORK}/common.py, and the
    # digests of what they held after it: once an exercise has run, importing such a file is trusted only while it
    # holds what the grader's own cells wrote, and any other file outside the libraries is the submission's
    # (red-team round 6: an exercise appended code to common.py, and a check's import of it ran as trusted code).
    # Data files too (red-team round 7: an exercise rewrote the pickle a grader cell reads back): a file the grader's
    # cells wrote is read by the grader's code, once an exercise has run, only while it holds what they wrote.
    written, written_pending, tainted = {}, set(), set()
    # Files that processes the grader's cells started wrote (05's workers, a toy's subprocess) raise no audit event in
    # the kernel. The folders the grader's cells wrote into are watched: after each grader cell (and check), a file in
    # them changed since the last look is the grader's (its digest is kept); after an exercise, one that changed holds
    # the submission's bytes and is never the grader's again (red-team: rewriting a pickle a worker wrote earned its
    # check).
    import time as _time_module
    _scandir, _dirname, _time_ns = os.scandir, os.path.dirname, _time_module.time_ns
    watched_dirs, last_look = set(), [0]
    LOOK_MARGIN_NS = 200_000_000               # file times lag the clock by up to a tick: look a little further back
    reading = set()                            # threads where the hook reads a file to check it (not checked itself)
    _O_WRITES = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    _abspath, _getsize = os.path.abspath, os.path.getsize
    trusted_starts = [0]                       # processes the grader's own code started (audit events)
    busy = {}                                  # thread -> 1 while the audit hook runs in it (2: its own _getframe)
    # callers of sys._getframe that only read a module name from the frame and never hand it on
    benign_getframe = _frozenset(os.path.join(p, name) for p in library
                                 for name in ("collections/__init__.py", "typing.py", "enum.py"))

    _normpath = os.path.normpath
    library_files = {}                         # file name -> True when it lies in a read-only library folder

    def in_library(filename):
        known = library_files.get(filename)
        if known is None:                      # /usr/lib/python3/../../../tmp/x.py is not a library file
            path = _normpath(filename)
            known = library_files[filename] = _startswith(path, library)
        return known

    untrusted_codes = set()                    # code objects the submission had executed (exec, eval) and their inner code

    def trusted(filename):
        if filename in untrusted_cells:
            return False
        if filename in trusted_cells or _startswith(filename, "<"):
            return True                        # "<string>" and the like: judged by their code objects instead
        return in_library(filename)

    def submission_code(code):
        return code in untrusted_codes or not trusted(code.co_filename)

    def submission_anywhere(frame):
        """The file of the first frame of submitted code on the stack from `frame` down, or None."""
        while frame is not None:
            if submission_code(frame.f_code):
                return frame.f_code.co_filename
            frame = frame.f_back
        return None

    def mark(code, depth=0):
        if _isinstance(code, _CodeType) and code not in untrusted_codes and depth < 50:
            untrusted_codes.add(code)
            for const in code.co_consts:
                mark(const, depth + 1)

    # library code that calls what it was handed, not code of its own: exec reached through it during a check (a
    # finalizer, a deep copy, a pickle's reduce) runs what a submission chose
    callback_files = tuple("/" + f for f in ("weakref.py", "_weakrefset.py", "threading.py", "sched.py", "copy.py",
                                              "copyreg.py", "pickle.py", "functools.py", "contextlib.py", "unittest/mock.py",
                                              "concurrent/futures/thread.py", "asyncio/events.py", "codecs.py"))
    frame_events = _frozenset({"sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile",
                               "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__",
                               "function.__new__", "sys.addaudithook", "marshal.loads", "compile", "exec",
                               "object.__getattr__", "object.__setattr__", "object.__delattr__"})
    frame_attributes = _frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})
    # Processes a submission starts outlive its cell unseen (a forked watcher rewrote a file the grader's code read
    # later: red-team round 6), so submitted code may not start any.
    process_events = _frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
                                 "subprocess.Popen", "os.startfile", "pty.spawn"})
    # What an unpickled stream may name: never a function that runs code or reaches the system (a pickle that
    # calls eval or os.system runs whatever it carries, wherever the grader's code unpickles it). The notebook's own
    # classes and functions (__main__) stay allowed: 04's results come back through map_on_cores as instances of a
    # notebook class, and a function the submission defined runs as the submission's code, trusted nowhere.
    unpickle_refused_builtins = _frozenset({"eval", "exec", "compile", "getattr", "setattr", "delattr", "__import__",
                                            "open", "globals", "locals", "vars", "breakpoint", "input", "help"})
    unpickle_refused_modules = ("os", "posix", "nt", "subprocess", "sys", "importlib", "runpy", "code", "codeop",
                                "ctypes", "gc", "inspect", "marshal", "types", "pickle", "_pickle", "shutil", "pty",
                                "socket", "signal", "multiprocessing", "threading", "_thread", "io", "_io",
                                "pathlib", "tempfile", "operator", "functools", "IPython", "ipykernel", "zmq",
                                "jupyter_client", "pdb", "timeit", "webbrowser", "torch.hub", "torch.utils.cpp_extension",
                                "numpy.f2py", "builtins.open", "_posixsubprocess", "resource")
    other_events = _frozenset({"open", "pickle.find_class"}) | process_events
    guarded_attributes = _frozenset({"__class__", "__code__", "__bases__", "__defaults__", "__kwdefaults__",
                                     "__closure__", "__globals__", "__dict__"})

    def refuse(event, where, via=None):
        through = f", through {via}" if via and via != where else ""
        raise _RuntimeError(f"grading does not let a submission's code use {event} (called from {where}{through}): "
                            f"it is how code reaches into the checks. If your solution needs it, ask your instructor.")

    def grader_wrote_now(path):
        """The grader's code wrote the file in the cell that runs now (a library generating a module: torch's
        _remote_module_non_scriptable), and the submission's code did not write to it."""
        return path in written_pending and path not in tainted

    def file_digest(path, largest=None):
        """The sha256 digest of the file's bytes, read without the hook checking this read; None when it cannot be
        read or holds more than `largest` bytes."""
        reading.add(_get_ident())
        try:
            if largest is not None and _getsize(path) > largest:
                return None
            with _open(path, "rb") as f:
                return _sha256(f.read()).digest()
        except OSError:
            return None
        finally:
            reading.discard(_get_ident())

    def read_back(path, caller):
        """The grader's code opens a file its cells wrote, for reading: it must still hold what they wrote (or what
        the grader's current cell wrote, if the submission did not write it too)."""
        if submission_anywhere(caller) is not None:
            return                             # the submission reads: nothing of the grader's is at stake
        if grader_wrote_now(path):
            return
        digest = file_digest(path)
        if digest is None:
            return                             # gone: the grader's own open fails as usual
        if digest not in written.get(path, ()):
            raise _RuntimeError(f"the grader's code reads {path}, a file the grader's own cells wrote, but it no longer "
                                f"holds what they wrote: the submission may have changed it, so it is not read")

    # The environment as the grader left it: torchrun's workers inherit it (a PYTHONPATH or LD_PRELOAD that the
    # submission set would run its code in every worker before the worker's guard). Changes the grader's own code
    # makes through os.environ (putenv) are noted as they happen.
    os.environ["WORKBOOK_GRADING"] = "1"        # course_utils.worker_guard: compare the modules at every report
    env_expected = _dict(os.environ)
    _isdir, _islink = os.path.isdir, os.path.islink

    def env_change(args, removed):
        key = args[0] if _len(args) else None
        key = key.decode("utf-8", "surrogateescape") if _type(key) is _bytes else key
        if _type(key) is not _str:
            return
        if removed:
            env_expected.pop(key, None)
        else:
            value = args[1] if _len(args) > 1 else None
            env_expected[key] = value.decode("utf-8", "surrogateescape") if _type(value) is _bytes else value

    def check_launch(script):
        """course_utils.distributed launches workers (a check starting notebook 05's torchrun): every file beside the
        script (the folder the workers import from first) must be one the grader's cells, or processes they started,
        left there, holding what they wrote; and the environment the workers inherit must be the grader's."""
        if not state["any_exercise"]:
            return
        record_written()                       # what this grader cell's own processes wrote so far is the grader's
        if _type(script) is _str:
            try:
                with _scandir(_dirname(_abspath(script))) as entries:
                    names = [entry.path for entry in entries]
            except OSError:
                names = []
            for path in names:
                path = _abspath(path)
                if _isdir(path) and not _islink(path):
                    if path.endswith("/__pycache__"):
                        continue               # removed by the launch before the workers start
                    # a folder beside the script is a package the workers would import before a module file of the
                    # same name (red-team round 8: helper95/__init__.py); no grader cell makes one there
                    raise _RuntimeError(f"the grader starts worker processes, but {path} is a folder beside the worker "
                                        f"script that the grader's cells did not make: the workers are not started")
                digest = None if path in tainted else file_digest(path, largest=1 << 30)
                if digest is None or digest not in written.get(path, ()):
                    raise _RuntimeError(f"the grader starts worker processes, but {path} is not a file the grader's "
                                        f"cells left there as it is now: the submission may have written or changed "
                                        f"it, so the workers are not started")
        for key in _sorted(_set(os.environ) | _set(env_expected)):
            if os.environ.get(key) != env_expected.get(key):
                raise _RuntimeError(f"the grader starts worker processes, but the environment variable {key} is not "
                                    f"what the grader's cells left: the submission may have changed it, so the "
                                    f"workers are not started")

    handlers = {}                              # the entry points, reachable from this hook only

    def audit(event, args):
        if event == "workbook.guard":
            where = submission_anywhere(_getframe(1))
            if where is not None:
                refuse("the grader's entry points", where)
            return handlers["call"](*args)
        if event == "workbook.wrapper":        # a guard wrapper was called: refused to submitted code on the stack
            where = submission_anywhere(_getframe(1))
            if where is not None:
                refuse(args[0] if _len(args) and _type(args[0]) is _str else "a guarded function", where)
            return
        if event == "workbook.next_cell":      # IPython's pre_run_cell, through the guard's callback only
            caller = _getframe(1)
            where = submission_anywhere(caller)
            if where is not None:
                refuse("the grader's cell tracking", where)
            if caller is not None and caller.f_code is next_cell_code:
                state["exercise"] = True if state["exercise"] == "armed" else False
            return
        if event in ("os.putenv", "os.unsetenv"):
            if submission_anywhere(_getframe(1)) is None:
                env_change(args, event == "os.unsetenv")
            return
        if event == "course_utils.distributed.launch":
            if submission_anywhere(_getframe(1)) is None:
                check_launch(args[0] if _len(args) else None)
            return
        if event not in frame_events and event not in other_events and not _startswith(event, "ctypes."):
            return
        if event == "open":
            path = args[0] if _len(args) else None
            mode = args[1] if _len(args) > 1 else None
            flags = args[2] if _len(args) > 2 else 0
            writes = ((_type(mode) is _str and ("w" in mode or "a" in mode or "x" in mode or "+" in mode))
                      or (mode is None and _type(flags) is int and flags & _O_WRITES))
            if _type(path) is not _str or _get_ident() in reading:
                return                         # a descriptor, bytes, or the hook's own read below
            if not writes:
                if state["any_exercise"] and (path in written or _abspath(path) in written):
                    read_back(_abspath(path), _getframe(1))
                return                         # reading a file: nothing to note
        if event == "pickle.find_class":
            module_name, name = (args + ("", ""))[:2]
            notebook_ok = True
            if module_name in ("__main__", "__mp_main__") and _type(name) is _str:
                # only a class or function the grader's cells defined: a name the submission bound to a builtin
                # (eval) would be called by the unpickler, from the grader's code
                value = _dict.get(shell.user_ns, name)
                notebook_ok = ((_subclass(_type(value), type) and not submission_made(value))
                               or (_type(value) is types.FunctionType and not submission_code(value.__code__)))
            # A dotted name is an attribute path (protocol 4): `collections` + `__builtins__.__getitem__` reaches eval
            # (red-team round 7). A path through a private or special attribute is refused, and the whole path is
            # held to the refused modules (torch + hub.load is torch.hub.load).
            parts = _str.split(name, ".") if _type(name) is _str else ()
            full = f"{module_name}.{name}" if _type(module_name) is _str and _type(name) is _str else ""
            if (_type(module_name) is not _str or _type(name) is not _str or not notebook_ok
                    or (_len(parts) > 1 and _any(_startswith(part, "_") for part in parts))
                    or (module_name in ("builtins", "__builtin__") and parts[0] in unpickle_refused_builtins)
                    or _any(module_name == m or _startswith(module_name, m + ".") or _startswith(full, m + ".")
                            for m in unpickle_refused_modules)):
                raise _RuntimeError(f"grading does not unpickle {module_name!r}.{name!r}: a pickle that names it "
                                    f"can run code of its own")
            return
        if event == "object.__getattr__" and (_len(args) < 2 or args[1] not in frame_attributes):
            return
        if event in ("object.__setattr__", "object.__delattr__") and (_len(args) < 2 or args[1] not in guarded_attributes):
            return
        ident = _get_ident()
        depth = busy.get(ident, 0)
        if depth >= 2:                     # the hook's own _getframe below, while it looks at a nested event
            return
        if depth == 1:
            # An event raised while this hook runs: the hook's own calls (its _getframe) are fine; anything else is
            # code the hook ended up calling (a library function whose module a submission patched, a str
            # subclass's method) and must not get a free pass because the hook is busy.
            busy[ident] = 2
            try:
                inner = _getframe(1)
                where = inner.f_code.co_filename if inner is not None else "?"
            finally:
                busy[ident] = 1
            if where == "workbook_guard":
                return
            refuse(f"{event} inside the grader's audit hook", where)
        busy[ident] = 1
        try:
            caller = _getframe(1)
            if caller is not None and caller.f_code.co_filename == "workbook_guard":
                return                                  # the guard's own calls (its wrappers look at the stack)
            if event == "exec":                   # code run while submitted code is on the stack is submitted code
                code = args[0] if args else None
                invoker = caller.f_code.co_filename if caller is not None else ""
                handed = (invoker == "workbook_guard" or _startswith(invoker, "<check ")
                          or (in_library(invoker) and _normpath(invoker).endswith(callback_files)))
                if (_isinstance(code, _CodeType) and not in_library(code.co_filename)
                        and not _startswith(code.co_filename, "<check ")
                        and (submission_anywhere(caller) is not None
                             or (state["guard"] or state["checking"]) and handed)):
                    mark(code)   # in a check, code a callback runs (a finalizer calling exec) is the submission's too
                return
            if event == "open":                    # a file written by the grader's cells, or by the submission
                path = _abspath(args[0])
                if state["exercise"] is not True and submission_anywhere(caller) is None:
                    written_pending.add(path)
                    if _type(mode) is _str and "w" in mode and "+" not in mode:
                        tainted.discard(path)  # truncated and written afresh by the grader
                else:
                    tainted.add(path)
                return
            if event in process_events and submission_anywhere(caller) is None:
                trusted_starts[0] += 1         # a process the grader's own code starts (see rogue_processes)
                return
            if event in process_events:
                where = submission_anywhere(caller)
                if where is not None:
                    refuse(f"{event} (starting a process)", where)
                return
            if event == "compile":
                filename = args[1] if _len(args) > 1 else ""
                if _type(filename) is not _str:           # bytes or a str subclass (its methods are code)
                    filename = _str.__str__(filename) if _subclass(_type(filename), _str) else _repr(filename)
                where = submission_anywhere(caller)
                if where is None and not _startswith(filename, "<") and not in_library(filename) and (
                        caller is not None and _startswith(caller.f_code.co_filename, "<frozen importlib")):
                    # a module file being imported: trusted before any exercise ran, and after only while it holds
                    # what the grader's cells wrote to it
                    source = args[0]
                    data = _str.encode(source) if _isinstance(source, _str) else _bytes(source)
                    if (not state["any_exercise"] or _sha256(data).digest() in written.get(_abspath(filename), ())
                            or grader_wrote_now(_abspath(filename))):
                        if filename not in untrusted_cells:
                            trusted_cells.add(filename)
                        return
                    trusted_cells.discard(filename)
                    untrusted_cells.add(filename)
                    raise _RuntimeError(f"the grader's code imports {filename}, a module file outside the libraries that "
                                        f"the grader's own cells did not write as it is now: the submission may have "
                                        f"written or changed it, so it is not imported")
                if where is None:
                    if _startswith(filename, "<") or in_library(filename) or filename in trusted_cells:
                        return
                    if state["exercise"] is True:      # the exercise cell, as IPython compiles it (a temporary .py)
                        untrusted_cells.add(filename)
                    elif filename not in untrusted_cells:
                        trusted_cells.add(filename)    # an instructor cell, or a module an instructor cell wrote
                    return
                if filename in trusted_cells or _startswith(filename, "<frozen "):
                    refuse(f"compile() under the name {filename!r}", where)
                if in_library(filename):
                    source = args[0]
                    try:
                        with _open(filename, "rb") as f:
                            on_disk = f.read()
                    except OSError:
                        on_disk = None
                    text = _str.encode(source) if _isinstance(source, _str) else _bytes(source)
                    if on_disk is None or text != on_disk:
                        refuse(f"compile() of other code under the name {filename!r}", where)
                elif not _startswith(filename, "<"):
                    untrusted_cells.add(filename)      # a file the submission wrote and compiles
                return
            if event == "marshal.loads":
                frame = caller
                while frame is not None:          # a compiled module file the import system is loading
                    if frame.f_code.co_name == "_compile_bytecode":
                        path = frame.f_locals.get("bytecode_path") or ""
                        if not in_library(_str(path)):
                            refuse(f"a compiled module file outside the libraries ({path or 'unnamed'})",
                                   submission_anywhere(caller) or path)
                        return
                    frame = frame.f_back
            if event == "sys._getframe" and caller is not None and caller.f_code.co_filename in benign_getframe:
                return
            # the whole stack: a library that calls back what the submission handed it (pickle's reduce, deepcopy,
            # a mock's side effect) must not launder the call
            where = submission_anywhere(caller)
            if where is not None:
                what = f"{event} ({args[1]})" if _startswith(event, "object.") else event
                refuse(what, where, caller.f_code.co_filename if caller is not None else None)
        finally:
            busy.pop(ident, None)

    sys.addaudithook(audit)

    def next_cell(*_):
        """IPython's pre_run_cell: the cell after `snapshot` is the exercise (its compiles are the submission's),
        the one after that is the grader's again (the audit hook keeps that state)."""
        _audit("workbook.next_cell")

    next_cell_code = next_cell.__code__
    guard_wrappers.append(next_cell)

    shell.events.register("pre_run_cell", next_cell)
    saved_events["pre_run_cell"] = _list(shell.events.callbacks["pre_run_cell"])
    kernel_threads = _set(threading._active)       # the kernel's own threads, started before any submission

    _partial = functools.partial

    def submission_made(value):
        """A function, class or partial whose code is the submission's."""
        kind = _type(value)
        if kind is _partial:
            return submission_made(value.func)
        if kind is types.FunctionType:
            return submission_code(value.__code__)
        if _subclass(kind, type):
            return _any(_type(v) is types.FunctionType and submission_code(v.__code__) for v in _list(_own_dict(value).values()))
        return False

    _ModuleSpec, _all = importlib.machinery.ModuleSpec, all
    namespace_path_types = (_list,)
    try:
        import importlib._bootstrap_external as _bootstrap_external
        namespace_path_types = (_list, _bootstrap_external._NamespacePath)
    except (ImportError, AttributeError):
        pass
    exercise_modules = set()                   # names that entered sys.modules while an exercise cell ran
    modules_at_exercise = set()                # sys.modules' names when the last exercise cell began

    def genuine_origin(names):
        """The module's spec names a built-in, frozen or library module, or it is a namespace package whose folders
        are all the libraries'."""
        spec = names.get("__spec__")
        if _type(spec) is not _ModuleSpec:
            return False
        origin, locations = spec.origin, spec.submodule_search_locations
        if _type(origin) is _str:
            return origin in ("built-in", "frozen") or in_library(origin)
        if origin is None and _type(locations) in namespace_path_types:
            folders = _getattr(locations, "_path", locations)
            return _type(folders) is _list and _all(_type(f) is _str and in_library(f + "/") for f in folders)
        return False

    def planted(name, module, fresh=()):
        """A module object the submission made (or filled with its own code) and put in sys.modules: a check that
        imports that name would get the submission's code or data (red-team round 6: a fake
        sklearn.kernel_approximation). One that entered while an exercise or (`fresh`) a check ran must be a module
        object (red-team round 7: a SimpleNamespace of data); one from an exercise must also come from a library
        file. (A check's own imports may legitimately make modules from no file: torch's
        _remote_module_non_scriptable comes from a string, put in sys.modules by torch's code.)"""
        entered = name in exercise_modules or name in fresh
        if not _isinstance(module, _ModuleType) or submission_made(_type(module)):
            return entered or submission_made(_type(module))
        names = _vars(module)
        if name in exercise_modules and not genuine_origin(names):
            return True
        return _any(submission_made(v) for v in _list(names.values()))

    def drop_planted_modules(fresh=()):
        found = []
        if _any(_type(k) is not _str for k in _list(sys.modules)):
            exact_keys(sys.modules)            # (a str subclass's __hash__ would be the submission's code)
            found.append("a key that is not a str")
        for name, module in _list(sys.modules.items()):
            if name not in saved_modules and name not in ("__main__", "__mp_main__") and planted(name, module, fresh):
                graveyard.append(sys.modules.pop(name))
                found.append(name)
        return found

    # The import path: sys.path's entries and every package's __path__, by their contents (a list changed in place
    # stays the same object, so a module snapshot does not see it: red-team round 6 put a folder of its own at the
    # front of sklearn.__path__). Saved after each of the grader's cells, put back before each check.
    path_lists, saved_sys_path = [], [None]

    def save_path_lists():
        path_lists.clear()
        if _type(sys.path) is _list:
            saved_sys_path[0] = sys.path
            path_lists.append((sys.path, _tuple(sys.path)))
        for name, (module, snap) in _list(saved_modules.items()):
            value = snap.get("__path__")
            if _type(value) is _list:
                path_lists.append((value, _tuple(value)))

    def path_changes(put_back):
        found = []
        if saved_sys_path[0] is not None and sys.path is not saved_sys_path[0]:
            found.append("sys.path")
            if put_back:
                graveyard.append(sys.path)
                sys.path = saved_sys_path[0]
        for lst, contents in path_lists:     # by identity: an entry's own __eq__ (a str subclass) is never called
            if _len(lst) != _len(contents) or _any(a is not b for a, b in _zip(lst, contents)):
                found.append("the import path (sys.path or a package's __path__)")
                if put_back:
                    lst[:] = contents
        return found

    def library_function(f):
        code = _getattr(_getattr(f, "__func__", f), "__code__", None)
        return code is not None and not submission_code(code) and in_library(code.co_filename)

    def submission_threads():
        """Threads other than the kernel's own that run, or may run, code the submission chose: a thread whose stack
        holds submitted code, whose run() or target is not a library's Python function (a builtin such as exec or
        map as the target counts: it runs what it was handed), or that threading does not know (started with
        _thread directly)."""
        found = []
        frames = sys._current_frames()
        for ident, frame in frames.items():
            if ident in kernel_threads or ident == _get_ident():
                continue
            thread = threading._active.get(ident)
            if thread is None:
                found.append(f"thread {ident} (started outside threading)")
                continue
            target = _getattr(thread, "_target", None) or _getattr(thread, "function", None)
            if (submission_anywhere(frame) or (target is not None and not library_function(target))
                    or not library_function(_type(thread).run)):
                found.append(_getattr(thread, "name", f"thread {ident}"))
        return found

    _scalars = (type(None), bool, int, float, str)
    library_wrappers = {("torch", "manual_seed")}        # torch._dynamo wraps it when first imported
    _containers = (set, frozenset, dict, list, tuple)
    _callable, _map, _id = callable, map, id

    def benign(module_name, key, old, new):
        """A change a library makes to its own module on its own (lazily): what restore() leaves alone and a check
        does not count as tampering. `old` or `new` is `restore` for a name that was absent or was deleted."""
        if key in volatile:
            return True
        if module_name == "course_utils" and old is restore and key in cu_homes:
            home = sys.modules.get(f"course_utils.{cu_homes[key]}")  # its lazy binding of a public name: exactly
            return home is not None and _vars(home).get(key, restore) is new   # the object its home module holds
        if module_name == "course_utils" and old is restore and key in cu_submodules:
            sub = sys.modules.get(f"course_utils.{key}")    # a submodule's first import binds it on the package:
            return (sub is new and _isinstance(new, _ModuleType)   # exactly the module imported, from the library
                    and genuine_origin(_vars(new)) and not planted(f"course_utils.{key}", new))
        if module_name == "course_utils" or _startswith(module_name, "course_utils."):
            return False                                    # the checks' own package: no change is a library's
        if old is restore:                                  # a name added since the snapshot
            return (_isinstance(new, _ModuleType) or not _callable(new) or _startswith(key, "_")
                    or _startswith(module_name, "_"))
        if new is restore:                                  # deleted
            return False
        if old is None and (_startswith(key, "_") or _isinstance(new, _scalars)):
            return True                                     # state initialised on first use (tempfile.tempdir)
        if _startswith(key, "_") and (_isinstance(old, _scalars) and _isinstance(new, _scalars)
                                      or _type(old) is _type(new) and _type(old) in _containers):
            return True                                     # a private flag, counter or registry
        return (module_name, key) in library_wrappers and wrapped_by_library(new, old)

    _type_flags = type.__dict__["__flags__"].__get__
    _type_setattr, _type_delattr, _type_name = type.__setattr__, type.__delattr__, type.__dict__["__name__"].__get__
    _own_dict = type.__dict__["__dict__"].__get__        # a class's own namespace, whatever its metaclass says
    class_housekeeping = _frozenset({"__abstractmethods__", "_abc_impl", "__doc__", "__dict__", "__weakref__",
                                     "__parameters__", "__annotations__"})

    def benign_in_class(key, old, new):
        """A change a library makes to one of its classes on its own: a private flag or cache, or its own wrapper
        around a method (torch.optim wraps each optimizer class's step for its profiler on first use)."""
        if key in class_housekeeping:
            return True
        if old is restore:
            return _startswith(key, "_") and not _callable(new)
        if new is restore:
            return False
        if _startswith(key, "_") and (_isinstance(old, _scalars) and _isinstance(new, _scalars)
                                      or _type(old) is _type(new) and _type(old) in _containers):
            return True
        if _type(old) is property and _type(new) is property:   # an accessor a library registers lazily
            return library_function(old.fget) and library_function(new.fget)   # (torch.compiler's CacheInfo)
        return wrapped_by_library(new, old)

    def classes_of(values):
        """The classes among `values` whose attributes can be set (heap types): a library's optimizer, module,
        scheduler... A check's reference calls their methods, so a patched method would make it agree."""
        return [v for v in values if _subclass(_type(v), type) and _type_flags(v) & (1 << 9)]

    def save_classes(candidates):
        for cls in classes_of(candidates):
            if cls not in saved_classes:
                saved_classes[cls] = _dict(_own_dict(cls))

    def library_module_values(items):
        for name, (module, snapshot) in items:
            file = snapshot.get("__file__")
            if _type(file) is _str and in_library(file):
                yield from _list(snapshot.values())

    # Functions keep state a module or class snapshot does not see: the dict of their keyword defaults and the
    # cells of their closures, both changeable in place without an audit event (red-team round 5: numpy.all's
    # `where` default set to False, assert_close's `atol` to inf, the function inside torch.optim.SGD.step's wrapper
    # swapped). Reassigning __kwdefaults__ or __defaults__ is refused to submissions by the audit hook; these
    # entries hold the objects themselves, so restoring and comparing them reads no attribute.
    _FunctionType, _tuple = types.FunctionType, tuple
    kwdefault_entries = []                     # (function, its kwdefaults dict, that dict's items at snapshot time)
    cell_entries = []                          # (function, a closure cell, its contents at snapshot time)
    internals_seen = set()

    def cell_value(cell):
        try:
            return cell.cell_contents
        except ValueError:
            return restore                     # an empty cell

    numpy_dispatcher = _type(modules["numpy"].all) if "numpy" in modules else None   # numpy's C wrapper of a function

    def save_functions(values, depth=0):
        for value in values:
            kind = _type(value)
            if kind is staticmethod or kind is classmethod:
                value = value.__func__
            elif kind is numpy_dispatcher:
                value = _getattr(value, "_implementation", None)
            elif kind is property:
                save_functions((value.fget, value.fset, value.fdel), depth)
                continue
            if _type(value) is not _FunctionType or _id(value) in internals_seen:
                continue
            code = value.__code__
            if submission_code(code) or not (in_library(code.co_filename) or code.co_filename in trusted_cells):
                continue
            internals_seen.add(_id(value))
            graveyard.append(value)            # (kept alive: an id in internals_seen must never be reused)
            kw = value.__kwdefaults__
            if kw is not None:
                kwdefault_entries.append((value, kw, _tuple(kw.items())))
            cells = value.__closure__
            if cells is not None:
                inner = []
                for cell in cells:
                    content = cell_value(cell)
                    cell_entries.append((value, cell, content))
                    inner.append(content)
                if depth < 4:                  # a wrapper's wrapped function, and its wrapped function...
                    save_functions(inner, depth + 1)

    def benign_cell(old, new):
        """A closure's own state that a library changes on its own (a lazily set flag, cache or counter)."""
        if old is None or old is restore:
            return not _callable(new)
        if _isinstance(old, _scalars) and _isinstance(new, _scalars):
            return True
        if _type(old) is _type(new) and _type(old) in _containers:
            return True
        return wrapped_by_library(new, old)

    def function_changes(put_back):
        """The library functions whose keyword defaults or closure cells changed since they were saved, by name;
        with put_back, also set them back."""
        found = []
        for function, kw, items in kwdefault_entries:
            if _len(kw) != _len(items) or _any(kw.get(k, restore) is not v for k, v in items):
                found.append(f"the keyword defaults of {function.__qualname__}")
                if put_back:
                    graveyard.append(_dict(kw))
                    kw.clear()
                    kw.update(items)
        for function, cell, content in cell_entries:
            now = cell_value(cell)
            if now is not content and not benign_cell(content, now):
                found.append(f"the closure of {function.__qualname__}")
                if put_back:
                    graveyard.append(now)
                    if content is restore:
                        del cell.cell_contents
                    else:
                        cell.cell_contents = content
        return found

    graveyard = []                             # what the guard takes out of modules and namespaces: kept alive, so
                                               # that no finalizer or __del__ of a submission's runs inside the guard

    def restore():
        _settrace(None)
        _setprofile(None)
        _tsettrace(None)
        _tsetprofile(None)
        for name, (module, snapshot) in saved_modules.items():
            now = _vars(module)
            for key, value in snapshot.items():
                if now.get(key, restore) is not value and not benign(name, key, value, now.get(key, restore)):
                    graveyard.append(now.get(key))
                    now[key] = value
            for key in [k for k, v in now.items() if k not in snapshot and not benign(name, k, restore, v)]:
                graveyard.append(now.pop(key))
            if sys.modules.get(name) is not module:
                sys.modules[name] = module
        for obj, snapshot in saved_refs:
            graveyard.append(_dict(_vars(obj)))
            _vars(obj).clear()
            _vars(obj).update(snapshot)
        for label, registry, contents in hook_registries:
            graveyard.append(_list(registry.items()) if _isinstance(registry, dict) else _list(registry))
            registry.clear()
            if _isinstance(registry, dict):
                registry.update(contents)
            else:
                registry.extend(contents)
        while torch_c is not None and torch_c._len_torch_function_stack():   # a mode sees every torch call
            graveyard.append(torch_c._pop_torch_function_stack())
        while torch_c is not None and torch_c._len_torch_dispatch_stack():
            graveyard.append(torch_c._pop_torch_dispatch_stack())
        for function, (code, defaults, kwdefaults) in helper_code.items():
            if function.__code__ is not code:
                graveyard.append(function.__code__)
                function.__code__ = code
            if function.__defaults__ is not defaults:
                function.__defaults__ = defaults
            if function.__kwdefaults__ is not kwdefaults:
                function.__kwdefaults__ = kwdefaults
        function_changes(put_back=True)
        for number in signal_changes():              # a handler would be handed the frame it interrupts
            try:
                _signal(number, saved_signals[number])
            except (ValueError, OSError, TypeError):
                pass
        for timer in (signal_module.ITIMER_REAL, signal_module.ITIMER_VIRTUAL, signal_module.ITIMER_PROF):
            _setitimer(timer, 0)
        for cls, snapshot in saved_classes.items():
            now = _own_dict(cls)
            for key in [k for k in _list(now) if k not in snapshot and not benign_in_class(k, restore, now[k])]:
                graveyard.append(now[key])
                try:
                    _type_delattr(cls, key)
                except TypeError:                    # a library metaclass with a __delattr__ of its own (pybind11)
                    try:
                        _delattr(cls, key)
                    except (AttributeError, TypeError):
                        pass
                except AttributeError:
                    pass
            for key, value in snapshot.items():
                if now.get(key, restore) is not value and not benign_in_class(key, value, now.get(key, restore)):
                    graveyard.append(now.get(key))
                    try:
                        _type_setattr(cls, key, value)
                    except TypeError:
                        try:
                            _setattr(cls, key, value)
                        except (AttributeError, TypeError):
                            pass
                    except AttributeError:
                        pass
        for key, value in saved_sys.items():
            _setattr(sys, key, value)
        sys.meta_path[:] = saved_meta_path
        sys.path_hooks[:] = saved_path_hooks
        path_changes(put_back=True)
        drop_planted_modules()
        for attr, items in saved_lists.items():
            _getattr(shell, attr)[:] = items
        for event in _list(shell.events.callbacks):
            shell.events.callbacks[event][:] = saved_events.get(event, [])
        for obj, names in saved_instance:             # methods replaced on the shell or kernel instance
            for key in [k for k in _vars(obj) if k not in names]:
                try:
                    _delattr(obj, key)
                except AttributeError:
                    pass
        shell.custom_exceptions, shell.CustomTB = saved_custom
        user = shell.user_ns
        if checks_module is not None:
            for name in ("check_that", "assert_close", "check_equal", "plain"):
                if name in user:
                    user[name] = _getattr(checks_module, name)
        for alias, real in user_modules.items():      # module aliases (np, torch, cu, F...) back to the real modules
            if user.get(alias) is not real:
                graveyard.append(user.get(alias))
                user[alias] = real
        for name in [k for k in user if k in builtin_names and not k.startswith("_")]:
            if name in instructor_shadows:            # a name that shadows a builtin the checks call (len, all...)
                user[name] = instructor_shadows[name]
            else:
                graveyard.append(user.pop(name))

    def remember(names):
        """After an instructor cell: `names` are the names it binds (the grader read them from its source); those
        bound to modules are the notebook's imports, and a builtin's name it binds is the instructor's own."""
        for alias in names:
            if alias not in shell.user_ns:
                continue
            value = shell.user_ns[alias]
            if _isinstance(value, _ModuleType):
                user_modules[alias] = value
            if alias in builtin_names:
                instructor_shadows[alias] = value

    owned = set()                              # names the submission bound (its answers and helpers)
    baseline = {}                              # fingerprints of the notebook's arrays and tensors
    _blake2b, _sorted = hashlib.blake2b, sorted

    def fingerprints():
        """A hash of every array and tensor bound to a name of the notebook's own (not the submission's)."""
        np_ = modules.get("numpy")
        torch_ = modules.get("torch")
        found, budget = {}, 1 << 28
        for key, value in _list(shell.user_ns.items()):
            if key in owned or _startswith(key, "_"):
                continue
            try:
                if torch_ is not None and _type(value) in (torch_.Tensor, torch_.nn.Parameter):
                    with torch_._C.DisableTorchFunction():
                        t = torch_._C.TensorBase.detach(value)
                        if t.layout != torch_.strided or t.numel() * t.element_size() > budget:
                            continue
                        data = t.cpu().contiguous().reshape(-1).view(torch_.uint8).numpy().tobytes()
                        meta = (t.dtype, t.shape)
                elif np_ is not None and _type(value) is np_.ndarray and value.dtype != object:
                    if value.nbytes > budget:
                        continue
                    data, meta = np_.ascontiguousarray(value).tobytes(), (value.dtype, value.shape)
                else:
                    continue
            except Exception:
                continue
            budget -= _len(data)
            found[key] = (_str(meta), _blake2b(data, digest_size=16).digest())
        return found

    def exact_keys(names):
        """Drop every key of the notebook's namespace that is not exactly a str: a str subclass's __hash__ or __eq__
        would run the submission's code each time the guard looks a name up."""
        for k in names:                                        # iterating the keys hashes nothing
            if _type(k) is not _str:
                break
        else:
            return
        kept = [(k, v) for k, v in _list(names.items()) if _type(k) is _str]
        graveyard.append(_list(names.items()))
        names.clear()
        names.update(kept)

    def save_new_modules_and_classes():
        """Snapshots of the modules loaded since the last call, of their library classes, and of the classes the
        notebook's own names hold."""
        fresh = module_snapshots(skip=saved_modules)
        for name in [n for n, (m, _) in fresh.items() if planted(n, m)]:
            del fresh[name]                    # the submission's: never saved as a library's (drop_planted_modules)
        saved_modules.update(fresh)
        known = _set(saved_classes)
        save_classes(library_module_values(fresh.items()))
        save_classes(v for k, v in _list(shell.user_ns.items()) if k not in owned)
        save_functions(library_module_values(fresh.items()))
        save_functions(v for c, d in _list(saved_classes.items()) if c not in known for v in _list(d.values()))
        save_functions(v for k, v in _list(shell.user_ns.items()) if k not in owned)

    def save_replacements():
        """The functions a library put in place of its own since the snapshot (torch.optim's profiler wrapper
        around an optimizer's step, on first use): their internals are saved too."""
        for name, (module, snap) in _list(saved_modules.items()):
            now = _vars(module)
            save_functions(v for k, v in _list(now.items()) if snap.get(k, restore) is not v)
        for cls, snap in _list(saved_classes.items()):
            now = _own_dict(cls)
            save_functions(v for k, v in _list(now.items()) if snap.get(k, restore) is not v)

    # -- processes that no audit event reported ---------------------------------------------------------------------
    # _posixsubprocess.fork_exec starts a process without one (red-team round 7). Before and after each exercise and
    # check the guard lists the processes it can see (in the sandbox's PID namespace: all of them but its
    # ancestors; elsewhere: its descendants); a new one is the grader's only if its parent is a known process of
    # the grader's, or it is the kernel's child and the grader's own code asked for that many processes (an audit
    # event with no submitted code on the stack). Any other is stopped, and the checks after it do not run.
    _listdir, _kill, _int, _getpid = os.listdir, os.kill, int, os.getpid
    own_pid = _getpid()
    pid_namespace = os.environ.get("WORKBOOK_PID_NAMESPACE") == "1"
    known_processes = set()
    rogue = []

    def process_table():
        table = {}
        try:
            entries = _listdir("/proc")
        except OSError:
            return table
        for entry in entries:
            if not _str.isdigit(entry):
                continue
            try:
                with _open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            fields = data[data.rfind(b")") + 2:].split()
            if _len(fields) > 19 and fields[0] not in (b"Z", b"X"):      # zombies have ended already
                table[_int(entry)] = (_int(fields[1]), _int(fields[19]))  # parent, start time
        return table

    def watched_processes():
        table = process_table()
        line, pid = _set(), own_pid
        while pid in table and pid not in line:   # the kernel and its ancestors
            line.add(pid)
            pid = table[pid][0]

        def descends(pid):
            seen = _set()
            while pid in table and pid not in seen:
                if pid == own_pid:
                    return True
                seen.add(pid)
                pid = table[pid][0]
            return False
        return table, [p for p in table if p not in line and (pid_namespace or descends(p))]

    def remember_processes():
        table, watched = watched_processes()
        known_processes.clear()
        known_processes.update((p, table[p][1]) for p in watched)
        return trusted_starts[0]

    def rogue_processes(starts_before):
        """The processes that appeared since `remember_processes` and that the grader's code did not start: killed."""
        table, watched = watched_processes()
        allowed = trusted_starts[0] - starts_before
        fine = _set(p for p in watched if (p, table[p][1]) in known_processes)
        found = []
        for p in _sorted((p for p in watched if p not in fine), key=lambda p: (table[p][1], p)):   # parents first
            parent = table[p][0]
            if parent in fine:
                fine.add(p)
            elif parent == own_pid and allowed > 0:
                allowed -= 1
                fine.add(p)
            else:
                found.append(p)
        for p in found:
            try:
                _kill(p, 9)
            except OSError:
                pass
        return found

    def changed_in_watched_dirs():
        """Regular files in the watched folders changed since the last look (a margin earlier), and the time of this look."""
        now, found = _time_ns(), []
        for folder in _list(watched_dirs):
            try:
                with _scandir(folder) as entries:
                    for entry in entries:
                        if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime_ns >= last_look[0] - LOOK_MARGIN_NS:
                            found.append(_abspath(entry.path))
            except OSError:
                continue
        return found, now

    def record_written():
        """The files the grader's last cell wrote, itself or through processes it started: what they hold now is
        theirs (see `written`), unless the submission wrote to them too. A file of more than 1 GiB is not held
        (nothing here writes one)."""
        for path in _list(written_pending):
            if path not in tainted:
                watched_dirs.add(_dirname(path))
        changed, now = changed_in_watched_dirs()
        for path in _dict.fromkeys(_list(written_pending) + changed):   # each path once, in order
            digest = None if path in tainted else file_digest(path, largest=1 << 30)
            if digest is not None:
                written[path] = _frozenset(written.get(path, ())) | {digest}
        written_pending.clear()
        last_look[0] = now

    def taint_changed_by_exercise():
        """After an exercise: a file in the watched folders whose bytes are not ones the grader's cells left there
        was written by the submission (directly, or by anything it ran)."""
        changed, now = changed_in_watched_dirs()
        for path in changed:
            if file_digest(path, largest=1 << 30) not in written.get(path, ()):
                tainted.add(path)
        last_look[0] = now

    def snapshot():
        """Before an exercise cell: what every name is bound to, and what the notebook's data hold."""
        record_written()
        state["any_exercise"] = True
        modules_at_exercise.clear()
        modules_at_exercise.update(k for k in _list(sys.modules) if _type(k) is _str)
        exact_keys(shell.user_ns)
        namespace.clear()
        namespace.update(shell.user_ns)
        save_new_modules_and_classes()
        save_replacements()
        baseline.clear()
        baseline.update(fingerprints())
        state["starts"] = remember_processes()
        state["exercise"] = "armed"

    def restore_names(allowed):
        """After an exercise cell: every name that existed before it, except the ones the exercise defines, is
        bound again to what it was; new names stay (the submission's own helpers), unless they shadow a builtin."""
        user = shell.user_ns
        exercise_modules.update(k for k in _list(sys.modules) if _type(k) is _str and k not in modules_at_exercise)
        exact_keys(user)
        for key, value in namespace.items():
            if key not in allowed and not _startswith(key, "_") and user.get(key, namespace) is not value:
                graveyard.append(user.get(key))
                user[key] = value
        for key in [k for k in user if k not in namespace and k in builtin_names and k not in allowed]:
            graveyard.append(user.pop(key))
        owned.update(k for k in user if k not in namespace or k in allowed)
        rogue.extend(rogue_processes(state.get("starts", trusted_starts[0])))
        taint_changed_by_exercise()

    def remember_and_rebase(names):
        record_written()
        remember_processes()
        exact_keys(shell.user_ns)
        remember(names)
        save_new_modules_and_classes()                               # what an instructor cell imported or defined
        save_path_lists()
        baseline.clear()                       # an instructor cell may change the notebook's data on purpose
        baseline.update(fingerprints())

    def state_of_modules():
        return ({name: _dict(_vars(m)) for name, (m, _) in saved_modules.items()},
                {c: _dict(_own_dict(c)) for c in saved_classes},
                [(obj, _dict(_vars(obj))) for obj, _ in saved_refs])

    def changes(before):
        """What code changed in the modules and classes the checks use since `before`, as readable names."""
        found = []
        module_dicts, class_dicts, ref_dicts = before
        for name, old in module_dicts.items():
            now = _vars(saved_modules[name][0])
            for key, value in old.items():
                if now.get(key, restore) is not value and not benign(name, key, value, now.get(key, restore)):
                    found.append(f"{name}.{key}")
            for key, value in now.items():
                if key not in old and not benign(name, key, restore, value):
                    found.append(f"{name}.{key}")
        for obj, old in ref_dicts:
            if _list(_vars(obj)) != _list(old) or _list(_map(_id, _vars(obj).values())) != _list(_map(_id, old.values())):
                found.append("the checks' captured NumPy functions")
        for cls, old in class_dicts.items():
            now = _own_dict(cls)
            for key in _set(old) | _set(now):
                before, after = old.get(key, restore), now.get(key, restore)
                if before is not after and not benign_in_class(key, before, after):
                    found.append(f"{_type_name(cls)}.{key}")
        return found

    def wrapped_by_library(new, old):
        """A library's own wrapper around the same function (torch._dynamo, imported lazily by the first
        optimizer step, wraps torch.manual_seed): the wrapper's code is a library's and it wraps `old` itself."""
        code = _getattr(new, "__code__", None)
        return (old is not None and _getattr(new, "__wrapped__", None) is old and code is not None
                and trusted(code.co_filename) and not _startswith(code.co_filename, "<"))

    volatile = _frozenset({"_", "__", "___", "last_type", "last_value", "last_traceback", "last_exc", "ps1", "ps2",
                           "_last_value"})

    def check(name, source):
        """Run one check cell: restored, in its own copy of the namespace, and proved only if nothing it relies on
        changed while it ran."""
        exact_keys(shell.user_ns)
        restore()
        running = submission_threads()
        if running:
            raise _RuntimeError(f"the submission started threads that are still running ({', '.join(running)}): "
                                f"a check cannot run beside them")
        if dispatcher_changes():
            raise _RuntimeError("the submission changed which of PyTorch's dispatch keys this thread includes or "
                                "excludes: a check cannot trust torch's operators")
        if rogue:
            raise _RuntimeError(f"the submission started processes that no audit event reported (_posixsubprocess or "
                                f"the like; pids {_sorted(rogue)[:8]}): they were stopped, and no check runs after them")
        starts = remember_processes()
        modules_at_check = _set(k for k in _list(sys.modules) if _type(k) is _str)
        user = shell.user_ns
        names_before = _dict(user)
        modules_before = state_of_modules()
        ns = _dict(user)
        ns_helpers = {k: ns[k] for k in _list(user_modules) + ["check_that", "assert_close", "check_equal", "plain"]
                      if k in ns}
        filename = f"<check {name}>"
        trusted_cells.add(filename)
        problems = []
        state["guard"], state["checking"] = False, True
        try:
            _exec(_compile(source, filename, "exec"), ns)
        finally:
            state["guard"], state["checking"] = True, False
            for key, value in names_before.items():   # the notebook's names, which its own functions look up
                if key not in owned and not _startswith(key, "_") and user.get(key, changes) is not value:
                    problems.append(f"the notebook's name {key}")
            for key in user:
                if key not in names_before and key in builtin_names and not _startswith(key, "_"):
                    problems.append(f"a new global {key} that hides the builtin")
            for key, value in ns.items():             # what the check defined, for later cells (even if it failed)
                if names_before.get(key, changes) is not value and not _startswith(key, "__"):
                    user[key] = value
        problems += changes(modules_before)
        problems += function_changes(put_back=False)
        problems += path_changes(put_back=False)
        fresh = _set(k for k in _list(sys.modules) if _type(k) is _str and k not in modules_at_check)
        problems += [f"sys.modules['{n}'] (a module of its own)" for n in drop_planted_modules(fresh)]
        started = rogue_processes(starts)
        if started:
            rogue.extend(started)
            problems.append(f"processes it started without an audit event (pids {_sorted(started)[:8]}; stopped)")
        for name, value in ns_helpers.items():            # the check's own view of the helpers and modules
            if ns.get(name, changes) is not value:
                problems.append(f"the check's {name}")
        problems += [f"the code of {f.__name__}" for f, (code, *_) in helper_code.items() if f.__code__ is not code]
        if signal_changes():
            problems.append("signal handlers")
        problems += registry_changes()
        problems += dispatcher_changes()
        if mode_depths() != (0, 0):
            problems.append("a torch function or dispatch mode left on")
        now = fingerprints()
        for key, value in baseline.items():
            if key in now and now[key] != value and names_before.get(key, changes) is user.get(key):
                problems.append(f"the data in {key} (changed in place)")
        running = submission_threads()
        if running:
            problems.append(f"threads the submission started ({', '.join(running)})")
        if problems:
            raise _RuntimeError("while this check ran, the submission's code changed what the check relies on: "
                                + ", ".join(_sorted(_set(problems))[:12]))
        baseline.clear()
        baseline.update(fingerprints())
        record_written()

    def digest(payload):
        return _sha256(_repr(payload).encode()).hexdigest()

    def call(nonce, entry, *args):
        """The grader's command: run `entry`, then print a keyed hash of (entry, nonce, arguments): code that
        echoes what the grader sent, or calls another entry point, cannot produce it. A check's source arrives
        encrypted (so a hidden check's text never sits in the kernel's history or caches) and is decrypted here."""
        if entry == "check":
            name, sealed = args
            data = _bytes.fromhex(sealed)
            plain_bytes = _bytearray()
            for start in range(0, _len(data), 32):
                block = _new(secret, f"source\0{nonce}\0{start}".encode(), _sha256).digest()
                plain_bytes += _bytes(a ^ b for a, b in _zip(data[start:start + 32], block))
            args = (name, plain_bytes.decode())
        collecting = _gc.isenabled()
        _gc.disable()                          # no collection (and no finalizer) in the middle of the guard
        state["guard"] = True
        try:
            entries[entry](*args)
        finally:
            state["guard"] = False
            if collecting:
                _gc.enable()
        _print(_new(secret, f"{entry}\0{nonce}\0{digest(args)}".encode(), _sha256).hexdigest())

    # PyTorch's dispatcher: a kernel registered for an aten operator (torch._C._dispatch_library, or the handle of a
    # library torch keeps) replaces that operator for every caller, the checks' references included, and lives in
    # C++ where no module or class snapshot sees it. Its entry points refuse submitted code anywhere on the stack.
    # (Comparing the dispatch tables after each check was tried: torch registers kernels for aten operators lazily,
    # on first use, so legitimate runs changed them.) The thread's included and excluded dispatch keys, which
    # decide which kernels run, must be as they were at install.
    dispatch_keys = None
    if torch_c is not None and _hasattr(torch_c, "_dispatch_library"):
        def no_registrations_from_submissions(original, what):
            def registration(*args, **kwargs):
                _audit("workbook.wrapper", what)
                return original(*args, **kwargs)
            guard_wrappers.append(registration)
            return registration

        dispatch_module = _type(torch_c._dispatch_library("FRAGMENT", "workbook_guard", ""))
        torch_c._dispatch_library = no_registrations_from_submissions(torch_c._dispatch_library,
                                                                      "torch._C._dispatch_library (registering kernels)")
        for method in ("impl", "impl_t_t", "impl_with_aoti_compile", "def_", "def_legacy", "def_name_t_t",
                       "def_schema_t_t", "define", "fallback", "fallback_fallthrough",
                       "register_ad_inplace_or_view_fallback", "reset"):
            original = _own_dict(dispatch_module).get(method)
            if original is not None:
                _setattr(dispatch_module, method, no_registrations_from_submissions(
                    original, f"the dispatcher's {method} (registering kernels)"))
        saved_modules["torch._C"] = (torch_c, _dict(_vars(torch_c)))
        _include, _exclude = torch_c._dispatch_tls_local_include_set, torch_c._dispatch_tls_local_exclude_set
        dispatch_keys = (_repr(_include()), _repr(_exclude()))

    def dispatcher_changes():
        if dispatch_keys is None or (_repr(_include()), _repr(_exclude())) == dispatch_keys:
            return []
        return ["the thread's included or excluded dispatch keys"]

    save_classes(library_module_values(saved_modules.items()))   # every library class loaded now
    save_functions(library_module_values(saved_modules.items()))  # and the internals of every library function
    save_functions(v for d in _list(saved_classes.values()) for v in _list(d.values()))
    save_functions(guard_wrappers)
    save_path_lists()
    entries = {"prove": restore, "remember": remember_and_rebase, "snapshot": snapshot,
               "restore_names": restore_names, "check": check}
    handlers["call"] = call
    _print("guard ready", secret.decode())
