"""Code the grader runs inside a submission's kernel, before any submitted code and again before every check.

`install(modules)` runs first: it snapshots what a check depends on (the builtins, the check helpers, the modules
the notebook imports, sys hooks, the IPython shell's transformers, event callbacks, exception handlers and
methods, the kernel's request handlers) and returns `restore`. The grader calls `restore()` before each check
cell, so whatever a submission rebound, patched or installed in the meantime (a fake `check_that`, a patched
`torch.allclose`, an `AssertionError` that is not one, an input transformer that rewrites the checks, a custom
exception handler, a trace function) is undone before the check runs. `course_utils.checks` is re-executed from
its read-only source, so even its module-level state is new.

This is defence in depth, not the only line: the grader also builds the graded run from the instructor's cells
(only exercise cells come from the submission), judges a check by the kernel's reply and a fresh token the check
must print on completion, and runs the kernel in a sandbox.
"""


def install(module_names):
    import builtins
    import ctypes
    import importlib
    import sys
    import threading

    try:                                     # other processes of the same user cannot read or trace this one
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)   # PR_SET_DUMPABLE = 0
    except Exception:
        pass
    shell = get_ipython()                    # noqa: F821 (the kernel's shell)
    kernel = getattr(shell, "kernel", None)
    modules = {}
    for name in ["builtins", "sys", "math", "course_utils", "course_utils.checks"] + list(module_names):
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
    saved_modules = {name: (m, dict(vars(m))) for name, m in modules.items()}
    classes = []
    for owner in (type(shell), type(kernel)) if kernel is not None else (type(shell),):
        classes += [c for c in owner.__mro__ if c is not object]
    for name in ("torch", "numpy"):
        m = modules.get(name)
        if m is not None and name == "torch":
            classes += [m.Tensor, m.nn.Module]
    saved_classes = {c: dict(vars(c)) for c in classes}
    saved_sys = {k: getattr(sys, k) for k in ("excepthook", "displayhook", "breakpointhook", "stdout", "stderr",
                                               "unraisablehook", "meta_path", "path_hooks") if hasattr(sys, k)}
    saved_sys["meta_path"], saved_sys["path_hooks"] = list(sys.meta_path), list(sys.path_hooks)
    saved_sys_modules = {name: m for name, (m, _) in saved_modules.items()}
    saved_lists = {a: list(getattr(shell, a)) for a in ("input_transformers_cleanup", "input_transformers_post",
                                                        "ast_transformers") if hasattr(shell, a)}
    saved_events = {e: list(cbs) for e, cbs in shell.events.callbacks.items()}
    saved_instance = {id(obj): (obj, set(vars(obj))) for obj in (shell, kernel) if obj is not None}
    saved_custom = (shell.custom_exceptions, shell.CustomTB)

    def restore():
        sys.settrace(None)
        sys.setprofile(None)
        threading.settrace(None)
        threading.setprofile(None)
        for name, (module, snapshot) in saved_modules.items():
            vars(module).update(snapshot)
            sys.modules[name] = saved_sys_modules[name]
        for cls, snapshot in saved_classes.items():
            for key in [k for k in list(vars(cls)) if k not in snapshot]:
                try:
                    delattr(cls, key)
                except (AttributeError, TypeError):
                    pass
            for key, value in snapshot.items():
                if vars(cls).get(key) is not value and key not in ("__dict__", "__weakref__", "__doc__"):
                    try:
                        setattr(cls, key, value)
                    except (AttributeError, TypeError):
                        pass
        for key, value in saved_sys.items():
            setattr(sys, key, value if not isinstance(value, list) else list(value))
        for attr, items in saved_lists.items():
            getattr(shell, attr)[:] = items
        for event, callbacks in saved_events.items():
            shell.events.callbacks[event][:] = callbacks
        for event in list(shell.events.callbacks):
            if event not in saved_events:
                shell.events.callbacks[event][:] = []
        for obj, names in saved_instance.values():   # methods replaced on the shell or kernel instance
            for key in [k for k in vars(obj) if k not in names]:
                try:
                    delattr(obj, key)
                except AttributeError:
                    pass
        shell.custom_exceptions, shell.CustomTB = saved_custom
        user = shell.user_ns
        if "course_utils.checks" in saved_sys_modules:
            checks = importlib.reload(saved_sys_modules["course_utils.checks"])   # from its read-only source
            for name in ("check_that", "assert_close"):
                vars(saved_sys_modules["course_utils"])[name] = getattr(checks, name)
                if name in user:
                    user[name] = getattr(checks, name)
        for alias, value in list(user.items()):     # module aliases (np, torch, cu, F...) back to the real modules
            if alias.startswith("_"):
                continue
            real = user_modules.get(alias)
            if real is not None and value is not real:
                user[alias] = real

    user_modules = {}

    def remember(names):
        """After an instructor cell: `names` are the modules it imported (the grader read them from its source)."""
        import types

        for alias in names:
            value = shell.user_ns.get(alias)
            if isinstance(value, types.ModuleType):
                user_modules[alias] = value

    namespace = {}

    def snapshot():
        """Before an exercise cell: what every name is bound to."""
        namespace.clear()
        namespace.update(shell.user_ns)

    def restore_names(allowed):
        """After an exercise cell: every name that existed before it, except the ones the exercise defines,
        is bound again to what it was (new names stay: the submission's own helpers)."""
        user = shell.user_ns
        for key, value in namespace.items():
            if key not in allowed and not key.startswith("_") and user.get(key, namespace) is not value:
                user[key] = value

    import hashlib
    import hmac
    import secrets

    secret = secrets.token_hex(16).encode()

    def prove(nonce):
        """restore(), then print a keyed hash of the grader's fresh nonce: code that only echoes what the grader
        sent (an input transformer that rewrites every cell, say) cannot produce it without running this."""
        restore()
        print(hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest())

    print("guard ready", secret.decode())
    return {"prove": prove, "remember": remember, "snapshot": snapshot, "restore_names": restore_names}
