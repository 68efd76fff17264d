"""Code the grader runs inside a submission's kernel, before any submitted code and again around every exercise and
check.

`install(modules)` runs first (with globals of its own, not the notebook's): it snapshots what a check depends on
(the builtins, the check helpers, the modules the notebook imports, sys hooks, the IPython shell's transformers,
event callbacks, exception handlers and methods, the kernel's request handlers) and returns the grader's entry
points. Each takes the grader's fresh nonce and, once done, prints a keyed hash of it: code that merely echoes
what the grader sent cannot produce that. `prove` restores everything before a check, so whatever a submission
rebound, patched or installed (a fake `check_that`, a patched `numpy.all`, an `AssertionError` that is not one, an
input transformer that rewrites the checks, a custom exception handler, a trace function, a name that shadows a
builtin) is undone before the check runs; `course_utils.checks` is re-executed from its read-only source.
`snapshot` and `restore_names` bracket an exercise cell: the names the notebook had bound before it, other than the
ones the exercise defines, are bound back after it.

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
    import secrets
    import sys
    import threading
    import types

    # the builtins the guard calls, as they are now (before any submitted code)
    _vars, _setattr, _getattr, _delattr, _hasattr = vars, setattr, getattr, delattr, hasattr
    _dict, _list, _set, _isinstance, _print = dict, list, set, isinstance, print
    _ModuleType, _reload, _new = types.ModuleType, importlib.reload, hmac.new
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
    saved_modules = {name: (m, _dict(_vars(m))) for name, m in modules.items()}
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

    def restore():
        _settrace(None)
        _setprofile(None)
        _tsettrace(None)
        _tsetprofile(None)
        for name, (module, snapshot) in saved_modules.items():
            _vars(module).update(snapshot)
            sys.modules[name] = module
        for cls, snapshot in saved_classes.items():
            for key in [k for k in _list(_vars(cls)) if k not in snapshot]:
                try:
                    _delattr(cls, key)
                except (AttributeError, TypeError):
                    pass
            for key, value in snapshot.items():
                if _vars(cls).get(key) is not value and key not in ("__dict__", "__weakref__", "__doc__"):
                    try:
                        _setattr(cls, key, value)
                    except (AttributeError, TypeError):
                        pass
        for key, value in saved_sys.items():
            _setattr(sys, key, value)
        sys.meta_path[:] = saved_meta_path
        sys.path_hooks[:] = saved_path_hooks
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
        if "course_utils.checks" in modules:
            checks = _reload(modules["course_utils.checks"])      # from its read-only source
            for name in ("check_that", "assert_close", "check_equal"):
                _vars(modules["course_utils"])[name] = _getattr(checks, name)
                if name in user:
                    user[name] = _getattr(checks, name)
        for alias, real in user_modules.items():      # module aliases (np, torch, cu, F...) back to the real modules
            if user.get(alias) is not real:
                user[alias] = real
        for name in [k for k in user if k in builtin_names and not k.startswith("_")]:
            if name in instructor_shadows:            # a name that shadows a builtin the checks call (len, all...)
                user[name] = instructor_shadows[name]
            else:
                del user[name]

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

    def snapshot():
        """Before an exercise cell: what every name is bound to."""
        namespace.clear()
        namespace.update(shell.user_ns)

    def restore_names(allowed):
        """After an exercise cell: every name that existed before it, except the ones the exercise defines, is
        bound again to what it was; new names stay (the submission's own helpers), unless they shadow a builtin."""
        user = shell.user_ns
        for key, value in namespace.items():
            if key not in allowed and not key.startswith("_") and user.get(key, namespace) is not value:
                user[key] = value
        for key in [k for k in user if k not in namespace and k in builtin_names and k not in allowed]:
            del user[key]

    def proved(action):
        def run(nonce, *args):
            action(*args)
            _print(_new(secret, nonce.encode(), _sha256).hexdigest())
        return run

    _print("guard ready", secret.decode())
    return {"prove": proved(restore), "remember": proved(remember), "snapshot": proved(snapshot),
            "restore_names": proved(restore_names)}
