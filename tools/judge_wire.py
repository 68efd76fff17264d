"""The wire between the judge (a kernel that runs only the instructor's code) and the submission's kernel.

When a notebook is judged apart (tools.judge), its checks run in the judge, and each function an exercise defines
is, in the judge, a proxy: a call sends its arguments to the submission's kernel as data, the submission's function
runs there, and its result comes back as data, with the arguments it changed in place and the random states it
drew from. Nothing but data crosses: no pickle, no code, no object of a class the judge did not name. What the
submission's kernel sends back is read as untrusted (exact built-in types only, sizes and depth bounded, every
tensor's layout checked against its bytes), so the most a submission can do from its side is answer the call.

This file is executed as source in both kernels (neither imports the repository's tools package). The same
functions serve both sides; `serve` is the submission's side, `Client` the judge's.
"""
import builtins
import dataclasses
import importlib
import json
import random
import socket
import struct
import sys
import traceback

MAX_DEPTH = 40
MAX_NODES = 2_000_000
MAX_HEADER = 64 << 20
MAX_INT_DIGITS = 4000
TENSOR_DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128", "int8", "int16", "int32",
                 "int64", "uint8", "bool")
ARRAY_KINDS = "biufc"                      # bool, int, uint, float, complex: never object, void or strings
ALLOWED_CLASSES = ("course_utils.gpt.GPTConfig",)     # dataclasses that may cross, by their dotted name


class WireError(ValueError):
    """A message that is not one this wire accepts (the other side's fault, or the value cannot be sent)."""


class SubmissionError(RuntimeError):
    """Raised in the judge when the submission's function raised an exception that is not one of Python's own."""


# -- framing ----------------------------------------------------------------------------------------------------
def pack_body(header: dict, buffers=()) -> bytes:
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    parts = [struct.pack(">II", len(head), len(buffers)), head]
    for b in buffers:
        parts += [struct.pack(">Q", len(b)), b]
    return b"".join(parts)


def send_body(sock, body: bytes, prefix: bytes = b"") -> None:
    """A frame: its length (8 bytes), then `prefix` (the judge's call number, where there is one) and the body."""
    sock.sendall(struct.pack(">Q", len(prefix) + len(body)) + prefix + body)


def recv_exact(sock, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_body(sock, limit: int) -> bytes:
    (size,) = struct.unpack(">Q", recv_exact(sock, 8))
    if size > limit:
        raise WireError(f"a message of {size:,} bytes, over the {limit:,} allowed")
    return recv_exact(sock, size)


def parse_body(body: bytes) -> tuple:
    if len(body) < 8:
        raise WireError("a message too short to hold its header")
    head_len, count = struct.unpack(">II", body[:8])
    if head_len > MAX_HEADER or 8 + head_len > len(body):
        raise WireError("a message whose header does not fit in it")
    try:
        header = json.loads(body[8:8 + head_len])
    except ValueError as err:
        raise WireError(f"a header that is not JSON: {err}") from None
    pos, buffers = 8 + head_len, []
    for _ in range(count):
        if pos + 8 > len(body):
            raise WireError("a message shorter than its buffers")
        (n,) = struct.unpack(">Q", body[pos:pos + 8])
        if pos + 8 + n > len(body):
            raise WireError("a buffer longer than the message")
        buffers.append(body[pos + 8:pos + 8 + n])
        pos += 8 + n
    if pos != len(body) or not isinstance(header, dict):
        raise WireError("a message with bytes after its last buffer, or a header that is not an object")
    return header, buffers


# -- values -----------------------------------------------------------------------------------------------------
def _torch():
    return sys.modules.get("torch")


def _numpy():
    return sys.modules.get("numpy")


class Encoder:
    """Turns a value into a JSON tree and a list of byte buffers. Objects that can be shared or changed (tensors,
    arrays, lists, dicts, generators) get a node number, so a second occurrence is a reference to the first;
    `known` maps id() of objects the other side sent to their numbers there (sent back as ["J", n])."""

    def __init__(self, known=None):
        self.buffers, self.memo, self.keep, self.known = [], {}, [], known or {}

    def buffer(self, data: bytes) -> int:
        self.buffers.append(bytes(data))
        return len(self.buffers) - 1

    def node(self, obj):
        n = len(self.memo)
        self.memo[id(obj)] = n
        self.keep.append(obj)
        return n

    def encode(self, x, depth: int = 0):
        if depth > MAX_DEPTH:
            raise WireError(f"a value nested more than {MAX_DEPTH} deep")
        if id(x) in self.known and not isinstance(x, (bool, int, float, str, type(None))):
            return ["J", self.known[id(x)]]
        if id(x) in self.memo and not isinstance(x, (bool, int, float, str, type(None), tuple)):
            return ["R", self.memo[id(x)]]
        torch, np = _torch(), _numpy()
        t = type(x)
        if x is None:
            return ["n"]
        if t is bool:
            return ["b", x]
        if t is int:
            return ["i", str(x)]
        if t is float:
            return ["f", x.hex()]
        if t is complex:
            return ["c", x.real.hex(), x.imag.hex()]
        if t is str:
            return ["s", x]
        if t is bytes:
            return ["y", self.buffer(x)]
        if t is tuple:
            return ["t", [self.encode(v, depth + 1) for v in x]]
        if t is list:
            n = self.node(x)
            return ["l", n, [self.encode(v, depth + 1) for v in x]]
        if t is dict:
            n = self.node(x)
            return ["d", n, [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in x.items()]]
        if t is slice:
            return ["sl", self.encode(x.start, depth + 1), self.encode(x.stop, depth + 1), self.encode(x.step, depth + 1)]
        if t is range:
            return ["rg", str(x.start), str(x.stop), str(x.step)]
        if torch is not None and isinstance(x, torch.Tensor):
            return self.tensor(x)
        if torch is not None and t is torch.Generator:
            return self.generator(x)
        if torch is not None and t is torch.dtype:
            return ["D", str(x).removeprefix("torch.")]
        if torch is not None and t is torch.device:
            return ["V", str(x)]
        if np is not None and t is np.ndarray:
            return self.array(x)
        if np is not None and isinstance(x, np.generic) and t.__module__ == "numpy":
            if x.dtype.kind not in ARRAY_KINDS:
                raise WireError(f"a NumPy scalar of dtype {x.dtype}, which cannot be sent")
            return ["a", x.dtype.str, self.buffer(x.tobytes())]
        if np is not None and isinstance(x, np.dtype):
            return ["ND", x.str]
        name = f"{t.__module__}.{t.__qualname__}"
        if name in ALLOWED_CLASSES and dataclasses.is_dataclass(x):
            return ["O", name, [[f.name, self.encode(getattr(x, f.name), depth + 1)] for f in dataclasses.fields(x)]]
        raise WireError(f"a value of type {name}, which cannot cross between the kernels (tensors, arrays, numbers, "
                        f"strings, tuples, lists and dicts of them can)")

    def tensor(self, x):
        torch = _torch()
        if type(x) is not torch.Tensor and not isinstance(x, torch.nn.Parameter):
            x = x.as_subclass(torch.Tensor)
        dtype = str(x.dtype).removeprefix("torch.")
        if dtype not in TENSOR_DTYPES or x.layout != torch.strided or x.is_quantized or x.is_meta:
            raise WireError(f"a tensor of dtype {x.dtype} and layout {x.layout}, which cannot be sent")
        n = self.node(x)
        values = x.detach().cpu().resolve_conj().resolve_neg().contiguous()
        data = values.reshape(-1).view(torch.uint8).numpy().tobytes() if values.numel() else b""
        stride = list(x.stride()) if x.device.type == "cpu" and all(s > 0 for s in x.stride()) else None
        return ["T", n, dtype, list(x.shape), stride, bool(x.requires_grad and x.is_leaf), self.buffer(data)]

    def generator(self, x):
        if x.device.type != "cpu":
            raise WireError("only CPU generators can be sent")
        return ["G", self.node(x), self.buffer(x.get_state().numpy().tobytes())]

    def array(self, x):
        if x.dtype.kind not in ARRAY_KINDS or x.dtype.fields is not None or x.dtype.subdtype is not None:
            raise WireError(f"an array of dtype {x.dtype}, which cannot be sent")
        n = self.node(x)
        order = "F" if x.flags.f_contiguous and not x.flags.c_contiguous else "C"
        return ["A", n, x.dtype.str, list(x.shape), order, self.buffer(x.tobytes(order=order))]


def _check_shape(shape) -> int:
    if not isinstance(shape, list) or len(shape) > 32 or not all(type(s) is int and 0 <= s < 1 << 40 for s in shape):
        raise WireError(f"a bad shape {shape!r}")
    count = 1
    for s in shape:
        count *= s
    return count


class Decoder:
    """The inverse of Encoder, for untrusted input: exact types only; `peer` resolves ["J", n] to objects of
    this side that were sent as node n."""

    def __init__(self, buffers, peer=None):
        self.buffers, self.nodes, self.peer, self.count = buffers, {}, peer or {}, 0

    def buf(self, i):
        if type(i) is not int or not 0 <= i < len(self.buffers):
            raise WireError(f"a reference to buffer {i!r}, which the message does not have")
        return self.buffers[i]

    def decode(self, tree, depth: int = 0):
        self.count += 1
        if depth > MAX_DEPTH or self.count > MAX_NODES:
            raise WireError("a value nested too deep or with too many parts")
        if not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
            raise WireError(f"a malformed value {str(tree)[:80]!r}")
        tag, args = tree[0], tree[1:]
        try:
            return self._decode(tag, args, depth)
        except WireError:
            raise
        except Exception as err:                     # noqa: BLE001 (any failure to read is the message's)
            raise WireError(f"a malformed {tag!r} value: {type(err).__name__}: {err}") from None

    def _node(self, n, obj):
        if type(n) is not int or n in self.nodes:
            raise WireError(f"a node number {n!r} given twice or not a number")
        self.nodes[n] = obj
        return obj

    def _decode(self, tag, a, depth):
        torch, np = _torch(), _numpy()
        if tag == "n":
            return None
        if tag == "b" and type(a[0]) is bool:
            return a[0]
        if tag == "i" and type(a[0]) is str and len(a[0]) <= MAX_INT_DIGITS:
            return int(a[0])
        if tag == "f" and type(a[0]) is str:
            return float.fromhex(a[0])
        if tag == "c":
            return complex(float.fromhex(a[0]), float.fromhex(a[1]))
        if tag == "s" and type(a[0]) is str:
            return a[0]
        if tag == "y":
            return bytes(self.buf(a[0]))
        if tag == "t" and type(a[0]) is list:
            return tuple(self.decode(v, depth + 1) for v in a[0])
        if tag == "l" and type(a[1]) is list:
            out = self._node(a[0], [])
            out.extend(self.decode(v, depth + 1) for v in a[1])
            return out
        if tag == "d" and type(a[1]) is list:
            out = self._node(a[0], {})
            for pair in a[1]:
                if type(pair) is not list or len(pair) != 2:
                    raise WireError("a dict entry that is not a pair")
                key = self.decode(pair[0], depth + 1)
                if type(key) not in (str, int, float, bool, tuple, type(None), complex, bytes):
                    raise WireError(f"a dict key of type {type(key).__name__}")
                out[key] = self.decode(pair[1], depth + 1)
            return out
        if tag == "sl":
            return slice(*(self.decode(v, depth + 1) for v in a))
        if tag == "rg":
            return range(int(a[0]), int(a[1]), int(a[2]))
        if tag == "R":
            if type(a[0]) is not int or a[0] not in self.nodes:
                raise WireError(f"a reference to node {a[0]!r}, which came before nothing")
            return self.nodes[a[0]]
        if tag == "J":
            if type(a[0]) is not int or a[0] not in self.peer:
                raise WireError(f"a reference to object {a[0]!r}, which was never sent")
            return self.peer[a[0]]
        if tag == "T" and torch is not None:
            return self._node(a[0], self.tensor(*a[1:]))
        if tag == "G" and torch is not None:
            g = torch.Generator()
            g.set_state(torch.frombuffer(bytearray(self.buf(a[1])), dtype=torch.uint8))
            return self._node(a[0], g)
        if tag == "D" and torch is not None and a[0] in TENSOR_DTYPES:
            return getattr(torch, a[0])
        if tag == "V" and torch is not None and type(a[0]) is str and a[0].split(":")[0] in ("cpu", "cuda", "mps", "meta"):
            return torch.device(a[0])
        if tag == "A" and np is not None:
            return self._node(a[0], self.array(*a[1:]))
        if tag == "a" and np is not None:
            dtype = self.dtype(a[0])
            data = self.buf(a[1])
            if len(data) != dtype.itemsize:
                raise WireError("a NumPy scalar whose bytes do not match its dtype")
            return np.frombuffer(data, dtype=dtype)[0].copy()
        if tag == "ND" and np is not None:
            return self.dtype(a[0])
        if tag == "O" and a[0] in ALLOWED_CLASSES and type(a[1]) is list:
            module, _, name = a[0].rpartition(".")
            cls = getattr(importlib.import_module(module), name)
            names = {f.name for f in dataclasses.fields(cls)}
            fields = {}
            for pair in a[1]:
                if type(pair) is not list or len(pair) != 2 or pair[0] not in names:
                    raise WireError(f"a field that {a[0]} does not have")
                fields[pair[0]] = self.decode(pair[1], depth + 1)
            return cls(**fields)
        raise WireError(f"a value tagged {tag!r} that this side cannot read")

    def dtype(self, text):
        np = _numpy()
        if type(text) is not str or len(text) > 8:
            raise WireError(f"a bad dtype {text!r}")
        dtype = np.dtype(text)
        if dtype.kind not in ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise WireError(f"a dtype {dtype} that cannot be sent")
        return dtype

    def tensor(self, dtype, shape, stride, requires_grad, index):
        torch = _torch()
        if dtype not in TENSOR_DTYPES or type(requires_grad) is not bool:
            raise WireError(f"a tensor of dtype {dtype!r}")
        dt = getattr(torch, dtype)
        count = _check_shape(shape)
        data = self.buf(index)
        if len(data) != count * dt.itemsize:
            raise WireError(f"a tensor of shape {shape} and dtype {dtype} with {len(data)} bytes")
        flat = torch.frombuffer(bytearray(data), dtype=dt) if count else torch.empty(0, dtype=dt)
        values = flat.reshape(shape)
        if stride is not None and count:                # the same layout as the sender's (a transposed view stays one)
            if (not isinstance(stride, list) or len(stride) != len(shape)
                    or not all(type(s) is int and 0 < s < 1 << 40 for s in stride)):
                raise WireError(f"a bad stride {stride!r}")
            span = 1 + sum((n - 1) * s for n, s in zip(shape, stride))
            if span > max(count, 1) * 64:
                raise WireError(f"a stride {stride} that spans {span:,} elements for {count:,}")
            laid = torch.empty_strided(shape, stride, dtype=dt)
            try:
                laid.copy_(values)
            except RuntimeError:                        # overlapping strides: keep the values, densely laid
                laid = values
            values = laid
        if requires_grad:
            if not (dt.is_floating_point or dt.is_complex):
                raise WireError("an integer tensor that requires grad")
            values.requires_grad_(True)
        return values

    def array(self, dtype, shape, order, index):
        np = _numpy()
        dt = self.dtype(dtype)
        count = _check_shape(shape)
        data = self.buf(index)
        if len(data) != count * dt.itemsize or order not in ("C", "F"):
            raise WireError(f"an array of shape {shape} and dtype {dt} with {len(data)} bytes")
        return np.frombuffer(bytearray(data), dtype=dt).reshape(shape, order=order) if count else np.empty(shape, dtype=dt)


def encode_message(header: dict, fields: dict, known=None) -> tuple:
    enc = Encoder(known)
    header = dict(header)
    for key, value in fields.items():
        header[key] = enc.encode(value)
    return header, enc.buffers, enc


# -- random states ----------------------------------------------------------------------------------------------
def rng_states() -> dict:
    """The global random states a function may draw from: torch's CPU generator, NumPy's legacy one, Python's."""
    states = {"random": random.getstate()}
    torch, np = _torch(), _numpy()
    if torch is not None:
        states["torch"] = torch.get_rng_state()
    if np is not None:
        states["numpy"] = np.random.get_state()
    return states


def draw_from(names) -> None:
    """One draw from each named global generator of this process (the judge's: see Client.call)."""
    torch, np = _torch(), _numpy()
    if "random" in names:
        random.random()
    if "torch" in names and torch is not None:
        torch.rand(1)
    if "numpy" in names and np is not None:
        np.random.random()


def changed_states(now: dict, before: dict) -> list:
    """The names of the generators whose state differs between two rng_states()."""
    torch, np = _torch(), _numpy()
    changed = []
    for key, state in now.items():
        old = before.get(key)
        if key == "torch":
            same = old is not None and bool(torch.equal(state, old))
        elif key == "numpy":
            same = old is not None and state[0] == old[0] and bool(np.array_equal(state[1], old[1])) and state[2:] == old[2:]
        else:
            same = state == old
        if not same:
            changed.append(key)
    return changed


# -- the submission's side --------------------------------------------------------------------------------------
def _bytes_of(x):
    torch = _torch()
    if torch is not None and isinstance(x, torch.Tensor):
        v = x.detach().contiguous()
        return (str(v.dtype), tuple(v.shape), v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    if torch is not None and isinstance(x, torch.Generator):
        return x.get_state().numpy().tobytes()
    return (x.dtype.str, x.shape, x.tobytes())


def handle(header: dict, buffers: list, namespace: dict) -> tuple:
    """Run one call in the submission's kernel; the reply's header and buffers."""
    dec = Decoder(buffers)
    name = header.get("name")
    args = dec.decode(header["args"])
    kwargs = dec.decode(header["kwargs"])
    torch, np = _torch(), _numpy()
    before = {n: _bytes_of(o) for n, o in dec.nodes.items()
              if (torch is not None and isinstance(o, (torch.Tensor, torch.Generator)))
              or (np is not None and isinstance(o, np.ndarray))}
    fn = namespace.get(name) if type(name) is str else None
    if fn is None:
        raise NameError(f"name {name!r} is not defined in the submission's kernel (did its exercise cell run?)")
    states = rng_states()
    result = fn(*args, **(kwargs if type(kwargs) is dict else {}))
    drawn = changed_states(rng_states(), states)
    known = {id(o): n for n, o in dec.nodes.items()}
    updates = []
    enc = Encoder(known)                               # updates first, then the result: the judge reads them so
    for n, o in dec.nodes.items():                     # what the function changed in place, by the caller's numbers
        if n in before:
            if _bytes_of(o) != before[n]:
                updates.append([n, enc.array(o) if np is not None and isinstance(o, np.ndarray) else
                                enc.generator(o) if isinstance(o, torch.Generator) else enc.tensor(o)])
        elif type(o) in (list, dict):                  # their items now (the caller's own objects by number)
            del known[id(o)]
            updates.append([n, enc.encode(o)])
            known[id(o)] = n
    reply = {"ok": True, "result": enc.encode(result), "updates": updates, "drew": drawn}
    return reply, enc.buffers


def serve(path: str, namespace: dict, limit: int = 1 << 30) -> None:
    """The submission's side of one session: answer calls until the grader closes the connection. Runs as a cell
    of the submission's kernel."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    try:
        while True:
            try:
                header, buffers = parse_body(recv_body(sock, limit))
            except EOFError:
                return
            try:
                reply, out = handle(header, buffers, namespace)
            except BaseException as err:              # noqa: BLE001 (every failure goes back to the judge)
                tb = traceback.format_exception(type(err), err, err.__traceback__)
                reply, out = {"ok": False, "type": type(err).__name__, "message": str(err)[-4000:],
                              "traceback": "".join(tb[-12:])[-6000:]}, []
                if isinstance(err, (SystemExit, GeneratorExit)):
                    raise
            send_body(sock, pack_body(reply, out))
    finally:
        sock.close()


# -- the judge's side -------------------------------------------------------------------------------------------
_RAISED_AS_ITSELF = {name for name, v in vars(builtins).items()
                     if isinstance(v, type) and issubclass(v, Exception)
                     and not issubclass(v, (StopIteration, StopAsyncIteration))}


class Client:
    """The judge's end: `proxy(name)` is a function that calls the submission's `name` in its kernel."""

    def __init__(self, path: str, limit: int = 1 << 30):
        self.path, self.limit, self.sock, self.seq = path, limit, None, 0

    def connect(self):
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(self.path)
        return self.sock

    def proxy(self, name: str):
        client = self

        def call(*args, **kwargs):
            return client.call(name, args, kwargs)

        call.__name__ = call.__qualname__ = name
        call.__doc__ = f"{name}, as the submission defined it: it runs in the submission's kernel (tools.judge_wire)"
        return call

    def call(self, name: str, args: tuple, kwargs: dict):
        enc = Encoder()
        header = {"op": "call", "name": name, "args": enc.encode(tuple(args)), "kwargs": enc.encode(dict(kwargs))}
        sent = dict(enumerate(enc.keep))
        self.seq += 1
        sock = self.connect()
        try:
            send_body(sock, pack_body(header, enc.buffers), struct.pack(">Q", self.seq))
            while True:                               # a reply to an earlier, interrupted call is skipped
                body = recv_body(sock, self.limit + 16)
                if len(body) >= 8 and struct.unpack(">Q", body[:8])[0] == self.seq:
                    break
        except BaseException:
            self.sock = None                          # the stream may be mid-message: start a fresh one
            sock.close()
            raise
        reply, buffers = parse_body(body[8:])
        if reply.get("grader"):                       # the grader's own word (the submission's kernel is gone ...)
            raise SubmissionError(str(reply["grader"]))
        if reply.get("ok") is not True:
            return self.raise_error(name, reply)
        dec = Decoder(buffers, peer=sent)              # in the order the submission's side wrote them
        updates = reply.get("updates")
        if not isinstance(updates, list):
            raise WireError("a reply without its updates")
        decoded = []
        for item in updates:
            if type(item) is not list or len(item) != 2 or type(item[0]) is not int or item[0] not in sent:
                raise WireError("an update of an object that was never sent")
            decoded.append((sent[item[0]], dec.decode(item[1])))
        result = dec.decode(reply.get("result"))
        drew = reply.get("drew", [])
        if type(drew) is not list:
            raise WireError("a reply whose list of random generators drawn from is not a list")
        for target, new in decoded:
            self.apply(name, target, new)
        # A function that drew from a global generator there moves the judge's own one here (by a draw of the
        # judge's: the submission never chooses a random state of the judge's), so "the global random state is
        # left untouched" is checked as in one kernel
        draw_from(drew)
        return result

    @staticmethod
    def apply(name, target, new):
        """Make the caller's object what the function left it: the in-place changes of a call."""
        torch, np = _torch(), _numpy()
        if torch is not None and isinstance(target, torch.Tensor):
            if type(new) is not torch.Tensor or new.shape != target.shape or new.dtype != target.dtype:
                raise SubmissionError(f"{name} changed the shape or dtype of a tensor it was handed, in place "
                                      f"(to {getattr(new, 'shape', '?')}, {getattr(new, 'dtype', '?')})")
            with torch.no_grad():
                target.copy_(new)
        elif torch is not None and isinstance(target, torch.Generator):
            if type(new) is not torch.Generator:
                raise WireError("a generator's state that is not one")
            target.set_state(new.get_state())
        elif np is not None and isinstance(target, np.ndarray):
            if type(new) is not np.ndarray or new.shape != target.shape or new.dtype != target.dtype:
                raise SubmissionError(f"{name} changed the shape or dtype of an array it was handed, in place")
            target[...] = new
        elif type(target) is list and type(new) is list:
            target[:] = new
        elif type(target) is dict and type(new) is dict:
            target.clear()
            target.update(new)
        else:
            raise WireError(f"an update of a {type(target).__name__} by a {type(new).__name__}")

    @staticmethod
    def raise_error(name, reply):
        kind, message = str(reply.get("type", "Exception")), str(reply.get("message", ""))
        where = str(reply.get("traceback", ""))
        text = f"{message}\n\n[raised by {name} in the submission's kernel]\n{where}".rstrip()
        if kind in _RAISED_AS_ITSELF:
            raise getattr(builtins, kind)(text) from None
        raise SubmissionError(f"{kind}: {text}") from None
