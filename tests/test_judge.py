"""The wire of a notebook judged apart (tools.judge_wire), in one process: both ends over a socket pair, with the
grader's relay reduced to passing the frames; and what the judge reads from the submission's side, when that side
sends what it likes."""
import functools
import random
import re
import socket
import struct
import threading

import numpy as np
import pytest
import torch

from course_utils.gpt import GPTConfig
from tools import judge_wire as W


class Pair:
    """The judge's Client and the submission's side, `namespace` holding the submission's functions."""

    def __init__(self, namespace, forge=None, judge_namespace=None):
        self.judge_end, self.relay_end = socket.socketpair()
        self.namespace, self.forge, self.sizes = namespace, forge, []
        W.SUBMISSION_CACHE.entries.clear()             # (both ends share this process's module)
        W.SUBMISSION_CACHE.total = 0
        W.SUBMISSION_OBJECTS.__init__()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.client = W.Client("unused", namespace=judge_namespace)
        self.client.sock = self.judge_end

    def _serve(self):
        while True:
            try:
                body = W.recv_body(self.relay_end, 1 << 30)
            except (EOFError, OSError):                 # closed at the test's end
                return
            prefix, call = body[:8], body[8:]
            self.sizes.append(len(call))
            header, buffers = W.parse_body(call)
            if self.forge is not None:                  # the submission's side answering as it likes
                try:
                    reply = self.forge(header, buffers)
                except Exception as err:                # noqa: BLE001 (a broken forge fails its test, not hangs it)
                    reply = W.pack_body({"ok": False, "type": "RuntimeError", "message": f"the forge raised {err!r}"})
            else:
                try:
                    if header.get("op") == "backward":
                        reply = W.pack_body(*W.handle_backward(header, buffers))
                    else:
                        reply = W.pack_body(*W.handle(header, buffers, self.namespace))
                except Exception as err:                # noqa: BLE001
                    reply = W.pack_body({"ok": False, "type": type(err).__name__, "message": str(err), "traceback": ""})
            W.send_body(self.relay_end, reply, prefix)

    def proxy(self, name):
        return self.client.proxy(name)

    def close(self):
        self.judge_end.close()
        self.relay_end.close()


@pytest.fixture
def pair():
    made = []

    def make(namespace, forge=None, judge_namespace=None):
        made.append(Pair(namespace, forge, judge_namespace))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_values_cross_as_themselves(pair):
    p = pair({"echo": lambda *a, **k: (a, k)})
    t = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    values = [None, True, 7, -(10 ** 30), 1.5, float("nan"), -0.0, 2 + 3j, "text", b"\x00\xff", (1, (2, 3)), [1, [2]],
              {"a": 1, 3: [4]}, {1, "b", (2, 3)}, frozenset({0.5, None}), slice(1, 9, 2), range(2, 10, 3), t, t.T, t[1:, 2:], t.to(torch.bfloat16), torch.tensor(True),
              torch.zeros(0, 3), np.arange(6, dtype=np.int16).reshape(2, 3), np.asfortranarray(np.ones((2, 3))),
              np.float32(2.5), np.int64(-4), np.dtype("float32"), torch.float16, torch.device("cpu"),
              GPTConfig(vocab_size=11, n_layer=2)]
    (args, kwargs) = p.proxy("echo")(*values, key=t)
    assert len(args) == len(values) and torch.equal(kwargs["key"], t)
    for sent, got in zip(values, args):
        assert type(got) is type(sent), (sent, got)
        if isinstance(sent, torch.Tensor):
            assert got.dtype == sent.dtype and got.shape == sent.shape and torch.equal(got, sent)
            assert got.stride() == sent.stride(), "a transposed view arrives with its strides (not made contiguous)"
            assert got.storage_offset() == sent.storage_offset(), "a view that starts further into its storage too"
        elif isinstance(sent, np.ndarray):
            assert got.dtype == sent.dtype and np.array_equal(got, sent) and got.flags.f_contiguous == sent.flags.f_contiguous
        elif isinstance(sent, float) and sent != sent:
            assert got != got
        else:
            assert got == sent and repr(got) == repr(sent)


def test_what_the_function_changes_in_place_comes_back_to_the_caller_s_objects(pair):
    def step(p, buf, grads, state, gen, seen):
        buf.mul_(0.5).add_(grads[0])
        p.sub_(buf)
        grads.append(torch.ones(2))
        state["count"] = state.get("count", 0) + 1
        seen.add("step")
        state["noise"] = torch.rand(2, generator=gen)
        return p                                       # the caller's own tensor comes back as itself

    p = pair({"step": step})
    w, buf, grads, state = torch.zeros(2), torch.ones(2), [torch.full((2,), 2.0)], {}
    gen, twin = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    seen = {"start"}
    out = p.proxy("step")(w, buf, grads, state, gen, seen)
    assert out is w and torch.equal(w, torch.full((2,), -2.5)) and torch.equal(buf, torch.full((2,), 2.5))
    assert len(grads) == 2 and torch.equal(grads[1], torch.ones(2)) and state["count"] == 1
    assert seen == {"start", "step"}, "a set handed in is changed in place, as a list or dict is"
    assert torch.equal(state["noise"], torch.rand(2, generator=twin)), "the noise is the generator's own draw"
    assert torch.equal(gen.get_state(), twin.get_state()), "the caller's generator moved on by what the function drew"
    p.proxy("step")(w, buf, grads, state, gen, seen)
    assert state["count"] == 2 and len(grads) == 3


def test_a_function_that_draws_from_a_global_generator_moves_the_judge_s_and_only_by_a_draw_of_its_own(pair):
    p = pair({"draws": lambda: torch.rand(1).item(), "pure": lambda x: 2 * x, "np": lambda: np.random.random(),
              "py": lambda: random.random()})
    for name, expected in (("np", ["numpy"]), ("py", ["random"]), ("draws", ["torch"]), ("pure", [])):
        header, buffers, _ = W.encode_message({"op": "call", "name": name}, {"args": (3,) if name == "pure" else (),
                                                                            "kwargs": {}})
        reply, _ = W.handle(header, buffers, p.namespace)
        assert reply["drew"] == expected, f"{name} drew from {reply['drew']}, not {expected}"
    torch.manual_seed(0)
    before = torch.get_rng_state()
    p.proxy("pure")(3)
    assert torch.equal(before, torch.get_rng_state()), "a function that draws nothing leaves the state alone"
    p.proxy("draws")()                                 # in this test both sides share one process: two draws
    after = torch.get_rng_state()
    torch.manual_seed(0)
    torch.rand(1)
    assert not torch.equal(after, torch.get_rng_state()), "one draw is not enough: the judge drew one of its own"
    torch.rand(1)
    assert torch.equal(after, torch.get_rng_state())
    state = random.getstate()
    W.draw_from(["random"])
    assert random.getstate() != state


def test_a_call_starts_from_the_judge_s_global_random_states():
    torch.manual_seed(0)
    judge_state, expected = torch.get_rng_state(), torch.rand(2)
    np.random.seed(1)
    np_state, np_expected = np.random.get_state(), np.random.random(2)
    torch.manual_seed(123)                             # the submission's kernel's own states differ
    np.random.seed(456)
    header, buffers, _ = W.encode_message({"op": "call", "name": "draw"}, {
        "args": (), "kwargs": {}, "rng": {"torch": judge_state, "numpy": tuple(np_state)}})
    reply, out = W.handle(header, buffers, {"draw": lambda: (torch.rand(2), np.random.random(2))})
    got = W.Decoder(out).decode(reply["result"])
    assert torch.equal(got[0], expected) and np.array_equal(got[1], np_expected), (got, expected, np_expected)
    assert reply["drew"] == ["numpy", "torch"]


def test_the_submission_s_exceptions_are_raised_in_the_judge_as_python_s_own_or_as_a_submission_error(pair):
    class Sneaky(Exception):
        pass

    def fails(kind):
        raise {"value": ValueError("bad shape"), "own": Sneaky("mine"), "stop": StopIteration("x")}[kind]

    p = pair({"fails": fails})
    with pytest.raises(ValueError, match="bad shape"):
        p.proxy("fails")("value")
    with pytest.raises(W.SubmissionError, match="Sneaky: mine"):
        p.proxy("fails")("own")
    with pytest.raises(W.SubmissionError, match="StopIteration"):   # never a StopIteration that ends a check's loop
        p.proxy("fails")("stop")
    with pytest.raises(NameError, match="not defined in the submission's kernel"):
        p.proxy("missing")()


def test_an_object_of_the_submission_s_own_class_cannot_come_back(pair):
    class Anything:
        def __eq__(self, other):
            return True

    p = pair({"f": lambda x: Anything()})
    with pytest.raises(W.SubmissionError, match="WireError: a value of type .*Anything, which cannot cross"):
        p.proxy("f")(1)


def _reply(result_tree, buffers=(), **extra):
    return lambda header, bufs: W.pack_body({"ok": True, "result": result_tree, "updates": [], **extra}, list(buffers))


@pytest.mark.parametrize("tree, buffers, message", [
    (["A", 0, "|O", [1], "C", 0], [b"\x00" * 8], "dtype"),                                   # an object array
    (["A", 0, "<f8", [3], "C", 0], [b"\x00" * 8], "with 8 bytes"),                           # fewer bytes than shape
    (["T", 0, "float32", [2, 2], [1, 1 << 40, 0], False, 0], [b"\x00" * 16], "stride"),        # a stride far out
    (["T", 0, "float32", [2, 2], [1, 2], False, 0], [b"\x00" * 16], "stride"),                  # no storage offset
    (["T", 0, "float32", [-1], None, False, 0], [b""], "bad shape"),
    (["T", 0, "int64", [1], None, True, 0], [b"\x00" * 8], "requires grad"),
    (["O", "os.system", []], [], "cannot read"),                                              # a class not named
    (["O", "course_utils.gpt.GPTConfig", [["__class__", ["n"]]]], [], "does not have"),
    (["J", 99], [], "never sent"),
    (["R", 0], [], "came before nothing"),
    (["i", "9" * 5000], [], "cannot read"),
    (["l", 0, [["l", 0, []]]], [], "given twice"),
    (["S", 0, [["l", 1, []]]], [], "unhashable"),                                             # a set of lists
    (functools.reduce(lambda inner, n: ["l", n, [inner, ["R", n - 1]]], range(1, 40), ["l", 0, [["n"]]]), [],
     "too many parts"),                                           # each list twice the one before: 2**40 to walk
    (["zz"], [], "cannot read"),
    ((["t", [["t", [["t", []]]]]]), [], None),                                                # fine: a tuple
])
def test_what_the_submission_s_side_sends_is_read_as_untrusted(pair, tree, buffers, message):
    p = pair({}, forge=_reply(tree, buffers))
    if message is None:
        assert p.proxy("f")() == (((),),)
        return
    with pytest.raises(W.WireError, match=message):
        p.proxy("f")()


def test_nesting_and_updates_the_judge_never_sent_are_refused(pair):
    deep = ["n"]
    for _ in range(W.MAX_DEPTH + 5):
        deep = ["t", [deep]]
    with pytest.raises(W.WireError, match="too deep"):
        pair({}, forge=_reply(deep)).proxy("f")()
    forged_update = lambda h, b: W.pack_body({"ok": True, "result": ["n"], "updates": [[5, ["n"]]]})
    with pytest.raises(W.WireError, match="never sent"):
        pair({}, forge=forged_update).proxy("f")(torch.zeros(1))
    reshaped = lambda h, b: W.pack_body({"ok": True, "result": ["n"],
                                         "updates": [[0, ["T", 0, "float32", [2], None, False, 0]]]}, [b"\x00" * 8])
    with pytest.raises(W.SubmissionError, match="changed the shape or dtype"):
        pair({}, forge=reshaped).proxy("f")(torch.zeros(1))


def test_a_frame_over_its_limit_is_refused_before_it_is_read():
    a, b = socket.socketpair()
    a.sendall(struct.pack(">Q", 1 << 40))
    with pytest.raises(W.WireError, match="over the"):
        W.recv_body(b, 1 << 20)
    a.close(), b.close()


def test_a_large_tensor_is_sent_once_while_it_is_unchanged_and_again_when_either_side_changes_it(pair):
    calls = []

    def total(X, double=False):
        calls.append(X)
        if double:
            X.mul_(2)                                  # the submission's side changes the tensor it holds
        return float(X.sum())

    p = pair({"total": total})
    f = p.proxy("total")
    X = torch.ones(512, 1024, dtype=torch.float64)     # 4 MiB
    assert f(X) == X.numel() and f(X) == X.numel()
    assert p.sizes[0] > 4 << 20 and p.sizes[1] < 4096, p.sizes
    assert calls[0] is calls[1], "the submission's side used the tensor it kept"
    X.add_(1)                                          # the judge changes it: sent again, whole
    assert f(X) == 2 * X.numel() and p.sizes[2] > 4 << 20
    assert f(X, double=True) == 4 * X.numel() and torch.equal(X, torch.full_like(X, 4.0)), "its change came back"
    assert f(X) == 4 * X.numel() and p.sizes[-1] > 4 << 20, "changed there, sent again whole"
    W.SUBMISSION_CACHE.entries.clear()                 # the submission's side loses what it kept: sent again whole
    W.SUBMISSION_CACHE.total = 0
    assert f(X) == 4 * X.numel() and p.sizes[-1] > 4 << 20 and p.sizes[-2] < 4096, p.sizes[-3:]
    X.data.mul_(2)                                     # writes that leave X's version counter as it was
    assert f(X) == 8 * X.numel(), "a write through .data is seen"
    X.numpy()[0, 0] = 100.0
    assert f(X) == 8 * X.numel() + 92, "a write through a NumPy array sharing its memory is seen"


def test_calls_under_no_grad_and_a_default_dtype_run_so_in_the_submission_s_kernel(pair):
    def step(p):
        p.sub_(1.0)                                    # an error on a leaf that requires grad, unless under no_grad
        return torch.zeros(1).dtype

    p = pair({"step": step})
    w = torch.zeros(3, requires_grad=True)
    with torch.no_grad():
        assert p.proxy("step")(w) == torch.float32
    assert torch.equal(w.detach(), torch.full((3,), -1.0))
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        p.proxy("step")(w)
    torch.set_default_dtype(torch.float64)
    try:
        assert p.proxy("step")(torch.zeros(1)) == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)


# -- end to end: a toy notebook judged apart, graded in its two sandboxed kernels ------------------------------------
TOY_SETUP = ("import numpy as np, torch\nimport course_utils as cu\n"
             "from course_utils import assert_close, check_equal, check_that, plain\nfrom course_utils.gpt import GPTConfig\n"
             "from course_utils.memory import track_peak_memory\n"
             "class Scaled(torch.nn.Module):\n    def __init__(self, n, scale):\n        super().__init__()\n"
             "        self.inner, self.scale = torch.nn.Linear(n, n, bias=False), scale\n"
             "class Node:\n    def __init__(self, data, parents=()):\n"
             "        self.data, self.grad, self._parents, self._backward = float(data), 0.0, tuple(parents), lambda: None\n"
             "    def __mul__(self, other):\n        return node_mul(self, other)\n"
             "    def backward(self):\n        order, seen = [], set()\n        def visit(n):\n"
             "            if id(n) not in seen:\n                seen.add(id(n))\n"
             "                for p in n._parents:\n                    visit(p)\n                order.append(n)\n"
             "        visit(self)\n        self.grad = 1.0\n        for n in reversed(order):\n            n._backward()")
TOY_SOLUTIONS = {
    "ex95.1": "def momentum_(p, grad, buf, lr, beta):\n    buf.mul_(beta).add_(grad)\n    p.sub_(lr * buf)",
    "ex95.2": ("def noisy_mean(x, generator):\n"
               "    return x.mean(0) + 0.01 * torch.randn(x.shape[1], generator=generator, dtype=x.dtype)"),
    "ex95.3": "def first_rows(x):\n    return x.reshape(x.shape[0], -1)[:, :2]",
    "ex95.4": "def head_size(config):\n    return config.n_embd // config.n_head",
    "ex95.5": "def column(x, j):\n    return x[:, j]",
    "ex95.6": "def scale_(t, a):\n    t.mul_(a)",
    "ex95.7": "def round_ste(w):\n    return w + (w.round() - w).detach()",
    "ex95.8": "def effective_weight(layer):\n    return layer.inner.weight * layer.scale",
    "ex95.9": ("def node_mul(a, b):\n    out = Node(a.data * b.data, (a, b))\n    def _backward():\n"
               "        a.grad += b.data * out.grad\n        b.grad += a.data * out.grad\n    out._backward = _backward\n"
               "    return out"),
}
TOY_CHECKS = {
    "ex95.1": ("p, buf = torch.zeros(3, requires_grad=True), torch.zeros(3)\n"
               "ref = torch.zeros(3, requires_grad=True)\nopt = torch.optim.SGD([ref], lr=0.5, momentum=0.9)\n"
               "for _ in range(4):\n    g = torch.arange(3.0)\n    with torch.no_grad():\n        momentum_(p, g.clone(), buf, 0.5, 0.9)\n"
               "    ref.grad = g.clone()\n    opt.step()\n"
               "assert_close(p.detach(), ref.detach(), rtol=1e-6, name='momentum_ vs torch.optim.SGD')"),
    "ex95.2": ("x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))\n"
               "g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)\n"
               "state = torch.get_rng_state()\n"
               "a = plain(noisy_mean(x.clone(), g1))\n"
               "check_that(torch.equal(a, x.mean(0) + 0.01 * torch.randn(4, generator=g2, dtype=x.dtype)), 'the generator draws')\n"
               "check_that(torch.equal(g1.get_state(), g2.get_state()), 'the caller\\'s generator moved on')\n"
               "check_that(torch.equal(state, torch.get_rng_state()), 'the global random state is left untouched')\n"
               "check_equal(cu.map_on_cores(lambda s: tuple(plain(noisy_mean(x, torch.Generator().manual_seed(s))).shape),"
               " [1, 2, 3], processes=2), [(4,)] * 3, 'called from forked children')"),
    "ex95.3": ("x = torch.arange(24.0).reshape(2, 3, 4).transpose(1, 2)\n"
               "assert_close(first_rows(x), x.reshape(2, -1)[:, :2], name='first_rows on a transposed view')\n"
               "big = torch.randn(600, 600, dtype=torch.float64)\n"
               "for _ in range(3):\n    assert_close(first_rows(big), big[:, :2], name='first_rows on a large tensor')"),
    "ex95.4": "check_equal(head_size(GPTConfig(vocab_size=10, n_embd=64, n_head=4)), 16, 'head size of a GPTConfig')",
    "ex95.5": ("x = torch.arange(12.0).view(3, 4)\nc = column(x, 2)\nassert_close(c, x[:, 2].clone(), name='column 2')\n"
               "c[0] = -1.0\ncheck_that(x[0, 2].item() == -1.0, 'a write through the column shows in x (a view)')\n"
               "y = torch.arange(30.0)[5:].view(5, 5)   # starts 5 elements into its storage\n"
               "assert_close(column(y, 1), y[:, 1].clone(), name='column 1 of a view that starts further in')"),
    "ex95.6": ("t = torch.ones(1000)\nwith track_peak_memory('cpu') as mem:\n    scale_(t, 3.0)\n"
               "check_that(torch.equal(t, torch.full((1000,), 3.0)), 't is scaled in place')\n"
               "check_equal(mem.total, 0, 'bytes allocated by scale_')"),
    "ex95.7": ("w = torch.tensor([0.2, 1.7, -0.6], requires_grad=True)\nout = round_ste(w)\n"
               "assert_close(out.detach(), torch.tensor([0.0, 2.0, -1.0]), name='forward: rounded')\n"
               "(out * torch.tensor([1.0, 2.0, 3.0])).sum().backward()\n"
               "check_that(w.grad is not None and torch.equal(w.grad, torch.tensor([1.0, 2.0, 3.0])), "
               "'the gradient passes straight through', got=w.grad)"),
    "ex95.8": ("layer = Scaled(3, 2.5)\nassert_close(plain(effective_weight(layer)).detach(), layer.inner.weight.detach() * 2.5, "
               "name='the effective weight of a module of the notebook\\'s class')"),
    "ex95.9": ("x, y = Node(1.5), Node(-2.0)\nz = x * x * y\nz.backward()\n"
               "check_that(type(z) is Node and z._parents[1] is y, 'z is a Node whose parents are the caller\\'s own nodes')\n"
               "assert_close([x.grad, y.grad], [2 * 1.5 * -2.0, 1.5 ** 2], name='gradients of x * x * y')"),
}
TOY_WRONG = {
    "ex95.1": "def momentum_(p, grad, buf, lr, beta):\n    buf.mul_(beta).add_(grad)\n    p.sub_(lr * grad)",
    "ex95.2": ("def noisy_mean(x, generator):\n"
               "    return x.mean(0) + 0.01 * torch.randn(x.shape[1], dtype=x.dtype)   # the global generator"),
    "ex95.3": "def first_rows(x):\n    return x.view(x.shape[0], -1)[:, :2]",
    "ex95.4": "def head_size(config):\n    return config.n_embd",
    "ex95.5": "def column(x, j):\n    return x[:, j].clone()",
    "ex95.6": "def scale_(t, a):\n    t.copy_(t * a)",
    "ex95.7": "def round_ste(w):\n    return w.round()",
    "ex95.8": "def effective_weight(layer):\n    return layer.inner.weight",
    "ex95.9": ("def node_mul(a, b):\n    out = Node(a.data * b.data, (a, b))\n    def _backward():\n"
               "        a.grad = b.data * out.grad\n        b.grad = a.data * out.grad\n    out._backward = _backward\n"
               "    return out"),
}


def judged_toy(answers: dict):
    from tests.nbfactory import code, notebook

    cells = [code(TOY_SETUP)]
    for ex in TOY_SOLUTIONS:
        body = "\n".join("    " + line for line in TOY_SOLUTIONS[ex].splitlines()[1:])
        solution = f"{TOY_SOLUTIONS[ex].splitlines()[0]}\n    ### BEGIN SOLUTION\n{body}\n    ### END SOLUTION"
        cells += [code(answers.get(ex, solution), f"exercise-{ex}"), code(TOY_CHECKS[ex], f"check-{ex}")]
    nb = notebook(*cells)
    nb.metadata["workbook"] = {"judge": "apart"}
    return nb


def test_a_toy_judged_apart_gives_its_solution_full_marks_and_each_wrong_answer_its_own_failure(tmp_path):
    # In-place changes under no_grad, generators and the global random state, calls from forked children, a
    # transposed view handed in, a large tensor (sent once), a dataclass, a view handed back, allocations counted,
    # a gradient through the submission's function, a module of the notebook's own class, nodes of the notebook's
    # own class whose backward step is the submission's closure (notebook 02). The wrong answers are
    # graded together, in one submission: each exercise's checks stand alone.
    from tests.nbfactory import write
    from tools.grade import grade_all
    from tools.kernel import Limits

    (tmp_path / "i").mkdir()
    (tmp_path / "subs").mkdir()
    write(judged_toy({}), tmp_path / "i" / "95_judged.ipynb")
    write(judged_toy({}), tmp_path / "subs" / "a_solved_95_judged.ipynb")
    write(judged_toy(TOY_WRONG), tmp_path / "subs" / "wrong_95_judged.ipynb")
    limits = Limits(cell_seconds=30, total_seconds=120, sandbox={"memory_bytes": 4 << 30, "processes": 64})
    reports = {r["notebook"]: r for r in grade_all(tmp_path / "subs", tmp_path / "i", tmp_path / "out", jobs=2, limits=limits)}
    solved = reports["a_solved_95_judged.ipynb"]
    assert (solved["score"], solved["total"], solved["run"]) == (9, 9, "finished"), solved["checks"]
    expected_failure = {"ex95.1": "momentum_ vs torch.optim.SGD", "ex95.2": "the global random state is left untouched",
                        "ex95.3": "view size is not compatible", "ex95.4": "Expected: 16. Got: 64",
                        "ex95.5": "a write through the column shows in x", "ex95.6": "bytes allocated by scale_. Expected: 0.",
                        "ex95.7": "the gradient passes straight through", "ex95.8": "the effective weight of a module",
                        "ex95.9": "gradients of x * x * y"}
    wrong = reports["wrong_95_judged.ipynb"]
    failed = {c["id"]: c["message"] for c in wrong["checks"] if not c["passed"]}
    assert wrong["run"] == "finished" and set(failed) == set(expected_failure), (wrong["run"], sorted(failed))
    for ex, message in expected_failure.items():
        assert message in failed[ex], (ex, failed[ex])


def test_a_notebook_is_checked_judged_apart_before_it_is_marked_so(tmp_path, capsys):
    # `python -m tools.judge NB`: the solution must get full marks judged apart, and no round of wrong answers may
    # earn an exercise; a check too weak to tell a wrong answer apart makes it exit 1, naming the exercise.
    from tests.nbfactory import guarded_notebook, write
    from tools.judge import main

    good = write(guarded_notebook(), tmp_path / "98_good.ipynb")
    weak = guarded_notebook()
    for cell in weak.cells:
        if "check-ex98.1" in cell.metadata.get("tags", []) or "check-ex98.1.array" in cell.metadata.get("tags", []):
            cell.source = "check_equal(double(0) * 0, 0, 'double(0) times 0 is 0')"      # cannot fail
    weak = write(weak, tmp_path / "98_weak.ipynb")
    assert main([str(good)]) == 0
    out = capsys.readouterr().out
    assert "98_good.ipynb: solution: 3/3" in out and "round 1: 0/3" in out and "exercises earned: none" in out, out
    assert main([str(weak)]) == 1
    out = capsys.readouterr().out
    assert "exercises earned: ex98.1  <-- a wrong answer earned marks" in out, out


def test_views_handed_back_are_the_caller_s_own_and_only_inside_what_it_handed(pair):
    deep = torch.arange(1e5)[50000:50035].view(5, 7)   # far into its storage: it crosses dense, not at offset 0
    p = pair({"right": lambda x, j: torch.as_strided(x, (x.shape[0],), (x.shape[1],), x.storage_offset() + j),
              "wrong": lambda x, j: torch.as_strided(x, (x.shape[0],), (x.shape[1],), j),    # ignores the offset
              "first_row": lambda x: x[0], "fresh": lambda x: torch.empty(0)})
    got = p.proxy("right")(deep, 3)
    assert torch.equal(got, deep[:, 3]) and got.untyped_storage().data_ptr() == deep.untyped_storage().data_ptr()
    with pytest.raises(W.WireError, match="outside the tensor"):
        p.proxy("wrong")(deep, 3)
    qkv = torch.randn(4, 12)
    q = qkv.split(4, dim=1)[0]                         # a view with gaps: what comes back of it is a copy, right
    assert torch.equal(p.proxy("first_row")(q), q[0])
    assert p.proxy("fresh")(torch.zeros(3, 0)).shape == (0,)     # empty tensors all have storage address 0


def test_more_large_tensors_than_the_cache_holds_leave_both_sides_with_the_same_entries(pair):
    p = pair({"total": lambda ts: float(sum(t.sum() for t in ts))})
    tensors = [torch.full((300_000,), float(i)) for i in range(W.CACHE_ENTRIES + 4)]   # 1.2 MB each
    for _ in range(3):
        assert p.proxy("total")(tensors) == sum(300_000.0 * i for i in range(len(tensors)))
    assert set(W.SUBMISSION_CACHE.entries) == set(p.client.cache.entries), "the submission's side keeps no more"


class Tied(torch.nn.Module):                           # a class of "the notebook's" (found by name on the other side)
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False)
        self.b.weight = self.a.weight


def test_a_module_s_parameters_are_the_call_s_inputs_for_gradients_and_stay_tied(pair):
    p = pair({"apply": lambda layer, x: layer(x), "count": lambda m: sum(q.numel() for q in m.parameters()),
              "Tied": Tied})
    lin, x = torch.nn.Linear(3, 2), torch.randn(4, 3)
    p.proxy("apply")(lin, x).sum().backward()
    assert lin.weight.grad is not None and torch.allclose(lin.weight.grad, x.sum(0).expand(2, 3)), lin.weight.grad
    assert p.proxy("count")(Tied()) == 9, "tied weights stay one parameter"


def test_the_judge_s_random_states_are_sent_again_after_a_call_that_failed(pair):
    p = pair({})
    torch.manual_seed(123)
    with pytest.raises(NameError):
        p.proxy("missing")()
    assert p.client.sent_states == {}, "the next call sends every state again"


# Notebook 02's engines: nodes are objects of a class the notebook's cells define, and the submission's
# multiplication leaves, on the node it makes, a closure for its backward step.
NODE_CELL = """
class Node:
    def __init__(self, data, parents=()):
        self.data, self.grad, self._parents = float(data), 0.0, tuple(parents)
        self._backward = lambda: None

    def __mul__(self, other):
        return node_mul(self, other)

    def __add__(self, other):
        out = Node(self.data + other.data, (self, other))
        def _backward():
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def backward(self):
        order = node_order(self)
        for node in order:
            node.grad = 0.0
        self.grad = 1.0
        for node in reversed(order):
            node._backward()

class Other:
    pass
"""
NODE_ANSWERS = """
RAN = []

def node_order(root):
    order, seen = [], set()
    def visit(node):
        if id(node) not in seen:
            seen.add(id(node))
            for parent in node._parents:
                visit(parent)
            order.append(node)
    visit(root)
    return order

def node_mul(a, b):
    out = Node(a.data * b.data, (a, b))
    def _backward():
        RAN.append(out.data)
        a.grad += b.data * out.grad
        b.grad += a.data * out.grad
    out._backward = _backward
    return out

def call_backward_of(node):
    node._backward()

def backward_of(node):
    return node._backward
"""


def _node_kernels(pair, answers=NODE_ANSWERS, forge=None):
    judge, submission = {"__name__": "__main__"}, {"__name__": "__main__"}     # each kernel runs the class's cell
    exec(NODE_CELL, judge)
    exec(NODE_CELL, submission)
    exec(answers, submission)
    p = pair(submission, forge=forge, judge_namespace=judge)
    for name in ("node_order", "node_mul", "call_backward_of", "backward_of"):
        judge[name] = p.proxy(name)
    return p, judge, submission


def test_nodes_of_the_notebook_s_class_cross_as_the_judge_s_own_and_their_closures_run_where_they_were_made(pair):
    p, judge, submission = _node_kernels(pair)
    exec("x = Node(1.5); y = Node(-2.0); z = x * x * y + y\nz.backward()", judge)
    x, y, z, Node = judge["x"], judge["y"], judge["z"], judge["Node"]
    assert z.data == 1.5 * 1.5 * -2.0 - 2.0
    assert (x.grad, y.grad) == (2 * 1.5 * -2.0, 1.5 * 1.5 + 1.0), "gradients through the submission's closures"
    assert submission["RAN"] == [1.5 * 1.5 * -2.0, 1.5 * 1.5], "each product's backward step ran in its kernel"
    product = z._parents[0]                            # made by the submission's node_mul: the judge's class
    assert type(product) is Node and product._parents[1] is y and type(product._backward) is W.RemoteFunction
    order = judge["node_order"](z)
    assert order[0] is x and order[-1] is z and order[-2] is product, "the judge's own nodes come back"
    assert len(order) == 5 and all(type(n) is Node for n in order)
    assert judge["backward_of"](z) is z._backward, "a function of the judge's goes and comes back as itself"
    with pytest.raises(TypeError, match="belongs to the judge"):
        judge["call_backward_of"](z)                   # it runs only in the judge


def test_an_attribute_the_submission_sets_on_a_judge_s_node_comes_back_and_nodes_let_go_are_let_go_there(pair):
    marks = NODE_ANSWERS + "\ndef mark(node):\n    node.seen = True\n    del node.grad\n"
    p, judge, submission = _node_kernels(pair, answers=marks)
    judge["mark"] = p.proxy("mark")
    exec("a = Node(2.0)\nmark(a)", judge)
    assert judge["a"].seen is True and not hasattr(judge["a"], "grad")
    exec("for _ in range(30):\n    a = Node(2.0); b = a * a + a; b.backward()", judge)
    assert judge["a"].grad == 5.0
    import gc
    gc.collect()
    judge["node_order"](judge["b"])                    # the next call tells the other side what the judge let go
    held = W.SUBMISSION_OBJECTS
    assert len(held.objects) <= 4 and len(held.functions) <= 2, (len(held.objects), len(held.functions))


def _object_reply(result, table, states):
    def reply(header, bufs):                           # ("sent": the number the judge gave the node it sent)
        named = [[header["objects"][0][0] if entry[0] == "sent" else entry[0], *entry[1:]] for entry in table]
        return W.pack_body({"ok": True, "result": result, "updates": [], "objects": named, "states": states})
    return reply


@pytest.mark.parametrize("result, table, states, message", [
    (["N", 0], [[-1, "Gadget", True]], [[[], []]], "class 'Gadget', which this kernel's notebook does not define"),
    (["N", 0], [[-1, "__builtins__", True]], [[[], []]], "does not define"),
    (["N", 0], [[-1, "Node", True]], [[[["__class__", ["n"]]], []]], "cannot be set"),
    (["N", 0], [[-1, "Node", True]], [[[["backward", ["F", -3]]], []]], "'backward' set on a Node, which would hide"),
    (["N", 0], [[-1, "Node", True]], [[[["data", ["X", 99]]], []]], "that it no longer has"),
    (["N", 1], [[-1, "Node", True]], [[[], []]], "cannot read"),
    (["N", 0], [["sent", "Other", False]], [[[], []]], "named as a Other, which it is not"),
    (["N", 0], [[-7, "Node", False]], [[[["data", ["f", "0x1p+0"]]], []]], "no longer holds, with only part"),
    (["N", 0], [[-1, "Node"]], [[[], []]], "bad entry"),
    (["N", 0], [[-1, "Node", True]], [], "do not match its table"),
])
def test_objects_the_submission_s_side_sends_are_read_as_untrusted(pair, result, table, states, message):
    p, judge, _ = _node_kernels(pair, forge=_object_reply(result, table, states))
    with pytest.raises(W.WireError, match=message):
        judge["node_order"](judge["Node"](1.0))


def test_a_node_the_submission_makes_cannot_hide_a_method_of_the_judge_s_class(pair):
    # A wrong node_mul whose node carries its own `backward` (computing the gradients some other way) would have the
    # judge's check call the submission's function in place of the class's own backward pass.
    shadow = NODE_ANSWERS + ("\ndef node_mul(a, b):\n    out = Node(a.data * b.data, (a, b))\n"
                             "    def backward():\n        a.grad, b.grad = b.data, a.data\n"
                             "    out.backward = backward\n    return out\n")
    p, judge, _ = _node_kernels(pair, answers=shadow)
    with pytest.raises(W.WireError, match="'backward' set on a Node, which would hide its class's own"):
        exec("z = Node(2.0) * Node(3.0)", judge)


def test_a_function_on_a_node_the_judge_held_before_the_call_cannot_be_set_or_replaced(pair):
    # (review of session 38) a topological sort that put a backward pass of its own on the judge's nodes: the judge
    # would have run it where it calls each node's step
    hijack = NODE_ANSWERS + ("\n_order = node_order\ndef node_order(root):\n    order = _order(root)\n"
                             "    for node in order:\n        node._backward = lambda: None\n    return order\n")
    p, judge, _ = _node_kernels(pair, answers=hijack)
    with pytest.raises(W.WireError, match="the function in attribute '_backward' of a Node the judge held before"):
        exec("z = Node(2.0) + Node(3.0)\nz.backward()", judge)


def test_a_reply_names_only_the_call_s_objects_or_new_ones(pair):
    # (review of session 38) a reply to a call that handed over no node rewrote a node an earlier call had
    numbers = []

    def forge(header, buffers):
        if header.get("objects"):
            numbers.append(header["objects"][0][0])
            return W.pack_body(*W.handle(header, buffers, submission))
        return W.pack_body({"ok": True, "result": ["N", 0], "updates": [], "objects": [[numbers[0], "Node", True]],
                            "states": [[[["grad", ["f", "0x1.ec00000000000p+6"]]], []]]})

    p, judge, submission = _node_kernels(pair, forge=forge)
    exec("a = Node(2.0)\norder = node_order(a)", judge)
    assert judge["order"] == [judge["a"]]
    with pytest.raises(W.WireError, match="which this call did not hand over"):
        judge["node_order"](1.0)
    assert judge["a"].grad == 0.0


def test_a_backward_step_may_be_any_callable_of_the_submission_s(pair):
    # an object of a class the exercise cell defines, callable: it crosses as a function (the judge names the
    # classes it has; the submission's side sends only those as objects)
    callable_class = NODE_ANSWERS + (
        "\nclass MulBackward:\n    def __init__(self, a, b, out):\n        self.a, self.b, self.out = a, b, out\n"
        "    def __call__(self):\n        self.a.grad += self.b.data * self.out.grad\n"
        "        self.b.grad += self.a.data * self.out.grad\n"
        "def node_mul(a, b):\n    out = Node(a.data * b.data, (a, b))\n    out._backward = MulBackward(a, b, out)\n"
        "    return out\n")
    p, judge, _ = _node_kernels(pair, answers=callable_class)
    exec("x = Node(3.0)\nz = x * x\nz.backward()", judge)
    assert judge["x"].grad == 6.0 and type(judge["z"]._backward) is W.RemoteFunction


# -- gradients of leaf tensors and torch.optim optimizers (notebook 05: average_gradients(model), zero_step) ------
def _scale_grads(model):
    for p in model.parameters():
        p.grad /= 4


def _new_grads(model):
    for p in model.parameters():
        p.grad = torch.ones_like(p)


def _zero_step(params, grads, shard, optimizer):
    shard.grad = grads[:shard.numel()] / 2
    optimizer.step()
    params[:shard.numel()] = shard.detach()


def _model_with_grads():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1))
    model(torch.randn(5, 3)).sum().backward()
    return model


def test_gradients_a_function_changes_or_replaces_come_back_to_the_judge_s_tensors(pair):
    p = pair({"scale": _scale_grads, "new": _new_grads})
    model = _model_with_grads()
    before = [(id(q.grad), q.grad.clone()) for q in model.parameters()]
    p.proxy("scale")(model)
    for q, (grad_id, grad) in zip(model.parameters(), before):
        assert id(q.grad) == grad_id, "changed in place, where anything holding the gradient sees it"
        assert torch.equal(q.grad, grad / 4), (q.grad, grad / 4)
    p.proxy("new")(model)
    assert all(torch.equal(q.grad, torch.ones_like(q)) for q in model.parameters())


def test_an_optimizer_crosses_and_its_state_comes_back_as_the_function_left_it(pair):
    p = pair({"zero_step": _zero_step})
    params, grads = torch.arange(8.), torch.arange(8.) / 10
    shard = params[:4].clone().requires_grad_()
    optimizer = torch.optim.Adam([shard], lr=0.1)
    twin = shard.detach().clone().requires_grad_()                     # the same steps in this process
    twin_params, twin_optimizer = params.clone(), torch.optim.Adam([twin], lr=0.1)
    for _ in range(3):
        p.proxy("zero_step")(params, grads, shard, optimizer)
        _zero_step(twin_params, grads, twin, twin_optimizer)
        assert torch.equal(params, twin_params) and torch.equal(shard, twin) and torch.equal(shard.grad, twin.grad)
        state, expected = optimizer.state[shard], twin_optimizer.state[twin]
        assert sorted(state) == sorted(expected) == ["exp_avg", "exp_avg_sq", "step"], state
        assert all(torch.equal(state[k], expected[k]) for k in state), (state, expected)
    assert list(optimizer.state) == [shard], "the state is the judge's shard's, no one else's"


def _forge_update(build):
    """A reply to a call of f(model, optimizer) (nodes: 0 the model, its parameters' dict and tensors, ...)."""
    def forge(header, buffers):
        reply, out = build(header)
        return W.pack_body(reply, out)
    return forge


@pytest.mark.parametrize("case, message", [
    ("a gradient of another shape", "set the gradient of a tensor of shape"),
    ("a gradient of a tensor never sent", "a gradient of an object that was never sent"),
    ("a gradient of a tensor that is no leaf requiring grad", "not a leaf tensor requiring grad"),
    ("optimizer state for a tensor not its own", "for its own parameters"),
    ("a new hyperparameter", "added or removed an optimizer's hyperparameters"),
    ("a hyperparameter that is a list", "set the optimizer's lr to a list"),
])
def test_gradients_and_optimizer_state_the_submission_s_side_sends_are_read_as_untrusted(pair, case, message):
    shard = torch.zeros(2, requires_grad=True)
    plain = torch.zeros(2)
    optimizer = torch.optim.SGD([shard], lr=0.1)
    groups = [{k: v for k, v in optimizer.param_groups[0].items() if k != "params"}]

    def build(header):
        enc = W.Encoder()
        # the judge's nodes, in its order: 0 shard, 1 plain, 2 the optimizer (its groups' tensors are references)
        if case == "a gradient of another shape":
            return {"ok": True, "result": ["n"], "updates": [], "grads": [[0, enc.encode(torch.zeros(3))]]}, enc.buffers
        if case == "a gradient of a tensor never sent":
            return {"ok": True, "result": ["n"], "updates": [], "grads": [[40, enc.encode(torch.zeros(2))]]}, enc.buffers
        if case == "a gradient of a tensor that is no leaf requiring grad":
            return {"ok": True, "result": ["n"], "updates": [], "grads": [[1, enc.encode(torch.zeros(2))]]}, enc.buffers
        enc = W.Encoder(known={id(shard): 0, id(plain): 1})
        state = [[plain, {"momentum_buffer": torch.zeros(2)}]] if case.startswith("optimizer state") else []
        g = dict(groups[0])
        if case == "a new hyperparameter":
            g["secret"] = 1.0
        if case == "a hyperparameter that is a list":
            g["lr"] = [0.1]
        return {"ok": True, "result": ["n"], "updates": [[2, enc.encode((state, [g]))]]}, enc.buffers

    with pytest.raises((W.WireError, W.SubmissionError), match=message):
        pair({}, forge=_forge_update(build)).proxy("f")(shard, plain, optimizer)


def _rebind(chunks, how):
    if how == "data":
        chunks[1].data = chunks[1] + 1                  # other memory for the view: its base is not written
    elif how == "set_":
        chunks[1].set_(chunks[1] + 1)
    else:
        chunks[1] += 1                                 # in place: the base sees it


@pytest.mark.parametrize("how", ["data", "set_", "in place"])
def test_a_view_given_other_memory_comes_back_as_that_and_not_as_a_write_into_its_base(pair, how):
    # red team of session 39: `chunks[recv].data = chunks[recv] + incoming` in ring_reduce_scatter came back as an
    # in-place write into the judge's view, so the judge's all-reduce (a view of the whole) came out right
    x = torch.arange(6.)
    chunks = list(x.tensor_split(3))
    pair({"f": _rebind}).proxy("f")(chunks, how)
    assert torch.equal(chunks[1], torch.tensor([3., 4.])), chunks
    expected = torch.tensor([0., 1., 3., 4., 4., 5.]) if how == "in place" else torch.arange(6.)
    assert torch.equal(x, expected), (how, x)


def test_malformed_messages_are_refused_as_such():
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(W.WireError, match="not JSON: RecursionError"):
        W.parse_body(struct.pack(">II", len(deep), 0) + deep)
    with pytest.raises(W.WireError, match="bool tensor with bytes other than 0 and 1"):
        W.Decoder([b"\x00\x02"]).decode(["T", 0, "bool", [2], None, False, 0])
    assert W.Decoder([b"\x00\x01"]).decode(["T", 0, "bool", [2], None, False, 0]).tolist() == [False, True]
    base = torch.zeros(4)
    with pytest.raises(W.WireError, match="a view of 1,099,511,627,775 elements"):
        W.Decoder([], peer={0: base}).decode(["W", 0, 0, 0, [(1 << 40) - 1], [0], [1]])
    assert W.Decoder([], peer={0: base}).decode(["W", 0, 0, 0, [8, 4], [0, 1], [1]]).shape == (8, 4)   # a broadcast


def collecting_relay(tmp_path, group, backlog, hello_seconds):
    """A Relay with only what `_collect_workers` uses: launch "L" waiting for `group`'s ranks on tmp_path/workers."""
    from tools.judge import Relay

    relay = Relay.__new__(Relay)
    relay.closed, relay.worker_conns, relay.groups_changed = False, [], threading.Condition()
    relay.groups = {"L": group}
    relay.sub_workers_server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    relay.sub_workers_server.bind(str(tmp_path / "workers"))
    relay.sub_workers_server.listen(backlog)
    relay.HELLO_SECONDS = hello_seconds
    return relay


def test_the_submission_s_workers_are_taken_only_by_their_hellos_and_a_flood_holds_little_of_the_grader(tmp_path):
    # red team of session 39: thousands of connections to the submission's `workers` socket, each held open without a
    # hello, made the grader start a thread and hold a file descriptor for each (2716 threads), until it ran out and
    # its relay stopped taking anyone's workers
    import os

    group = {0: None, 1: None}
    relay = collecting_relay(tmp_path, group, backlog=128, hello_seconds=2.0)

    def hello(rank, launch="L"):
        body = W.pack_body({"launch": launch, "rank": rank})
        return struct.pack(">Q", len(body)) + body

    def connect(data=b""):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(tmp_path / "workers"))
        if data:
            c.sendall(data)
        return c

    clients = [connect(hello(1)), connect(hello(1))]   # rank 1, twice; then rank 0 cut short, a silent one, another
    clients += [connect(hello(0)[:5]), connect(), connect(hello(1, launch="other")), connect(b"\xff" * 8)]  # launch,
    clients += [connect() for _ in range(60)]          # a 2**64-byte hello, and a flood of silent connections
    fds = lambda: len(os.listdir("/proc/self/fd"))
    baseline, seen = fds(), []
    watcher = threading.Timer(1.0, lambda: seen.append(fds() - baseline))   # halfway: what the grader holds
    watcher.start()
    threads = threading.active_count()
    relay._collect_workers("L", group, 2)
    watcher.join()
    assert threading.active_count() == threads - 1 or threading.active_count() == threads, "no thread per connection"
    assert seen and seen[0] <= 2 * 2 + 1 + 2, f"the grader held {seen} connections at once (2 x world pending at most)"
    assert group[0] is False, "rank 0's worker never said its hello whole: none"
    assert group[1] not in (None, False) and relay.worker_conns == [group[1]], group
    still_open = []
    for c in clients:
        c.setblocking(False)
        try:
            c.recv(1)                                  # b"": hung up on
        except BlockingIOError:
            still_open.append(c)
    assert len(still_open) == 1 and still_open[0] in clients[:2], "every connection but rank 1's is hung up on"
    for c in clients + [group[1]]:
        c.close()
    relay.sub_workers_server.close()


def test_a_hello_for_another_launch_or_of_absurd_size_takes_no_rank(tmp_path):
    group = {0: None}
    relay = collecting_relay(tmp_path, group, backlog=8, hello_seconds=1.0)
    body = W.pack_body({"launch": "other", "rank": 0})
    clients = []
    for data in (b"\xff" * 8, struct.pack(">Q", len(body)) + body):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(tmp_path / "workers"))
        c.sendall(data)
        clients.append(c)
    relay._collect_workers("L", group, 1)
    assert group[0] is False and relay.worker_conns == [], group
    assert all(c.recv(1) == b"" for c in clients), "both hung up on"
    for c in clients:
        c.close()
    relay.sub_workers_server.close()


def test_an_empty_hello_is_hung_up_on_at_once_not_held_until_the_deadline(tmp_path):
    # a hello announcing 0 bytes can never name a rank: it frees its pending slot at once (until session 42 it stayed
    # pending, one of the 2 x world slots, until HELLO_SECONDS had passed)
    group = {0: None}
    relay = collecting_relay(tmp_path, group, backlog=8, hello_seconds=5.0)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "workers"))
    client.sendall(struct.pack(">Q", 0))
    collecting = threading.Thread(target=relay._collect_workers, args=("L", group, 1))
    collecting.start()
    client.settimeout(2.0)
    try:
        try:
            got = client.recv(1)
        except TimeoutError:
            got = "nothing after 2 s"
        assert got == b"", f"the empty hello is hung up on, while the collection waits for rank 0: got {got!r}"
        assert collecting.is_alive(), "the collection still waits for rank 0"
    finally:
        relay.closed = True
        collecting.join()
        client.close()
        relay.sub_workers_server.close()
    assert group[0] is False


def test_a_message_takes_memory_as_it_arrives_not_for_the_size_it_announces():
    import tracemalloc

    ours, theirs = socket.socketpair()
    theirs.sendall(struct.pack(">Q", 100 << 20) + b"x" * 1000)     # says 100 MiB, sends 1000 bytes, hangs up
    theirs.close()
    tracemalloc.start()
    try:
        with pytest.raises(EOFError):
            W.recv_body(ours, 1 << 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        ours.close()
    assert peak < W.SEGMENT + (4 << 20), f"{peak:,} bytes held for a message that sent 1,000"


def _leave_hooks(model):
    for p in model.parameters():
        p.register_hook(lambda g: g * 2)


def _leave_grad_off(model):
    torch.set_grad_enabled(False)


def _leave_float64(model):
    torch.set_default_dtype(torch.float64)


def _leave_attribute(model):
    model.extra = 1


def _leave_new_parameter(model):
    model[0].weight = torch.nn.Parameter(torch.zeros(2, 3))


def _leave_no_requires_grad(model):
    model[0].bias.requires_grad_(False)


def _leave_module_hook(model):
    model.register_forward_hook(lambda module, args, out: out * 2)


def _leave_nothing(model):
    for p in model.parameters():
        p.data.mul_(1)


@pytest.mark.parametrize("function, message", [
    (_leave_hooks, "the hooks, requires_grad or attributes of a tensor it was handed"),
    (_leave_no_requires_grad, "the hooks, requires_grad or attributes of a tensor it was handed"),
    (_leave_grad_off, "torch's grad mode"),
    (_leave_float64, "torch's default dtype"),
    (_leave_attribute, "the hooks, parameters, submodules, buffers or attributes of a module"),
    (_leave_new_parameter, "the hooks, parameters, submodules, buffers or attributes of a module"),
    (_leave_module_hook, "the hooks, parameters, submodules, buffers or attributes of a module"),
    (_leave_nothing, None),
])
def test_what_a_call_leaves_that_cannot_cross_fails_it(pair, function, message):
    # red team of session 39: an average_gradients that left a hook on each parameter (summing the gradients again
    # at every later step), a zero_step that left grad mode off and a function that left float64 the default dtype
    # each failed in one kernel, where the script's next steps met what they left, and passed judged apart
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    try:
        if message is None:
            pair({"f": function}).proxy("f")(model)
        else:
            with pytest.raises(RuntimeError, match=re.escape(message) + ".*which does not cross"):
                pair({"f": function}).proxy("f")(model)
    finally:                                           # (both sides share this process's torch)
        torch.set_grad_enabled(True)
        torch.set_default_dtype(torch.float32)


def _in_a_larger_buffer(n, how):
    buffer = torch.zeros(16 * n, dtype=torch.uint8)
    if how == "start":
        buffer[:n] = 7
        return buffer[:n]                              # n bytes at the start of a 16 n-byte storage
    return buffer.as_strided((n,), (16,), 3)           # every 16th byte from the 4th: a view with gaps


@pytest.mark.parametrize("how", ["start", "gaps"])
def test_a_result_holds_as_much_storage_in_the_judge_as_it_held_where_it_was_made(pair, how):
    # red team of session 39: 06.7's pack_int4 that left its packed bytes at the start of a 16x larger buffer passed
    # the check that the packed tensor's memory holds its bytes and nothing more, judged apart (the judge's copy was
    # laid out in just its elements), and failed it in one kernel
    got = pair({"f": _in_a_larger_buffer}).proxy("f")(3072, how)
    assert got.shape == (3072,)
    assert got.untyped_storage().nbytes() == 16 * 3072, got.untyped_storage().nbytes()
    assert got.storage_offset() == (0 if how == "start" else 3)   # (a view with gaps this wide arrives dense)


def test_a_result_in_storage_beyond_what_a_message_may_add_is_refused(pair):
    forged = lambda h, b: W.pack_body({"ok": True, "result": ["T", 0, "uint8", [4], [1, 0, W.MAX_STORAGE + 8], False, 0],
                                       "updates": []}, [b"\x00" * 4])
    with pytest.raises(W.WireError, match="storage far larger than their elements"):
        pair({}, forge=forged).proxy("f")()
