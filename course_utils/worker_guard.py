"""Inside a torchrun worker: the notebook's functions run, but they cannot forge what the worker reports.

`course_utils.worker_entry` calls `run_script(script)` instead of running the script itself. Before the script runs,
an audit hook (PEP 578: no Python code can remove one) goes in, and the script runs in a namespace of its own (not
`sys.modules['__main__']`, where any code could rebind the script's names). Code counts as the *notebook's* when its
file is one `course_utils.distributed.write_module` wrote (the functions a notebook exports to its workers) or lies
outside both the read-only libraries and the script's folder (a module it wrote somewhere and imported). To that
code, the hook refuses:

- what reaches into other code: frames, trace and profile functions, the garbage collector's object lists, ctypes,
  new code or function objects, exec and compile (an import's own compile aside), marshal, assigning a function's
  code or defaults (`f.__code__ = ...`), another audit hook;
- what outlives or escapes the call: writing, renaming or removing files (a path of any type: bytes, a str
  subclass), changing the environment, starting processes, sending signals, installing a signal handler (it would
  be handed frames). Starting a thread raises no audit event before Python 3.13: the threads are counted instead,
  each time one of the notebook's functions returns and at each report, and while a thread started from Python runs,
  every event on a thread other than the script's counts as the notebook's (a thread whose target is os.open has
  none of the notebook's frames on its stack).

An event raised while the hook itself runs passes only if the hook's own code raised it (code the hook ended up
calling, such as a dict key's __eq__, does not). While grading, a function of the notebook's may not hand the script an
object of a class made after the notebook's module was imported (its special methods would run later, in the
script). Torch's mode stacks and global module hooks, which live in C or in
dicts no rebinding shows, are compared too (red-team round 11). Each refusal is also written where the launcher
looks for a rank's first error. Red-team round 9 (session 34) found a way through each of these before it was closed.

The frame-like events are refused when the notebook's code is anywhere on the stack (a library that would hand it a
frame, such as traceback.walk_stack, launders nothing), except sys._getframe from a few library modules that only
read a name or a line from it. A library that compiles and runs a string while the notebook's code is on the stack
(typing's ForwardRef) may, but not under the name of a file the guard trusts, and the code it runs counts as the
notebook's. The module that write_module wrote is loaded through a finder that wraps each of its functions: when one
returns to the script, the comparison below runs too (red-team round 8 rebound builtins.float with a function that
put float back once the script had called it, before the report).

And `course_utils.distributed.report` raises an audit event that the hook answers, writing the report itself (to
the file for the rank and results folder it read before the script ran, encoded by built-in functions only): a
report is taken only when the worker script's own code (its code objects, not its file name) calls it, with no notebook code on the stack, and when no
module's functions, classes or submodules, nor any class's methods, were rebound since the notebook's module was
first imported (a replaced `common.flat_params`, `json.JSONEncoder.encode = ...`: assigning a class attribute raises
no audit event, so it is found by comparison; a library's own wrapper round a method, as torch.optim puts round
`step`, is recognised). Any other write to a report file is refused. The comparison runs
while grading only (`WORKBOOK_GRADING=1`, set by tools/kernel_guard.py): it costs about 0.15 s per worker and 15 ms
each time. A refused
report raises in the worker, which fails its launch, so the check that launched it fails.

The rest of a check's trust comes from the grader (tools/kernel_guard.py checks, at each launch, that the files
beside the script are the ones the grader's cells wrote). Red-team round 6 earned 6 of 7 marks in notebook 05 by
replacing a worker's `report`; that, rewriting the worker script and round 8's four ways past the first version of
this module are cases in tests/test_hostile_workers.py (the workers toy).
"""
from __future__ import annotations

import _thread
import builtins
import gc
import importlib.util
import io
import json
import operator
import os
import pathlib
import sys
import sysconfig
import time
import types

_THIS_FILE = __file__
MARK = '"""Written by course_utils.distributed.write_module'
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# refused when the notebook's code is anywhere on the stack: a library it calls may not hand it a frame, an object
# list or new code (red-team round 8 walked to the script's frame through traceback.walk_stack inside
# collections.Counter, three library frames deep)
FRAME_EVENTS = frozenset({"sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile", "gc.get_objects",
                          "gc.get_referrers", "gc.get_referents", "code.__new__", "function.__new__", "sys.addaudithook",
                          "marshal.loads", "marshal.load", "object.__getattr__", "object.__setattr__",
                          "object.__delattr__", "exec", "compile", "cpython.PyInterpreterState_Clear"})
# library modules that call sys._getframe only to read a module's name, or a caller's file and line, from it, and
# never hand the frame on
BENIGN_GETFRAME = ("/collections/__init__.py", "/typing.py", "/typing_extensions.py", "/enum.py", "/logging/__init__.py",
                   "/warnings.py")
# refused when the notebook's code is anywhere on the stack
ANYWHERE_EVENTS = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
                             "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
                             "_thread.start_new_thread", "os.rename", "os.remove", "os.rmdir", "os.mkdir",
                             "os.symlink", "os.link", "os.truncate", "os.chmod", "os.chown", "os.utime", "os.putenv",
                             "os.unsetenv", "os.chdir", "os.chroot", "shutil.copyfile", "shutil.copymode",
                             "shutil.copystat", "shutil.copytree", "shutil.move", "shutil.rmtree", "shutil.chown",
                             "os.removexattr", "os.setxattr", "socket.bind", "resource.setrlimit", "sys.setrecursionlimit",
                             "course_utils.distributed.report", "course_utils.worker_guard.signal",
                             "course_utils.worker_guard.dispatch"})
# after these, what links one file to another is checked on both sides (a link or a symlink onto a report)
LINK_EVENTS = frozenset({"os.rename", "os.link", "os.symlink"})


def write_module_marker(path, open_code=io.open_code, MARK=MARK.encode(), n=len(MARK), OSError=OSError,
                        TypeError=TypeError):
    """Does the file at `path` begin with write_module's marker: True, False, or None when it cannot be read.
    (The guard's hook calls it: everything it uses is bound when this module is imported.)"""
    try:
        with open_code(path) as f:
            return f.read(n) == MARK
    except (OSError, TypeError):
        return None


def _normalized(path, split=str.split, join=str.join, list=list) -> str:
    """posixpath.normpath of an absolute path, with the methods of str and list only: posixpath's own functions
    look up `os` and their module's globals each time they run, and the notebook's code could have rebound those
    (red-team round 13 ran its code inside the hook through a dict it had swapped in: nothing the hook calls may be
    Python code of a library's)."""
    parts = []
    for part in split(path, "/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if parts:
                list.pop(parts)
            continue
        list.append(parts, part)
    return "/" + join("/", parts)


def _parent_and_name(path, rpartition=str.rpartition) -> tuple:
    """The folder and the last component of an absolute path (the folder is '/' for a file at the root)."""
    folder, _, name = rpartition(path, "/")
    return folder or "/", name


class WorkerGuard:
    def __init__(self, script: str, script_codes: frozenset = frozenset()):
        self.script = os.path.abspath(script)
        self.folder = os.path.dirname(self.script)
        roots = {os.path.dirname(os.path.abspath(__file__))}          # course_utils itself
        for key in ("stdlib", "platstdlib", "purelib", "platlib"):
            path = sysconfig.get_paths().get(key)
            if path:
                roots.update({os.path.realpath(path), os.path.abspath(path)})
        self.library = tuple(r.rstrip("/") + "/" for r in roots)
        self.known: dict[str, bool] = {}                 # file name -> the notebook's code?
        self.saved: list | None = None                   # the modules when the notebook's code was first imported
        self.classes: list = []                          # and every class they name
        # Only while grading (tools/kernel_guard.py sets this, and refuses a launch whose environment the submission
        # changed): taking and comparing the snapshot costs about 0.15 s per worker and 15 ms per comparison here.
        self.grading = os.environ.get("WORKBOOK_GRADING") == "1"
        # Everything the hook calls is captured now, before any of the notebook's code runs: a replaced builtin or
        # os.path function would otherwise run the notebook's code inside the hook, where nothing is checked.
        self._getframe, self._modules = sys._getframe, sys.modules
        self.builtin_names = frozenset(vars(builtins))
        self.rank, self.local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        self.node, self.attempt = int(os.environ.get("GROUP_RANK", "0")), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        folder = os.environ.get("WORKBOOK_RESULTS_DIR")
        self.results = os.path.abspath(folder) + "/" if folder else None
        self.report_path = f"{self.results}rank{self.rank}.jsonl" if self.results else None
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self._stat, self._getcwd = os.stat, os.getcwd
        self._gc_isenabled, self._gc_disable, self._gc_enable = gc.isenabled, gc.disable, gc.enable
        self.gc_namespace, self.gc_callbacks = vars(gc), gc.callbacks
        self.gc_off = False                              # automatic collection turned off for good (while grading)
        try:                                             # the folder itself, whatever path names it
            st = os.stat(self.results) if self.results else None
            self.results_id = (st.st_dev, st.st_ino) if st else None
        except OSError:
            self.results_id = None
        self._os_open, self._os_write, self._os_close = os.open, os.write, os.close
        self._getpid, self._time_ns, self.refusals = os.getpid, time.time_ns, 0
        self.append_flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self.replace_flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self.busy: dict[int, int] = {}                   # thread -> 1 while the hook runs there, 2 in its own _getframe
        self._thread_count = _thread._count
        self.threads_at_start = _thread._count()
        self.script_codes = script_codes                 # the code objects compiled from the script (run_script)
        self.notebook_codes: set = set()                 # code a library compiled and ran for the notebook's code
        self._get_ident = _thread.get_ident
        self.main_thread = _thread.get_ident()
        self.known_classes: frozenset = frozenset()
        self.hidden_saved: tuple = ()                    # hidden_state() at the snapshot
        self.torch_functions: tuple = ()                 # torch's C functions that read its mode stacks, from the snapshot
        self.hooks_saved: tuple = ()                     # torch's global hook dicts, as the snapshot found them
        self.step_wrapper = None                         # the code of torch.optim's wrapper round an optimizer's step

    # Every method below binds the builtins and modules it uses as default arguments, taken when this module was
    # imported (before any of the notebook's code ran): a builtin or a module attribute the notebook's code replaced
    # would otherwise run that code inside the hook, where nothing is checked.

    # --- whose code is it -------------------------------------------------------------------------------------
    def notebook_file(self, filename, str=str, type=type, dict=dict, marker=write_module_marker,
                      normalized=_normalized, parent_and_name=_parent_and_name) -> bool:
        if type(filename) is not str:
            return True
        known = dict.get(self.known, filename)
        if known is not None:
            return known
        if str.startswith(filename, "<"):               # frozen importlib, or code a library compiled from a string
            known = False
        elif not str.startswith(filename, "/"):          # a relative file name: not one the guard can place
            known = True
        else:
            path = normalized(filename)
            if str.startswith(path, self.library):
                known = False
            elif parent_and_name(path)[0] == self.folder:    # the script and the grader's modules beside it, not the
                # module write_module wrote with the notebook's functions; a file it cannot read counts as the
                # notebook's. (The open raises an event inside this hook, passed as the hook's own.)
                known = marker(path) is not False
            else:
                known = True
        self.known[filename] = known
        return known

    def notebook_code(self, code) -> bool:
        return code in self.notebook_codes or self.notebook_file(code.co_filename)

    def mark(self, code, depth=0, type=type, CodeType=types.CodeType) -> None:
        """Code a library compiled while the notebook's code was on the stack, and the code inside it."""
        if type(code) is CodeType and depth < 50 and code not in self.notebook_codes:
            self.notebook_codes.add(code)
            for const in code.co_consts:
                self.mark(const, depth + 1)

    def notebook_frame(self, frame, depth=None):
        """The file of the nearest frame of the notebook's code, from `frame` down (`depth` frames at most). On any
        thread but the script's own, while a thread started from Python runs, every frame counts as the notebook's:
        a thread whose target is a library function (os.open with a dir_fd, red-team round 9) has none of the
        notebook's frames on its stack, and the worker scripts start no threads of their own. (Threads of C++ code
        that call into Python, as autograd's calling a DDP communication hook, are not counted by _thread.)"""
        if self._get_ident() != self.main_thread and self._thread_count() > self.threads_at_start:
            return "a thread started while the worker ran"
        n = 0
        while frame is not None and (depth is None or n < depth):
            if self.notebook_code(frame.f_code):
                return frame.f_code.co_filename
            frame, n = frame.f_back, n + 1
        return None

    # --- what the modules were --------------------------------------------------------------------------------
    def snapshot(self, dict=dict, list=list, frozenset=frozenset, vars=vars, issubclass=issubclass, id=id, type=type,
                 tuple=tuple, len=len, ModuleType=types.ModuleType, itemgetter=operator.itemgetter) -> None:
        def entry(namespace, only=None, every_value=False):
            watched = [(k, v) for k, v in list(namespace.items())
                       if (every_value or self.watched(v)) and (only is None or k in only)]
            keys = tuple(k for k, _ in watched)
            return (namespace, keys, itemgetter(*keys) if keys else None, tuple(v for _, v in watched),
                    frozenset(namespace), tuple(namespace))
        modules, classes = [], {}
        for name, module in list(dict.items(self._modules)):
            if issubclass(type(module), ModuleType):
                try:
                    namespace = vars(module)
                except TypeError:
                    continue
                # sys's hooks and streams change as a matter of course: only what a report relies on is compared.
                # A module the grader wrote beside the script is compared whole, its plain values too (a constant
                # or a config object the script reads).
                file = dict.get(namespace, "__file__")
                beside = (type(file) is str and str.startswith(file, "/")
                          and _parent_and_name(_normalized(file))[0] == self.folder and not self.notebook_file(file))
                modules.append((name, module, entry(namespace, ("audit", "addaudithook", "modules") if module is sys else None,
                                                    every_value=beside)))
        for _, _, (_, _, _, values, _, _) in modules:    # every class a module names: a class attribute set raises
            for value in values:                          # no audit event (torch.Tensor.tolist = ...)
                if issubclass(type(value), type) and id(value) not in classes:
                    classes[id(value)] = (value, entry(type.__dict__["__dict__"].__get__(value)))
        self.saved, self.classes = modules, list(dict.values(classes))
        self.known_classes = frozenset(classes)          # their ids (the classes stay alive: modules name them)
        torch = dict.get(self._modules, "torch")
        if torch is not None:
            c = torch._C
            self.torch_functions = (c._len_torch_function_stack, c._len_torch_dispatch_stack,
                                    c._dispatch_tls_local_include_set, c._dispatch_tls_local_exclude_set)
        hooks = []
        for module_name, names in (("torch.nn.modules.module", ("_global_forward_hooks", "_global_forward_pre_hooks",
                                    "_global_backward_hooks", "_global_backward_pre_hooks",
                                    "_global_forward_hooks_with_kwargs", "_global_forward_hooks_always_called")),
                                   ("torch.optim.optimizer", ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks"))):
            module = dict.get(self._modules, module_name)
            namespace = vars(module) if module is not None else {}
            for name in names:
                if name in namespace:
                    hooks.append((f"{module_name}.{name}", namespace, name, namespace[name]))
        self.hooks_saved = tuple(hooks)
        optimizer = dict.get(self._modules, "torch.optim.optimizer")
        if optimizer is not None:                        # torch.optim wraps each optimizer class's step, once
            for const in optimizer.Optimizer.profile_hook_step.__code__.co_consts:
                if type(const) is types.CodeType and const.co_name == "wrapper":
                    self.step_wrapper = const
        # While grading, no automatic collection from here on: it would run the notebook's finalizers and gc
        # callbacks between its calls, where no rule watches (round 14). Each event the hook sees turns it off
        # again (gc.enable() by the notebook's code lasts until its next event, its return at the latest), and
        # gc.callbacks is compared with the rest. (A worker's scripts make few reference cycles.)
        self._gc_disable()
        self.gc_off = True
        self.hidden_saved = self.hidden_state()

    def hidden_state(self, dict=dict, list=list, tuple=tuple, repr=repr, object_repr=object.__repr__) -> tuple:
        """What Python and torch keep outside any module attribute that makes later operations run someone's code:
        gc.callbacks, torch's torch-function and dispatch mode stacks, the thread's dispatch keys, and the global
        hooks of nn.Module and of the optimizers (red-team round 11 left a TorchFunctionMode on, and the script's float() of a tensor it
        returned ran the mode's code). Read with the C functions and the dicts the snapshot found: round 13 put a
        dict of its own class in place of a hook dict, and its __len__ ran inside this hook."""
        callbacks = dict.get(self.gc_namespace, "callbacks")
        state = [("gc.callbacks", list.__len__(self.gc_callbacks) if callbacks is self.gc_callbacks else "replaced")]
        if not self.torch_functions:
            return tuple(state)
        function_modes, dispatch_modes, included, excluded = self.torch_functions
        state += [("torch-function modes", function_modes()), ("dispatch modes", dispatch_modes()),
                 ("the thread's included dispatch keys", repr(included())),
                 ("the thread's excluded dispatch keys", repr(excluded()))]
        for name, namespace, key, saved in self.hooks_saved:
            current = dict.get(namespace, key)
            state.append((name, dict.__len__(saved) if current is saved else f"replaced by {object_repr(current)}"))
        return tuple(state)

    def hidden_changed(self, zip=zip) -> list:
        if self.saved is None:
            return []
        return [f"{name} ({before} -> {now})" for (name, before), (_, now) in zip(self.hidden_saved, self.hidden_state())
                if now != before]

    def stale(self, entry, len=len, all=all, map=map, zip=zip, list=list, tuple=tuple, iter=iter, type=type, str=str,
              KeyError=KeyError, is_=operator.is_) -> list:
        """The watched keys of a snapshot entry whose value is no longer the one saved (a library's own wrapper
        round it aside), and the keys added since. One C-level fetch and comparison when nothing changed."""
        namespace, keys, getter, values, every, order = entry
        found = []
        if getter is not None:
            try:
                current = getter(namespace)
            except KeyError:
                current = tuple(namespace.get(k, namespace) for k in keys)
            if len(keys) == 1:
                current = (current,)
            if not all(map(is_, current, values)):
                found = [k for k, c, v in zip(keys, current, values) if c is not v and not self.wraps(c, v, k)]
        # new keys, as 1-tuples, looked for when the keys are not the same objects in the same order (round 13 took
        # one key out and put another in, which left the count as it was); a key that is not exactly a str is not
        # hashed or compared (its methods are someone's code)
        if len(namespace) != len(order) or not all(map(is_, list(iter(namespace)), order)):
            for k in list(iter(namespace)):
                if type(k) is not str:
                    found.append(("a key that is not a str",))
                elif k not in every:
                    found.append((k,))
        return found

    def watched(self, value, issubclass=issubclass, type=type, kinds=(types.FunctionType, types.BuiltinFunctionType,
                types.MethodType, type, types.ModuleType, types.MethodWrapperType, types.WrapperDescriptorType,
                types.MethodDescriptorType, types.ClassMethodDescriptorType, types.GetSetDescriptorType,
                types.MemberDescriptorType, property, staticmethod, classmethod)) -> bool:
        return issubclass(type(value), kinds)           # (isinstance would ask the value for its __class__)

    def changed(self, dict=dict, str=str, len=len, any=any, type=type, tuple=tuple) -> list[str]:
        found = []
        for name, module, entry in self.saved or ():
            current = dict.get(self._modules, name)
            if current is not module:
                if current is not None:
                    found.append(f"sys.modules[{name!r}]")
                continue
            for key in self.stale(entry):
                if type(key) is not tuple:
                    found.append(f"{name}.{key}")
                elif key[0] == "a key that is not a str":
                    found.append(f"{name}: {key[0]}")
                elif key[0] in self.builtin_names and not str.startswith(key[0], "__"):
                    found.append(f"{name}.{key[0]} (shadows the builtin)")
            if len(found) > 20:
                return found
        for cls, entry in self.classes:
            qualname = type.__getattribute__(cls, "__qualname__")
            for key in self.stale(entry):
                if type(key) is not tuple:
                    found.append(f"{qualname}.{key}")
                elif key[0] == "a key that is not a str":
                    found.append(f"{qualname}: {key[0]}")
                elif any(key[0] in type.__dict__["__dict__"].__get__(base) for base in type.__dict__["__mro__"].__get__(cls)[1:]):
                    found.append(f"{qualname}.{key[0]} (hides the base class's)")   # a new attribute over a base's
            if len(found) > 20:
                break
        return found

    def wraps(self, new, old, key, type=type, FunctionType=types.FunctionType, ValueError=ValueError) -> bool:
        """Is `new` torch.optim's own wrapper round `old`, an optimizer class's step? torch.optim wraps each
        optimizer class's step with its profiling hook when the first one is made. Only that wrapper's code, under
        the name step, closing over `old` itself (not its __wrapped__ attribute, which anyone can set: red-team
        round 13 set it on functools.singledispatch's closure round a function of its own)."""
        if key != "step" or self.step_wrapper is None or type(new) is not FunctionType:
            return False
        if new.__code__ is not self.step_wrapper or new.__closure__ is None:
            return False
        for cell in new.__closure__:
            try:
                if cell.cell_contents is old:
                    return True
            except ValueError:                           # an empty cell
                continue
        return False

    def plain_result(self, value, depth=0, seen=None, type=type, id=id, dict=dict, list=list, tuple=tuple,
                     RuntimeError=RuntimeError,
                     PLAIN=frozenset(map(id, (int, float, bool, str, bytes, complex, type(None))))) -> None:
        """What a notebook function hands the script (while grading) is made of the built-in scalar types, lists,
        tuples and dicts of them, and objects of classes that existed when the notebook's module was imported
        (torch.Tensor): never of a class made since, whose special methods could be anything that runs later in the
        script (red-team round 9: an int subclass whose __float__ was the notebook's function; round 10: the same
        with a functools.partial, a bound method or an lru_cache in that slot). Containers are looked into, 8
        levels and 100,000 items at most: more is refused."""
        if self.saved is None:
            return
        seen = [0] if seen is None else seen
        kind = type(value)                               # by identity: a metaclass's __eq__ could call a class int
        if id(kind) not in PLAIN and id(kind) not in self.known_classes:
            raise RuntimeError(f"a function of the notebook's returned an object of type "
                               f"{type.__getattribute__(kind, '__qualname__')}, a class made after its module was "
                               f"imported: return plain values (numbers, strings, lists, tuples, dicts) or tensors")
        if kind is not list and kind is not tuple and kind is not dict:
            return
        if depth >= 8:                                   # what cannot be looked into is refused, not passed
            raise RuntimeError("a function of the notebook's returned containers nested more than 8 levels deep")
        items = (list(dict.keys(value)) + list(dict.values(value)) if kind is dict else list.__iter__(value)
                 if kind is list else tuple.__iter__(value))   # a dict's keys too (red-team round 11)
        for item in items:
            seen[0] += 1
            if seen[0] > 100_000:
                raise RuntimeError("a function of the notebook's returned more than 100,000 values in containers: "
                                   "return tensors for data that large")
            self.plain_result(item, depth + 1, seen)

    def no_new_threads(self, RuntimeError=RuntimeError) -> None:
        """Python 3.11 raises no audit event when a thread starts: a thread the notebook's code left running could
        rebind a module while the script computes and put it back before a report. The threads the _thread module
        started are counted instead (torch's own run in C++ and are not among them)."""
        if self._thread_count() > self.threads_at_start:
            raise RuntimeError(f"{self._thread_count() - self.threads_at_start} thread(s) started in this worker are "
                               f"still running: the notebook's code may not leave threads behind")

    # --- the reports ------------------------------------------------------------------------------------------
    def path_text(self, path, type=type, bytes=bytes, str=str, issubclass=issubclass, AttributeError=AttributeError,
                  paths=(pathlib.PosixPath, pathlib.PurePosixPath), text_of=pathlib.PurePath.__dict__["_str"]):
        """A path argument as a str, read without running its methods (or a library's Python code); None for a
        type it does not know."""
        kind = type(path)
        if kind is bytes:
            return bytes.decode(path, "utf-8", "surrogateescape")
        if issubclass(kind, str):                        # (a str subclass: its own methods are not called)
            return str.__str__(path)
        if kind is paths[0] or kind is paths[1]:         # the text pathlib computed when the path was opened
            try:
                text = text_of.__get__(path, kind)
            except AttributeError:
                return None
            return str.__str__(text) if issubclass(type(text), str) else None
        return None

    def shown(self, path, type=type, repr=repr) -> str:
        """A path for a message, read as path_text reads it (repr of an object of the notebook's would run its code)."""
        text = self.path_text(path)
        if text is not None:
            return repr(text)
        return f"a path of type {type.__getattribute__(type(path), '__qualname__')}"

    def a_report(self, path, any_name=False, str=str, type=type, int=int, range=range, OSError=OSError,
                 ValueError=ValueError, parent_and_name=_parent_and_name) -> bool:
        """Does `path` name one of the reports of this launch (any file of its results folder, with `any_name`)?
        The folder is compared by its device and inode, not by a prefix of the path (red-team round 12 rewrote its
        report from a finalizer that ran after the script, through a path that began with //, which Linux reads as
        /), and an existing file by its own, so that a link or symlink to a report is one. A path of a type the
        guard does not read counts as a report. Other files there are not reports: a worker's error records (one
        more only fails the check), and the error file torch's own wrapper writes after a failed script."""
        if self.results is None or path is None or type(path) is int:
            return False                                 # (a descriptor was checked when it was opened)
        text = self.path_text(path)
        if text is None:
            return True
        try:
            full = text if str.startswith(text, "/") else self._getcwd() + "/" + text
            folder, name = parent_and_name(full)         # the OS resolves . and .. and // in what is stat'ed
            if any_name or str.startswith(name, "rank"):
                st = self._stat(folder)
                if (st.st_dev, st.st_ino) == self.results_id:
                    return True
            st = self._stat(full)                        # follows symlinks: is it a report by another name?
        except (OSError, ValueError):
            return False
        found = (st.st_dev, st.st_ino)
        for rank in range(self.world_size):
            try:
                other = self._stat(f"{self.results}rank{rank}.jsonl")
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == found:
                return True
        return False

    def plain(self, value, depth=0, type=type, issubclass=issubclass, bool=bool, int=int, float=float, str=str,
              dict=dict, list=list, tuple=tuple, ValueError=ValueError, TypeError=TypeError):
        """A copy of `value` in plain JSON types, read through the built-in types' own methods: a subclass's
        overridden items() or __repr__ would run the notebook's code inside the hook."""
        if depth > 50:
            raise ValueError("a report nested more than 50 levels deep")
        kind = type(value)
        if value is None or kind is bool:
            return value
        if issubclass(kind, int):
            return int.__index__(value)
        if issubclass(kind, float):
            return float.__float__(value)
        if issubclass(kind, str):
            return str.__str__(value)
        if issubclass(kind, dict):
            return {self.plain(k, depth + 1): self.plain(v, depth + 1) for k, v in dict.items(value)}
        if issubclass(kind, list):
            return [self.plain(v, depth + 1) for v in list.__iter__(value)]
        if issubclass(kind, tuple):
            return [self.plain(v, depth + 1) for v in tuple.__iter__(value)]
        raise TypeError(f"a report holds only dicts, lists, strings, numbers and None, not {type.__getattribute__(kind, '__name__')}")

    def encode(self, value, type=type, bool=bool, str=str, int=int, float=float, dict=dict, list=list,
               quote=json.encoder.encode_basestring_ascii) -> str:
        """JSON for the plain value `plain` made, by built-in functions only (json's encoder is a class whose
        methods the notebook's code could replace)."""
        kind = type(value)
        if value is None:
            return "null"
        if kind is bool:
            return "true" if value else "false"
        if kind is int:
            return int.__repr__(value)
        if kind is float:
            return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(float.__repr__(value), float.__repr__(value))
        if kind is str:
            return quote(value)
        if kind is dict:
            return "{" + ", ".join(quote(k if type(k) is str else self.encode(k)) + ": " + self.encode(v)
                                   for k, v in dict.items(value)) + "}"
        return "[" + ", ".join(self.encode(v) for v in list.__iter__(value)) + "]"

    def write_file(self, path, text, flags, str=str) -> None:
        """`text` (UTF-8) into `path`, with descriptors taken before any of the notebook's code ran."""
        fd = self._os_open(path, flags, 0o600)
        try:
            self._os_write(fd, str.encode(text, "utf-8"))
        finally:
            self._os_close(fd)

    def write_report(self, result, RuntimeError=RuntimeError) -> None:
        if self.report_path is None:
            raise RuntimeError("$WORKBOOK_RESULTS_DIR is not set: run this script through course_utils.distributed.launch")
        self.write_file(self.report_path, self.encode(self.plain(result)) + "\n", self.append_flags)

    # --- the hook ---------------------------------------------------------------------------------------------
    def refuse(self, what: str, where: str, RuntimeError=RuntimeError):
        caller = self._getframe(3)                       # the frame that raised the event
        via = caller.f_code.co_filename if caller is not None else "?"
        through = f", through {via}:{caller.f_lineno}" if via != where else ""
        message = (f"in a worker, the notebook's code may not use {what} (from {where}{through}): it could forge "
                   f"what the worker reports. Compute with the tensors and torch.distributed instead.")
        self.record(message)
        raise RuntimeError(message)

    def record(self, message, OSError=OSError) -> None:
        """Write the refusal where the launcher looks for each rank's errors (its earliest is the root cause): on a
        thread, or caught by the notebook's code, the exception itself may never reach the worker's end."""
        if self.results is None:
            return
        self.refusals += 1
        record = {"rank": self.rank, "local_rank": self.local_rank, "node": self.node, "attempt": self.attempt,
                  "pid": self._getpid(), "time_ns": self._time_ns(), "type": "RuntimeError", "message": message,
                  "dist_error": False, "traceback": ""}
        path = f"{self.results}error-rank{self.rank}-attempt{self.attempt}-guard{self.refusals}.json"
        try:
            self.write_file(path, self.encode(self.plain(record)), self.replace_flags)
        except OSError:
            pass

    def audit(self, event, args, RuntimeError=RuntimeError, THIS_FILE=_THIS_FILE):
        ident = self._get_ident()
        depth = self.busy.get(ident, 0)
        if depth >= 2:                                   # the busy branch's own _getframe below
            return
        if depth == 1:
            # An event while the hook runs: the hook's own calls (its _getframe, its reads) pass; anything else is
            # code the hook ended up calling (red-team round 9: a dict key's __eq__, run by a set difference over a
            # module's keys, edited the report the hook was about to write) and gets no free pass.
            self.busy[ident] = 2                         # (reading a frame's f_code raises an event too)
            try:
                raiser = self._getframe(1)
                where = raiser.f_code.co_filename if raiser is not None else "C code"
            finally:
                self.busy[ident] = 1
            if where == THIS_FILE:
                return
            message = f"{event} inside the worker guard's hook, from {where}: refused"
            self.record(message)                         # (recorded: round 14 caught it to learn where it ran)
            raise RuntimeError(message)
        # No garbage collection while the hook runs: a collection runs gc.callbacks and finalizers, the notebook's
        # code among them (red-team round 14 appended a gc callback and set the threshold to 1, and its callback
        # rebound float inside the hook, after the comparison had passed builtins).
        collecting = self._gc_isenabled()
        if collecting:
            self._gc_disable()
        self.busy[ident] = 1
        try:
            self._audit(event, args)
        finally:
            del self.busy[ident]
            if collecting and not self.gc_off:           # (while grading it stays off: see snapshot)
                self._gc_enable()

    def _audit(self, event, args, str=str, type=type, len=len, int=int, any=any,
               RuntimeError=RuntimeError, CodeType=types.CodeType, WRITES=_WRITES, FRAME=FRAME_EVENTS,
               ANYWHERE=ANYWHERE_EVENTS, BENIGN=BENIGN_GETFRAME, LINK=LINK_EVENTS, parent_and_name=_parent_and_name):
        if event == "open":
            path = args[0] if len(args) else None
            if type(path) is int:
                return                                   # a descriptor: opened already, and checked then
            mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
            writes = ((type(mode) is str and any(c in mode for c in "wax+"))
                      or (mode is None and type(flags) is int and flags & WRITES))
            if not writes:
                return
            if self.a_report(path):                      # (recorded too: a finalizer's error is only printed)
                message = (f"only course_utils.distributed.report writes a worker's reports; {self.shown(path)} was "
                           f"opened for writing from {self._getframe(2).f_code.co_filename}")
                self.record(message)
                raise RuntimeError(message)
            where = self.notebook_frame(self._getframe(2))
            if where is not None:
                self.refuse(f"open({self.shown(path)}) for writing", where)
            return
        if event == "course_utils.distributed.report":
            caller = self._getframe(2)                  # report itself
            caller = caller.f_back if caller is not None else None
            where = self.notebook_frame(caller)
            if where is not None:
                self.refuse("course_utils.distributed.report", where)
            if caller is None or caller.f_code not in self.script_codes:   # the code itself: a file name can be
                raise RuntimeError(f"report() was called from {caller.f_code.co_filename if caller else 'nowhere'}, "
                                   f"not by the worker script {self.script}'s own code: the report is not taken")
            self.no_new_threads()
            changed = self.changed() + self.hidden_changed()
            if changed:
                raise RuntimeError("since the notebook's functions were imported, something rebound "
                                   + ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
                                   + ": this worker's reports are not taken")
            self.write_report(args[0] if args else None)
            return
        if event == "course_utils.worker_guard.returned":    # one of the notebook's functions returned to its caller
            wrapper = self._getframe(2)                  # NotebookFunction.__call__
            if self.notebook_frame(wrapper.f_back if wrapper is not None else None) is not None:
                return                                   # back into the notebook's own code: checked when that returns
            self.no_new_threads()
            self.plain_result(args[0] if args else None)
            changed = self.changed() + self.hidden_changed()
            if changed:
                raise RuntimeError("a function of the notebook's rebound " + ", ".join(changed[:8])
                                   + (" ..." if len(changed) > 8 else "") + " and left it so: this worker stops")
            return
        if event in LINK and len(args) > 1:
            source, target = args[0], args[1]
            if event == "os.symlink":                    # a relative target is read from the link's folder
                text, link = self.path_text(source), self.path_text(target)
                if text is not None and link is not None and not str.startswith(text, "/"):
                    link = link if str.startswith(link, "/") else self._getcwd() + "/" + link
                    source = parent_and_name(link)[0] + "/" + text
            linking = event != "os.rename"               # a link made in, or to, the results folder: refused
            if self.a_report(target, any_name=linking) or (linking and self.a_report(source, any_name=True)):
                message = (f"only course_utils.distributed.report writes a worker's reports; {event} onto "
                           f"{self.shown(target)}")
                self.record(f"{message} (from {self.shown(source)})")
                raise RuntimeError(message)
        if event == "os.truncate" and args and self.a_report(args[0]):
            message = f"only course_utils.distributed.report writes a worker's reports; {event} of {self.shown(args[0])}"
            self.record(message)
            raise RuntimeError(message)
        if event == "exec" and self.grading and self.saved is None and args and type(args[0]) is CodeType:
            if self.notebook_file(args[0].co_filename):  # the notebook's module is about to run: remember the
                self.snapshot()                          # modules as they are before any of its code does
            return
        if event in ANYWHERE:
            where = self.notebook_frame(self._getframe(2))
            if where is not None:
                self.refuse(f"{args[0]} (registering a kernel in PyTorch's dispatcher)"
                            if event == "course_utils.worker_guard.dispatch" and args else event, where)
            return
        if event in FRAME or str.startswith(event, "ctypes."):
            caller = self._getframe(2)
            if caller is not None:
                filename = caller.f_code.co_filename
                if event in ("exec", "compile", "marshal.loads") and str.startswith(filename, "<frozen importlib"):
                    return                               # an import loading, compiling and running its module
                if event == "sys._getframe" and str.endswith(filename, BENIGN) and not self.notebook_file(filename):
                    return
            where = self.notebook_frame(caller)
            if where is None:
                return
            if event in ("exec", "compile") and caller is not None and not self.notebook_code(caller.f_code):
                # a library compiling or evaluating a string while the notebook's code is on the stack (typing's
                # ForwardRef, under torch.optim): allowed, but not under the name of a file the guard trusts, and
                # what runs is the notebook's code from then on
                if event == "compile":
                    name = args[1] if len(args) > 1 else None
                    if type(name) is str and not str.startswith(name, "<") and not self.notebook_file(name):
                        self.refuse(f"compile() under the name {name!r}", where)
                    return
                if args and type(args[0]) is CodeType:
                    self.mark(args[0])
                return
            self.refuse(f"{event} ({args[1]})" if str.startswith(event, "object.") and len(args) > 1 else event, where)


class NotebookFunction:
    """A function of the notebook's module as the worker script sees it: when it returns (or raises) to its caller,
    the guard checks that nothing stays rebound and no thread it started runs on (red-team round 8 rebound
    builtins.float with a function that put float back once the script had called it, before the report)."""
    __slots__ = ("__wrapped__", "__name__", "__qualname__")

    def __init__(self, function):
        self.__wrapped__, self.__name__, self.__qualname__ = function, function.__name__, function.__qualname__

    # sys.audit as a keyword-only default: reading a function's __kwdefaults__ raises an audit event, which the guard
    # refuses to the notebook's code (its __globals__ and __closure__ raise none, so they could not hold it); and
    # replacing NotebookFunction.__call__ is seen when the call that replaced it returns through this one
    def __call__(self, *args, _audit=sys.audit, **kwargs):
        result = None
        try:
            result = self.__wrapped__(*args, **kwargs)
            return result
        finally:
            _audit("course_utils.worker_guard.returned", result)

    def __repr__(self):
        return f"<notebook function {self.__qualname__}>"


class NotebookModuleFinder:
    """First on sys.meta_path in a worker: the module write_module wrote is loaded as usual, then each function it
    defines is wrapped in a NotebookFunction. It holds no reference to the guard."""
    def find_spec(self, name, path=None, target=None):
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or not isinstance(spec.origin, str) or not write_module_marker(spec.origin):
            return spec
        spec.loader = WrappingLoader(spec.loader)
        return spec


class WrappingLoader:
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return None

    def exec_module(self, module, _type=type, _function=types.FunctionType):
        self.loader.exec_module(module)
        namespace = module.__dict__
        for key, value in list(namespace.items()):
            if _type(value) is _function and value.__code__.co_filename == module.__file__:
                namespace[key] = NotebookFunction(value)


def code_objects(code) -> set:
    found = {code}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= code_objects(const)
    return found


def _no_handlers_for_the_notebook(original):
    """signal.signal as the worker sees it: a handler is handed the frame it interrupts (frames' f_back and f_locals
    raise no audit event), so the notebook's code may not install one (red-team round 9 edited the report from a
    timer's handler). The original is a keyword-only default: reading __kwdefaults__ raises an audit event."""
    def signal(signalnum, handler, *, _original=original, _audit=sys.audit):
        _audit("course_utils.worker_guard.signal")
        return _original(signalnum, handler)
    return signal


def _no_kernels_from_the_notebook(torch_c) -> None:
    """Registering a kernel in PyTorch's dispatcher (torch._C._dispatch_library and the methods of the library
    handle it returns, which torch.library uses) replaces an operator for every caller, in C++ where no comparison
    of modules sees it: red-team round 12 registered a Python kernel for aten::_local_scalar_dense, which
    float(tensor) runs, and the script's float() gave the number it chose. Each entry point raises an audit event
    first, which the guard refuses while the notebook's code is anywhere on the stack. The originals are keyword-only
    defaults (reading __kwdefaults__ raises an event the guard refuses to the notebook's code)."""
    def wrapped(original, what):
        def registration(*args, _original=original, _what=what, _audit=sys.audit, **kwargs):
            _audit("course_utils.worker_guard.dispatch", _what)
            return _original(*args, **kwargs)
        return registration

    torch_c._dispatch_library = wrapped(torch_c._dispatch_library, "torch._C._dispatch_library")
    module = getattr(torch_c, "_DispatchModule", None)
    for method in ("impl", "impl_t_t", "impl_with_aoti_compile", "def_", "def_legacy", "def_name_t_t",
                   "def_schema_t_t", "define", "fallback", "fallback_fallthrough",
                   "register_ad_inplace_or_view_fallback", "reset"):
        original = vars(module).get(method) if module is not None else None
        if original is not None:
            setattr(module, method, wrapped(original, f"the dispatcher's {method}"))


def run_script(script: str) -> None:
    """Run the worker script as `python script.py` would, under the guard, in a namespace of its own. The guard is
    reachable only as the audit hook (no frame's locals hold it)."""
    script = os.path.abspath(script)
    with io.open_code(script) as f:
        source = f.read()
    code = compile(source, script, "exec", dont_inherit=True)
    namespace = {"__name__": "__main__", "__file__": script, "__builtins__": builtins, "__doc__": None,
                 "__package__": None, "__spec__": None, "__loader__": None, "__cached__": None}
    import _signal
    import signal as signal_module
    signal_module.signal = _no_handlers_for_the_notebook(signal_module.signal)
    _signal.signal = _no_handlers_for_the_notebook(_signal.signal)
    sys.meta_path.insert(0, NotebookModuleFinder())
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is not None:
        import torch                                     # (every worker script imports it: no time is lost)
    if "torch" in sys.modules:
        _no_kernels_from_the_notebook(sys.modules["torch"]._C)
    sys.addaudithook(WorkerGuard(script, frozenset(code_objects(code))).audit)
    from course_utils import distributed
    distributed._GUARDED = True
    exec(code, namespace)
