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
- what outlives or escapes the call: writing, renaming or removing files, changing the environment, starting
  processes, sending signals. (Starting a thread raises no audit event before Python 3.13: a thread the notebook's
  code starts is not refused, but it runs under the same rules and cannot report.)

And `course_utils.distributed.report` raises an audit event that the hook answers, writing the report itself (to
the file for the rank and results folder it read before the script ran, encoded by built-in functions only): a
report is taken only when the worker script's own code calls it, with no notebook code on the stack, and when no
module's functions, classes or submodules, nor any class's methods, were rebound since the notebook's module was
first imported (a replaced `common.flat_params`, `json.JSONEncoder.encode = ...`: assigning a class attribute raises
no audit event, so it is found by comparison; a library's own wrapper round a method, as torch.optim puts round
`step`, is recognised). Any other write to a report file is refused. The module comparison runs
while grading only (`WORKBOOK_GRADING=1`, set by tools/kernel_guard.py): it costs about 0.1 s per worker. A refused
report raises in the worker, which fails its launch, so the check that launched it fails.

The rest of a check's trust comes from the grader (tools/kernel_guard.py checks, at each launch, that the files
beside the script are the ones the grader's cells wrote). Red-team round 6 earned 6 of 7 marks in notebook 05 by
replacing a worker's `report`; that and rewriting the worker script are now cases in
tests/test_hostile_submissions.py (the workers toy).
"""
from __future__ import annotations

import _thread
import builtins
import io
import json
import os
import sys
import sysconfig
import types

MARK = '"""Written by course_utils.distributed.write_module'
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# refused when the notebook's code is among the three frames nearest the event (a library it calls deep down, such
# as logging asking for its caller's frame, is not refused)
NEAR_EVENTS = frozenset({"sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile", "gc.get_objects",
                         "gc.get_referrers", "gc.get_referents", "code.__new__", "function.__new__", "sys.addaudithook",
                         "marshal.loads", "marshal.load", "object.__getattr__", "object.__setattr__",
                         "object.__delattr__", "exec", "compile", "cpython.PyInterpreterState_Clear"})
# refused when the notebook's code is anywhere on the stack
ANYWHERE_EVENTS = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
                             "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
                             "_thread.start_new_thread", "os.rename", "os.remove", "os.rmdir", "os.mkdir",
                             "os.symlink", "os.link", "os.truncate", "os.chmod", "os.chown", "os.utime", "os.putenv",
                             "os.unsetenv", "os.chdir", "os.chroot", "shutil.copyfile", "shutil.copymode",
                             "shutil.copystat", "shutil.copytree", "shutil.move", "shutil.rmtree", "shutil.chown",
                             "os.removexattr", "os.setxattr", "socket.bind", "resource.setrlimit", "sys.setrecursionlimit",
                             "course_utils.distributed.report"})


class WorkerGuard:
    def __init__(self, script: str):
        self.script = os.path.abspath(script)
        self.folder = os.path.dirname(self.script)
        roots = {os.path.dirname(os.path.abspath(__file__))}          # course_utils itself
        for key in ("stdlib", "platstdlib", "purelib", "platlib"):
            path = sysconfig.get_paths().get(key)
            if path:
                roots.update({os.path.realpath(path), os.path.abspath(path)})
        self.library = tuple(r.rstrip("/") + "/" for r in roots)
        self.known: dict[str, bool] = {}                 # file name -> the notebook's code?
        self.reading = False
        self.saved: dict | None = None                   # the modules when the notebook's code was first imported
        self.classes: dict = {}                          # and every class they name
        # Only while grading (tools/kernel_guard.py sets this, and refuses a launch whose environment the submission
        # changed): taking and comparing the snapshot costs about 0.1 s per worker and 20 ms per report here.
        self.grading = os.environ.get("WORKBOOK_GRADING") == "1"
        # Everything the hook calls is captured now, before any of the notebook's code runs: a replaced builtin or
        # os.path function would otherwise run the notebook's code inside the hook, where nothing is checked.
        self._getframe, self._open, self._isinstance = sys._getframe, io.open, isinstance
        self._len, self._any, self._abspath, self._normpath = len, any, os.path.abspath, os.path.normpath
        self._dirname, self._basename, self._modules, self._list = os.path.dirname, os.path.basename, sys.modules, list
        self._module_type, self._type, self._vars = types.ModuleType, type, vars
        self.builtin_names = frozenset(vars(builtins))
        folder = os.environ.get("WORKBOOK_RESULTS_DIR")
        self.results = os.path.abspath(folder) + "/" if folder else None
        self.report_path = (f"{self.results}rank{int(os.environ.get('RANK', '0'))}.jsonl" if self.results else None)
        self._os_open, self._os_write, self._os_close = os.open, os.write, os.close
        self.busy: set[int] = set()
        self._get_ident = _thread.get_ident

    # Every method below binds the builtins and modules it uses as default arguments, taken when this module was
    # imported (before any of the notebook's code ran): a builtin or a module attribute the notebook's code replaced
    # would otherwise run that code inside the hook, where nothing is checked.

    # --- whose code is it -------------------------------------------------------------------------------------
    def notebook_file(self, filename, str=str, type=type, MARK=MARK.encode(), n=len(MARK)) -> bool:
        if type(filename) is not str:
            return True
        known = dict.get(self.known, filename)
        if known is not None:
            return known
        if str.startswith(filename, "<"):               # frozen importlib, or code a library compiled from a string
            known = False
        else:
            path = self._normpath(filename)
            if str.startswith(path, self.library):
                known = False
            elif self._dirname(path) == self.folder:   # the script and the grader's modules beside it, not the
                self.reading = True                      # module write_module wrote with the notebook's functions
                try:
                    with self._open(path, "rb") as f:
                        known = f.read(n) == MARK
                except OSError:
                    known = True
                finally:
                    self.reading = False
            else:
                known = True
        self.known[filename] = known
        return known

    def notebook_frame(self, frame, depth=None):
        """The file of the nearest frame of the notebook's code, from `frame` down (`depth` frames at most)."""
        n = 0
        while frame is not None and (depth is None or n < depth):
            if self.notebook_file(frame.f_code.co_filename):
                return frame.f_code.co_filename
            frame, n = frame.f_back, n + 1
        return None

    # --- what the modules were --------------------------------------------------------------------------------
    def snapshot(self, dict=dict, list=list, frozenset=frozenset, vars=vars, issubclass=issubclass, id=id, type=type,
                 ModuleType=types.ModuleType) -> None:
        saved = {}
        for name, module in list(dict.items(self._modules)):
            if issubclass(type(module), ModuleType):
                try:
                    namespace = vars(module)
                except TypeError:
                    continue
                saved[name] = (module, frozenset(namespace), {k: v for k, v in list(dict.items(namespace)) if self.watched(v)})
        classes = {}                                     # every class a module names: a class attribute set raises
        for module, _, values in dict.values(saved):     # no audit event (torch.Tensor.tolist = ...)
            for value in dict.values(values):
                if issubclass(type(value), type) and id(value) not in classes:
                    namespace = type.__dict__["__dict__"].__get__(value)
                    classes[id(value)] = (value, frozenset(namespace),
                                          {k: v for k, v in list(namespace.items()) if self.watched(v)})
        self.saved, self.classes = saved, classes

    def watched(self, value, issubclass=issubclass, type=type, kinds=(types.FunctionType, types.BuiltinFunctionType,
                types.MethodType, type, types.ModuleType, types.MethodWrapperType, types.WrapperDescriptorType,
                types.MethodDescriptorType, types.ClassMethodDescriptorType, types.GetSetDescriptorType,
                types.MemberDescriptorType, property, staticmethod, classmethod)) -> bool:
        return issubclass(type(value), kinds)           # (isinstance would ask the value for its __class__)

    def changed(self, dict=dict, vars=vars, str=str, len=len, any=any, type=type, sys_module=sys) -> list[str]:
        found = []
        for name, (module, keys, values) in dict.items(self.saved or {}):
            current = dict.get(self._modules, name)
            if current is not module:
                if current is not None:
                    found.append(f"sys.modules[{name!r}]")
                continue
            namespace = vars(module)
            if module is sys_module:                     # sys's hooks and streams change as a matter of course
                values = {k: v for k, v in dict.items(values) if k in ("audit", "addaudithook", "modules")}
            for key, value in dict.items(values):
                if dict.get(namespace, key, values) is not value and not self.wraps(dict.get(namespace, key, values), value):
                    found.append(f"{name}.{key}")
            for key in dict.keys(namespace) - keys:
                if key in self.builtin_names and not str.startswith(key, "__"):
                    found.append(f"{name}.{key} (shadows the builtin)")
            if len(found) > 20:
                return found
        for cls, keys, values in dict.values(self.classes):
            namespace = type.__dict__["__dict__"].__get__(cls)
            for key, value in dict.items(values):
                if namespace.get(key, values) is not value and not self.wraps(namespace.get(key, values), value):
                    found.append(f"{type.__getattribute__(cls, '__qualname__')}.{key}")
            for key in namespace.keys() - keys:          # a new attribute that hides a base class's
                if any(key in type.__dict__["__dict__"].__get__(base) for base in type.__dict__["__mro__"].__get__(cls)[1:]):
                    found.append(f"{type.__getattribute__(cls, '__qualname__')}.{key} (hides the base class's)")
            if len(found) > 20:
                break
        return found

    def wraps(self, new, old, type=type, dict=dict, FunctionType=types.FunctionType) -> bool:
        """Is `new` a library's wrapper round `old` (functools.wraps, followed down)? torch.optim wraps an
        optimizer class's step with its profiling hook when the first one is made."""
        for _ in range(8):
            if type(new) is not FunctionType or self.notebook_file(new.__code__.co_filename):
                return False
            new = dict.get(new.__dict__, "__wrapped__")
            if new is old:
                return True
        return False

    # --- the reports ------------------------------------------------------------------------------------------
    def a_report(self, path, str=str, type=type) -> bool:
        """Is `path` one of the reports in this launch's results folder (not a worker's error record)?"""
        if self.results is None or type(path) is not str:
            return False
        path = self._abspath(path)
        return str.startswith(path, self.results) and str.startswith(self._basename(path), "rank")

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

    def encode(self, value, type=type, str=str, int=int, float=float, dict=dict, list=list,
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

    def write_report(self, result, str=str, RuntimeError=RuntimeError,
                     flags=os.O_WRONLY | os.O_APPEND | os.O_CREAT) -> None:
        if self.report_path is None:
            raise RuntimeError("$WORKBOOK_RESULTS_DIR is not set: run this script through course_utils.distributed.launch")
        data = str.encode(self.encode(self.plain(result)) + "\n", "utf-8")
        fd = self._os_open(self.report_path, flags, 0o600)
        try:
            self._os_write(fd, data)
        finally:
            self._os_close(fd)

    # --- the hook ---------------------------------------------------------------------------------------------
    def refuse(self, what: str, where: str, RuntimeError=RuntimeError):
        raise RuntimeError(f"in a worker, the notebook's code may not use {what} (from {where}): it could forge what "
                           f"the worker reports. Compute with the tensors and torch.distributed instead.")

    def audit(self, event, args, set_add=set.add, set_discard=set.discard):
        ident = self._get_ident()
        if self.reading or ident in self.busy:          # the hook's own calls raise events too (its _getframe)
            return
        set_add(self.busy, ident)
        try:
            self._audit(event, args)
        finally:
            set_discard(self.busy, ident)

    def _audit(self, event, args, str=str, type=type, len=len, int=int, isinstance=isinstance, any=any,
               RuntimeError=RuntimeError, CodeType=types.CodeType, WRITES=_WRITES, NEAR=NEAR_EVENTS,
               ANYWHERE=ANYWHERE_EVENTS):
        if event == "open":
            if len(args) < 2 or type(args[0]) is not str:
                return
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writes = ((type(mode) is str and any(c in mode for c in "wax+"))
                      or (mode is None and type(flags) is int and flags & WRITES))
            if writes and self.a_report(args[0]):
                raise RuntimeError(f"only course_utils.distributed.report writes a worker's reports; {args[0]} was "
                                   f"opened for writing from {self._getframe(2).f_code.co_filename}")
            if writes:
                where = self.notebook_frame(self._getframe(2))
                if where is not None:
                    self.refuse(f"open({args[0]!r}) for writing", where)
            return
        if event == "course_utils.distributed.report":
            caller = self._getframe(2)                  # report itself
            caller = caller.f_back if caller is not None else None
            where = self.notebook_frame(caller)
            if where is not None:
                self.refuse("course_utils.distributed.report", where)
            if caller is None or self._abspath(caller.f_code.co_filename) != self.script:
                raise RuntimeError(f"report() was called from {caller.f_code.co_filename if caller else 'nowhere'}, "
                                   f"not by the worker script {self.script}: the report is not taken")
            changed = self.changed()
            if changed:
                raise RuntimeError("since the notebook's functions were imported, something rebound "
                                   + ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
                                   + ": this worker's reports are not taken")
            self.write_report(args[0] if args else None)
            return
        if event in ("os.rename", "os.link", "os.symlink") and len(args) > 1 and self.a_report(args[1]):
            raise RuntimeError(f"only course_utils.distributed.report writes a worker's reports; {event} onto {args[1]}")
        if event == "exec" and self.grading and self.saved is None and args and type(args[0]) is CodeType:
            if self.notebook_file(args[0].co_filename):  # the notebook's module is about to run: remember the
                self.snapshot()                          # modules as they are before any of its code does
            return
        if event in ANYWHERE:
            where = self.notebook_frame(self._getframe(2))
            if where is not None:
                self.refuse(event, where)
            return
        if event in NEAR or str.startswith(event, "ctypes."):
            caller = self._getframe(2)
            if event in ("exec", "compile") and caller is not None and str.startswith(caller.f_code.co_filename, "<frozen importlib"):
                return                                   # an import compiling and running its module
            where = self.notebook_frame(caller, depth=3)
            if where is not None:
                self.refuse(event, where)


def run_script(script: str) -> None:
    """Run the worker script as `python script.py` would, under the guard, in a namespace of its own."""
    guard = WorkerGuard(script)
    with io.open_code(guard.script) as f:
        source = f.read()
    code = compile(source, guard.script, "exec", dont_inherit=True)
    namespace = {"__name__": "__main__", "__file__": guard.script, "__builtins__": builtins, "__doc__": None,
                 "__package__": None, "__spec__": None, "__loader__": None, "__cached__": None}
    sys.addaudithook(guard.audit)
    from course_utils import distributed
    distributed._GUARDED = True
    exec(code, namespace)
