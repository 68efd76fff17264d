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
import contextlib
import ctypes
import dataclasses
import importlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import traceback
import weakref
import zlib
from collections import OrderedDict

MAX_DEPTH = 40
MAX_NODES = 2_000_000
MAX_HEADER = 64 << 20
MAX_INT_DIGITS = 4000
TENSOR_DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128", "int8", "int16", "int32",
                 "int64", "uint8", "bool")
ARRAY_KINDS = "biufc"                      # bool, int, uint, float, complex: never object, void or strings
ALLOWED_CLASSES = ("course_utils.gpt.GPTConfig",)     # dataclasses that may cross, by their dotted name
MAX_PADDING = 64 << 20
MAX_STORAGE = 4 << 30                     # bytes of storage beyond the elements, per message, never written to
CACHE_MIN_BYTES = 1 << 20                 # a tensor this large is sent once, then named by its key while unchanged
CACHE_BYTES, CACHE_ENTRIES = 512 << 20, 16
WIRE_SOURCE = globals().get("WIRE_SOURCE", "")    # this file's text, where the grader installed it (tools.judge)


class TensorCache:
    """Large tensors the submission's side holds from earlier calls, least recently used first. The judge's side
    decides: it holds weak references and the state each tensor was sent in, evicts, and names what it evicted in
    its next call ("drop"); the submission's side holds the tensors and drops what it is told to."""

    def __init__(self, next_key=0):
        self.entries, self.total, self.next_key = OrderedDict(), 0, next_key

    def store(self, key, value, nbytes, evict=True) -> list:
        self.entries[key] = (value, nbytes)
        self.total += nbytes
        evicted = []
        while evict and self.entries and (self.total > CACHE_BYTES or len(self.entries) > CACHE_ENTRIES):
            old, (_, size) = self.entries.popitem(last=False)
            self.total -= size
            evicted.append(old)
        return evicted

    def use(self, key):
        value, _ = self.entries[key]
        self.entries.move_to_end(key)
        return value

    def drop(self, key):
        if key in self.entries:
            self.total -= self.entries.pop(key)[1]

    def forget(self, tensor) -> None:
        """Drop every entry that holds this very tensor (the call changed it: the judge sends it again)."""
        for key, ((t, _), _) in list(self.entries.items()):
            if t is tensor:
                self.drop(key)


SUBMISSION_CACHE = TensorCache()         # the submission's side (this module lives on in its kernel between sessions)


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
    sock.sendall(struct.pack(">Q", len(prefix) + len(body)) + bytes(prefix))
    sock.sendall(body)                                   # (not joined: a large body is not copied once more)


SEGMENT = 16 << 20                       # a message is read into memory as it arrives, this much at a time


def recv_exact(sock, n: int) -> bytes:
    """n bytes. Memory is taken as they arrive (a segment at a time), not for the size a peer announced: a reply
    that says 128 MiB and sends nothing holds 16 MiB of the grader, not 128 (red team of session 39)."""
    out = bytearray(min(n, SEGMENT))                     # read in place: one copy of a large message, not two
    view, got = memoryview(out), 0
    while got < n:
        if got == len(out):                              # the next segment, once the last one is full
            view.release()
            out.extend(bytes(min(n - got, SEGMENT)))
            view = memoryview(out)
        k = sock.recv_into(view[got:], min(len(out) - got, 1 << 22))
        if not k:
            raise EOFError("the connection closed")
        got += k
    view.release()
    return bytes(out) if n <= 1 << 16 else out


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
    except (ValueError, RecursionError) as err:          # (JSON nested thousands deep: RecursionError)
        raise WireError(f"a header that is not JSON: {type(err).__name__}: {str(err)[:200]}") from None
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

    def __init__(self, known=None, cache=None, bases=None, objects=None):
        self.buffers, self.memo, self.keep, self.known, self.cache = [], {}, [], known or {}, cache
        self.dropped = []                                # cache keys evicted while encoding
        self.bases = bases or {}                         # storage address -> (node, tensor) of the caller's tensors
        self.views = set()
        self.objects = objects                           # JudgeObjects or SubmissionObjects: this side's table
        self.table, self.index = [], {}                  # the message's objects of the notebook's classes, in order

    def add_object(self, x) -> int:
        """x's place in the message's table of objects (their attributes go in `states`, encoded flat, so that a
        long chain of nodes is not a deeply nested value)."""
        k = self.index.get(id(x))
        if k is None:
            k = self.index[id(x)] = len(self.table)
            self.table.append(x)
        return k

    def object_table(self) -> tuple:
        """The table (number and class of each object) and the objects' states: what this side sends of each,
        which may bring more objects into the table (a node's parents)."""
        states, k = [], 0
        while k < len(self.table):
            states.append(self.objects.state(self, self.table[k]))
            k += 1
        table = [[self.objects.number(x), type(x).__qualname__, self.objects.whole(x)] for x in self.table]
        return table, states

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
        if t is set:
            n = self.node(x)
            return ["S", n, [self.encode(v, depth + 1) for v in x]]
        if t is frozenset:
            return ["FS", [self.encode(v, depth + 1) for v in x]]
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
        if torch is not None and isinstance(x, torch.nn.Module) and not self.bases:     # the judge's modules only
            return self.module(x, depth)
        if torch is not None and isinstance(x, torch.optim.Optimizer) and not self.bases:   # (and optimizers)
            return self.optimizer(x, depth)
        if np is not None and isinstance(x, np.generic) and t.__module__ == "numpy":
            if x.dtype.kind not in ARRAY_KINDS:
                raise WireError(f"a NumPy scalar of dtype {x.dtype}, which cannot be sent")
            return ["a", x.dtype.str, self.buffer(x.tobytes())]
        if np is not None and isinstance(x, np.dtype):
            return ["ND", x.str]
        name = f"{t.__module__}.{t.__qualname__}"
        if name in ALLOWED_CLASSES and dataclasses.is_dataclass(x):
            return ["O", name, [[f.name, self.encode(getattr(x, f.name), depth + 1)] for f in dataclasses.fields(x)]]
        tree = self.objects.encode(self, x) if self.objects is not None else None
        if tree is not None:
            return tree
        raise WireError(f"a value of type {name}, which cannot cross between the kernels (tensors, arrays, numbers, "
                        f"strings, tuples, lists, sets and dicts of them can)")

    def tensor(self, x):
        torch = _torch()
        if type(x) is not torch.Tensor and not isinstance(x, torch.nn.Parameter):
            x = x.as_subclass(torch.Tensor)
        dtype = str(x.dtype).removeprefix("torch.")
        if dtype not in TENSOR_DTYPES or x.layout != torch.strided or x.is_quantized or x.is_meta:
            raise WireError(f"a tensor of dtype {x.dtype} and layout {x.layout}, which cannot be sent")
        base = (self.bases.get(x.untyped_storage().data_ptr()) if self.bases and x.device.type == "cpu" and x.numel()
                else None)
        if (base is not None and base[1] is not x and base[1].dtype == x.dtype and all(s >= 0 for s in x.stride())
                and _dense(base[1])):                   # (a view of a tensor with gaps goes as a copy)
            node, b = base                               # a view of a tensor the caller handed: where it lies in it
            self.views.add(id(x))                        # (rebuilt there on the caller's tensor, graph and all)
            return ["W", self.node(x), node, x.storage_offset() - b.storage_offset(), list(x.shape), list(x.stride()),
                    list(b.stride())]
        n = self.node(x)
        # its layout: strides, then where it starts in its storage (a view that starts further in stays one)
        # and the bytes of that storage (a tensor packed into the start of a larger buffer holds the whole buffer)
        stride = (list(x.stride()) + [x.storage_offset(), x.untyped_storage().nbytes()]
                  if x.device.type == "cpu" and all(s > 0 for s in x.stride()) else None)
        grad = bool(x.requires_grad and x.is_leaf)
        key = None
        if (self.cache is not None and x.numel() * x.element_size() >= CACHE_MIN_BYTES and x.device.type == "cpu"
                and not x.is_inference() and x.is_contiguous()):   # (an inference tensor keeps no version counter)
            # unchanged: the same version, place and layout, and the same checksum of its bytes (a write through
            # x.data or a NumPy array sharing its memory leaves the version as it was)
            checksum = zlib.crc32(memoryview(x.detach().reshape(-1).view(torch.uint8).numpy()))   # 3 GB/s
            state = (x._version, x.data_ptr(), x.storage_offset(), tuple(x.shape), tuple(x.stride()), x.dtype, grad,
                     checksum)
            for key, ((ref, was), _) in list(self.cache.entries.items()):
                if ref() is x and was == state:
                    self.cache.use(key)
                    return ["C", n, key]                  # unchanged since it was sent: the other side has it
            key = self.cache.next_key
            self.cache.next_key += 1
            self.dropped += self.cache.store(key, (weakref.ref(x), state), x.numel() * x.element_size())
        values = x.detach().cpu().resolve_conj().resolve_neg().contiguous()
        data = values.reshape(-1).view(torch.uint8).numpy().tobytes() if values.numel() else b""
        return ["T", n, dtype, list(x.shape), stride, grad, self.buffer(data)] + ([key] if key is not None else [])

    def module(self, x, depth):
        """A module as its class's name and its state: parameters, buffers, submodules, training flag and plain
        attributes (its hooks stay behind). Rebuilt on the other side from its own class of that name."""
        n = self.node(x)
        cls = type(x)
        state = {"parameters": dict(x._parameters), "buffers": dict(x._buffers),
                 "modules": dict(x._modules), "training": x.training,
                 "attributes": {k: v for k, v in vars(x).items() if not k.startswith("_") and k != "training"}}
        return ["M", n, cls.__module__, cls.__qualname__, self.encode(state, depth + 1)]

    def optimizer(self, x, depth):
        """An optimizer of torch.optim's as its class's name, its defaults, its parameter groups (their tensors
        by reference: the call's own) and its state. Rebuilt on the other side by its own class of that name."""
        n = self.node(x)
        cls = type(x)
        if not cls.__module__.startswith("torch.optim.") or "." in cls.__qualname__:
            raise WireError(f"an optimizer of class {cls.__qualname__}, which is not one of torch.optim's")
        state = {"defaults": dict(x.defaults), "groups": [{**g, "params": list(g["params"])} for g in x.param_groups],
                 "state": [[p, dict(v)] for p, v in x.state.items()]}
        return ["OP", n, cls.__module__, cls.__qualname__, self.encode(state, depth + 1)]

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


def _dense(t) -> bool:
    """Does every address between a tensor's first and last element hold one of its elements (no gaps, no
    overlaps)?"""
    expected = 1
    for step, size in sorted((s, k) for k, s in zip(t.shape, t.stride()) if k != 1):
        if step != expected:
            return False
        expected *= size
    return t.numel() > 0


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

    def __init__(self, buffers, peer=None, cache=None, namespace=None, objects=None, related=None):
        self.buffers, self.nodes, self.peer, self.count, self.cache = buffers, {}, peer or {}, 0, cache
        self.namespace = namespace                       # the submission's side: where notebook classes are found
        self.objects, self.related, self.table = objects, related or {}, []   # (see JudgeObjects)
        self.padding = 0                                 # bytes of storage laid out around tensors' elements
        self.storage = 0                                 # bytes of storage added beyond that (MAX_STORAGE)
        self.parameters = {}                             # id(tensor) -> its Parameter (tied weights stay tied)
        self.snapshots = {}                              # node -> a cached tensor's value as the call found it
        self.sizes = {}                                  # node of a list, dict or set -> how many parts it holds

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
        start = self.count
        try:
            value = self._decode(tag, args, depth)
            if tag in ("l", "d", "S"):                   # its parts, all told: what a reference to it stands for
                self.sizes[args[0]] = self.count - start
            return value
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
        if tag == "S" and type(a[1]) is list:
            out = self._node(a[0], set())
            out.update(self.decode(v, depth + 1) for v in a[1])
            return out
        if tag == "FS" and type(a[0]) is list:
            return frozenset(self.decode(v, depth + 1) for v in a[0])
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
            # a container referred to again counts its parts again: lists of lists each referring twice to the
            # one before are small on the wire and 2**depth items to anything that walks them (a check's plain())
            self.count += self.sizes.get(a[0], 0)
            if self.count > MAX_NODES:
                raise WireError("a value with too many parts, counted as whoever walks it meets them")
            return self.nodes[a[0]]
        if tag == "J":
            if type(a[0]) is not int or a[0] not in self.peer:
                raise WireError(f"a reference to object {a[0]!r}, which was never sent")
            return self.peer[a[0]]
        if tag == "T" and torch is not None and len(a) == 7 and self.cache is not None:      # sent to be kept
            if type(a[6]) is not int:
                raise WireError("a cache key that is not a number")
            t = self._node(a[0], self.tensor(*a[1:6]))
            self.snapshots[a[0]] = t.detach().clone()    # (the call's "before", taken once)
            self.cache.store(a[6], (t, self.snapshots[a[0]]), t.numel() * t.element_size(), evict=False)
            return t
        if tag == "T" and torch is not None and len(a) == 6:
            return self._node(a[0], self.tensor(*a[1:6]))
        if tag == "C" and self.cache is not None:
            if a[1] not in self.cache.entries:
                raise WireError(f"a cached tensor {a[1]!r} this side does not hold")
            t, snapshot = self.cache.use(a[1])
            self.snapshots[a[0]] = snapshot
            return self._node(a[0], t)
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
            if len(data) != dtype.itemsize or (dtype.kind == "b" and data[0] > 1):
                raise WireError("a NumPy scalar whose bytes do not match its dtype")
            return np.frombuffer(data, dtype=dtype)[0].copy()
        if tag == "ND" and np is not None:
            return self.dtype(a[0])
        if tag == "M" and torch is not None and self.namespace is not None:
            return self.module(*a, depth=depth)
        if tag == "OP" and torch is not None and self.namespace is not None:
            return self.optimizer(*a, depth=depth)
        if tag == "W" and torch is not None:
            return self._node(a[0], self.view(*a[1:]))
        if tag == "N" and type(a[0]) is int and 0 <= a[0] < len(self.table):
            return self.table[a[0]]
        if tag in ("F", "X") and self.objects is not None and type(a[0]) is int:
            return self.objects.function(a[0]) if tag == "F" else self.objects.opaque_of(a[0])
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

    def shells(self, table) -> list:
        """The objects a message's table names, before any value refers to them: this side's own object where it
        has one by that number, or a new one of its class of that name, not yet initialised (its state follows)."""
        if self.objects is None or type(table) is not list or len(table) > MAX_NODES // 4:
            raise WireError("a message whose table of objects is not a list")
        for entry in table:
            if (type(entry) is not list or len(entry) != 3 or type(entry[0]) is not int or type(entry[1]) is not str
                    or type(entry[2]) is not bool):
                raise WireError(f"a bad entry {str(entry)[:80]!r} in a message's table of objects")
            self.table.append(self.objects.shell(*entry, preferred=self.related.get(len(self.table))))
        return self.table

    def states(self, states) -> list:
        """Each table object's attributes as the message gives them: (object, {name: value}, [names deleted])."""
        if type(states) is not list or len(states) != len(self.table):
            raise WireError("a message whose objects' states do not match its table")
        out = []
        for obj, entry in zip(self.table, states):
            if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not list or type(entry[1]) is not list:
                raise WireError("an object's state that is not [attributes, deleted names]")
            sets = {}
            for pair in entry[0]:
                if type(pair) is not list or len(pair) != 2 or not _attribute_name(pair[0]):
                    raise WireError(f"an attribute named {str(pair)[:60]!r}, which cannot be set")
                sets[pair[0]] = self.decode(pair[1], 1)
                if sets[pair[0]] is not vars(obj).get(pair[0], sets):
                    self.objects.may_set(obj, pair[0], sets[pair[0]])
            if not all(_attribute_name(n) for n in entry[1]):
                raise WireError("a deleted attribute with a bad name")
            for n in entry[1]:
                self.objects.may_set(obj, n)
            out.append((obj, sets, list(entry[1])))
        return out

    def module(self, n, module_name, qualname, state_tree, depth):
        torch = _torch()
        if type(module_name) is not str or type(qualname) is not str:
            raise WireError("a module without a class name")
        if module_name.startswith("torch.nn.") and "." not in qualname:
            cls = getattr(importlib.import_module(module_name), qualname)
        else:                                            # a class of the notebook's: this kernel's own of that name
            cls = self.namespace.get(qualname)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise WireError(f"a module of class {qualname}, which this kernel does not have")
        obj = self._node(n, cls.__new__(cls))
        torch.nn.Module.__init__(obj)
        state = self.decode(state_tree, depth + 1)
        for name, t in state["parameters"].items():
            if t is not None and id(t) not in self.parameters:
                parameter = torch.nn.Parameter(t, requires_grad=t.requires_grad)
                self.parameters[id(t)] = self.parameters[id(parameter)] = parameter
                for k, o in self.nodes.items():          # the Parameter is the object the call sees: its changes
                    if o is t:                           # and gradients are the caller's
                        self.nodes[k] = parameter
            obj._parameters[name] = None if t is None else self.parameters[id(t)]
        obj._buffers.update(state["buffers"])
        obj._modules.update(state["modules"])
        obj.training = bool(state["training"])
        obj.__dict__.update(state["attributes"])
        return obj

    def optimizer(self, n, module_name, qualname, state_tree, depth):
        torch = _torch()
        if type(module_name) is not str or not module_name.startswith("torch.optim.") or type(qualname) is not str:
            raise WireError("an optimizer that is not one of torch.optim's")
        cls = getattr(importlib.import_module(module_name), qualname, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise WireError(f"an optimizer of class {qualname}, which torch.optim does not have")
        state = self.decode(state_tree, depth + 1)
        params = lambda g: [self.parameters.get(id(t), t) for t in g["params"]]     # (a module's Parameter)
        obj = self._node(n, cls([{**g, "params": params(g)} for g in state["groups"]], **state["defaults"]))
        for p, values in state["state"]:
            obj.state[self.parameters.get(id(p), p)] = values
        return obj

    def view(self, base_node, offset, shape, stride, base_stride):
        """A view the function returned of a tensor the judge handed it: rebuilt on the judge's own tensor, only
        where every element it names is an element of that tensor."""
        base = self.peer.get(base_node) if type(base_node) is int else None
        torch = _torch()
        if not isinstance(base, torch.Tensor):
            raise WireError(f"a view of object {base_node!r}, which is not a tensor the judge sent")
        count = _check_shape(shape)
        if (not isinstance(stride, list) or len(stride) != len(shape) or not all(type(s) is int and 0 <= s < 1 << 40 for s in stride)
                or type(offset) is not int or base_stride != list(base.stride())):
            raise WireError("a view with a bad layout, or of a tensor laid out otherwise than the judge's")
        if not _dense(base):                             # every address in its extent is one of its elements
            raise WireError("a view of a tensor with gaps in its storage")
        start = base.storage_offset() + offset
        first, last = base.storage_offset(), base.storage_offset() + sum((k - 1) * s for k, s in zip(base.shape, base.stride()))
        end = start + sum((k - 1) * s for k, s in zip(shape, stride))
        if count and not (first <= start and end <= last and base.numel()):
            raise WireError("a view that reaches outside the tensor it was made from")
        if count > max(64 * base.numel(), 1 << 20):        # (stride 0 repeats elements: a broadcast, not a flood)
            raise WireError(f"a view of {count:,} elements of a tensor of {base.numel():,}")
        return base.as_strided(shape, stride, start) if count else base.new_empty(shape)

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
        if dt is torch.bool and count and int(flat.view(torch.uint8).max()) > 1:
            raise WireError("a bool tensor with bytes other than 0 and 1")
        values = flat.reshape(shape)
        if stride is not None and count:                # the same layout as the sender's (a transposed view stays one,
            if (not isinstance(stride, list) or len(stride) != len(shape) + 2    # and one that starts further into
                    or not all(type(s) is int and 0 <= s < 1 << 40 for s in stride)                 # its storage)
                    or 0 in stride[:-2]):
                raise WireError(f"a bad stride {stride!r}")
            stride, offset, storage_bytes = stride[:-2], stride[-2], stride[-1]
            span = offset + 1 + sum((n - 1) * s for n, s in zip(shape, stride))
            if span > 4 * count + 4096:                 # a narrow view of a large tensor arrives dense (its values are
                stride, offset = None, min(offset, 4096)    # what it is), still some way into a storage of zeros if
                span = offset + count                        # it was not at the start (a function that ignores the
            self.padding += (span - count) * dt.itemsize     # offset is as wrong here as there)
            if self.padding > MAX_PADDING:
                raise WireError("tensors laid out in far more storage than their elements")
            laid = torch.zeros(span, dtype=dt)
            laid = laid.as_strided(shape, stride, offset) if stride is not None else laid[offset:].view(shape)
            try:
                laid.copy_(values)
            except RuntimeError:                        # overlapping strides: keep the values, densely laid
                laid = values
            if storage_bytes > laid.untyped_storage().nbytes():     # the sender's storage was larger: so is this
                self.storage += storage_bytes - laid.untyped_storage().nbytes()   # one (its pages untouched: it is
                if self.storage > MAX_STORAGE:                     # not filled); red team of session 39: 06.7's
                    raise WireError("tensors in storage far larger than their elements")   # packed bytes at the
                laid.untyped_storage().resize_(storage_bytes)       # start of a 16x larger buffer passed its check
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
        if dt.kind == "b" and count and max(data) > 1:
            raise WireError("a bool array with bytes other than 0 and 1")
        return np.frombuffer(bytearray(data), dtype=dt).reshape(shape, order=order) if count else np.empty(shape, dtype=dt)


def encode_message(header: dict, fields: dict, known=None) -> tuple:
    enc = Encoder(known)
    header = dict(header)
    for key, value in fields.items():
        header[key] = enc.encode(value)
    return header, enc.buffers, enc


# -- objects of the notebook's own classes ----------------------------------------------------------------------
# A node of 02's engines (`Value`, `Tensor`) is an object of a class the notebook's cells define, which both kernels
# ran. It crosses as its class's name and its attributes, under a number both sides keep while the judge holds the
# object: a node the judge sent comes back as the judge's own object, and one the submission's code made comes back
# as a new object of the judge's class of that name (its attributes set, its __init__ not run). A function such an
# object holds (the closure a node keeps for its backward step) stays on its side: the judge's crosses as an opaque
# stand-in; the submission's comes to the judge as a RemoteFunction, which runs it in the submission's kernel, with
# the objects of the call that made it sent along (their attributes as the judge has them, and back as it left them).


def _is_function(value) -> bool:
    return callable(value) and not isinstance(value, type)


def _attribute_name(name) -> bool:
    return type(name) is str and 0 < len(name) <= 200 and not name.startswith("__")


def _notebook_class(namespace, qualname):
    """The class the notebook's cells defined under this name in this kernel, or a WireError."""
    cls = namespace.get(qualname) if namespace is not None and type(qualname) is str else None
    if not (isinstance(cls, type) and cls.__module__ == "__main__" and _is_notebook_class(cls)):
        raise WireError(f"an object of class {qualname!r}, which this kernel's notebook does not define")
    return cls


def _is_notebook_class(cls) -> bool:
    torch = _torch()
    return not (torch is not None and issubclass(cls, torch.nn.Module))


def _is_notebook_object(x, namespace, names=None) -> bool:
    """Is x an object of a class the notebook's cells define (and, on the submission's side, one the judge has by
    that name)?"""
    cls = type(x)
    if cls.__module__ != "__main__" or namespace is None or namespace.get(cls.__qualname__) is not cls:
        return False
    if names is not None and cls.__qualname__ not in names:
        return False
    return _is_notebook_class(cls) and (type(x.__dict__) is dict if hasattr(x, "__dict__") else False)


def _call_objects(sent, received) -> list:
    """The objects of a call, in the order both sides number them: those the judge sent, then the reply's new
    ones. A function the call made keeps them (RemoteFunction.related here, its own list there)."""
    seen = {id(o) for o in sent}
    return sent + [o for o in received if id(o) not in seen]


def _set_state(obj, sets, deleted) -> None:
    attributes = object.__getattribute__(obj, "__dict__")
    for name in deleted:
        attributes.pop(name, None)
    attributes.update(sets)


class Opaque:
    """The submission's side: an object of the judge's that does not cross (a function the instructor's code made,
    which a node keeps). Held by its number, it goes back as the judge's own object."""
    __slots__ = ("number",)

    def __init__(self, number):
        self.number = number

    def __call__(self, *args, **kwargs):
        raise TypeError("this function belongs to the judge (the instructor's code made it) and runs only there")

    def __repr__(self):
        return f"<the judge's function {self.number}>"


class RemoteFunction:
    """The judge's side: a function the submission's code made (a node's backward step). Calling it runs it in the
    submission's kernel, with the objects of the call that made it (`related`, weakly held)."""

    def __init__(self, client, number, related):
        self.client, self.number, self.related = client, number, related

    def __call__(self, *args, **kwargs):
        return self.client.call(None, args, kwargs, function=self)

    def __repr__(self):
        return f"<a function of the submission's ({self.number}), run in its kernel>"


def _weak(obj):
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


class JudgeObjects:
    """The judge's objects that crossed (held weakly: when one is gone, the other side is told to let its twin go),
    the submission's functions it was handed, and its own functions that crossed as opaque numbers."""

    def __init__(self, client, namespace, first=1):
        self.client, self.namespace, self.pid, self.next = client, namespace, os.getpid(), first
        self.refs, self.ids = {}, {}                     # number -> weakref; id(object) -> number
        self.functions = {}                              # number -> weakref to its RemoteFunction
        self.opaque, self.opaque_ids = {}, {}
        self.forgot = []                                 # [kind, number]: gone here, to be let go there
        self.expected, self.lowest, self.made = {}, 0, set()   # a reply's objects: see shell()
        self._classes = (None, [])                       # class_names(), and what its list was made from

    def _on_gone(self, kind, number, key, table, ids):
        def gone(_ref):
            if os.getpid() != self.pid:                  # (a forked child's copy: the parent tells the other side)
                return
            table.pop(number, None)
            if ids is not None and ids.get(key) == number:
                del ids[key]
            self.forgot.append([kind, number])
        return gone

    def _register(self, x, table, ids, kind, number=None):
        """Hold x weakly under `number` (the next of the judge's own when None)."""
        if number is None:
            number, self.next = self.next, self.next + 1
        try:
            table[number] = weakref.ref(x, self._on_gone(kind, number, id(x), table, ids))
        except TypeError:                                # no weak reference to it: kept while the judge runs
            table[number] = lambda x=x: x
        ids[id(x)] = number
        return number

    def _held(self, x, table, ids, kind) -> int:
        """x's number in `table`, given it now if it has none."""
        n = ids.get(id(x))
        ref = table.get(n)
        return n if ref is not None and ref() is x else self._register(x, table, ids, kind)

    def number(self, x) -> int:
        return self._held(x, self.refs, self.ids, "o")

    def encode(self, enc, x):
        if type(x) is RemoteFunction:
            return ["F", x.number]
        if _is_notebook_object(x, self.namespace):
            return ["N", enc.add_object(x)]
        if _is_function(x):
            return ["X", self._held(x, self.opaque, self.opaque_ids, "x")]
        return None

    @staticmethod
    def whole(x) -> bool:
        return True

    def may_set(self, obj, name, value=None) -> None:
        """An attribute of an object of the judge's may not hide what its class defines: a method such as
        `backward` set on a node would run the submission's function where the judge's code calls its own. And on
        an object the judge held before the call, no function may be set, replaced or removed: the backward step
        of a node the judge made, or one an earlier call made, stays what it was (only a node the call makes
        brings a function of the submission's, its own backward step)."""
        if any(name in vars(k) for k in type(obj).__mro__):
            raise WireError(f"an attribute {name!r} set on a {type(obj).__qualname__}, which would hide its class's own")
        if id(obj) not in self.made and (_is_function(value) or _is_function(vars(obj).get(name))):
            raise WireError(f"the function in attribute {name!r} of a {type(obj).__qualname__} the judge held before "
                            f"the call, set, replaced or removed")

    def state(self, enc, x) -> list:
        """Every attribute, as the judge has it (the other side's twin becomes exactly this)."""
        return [[[k, enc.encode(v, 1)] for k, v in vars(x).items() if _attribute_name(k)], []]

    def shell(self, number, qualname, whole, preferred=None):
        """A reply names the call's own objects (those the judge sent), or new ones: whole, and numbered below
        every number the submission's side gave before (it counts down). Never another object the judge holds."""
        cls = _notebook_class(self.namespace, qualname)
        if number in self.expected:
            obj = self.expected[number]
            if type(obj) is not cls:
                raise WireError(f"object {number} named as a {qualname}, which it is not")
            return obj
        if not whole:                                    # only what changed of an object the judge does not hold
            raise WireError(f"object {number}, which the judge no longer holds, with only part of its attributes")
        if not number < self.lowest:
            raise WireError(f"object {number}, which this call did not hand over and the submission's side did not "
                            f"make new")
        self.lowest = number
        obj = cls.__new__(cls)                           # made by the submission's code: the judge's own class
        self.made.add(id(obj))
        self._register(obj, self.refs, self.ids, "o", number)
        return obj

    def function(self, number):
        ref = self.functions.get(number)
        fn = ref() if ref is not None else None
        if fn is None:
            if ["f", number] in self.forgot:             # let go while this call ran, and handed back by it
                self.forgot.remove(["f", number])
            fn = RemoteFunction(self.client, number, [])
            self.functions[number] = weakref.ref(fn, self._on_gone("f", number, None, self.functions, None))
        return fn

    def opaque_of(self, number):
        ref = self.opaque.get(number)
        obj = ref() if ref is not None else None
        if obj is None:
            raise WireError(f"a function of the judge's ({number}) that it no longer has")
        return obj

    def take_forgotten(self) -> list:
        out, self.forgot = self.forgot, []
        return out

    def class_names(self) -> list:
        """The classes the judge's cells defined, by name (what the submission's side may send as objects)."""
        if self.namespace is None:
            return []
        key = (len(self.namespace), id(self.namespace))
        if self._classes[0] != key:
            names = sorted(k for k, v in list(self.namespace.items()) if isinstance(v, type) and v.__module__ == "__main__"
                           and k == v.__qualname__ and _is_notebook_class(v))
            self._classes = (key, names)
        return self._classes[1]


class SubmissionObjects:
    """The submission's side: the twins of the judge's objects and the objects its code made that the judge holds
    (by number, until the judge lets them go), with their attributes as last sent (to send only what a call
    changed), and its functions the judge holds, each with the objects of the call that made it."""

    def __init__(self):
        self.namespace, self.classes = None, set()
        self.objects, self.ids, self.synced = {}, {}, {}
        self.functions, self.function_ids = {}, {}       # number -> (function, [objects of the call]); id -> number
        self.opaque = {}
        self.next = -1                                   # (the judge numbers upwards, this side downwards)
        self.new_functions = []

    def forget(self, items) -> None:
        for item in items if type(items) is list else ():
            if type(item) is not list or len(item) != 2:
                continue
            kind, number = item
            if kind == "o" and number in self.objects:
                self.ids.pop(id(self.objects.pop(number)), None)
                self.synced.pop(number, None)
            elif kind == "f" and number in self.functions:
                self.function_ids.pop(id(self.functions.pop(number)[0]), None)
            elif kind == "x":
                self.opaque.pop(number, None)

    def _new_number(self) -> int:
        n, self.next = self.next, self.next - 1
        return n

    def number(self, x) -> int:
        n = self.ids.get(id(x))
        if n is not None and self.objects.get(n) is x:
            return n
        n = self._new_number()
        self.objects[n], self.ids[id(x)] = x, n
        return n

    def encode(self, enc, x):
        if type(x) is Opaque:
            return ["X", x.number]
        if _is_notebook_object(x, self.namespace, self.classes):
            return ["N", enc.add_object(x)]
        if _is_function(x):                              # (an object of a callable class of the submission's too)
            n = self.function_ids.get(id(x))
            if n is None or self.functions[n][0] is not x:
                n = self._new_number()
                self.functions[n], self.function_ids[id(x)] = (x, []), n
                self.new_functions.append(n)
            return ["F", n]
        return None

    def _last_sent(self, x):
        """x's attributes as last sent to the judge, or None where the judge holds no copy of x."""
        n = self.ids.get(id(x))
        return self.synced.get(n) if n is not None and self.objects.get(n) is x else None

    def changes(self, x) -> tuple:
        """The attributes of an object the judge holds that differ (by identity) from what was last sent."""
        was = self._last_sent(x)
        now = vars(x)
        if was is None:
            return list(now.items()), []
        sets = [(k, v) for k, v in now.items() if k not in was or was[k] is not v]
        return sets, [k for k in was if k not in now]

    @staticmethod
    def may_set(obj, name, value=None) -> None:
        pass                                             # (the judge's values: this side's twin takes them all)

    def whole(self, x) -> bool:
        return self._last_sent(x) is None

    def state(self, enc, x) -> list:
        sets, deleted = self.changes(x)
        bad = [k for k, _ in sets if not _attribute_name(k)]
        if bad:
            raise WireError(f"an attribute named {bad[0]!r}, which cannot cross")
        return [[[k, enc.encode(v, 1)] for k, v in sets], deleted]

    def shell(self, number, qualname, whole, preferred=None):
        cls = _notebook_class(self.namespace, qualname)
        obj = preferred if preferred is not None else self.objects.get(number)
        if obj is None or type(obj) is not cls:
            obj = cls.__new__(cls)
        self.objects[number], self.ids[id(obj)] = obj, number
        return obj

    def function(self, number):
        if number not in self.functions:
            raise WireError(f"a function {number} that this side does not hold")
        return self.functions[number][0]

    def opaque_of(self, number):
        if number not in self.opaque:
            self.opaque[number] = Opaque(number)
        return self.opaque[number]

    def synced_now(self, objects) -> None:
        for x in objects:
            self.synced[self.number(x)] = dict(vars(x))


SUBMISSION_OBJECTS = SubmissionObjects()


# -- random states ----------------------------------------------------------------------------------------------
_NUMPY_STATE = {}


def rng_states() -> dict:
    """What the global random generators a function may draw from hold now, as bytes to compare: torch's CPU
    generator, NumPy's legacy one (read in place: np.random.get_state() costs 40 us a call), Python's."""
    states = {"random": random.getstate()}
    torch, np = _torch(), _numpy()
    if torch is not None:
        states["torch"] = torch.get_rng_state().numpy().tobytes()
    if np is not None:
        generator = np.random.mtrand._rand._bit_generator
        if id(generator) not in _NUMPY_STATE:
            _NUMPY_STATE.clear()
            _NUMPY_STATE[id(generator)] = (generator, generator.ctypes.state_address)
        address = _NUMPY_STATE[id(generator)][1]
        states["numpy"] = ctypes.string_at(address, 624 * 4 + 8)     # MT19937's key and position
    return states


def states_to_send(names) -> dict:
    """The judge's global random states by name, as values the wire carries."""
    torch, np = _torch(), _numpy()
    out = {}
    if "random" in names:
        version, internal, gauss = random.getstate()
        out["random"] = (version, list(internal), gauss)
    if "torch" in names and torch is not None:
        out["torch"] = torch.get_rng_state()
    if "numpy" in names and np is not None:
        out["numpy"] = tuple(np.random.get_state())
    return out


JUDGE_STATES = {}                        # the submission's side: the judge's global random states, as last sent


def use_judge_states(sent) -> None:
    """Start the call from the judge's global random states (kept between calls: only changed ones are sent)."""
    torch, np = _torch(), _numpy()
    if type(sent) is dict:
        JUDGE_STATES.update(sent)
    if "random" in JUDGE_STATES:
        version, internal, gauss = JUDGE_STATES["random"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in JUDGE_STATES and torch is not None:
        torch.set_rng_state(JUDGE_STATES["torch"])
    if "numpy" in JUDGE_STATES and np is not None:
        np.random.set_state(JUDGE_STATES["numpy"])


def changed_states(now: dict, before: dict) -> list:
    """The names of the generators whose state differs between two rng_states()."""
    return sorted(k for k, v in now.items() if before.get(k) != v)


def draw_from(names) -> None:
    """One draw from each named global generator of this process (the judge's: see Client.call)."""
    torch, np = _torch(), _numpy()
    if "random" in names:
        random.random()
    if "torch" in names and torch is not None:
        torch.rand(1)
    if "numpy" in names and np is not None:
        np.random.random()


# -- the submission's side --------------------------------------------------------------------------------------
def _snapshot(x):
    """What an object handed in holds, to tell afterwards whether the call changed it (_same)."""
    torch = _torch()
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().clone()                      # compared byte for byte by _same
    if torch is not None and isinstance(x, torch.Generator):
        return x.get_state().numpy().tobytes()
    return (x.dtype.str, x.shape, x.tobytes())


GLOBAL_HOOKS = ("_global_backward_hooks", "_global_backward_pre_hooks", "_global_forward_hooks",
                "_global_forward_hooks_always_called", "_global_forward_hooks_with_kwargs", "_global_forward_pre_hooks",
                "_global_buffer_registration_hooks", "_global_module_registration_hooks",
                "_global_parameter_registration_hooks")
OPTIMIZER_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks", "_optimizer_state_dict_pre_hooks",
                   "_optimizer_state_dict_post_hooks", "_optimizer_load_state_dict_pre_hooks",
                   "_optimizer_load_state_dict_post_hooks")


def _shallow(v):
    if type(v) in (dict, OrderedDict) or isinstance(v, dict):
        return tuple((k, id(x)) for k, x in v.items())
    if type(v) in (set, frozenset):
        return frozenset(v)
    return id(v)


def _side_state(handed) -> dict:
    """What a call can change that the wire does not carry back (red team of session 39: an average_gradients
    that left a hook on each parameter, summing the gradients again at every later step, failed in one kernel and
    passed judged apart, as did a zero_step that left grad mode off and a function that left the default dtype
    float64): hooks, requires_grad and attributes of the tensors, modules and optimizers handed in, their
    parameters, submodules and groups, torch's global module hooks and its grad and inference modes."""
    torch = _torch()
    if torch is None:
        return {}
    mm = torch.nn.modules.module
    out = {"torch's global module hooks": tuple(len(getattr(mm, h, None) or ()) for h in GLOBAL_HOOKS),
           "torch's inference mode": torch.is_inference_mode_enabled(),
           "torch's grad mode (torch.set_grad_enabled)": torch.is_grad_enabled(),
           "torch's default dtype": torch.get_default_dtype()}
    for n, o in handed.items():
        if isinstance(o, torch.Tensor):
            out[n] = ("the hooks, requires_grad or attributes of a tensor it was handed",
                      len(o._backward_hooks or ()), len(getattr(o, "_post_accumulate_grad_hooks", None) or ()),
                      o.requires_grad, _shallow(vars(o)))
        elif isinstance(o, torch.nn.Module):
            out[n] = ("the hooks, parameters, submodules, buffers or attributes of a module it was handed",
                      tuple((k, _shallow(v)) for k, v in vars(o).items()))
        elif isinstance(o, torch.optim.Optimizer):
            out[n] = ("the hooks, parameter groups or defaults of an optimizer it was handed",
                      _shallow(o.defaults), tuple(tuple(id(p) for p in g["params"]) for g in o.param_groups),
                      tuple(len(getattr(o, h, None) or ()) for h in OPTIMIZER_HOOKS))
    return out


def _side_changes(before: dict, after: dict, header: dict) -> list:
    """What differs, once each (tensors' and modules' changes named by kind)."""
    changed = []
    for key, was in before.items():
        now = after.get(key)
        if now != was:
            what = was[0] if type(was) is tuple and was and type(was[0]) is str and type(key) is int else key
            if what not in changed:
                changed.append(what)
    return changed


def _place(t) -> tuple:
    """Where a tensor's elements lie: its storage, offset and strides."""
    return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.stride()), t.device

def _same(now, before) -> bool:
    torch = _torch()
    if torch is not None and isinstance(before, torch.Tensor):
        now = now.detach()
        if now.dtype != before.dtype or now.shape != before.shape:
            return False
        if not now.numel():
            return True
        flat = lambda t: t.contiguous().reshape(-1).view(torch.uint8)
        return bool(torch.equal(flat(now), flat(before)))
    return _snapshot(now) == before


def handle(header: dict, buffers: list, namespace: dict) -> tuple:
    """Run one call in the submission's kernel; the reply's header and buffers."""
    if header.get("reset") is True:
        SUBMISSION_CACHE.entries.clear()
        SUBMISSION_CACHE.total = 0
    objects = SUBMISSION_OBJECTS
    objects.namespace, objects.new_functions = namespace, []
    classes = header.get("classes")
    objects.classes = {c for c in classes if type(c) is str} if type(classes) is list else set()
    objects.forget(header.get("forget"))
    name, function, related = header.get("name"), header.get("function"), {}
    if function is not None:                           # a function the judge holds (a node's backward step), with
        fn = objects.function(function)                # the objects of the call that made it, as the judge has them
        kept = objects.functions[function][1]
        positions = header.get("related")
        for i, position in enumerate(positions if type(positions) is list else ()):
            if type(position) is int and 0 <= position < len(kept):
                related[i] = kept[position]
    else:
        fn = namespace.get(name) if type(name) is str else None
    dec = Decoder(buffers, cache=SUBMISSION_CACHE, namespace=namespace, objects=objects, related=related)
    try:
        shells = dec.shells(header.get("objects", []))
        args = dec.decode(header["args"])
        kwargs = dec.decode(header["kwargs"])
        for obj, sets, _ in dec.states(header.get("states", [])):
            attributes = vars(obj)                     # exactly as the judge has it
            attributes.clear()
            attributes.update(sets)
        objects.synced_now(shells)
    finally:                                           # what the judge evicted, after this call's stores and uses
        for key in header.get("drop") or () if type(header.get("drop")) is list else ():
            SUBMISSION_CACHE.drop(key)
    handed = dict(dec.nodes)                           # the call's objects (the random states decoded below are not)
    torch, np = _torch(), _numpy()
    for n, grad in header.get("grads") or ():         # the gradients the judge's leaf tensors hold
        handed[n].grad = dec.decode(grad)
    leaves = {n: (o.grad, None if o.grad is None else o.grad.detach().clone()) for n, o in handed.items()
              if torch is not None and isinstance(o, torch.Tensor) and o.is_leaf and o.requires_grad}
    before = {n: dec.snapshots[n] if n in dec.snapshots else _snapshot(o) for n, o in handed.items()
              if (torch is not None and isinstance(o, (torch.Tensor, torch.Generator)))
              or (np is not None and isinstance(o, np.ndarray))}
    places = {n: _place(o) for n, o in handed.items() if torch is not None and isinstance(o, torch.Tensor)}
    if fn is None:
        raise NameError(f"name {name!r} is not defined in the submission's kernel (did its exercise cell run?)")
    if "rng" in header:
        use_judge_states(dec.decode(header["rng"]))
    elif JUDGE_STATES:
        use_judge_states(None)
    states = rng_states()
    if torch is not None and type(header.get("dtype")) is str and header["dtype"] in TENSOR_DTYPES:
        torch.set_default_dtype(getattr(torch, header["dtype"]))     # as the caller's cells left it
    measured = None
    with contextlib.ExitStack() as stack:
        if torch is not None and type(header.get("grad")) is bool:
            stack.enter_context(torch.set_grad_enabled(header["grad"]))   # under the caller's torch.no_grad(), say
        if header.get("track") is True:                 # the caller counts allocations: count this call's here
            from course_utils.memory import track_peak_memory
            measured = stack.enter_context(track_peak_memory("cpu"))
        side = _side_state(handed)
        result = fn(*args, **(kwargs if type(kwargs) is dict else {}))
        left = _side_changes(side, _side_state(handed), header)
    if left:                                           # as the call left them: in one kernel they would reach what
        raise RuntimeError(f"{name} changed {'; '.join(left)}, which does not cross between the kernels: a function "
                           f"must leave these as it found them")      # the caller does next; here they cannot
    drawn = changed_states(rng_states(), states)
    known = {id(o): n for n, o in handed.items()}
    updates = []
    bases = {o.untyped_storage().data_ptr(): (n, o) for n, o in handed.items()
             if torch is not None and isinstance(o, torch.Tensor) and o.device.type == "cpu" and o.numel()}
    enc = Encoder(known, bases=bases, objects=objects)              # updates first, then the result: the judge reads them so
    for obj in shells:                                 # objects of the notebook's classes that the call changed
        if objects.changes(obj) != ([], []):
            enc.add_object(obj)
    for n, o in handed.items():                        # what the function changed in place, by the caller's numbers
        if n in places and _place(o) != places[n]:     # `t.data = ...`, `t.set_(...)`: the tensor now lies in other
            SUBMISSION_CACHE.forget(o)                 # memory (a view of the caller's is a view no longer: not a
            updates.append([n, enc.tensor(o), "rebound"])      # write into its base)
        elif n in before:
            if not _same(o, before[n]):
                SUBMISSION_CACHE.forget(o)
                updates.append([n, enc.array(o) if np is not None and isinstance(o, np.ndarray) else
                                enc.generator(o) if isinstance(o, torch.Generator) else enc.tensor(o)])
        elif type(o) in (list, dict, set):             # their items now (the caller's own objects by number)
            del known[id(o)]
            updates.append([n, enc.encode(o)])
            known[id(o)] = n
        elif torch is not None and isinstance(o, torch.optim.Optimizer):     # its state and hyperparameters now
            updates.append([n, enc.encode(([[p, dict(v)] for p, v in o.state.items()],
                                           [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]))])
    grads = []
    for n, (was, before_grad) in leaves.items():       # gradients the call set, replaced or changed
        now = handed[n].grad
        if now is not was or (now is not None and not _same(now, before_grad)):
            grads.append([n, enc.encode(None if now is None else now.detach())])
    reply = {"ok": True, "result": enc.encode(result), "updates": updates, "drew": drawn}
    if grads:
        reply["grads"] = grads
    if enc.table or shells:
        reply["objects"], reply["states"] = enc.object_table()
        objects.synced_now(enc.table)
        made = _call_objects(shells, enc.table)
        for n in objects.new_functions:                # a function made in this call keeps the call's objects
            objects.functions[n] = (objects.functions[n][0], made)
    objects.new_functions = []
    inputs = [(n, o) for n, o in handed.items() if torch is not None and isinstance(o, torch.Tensor) and o.requires_grad]
    outputs = [(enc.memo[id(o)], o) for o in enc.keep
               if torch is not None and isinstance(o, torch.Tensor) and o.grad_fn is not None and id(o) not in known
               and id(o) not in enc.views]
    if inputs and outputs:                             # the judge's backward pass comes back here (handle_backward)
        GRAPHS[header.get("seq")] = ([o for _, o in inputs], [o for _, o in outputs])
        while len(GRAPHS) > 256:
            GRAPHS.popitem(last=False)
        reply["graph"] = {"inputs": [n for n, _ in inputs], "outputs": [n for n, _ in outputs]}
    if measured is not None:
        reply["memory"] = [int(measured.peak), int(measured.total), int(measured.count)]
    return reply, enc.buffers


GRAPHS = OrderedDict()                   # the submission's side: call number -> (inputs, outputs) of its autograd graph


def handle_backward(header: dict, buffers: list) -> tuple:
    """The gradients of a call's inputs, given those of its outputs (the judge's backward pass reached it)."""
    torch = _torch()
    inputs, outputs = GRAPHS[header.get("call")]
    grads = Decoder(buffers).decode(header["grads"])
    if type(grads) is not tuple or len(grads) != len(outputs):
        raise WireError("gradients that do not match the call's outputs")
    grads = tuple(torch.zeros_like(o) if g is None else g for o, g in zip(outputs, grads))
    got = torch.autograd.grad(outputs, inputs, grads, allow_unused=True, retain_graph=True)
    enc = Encoder()
    return {"ok": True, "result": enc.encode(tuple(None if g is None else g.detach() for g in got)), "updates": [],
            "drew": []}, enc.buffers


def serve(path: str, namespace: dict, limit: int = 1 << 30, sock=None, in_call=None) -> None:
    """The submission's side of one session: answer calls until the grader closes the connection. Runs as a cell
    of the submission's kernel (and in each worker it forks: `sock` is then the worker's connection)."""
    if sock is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
    try:
        while True:
            try:
                header, buffers = parse_body(recv_body(sock, limit))
            except EOFError:
                return
            if in_call is not None:
                in_call.set()
            try:
                if header.get("op") == "backward":
                    reply, out = handle_backward(header, buffers)
                elif header.get("op") == "spawn" and in_call is None:
                    reply, out = spawn_workers(header, namespace, limit, sock)
                else:
                    reply, out = handle(header, buffers, namespace)
            except BaseException as err:              # noqa: BLE001 (every failure goes back to the judge)
                frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename != "workbook_wire"]
                where = "".join(traceback.format_list(frames[-10:]))       # the submission's frames, not the wire's
                reply, out = {"ok": False, "type": type(err).__name__, "message": str(err)[-4000:],
                              "traceback": where[-6000:]}, []
                if isinstance(err, (SystemExit, GeneratorExit)):
                    raise
            if in_call is not None:
                in_call.clear()
            send_body(sock, pack_body(reply, out))
    finally:
        sock.close()


# -- workers: the judge's torchrun workers each call a worker of the submission's -------------------------------
# A check of notebook 05 launches torchrun workers that run the instructor's script and call the notebook's
# functions, which talk to the other ranks (dist.send, dist.all_reduce). Judged apart, the judge's workers run the
# script, and each call crosses to a worker of the submission's of the same rank: the submission's kernel forks one
# per rank of the launch (they form a process group of their own), so its functions run and communicate among
# themselves, in its sandbox, and nothing they do reaches the script that reports what they returned.
MAX_WORLD = 64


def spawn_workers(header: dict, namespace: dict, limit: int, session) -> tuple:
    """The grader asks for the workers of one launch of the judge's: fork one per rank, each connecting to the
    grader's socket for workers, telling it the launch and its rank, then answering calls until it hangs up."""
    world, launch, path = header.get("world"), header.get("launch"), header.get("path")
    if not (type(world) is int and 1 <= world <= MAX_WORLD and type(launch) is str and len(launch) < 512
            and type(path) is str):
        raise WireError("a request for workers without a world size, launch and socket")
    import tempfile

    store = os.path.join(tempfile.mkdtemp(prefix="workbook-workers-"), "store")
    pids = []
    for rank in range(world):
        pid = os.fork()
        if pid == 0:                                   # the worker: never returns into the kernel's code
            code = 1
            try:
                session.close()                        # (the parent's session goes on with the parent)
                _worker_main(path, launch, rank, world, store, namespace, limit)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)

    def reap():
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    threading.Thread(target=reap, daemon=True).start()
    return {"ok": True, "result": ["n"], "updates": [], "drew": []}, []


def _worker_main(path, launch, rank, world, store, namespace, limit) -> None:
    global SUBMISSION_CACHE, SUBMISSION_OBJECTS
    devnull = os.open(os.devnull, os.O_WRONLY)         # the kernel's output streams are not this process's
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")
    SUBMISSION_CACHE, SUBMISSION_OBJECTS = TensorCache(), SubmissionObjects()
    GRAPHS.clear()
    JUDGE_STATES.clear()
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "GROUP_RANK": "0"})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    send_body(sock, pack_body({"launch": launch, "rank": rank}))
    in_call = threading.Event()

    def watch():                                       # the grader hung up during a call (the judge's worker is
        while True:                                    # gone, or its time is up): end, wherever the call is stuck
            in_call.wait()
            try:
                if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    os._exit(0)
            except BlockingIOError:
                pass
            except OSError:
                os._exit(0)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    import torch.distributed as dist

    if dist.is_initialized():                          # (the kernel's own group, if its cells made one)
        dist.destroy_process_group()
    in_call.set()                                      # (the group forms while every rank waits for the others)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    in_call.clear()
    serve(path, namespace, limit, sock=sock, in_call=in_call)


WORKER_CLIENT = None                     # the judge's worker: its one connection to the submission's worker


def worker_proxy(name: str, path: str, limit: int = 1 << 30):
    """In a worker of the judge's (written into the module of the notebook's functions by the judge's
    `export`): `name`, run by the submission's worker of this rank. Its calls carry no global random states: a
    function that draws from one draws from its own worker's (05's seed what they draw)."""
    def call(*args, **kwargs):
        global WORKER_CLIENT
        if WORKER_CLIENT is None or WORKER_CLIENT.pid != os.getpid():
            launch = f"{os.environ.get('WORKBOOK_RESULTS_DIR', '')}:{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
            WORKER_CLIENT = Client(path, limit, {}, hello={"launch": launch, "rank": int(os.environ["RANK"]),
                                                           "world": int(os.environ["WORLD_SIZE"])})
        return WORKER_CLIENT.call(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{name}, as the submission defined it: it runs in the submission's worker of this rank"
    return call


# -- the judge's side -------------------------------------------------------------------------------------------
_RAISED_AS_ITSELF = {name for name, v in vars(builtins).items()
                     if isinstance(v, type) and issubclass(v, Exception)
                     and not issubclass(v, (StopIteration, StopAsyncIteration))}


class _CacheMiss(Exception):
    pass


_REMOTE_GRAD = []


def _remote_grad():
    """An autograd Function: forward hands back the outputs the submission's kernel computed; backward asks it for
    the gradients of the inputs (the judge's graph goes on through them)."""
    if not _REMOTE_GRAD:
        torch = _torch()

        class RemoteGrad(torch.autograd.Function):
            @staticmethod
            def forward(ctx, client, call, outputs, *inputs):
                ctx.client, ctx.call, ctx.shapes = client, call, [(t.shape, t.dtype) for t in inputs]
                return tuple(o.detach().clone() for o in outputs)

            @staticmethod
            def backward(ctx, *grads):
                got = ctx.client.backward(ctx.call, grads)
                if type(got) is not tuple or len(got) != len(ctx.shapes) or not all(
                        g is None or (isinstance(g, torch.Tensor) and (g.shape, g.dtype) == sd) for g, sd in zip(got, ctx.shapes)):
                    raise WireError("gradients that do not match the inputs' shapes")
                return (None, None, None, *got)

        _REMOTE_GRAD.append(RemoteGrad)
    return _REMOTE_GRAD[0]


def _active_tracker():
    """course_utils.memory's allocation counter, when one is watching the judge's code (a TorchDispatchMode)."""
    torch = _torch()
    if torch is None:
        return None
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    for mode in _get_current_dispatch_mode_stack():
        if type(mode).__name__ == "_StorageTracker" and type(mode).__module__ == "course_utils.memory":
            return mode
    return None


class Client:
    """The judge's end: `proxy(name)` is a function that calls the submission's `name` in its kernel."""

    def __init__(self, path: str, limit: int = 1 << 30, namespace=None, workers=None, hello=None):
        self.path, self.limit, self.sock, self.seq = path, limit, None, 0
        self.workers = workers                         # the grader's socket for the judge's torchrun workers
        self.hello = hello                             # a worker's: its launch and rank, said first on connecting
        self.rng = hello is None                       # (a worker's calls take no random states: see worker_proxy)
        self.where = ("the submission's kernel" if hello is None else
                      f"the submission's worker of rank {hello.get('rank')}")
        self.pid, self.lock = os.getpid(), threading.Lock()
        self.cache, self.drop, self.reset = TensorCache(), [], False
        self.sent_states = {}                          # fingerprints of the global random states last sent
        self.namespace = namespace                     # the judge's cells' names: the notebook's classes
        self.objects = JudgeObjects(self, namespace)

    def connect(self):
        if self.sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.path)
            if self.hello is not None:
                send_body(sock, pack_body(self.hello))
            self.sock = sock
        return self.sock

    def proxy(self, name: str):
        client = self

        def call(*args, **kwargs):
            return client.call(name, args, kwargs)

        call.__name__ = call.__qualname__ = name
        call.__doc__ = f"{name}, as the submission defined it: it runs in the submission's kernel (tools.judge_wire)"
        call.__workbook_worker__ = lambda folder: client.worker_source(name, folder)
        return call

    def worker_source(self, name: str, folder) -> str:
        """What course_utils.distributed.write_module writes for this proxy, for the judge's torchrun workers: a
        proxy calling the submission's worker of the same rank, through this module (written beside it)."""
        if self.workers is None:
            raise RuntimeError("this judge has no socket for its workers")
        path = os.path.join(os.fspath(folder), "workbook_wire.py")
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as f:
                f.write(WIRE_SOURCE)
        return f"{name} = __import__('workbook_wire').worker_proxy({name!r}, {self.workers!r}, {self.limit})"

    def _own_connection(self):
        if os.getpid() != self.pid:                    # a forked child of the judge's (cu.map_on_cores): a connection
            self.sock, self.lock, self.pid = None, threading.Lock(), os.getpid()     # of its own, never the parent's
            self.cache = None                          # (the submission's side keeps one cache, the parent's)
            self.sent_states = {}                      # (and one set of the judge's random states: a sibling's)
            self.objects = JudgeObjects(self, self.namespace, first=os.getpid() << 32)   # (numbers of its own)

    def _roundtrip(self, header: dict, buffers: list) -> tuple:
        """Send one message and wait for its reply (a reply to an earlier, interrupted one is skipped); the reply's
        header and buffers. The grader's own word (the submission's kernel is gone ...) is raised."""
        self.seq += 1
        sock = self.connect()
        try:
            send_body(sock, pack_body(header, buffers), struct.pack(">Q", self.seq))
            while True:
                body = recv_body(sock, self.limit + 16)
                if len(body) >= 8 and struct.unpack(">Q", body[:8])[0] == self.seq:
                    break
        except BaseException:
            self.sock = None                          # the stream may be mid-message: start a fresh one
            sock.close()
            raise
        reply, buffers = parse_body(body[8:])
        if reply.get("grader"):
            raise SubmissionError(str(reply["grader"]))
        return reply, buffers

    def call(self, name, args: tuple, kwargs: dict, function=None):
        self._own_connection()
        if function is not None:
            name = f"a function of the submission's ({function.number}, made by its code in an earlier call)"
        with self.lock:                                # one call at a time per connection (threads of the judge's)
            for attempt in (1, 2):
                try:
                    return self._call(name, args, kwargs, function)
                except _CacheMiss:                       # the other side lost a cached tensor: send it whole
                    self._forget()
            raise SubmissionError("the submission's kernel lost the tensors it was sent, twice")

    def _forget(self):
        """Start both caches afresh (after a call that failed part way, whose stores the other side may lack)."""
        if self.cache is not None:
            self.cache, self.drop, self.reset = TensorCache(self.cache.next_key), [], True
        self.sent_states = {}

    def _call(self, name: str, args: tuple, kwargs: dict, function=None):
        try:
            return self._send(name, args, kwargs, function)
        except BaseException as err:
            if not getattr(err, "from_submission", False):   # the call may not have reached the other side whole
                self._forget()
            raise

    def _send(self, name: str, args: tuple, kwargs: dict, function=None):
        tracker = _active_tracker()
        if tracker is None:
            return self._exchange(name, args, kwargs, None, function)
        from torch.utils._python_dispatch import _disable_current_modes

        with _disable_current_modes():                 # the wire's own tensors are not the function's allocations
            return self._exchange(name, args, kwargs, tracker, function)

    def _exchange(self, name: str, args: tuple, kwargs: dict, tracker, function=None):
        enc = Encoder(cache=self.cache, objects=self.objects)
        torch = _torch()
        header = {"op": "call", "seq": f"{os.getpid()}-{self.seq + 1}"}   # (a forked child's have numbers of their own)
        if function is None:
            header["name"] = name
        else:                                          # the objects of the call that made it go first, as they are here
            header["function"], header["related"] = function.number, []
            for position, ref in enumerate(function.related):
                obj = ref()
                if obj is not None:
                    enc.add_object(obj)
                    header["related"].append(position)
        header["args"], header["kwargs"] = enc.encode(tuple(args)), enc.encode(dict(kwargs))
        header["classes"] = self.objects.class_names()
        if enc.table:
            header["objects"], header["states"] = enc.object_table()
        forgotten = self.objects.take_forgotten()
        if forgotten:
            header["forget"] = forgotten
        # The function starts from the judge's global random states (as it would in one kernel); those that
        # changed since the last call are sent (the other side keeps them)
        handed = len(enc.keep)                         # the objects of the call (not the random states below)
        grads = [[n, enc.encode(t.grad.detach())] for n, t in enumerate(enc.keep[:handed])
                 if torch is not None and isinstance(t, torch.Tensor) and t.is_leaf and t.requires_grad
                 and t.grad is not None]
        if grads:                                      # (a leaf's .grad: average_gradients(model) changes them)
            header["grads"] = grads
        if self.rng:
            now = rng_states()
            changed = changed_states(now, self.sent_states)
            if changed:
                header["rng"] = enc.encode(states_to_send(changed))
            self.sent_states = now
        header["drop"], self.drop = self.drop + enc.dropped, []
        if self.reset:
            header["reset"], self.reset = True, False
        if tracker is not None:
            header["track"] = True
        torch = _torch()
        if torch is not None:
            header["grad"] = bool(torch.is_grad_enabled())
            header["dtype"] = str(torch.get_default_dtype()).removeprefix("torch.")
        sent = dict(enumerate(enc.keep[:handed]))
        reply, buffers = self._roundtrip(header, enc.buffers)
        if reply.get("ok") is not True:
            self.sent_states = {}                      # it may have failed before it took them: sent again next time
            if reply.get("type") == "WireError" and str(reply.get("message", "")).startswith("a cached tensor"):
                raise _CacheMiss()
            return self.raise_error(name, reply)
        dec = Decoder(buffers, peer=sent, objects=self.objects)   # in the order the submission's side wrote them
        made_before = set(self.objects.functions)
        self.objects.expected = {entry[0]: x for entry, x in zip(header.get("objects", []), enc.table)}
        self.objects.made = set()
        try:
            dec.shells(reply.get("objects", []))
        finally:
            self.objects.expected = {}
        updates = reply.get("updates")
        if not isinstance(updates, list):
            raise WireError("a reply without its updates")
        decoded = []
        for item in updates:
            if (type(item) is not list or len(item) not in (2, 3) or type(item[0]) is not int or item[0] not in sent
                    or (len(item) == 3 and item[2] != "rebound")):
                raise WireError("an update of an object that was never sent")
            decoded.append(((("rebound", sent[item[0]]) if len(item) == 3 else sent[item[0]]), dec.decode(item[1])))
        result = dec.decode(reply.get("result"))
        states = dec.states(reply.get("states", [])) if dec.table else []
        drew = reply.get("drew", [])
        if type(drew) is not list:
            raise WireError("a reply whose list of random generators drawn from is not a list")
        grads = reply.get("grads", [])
        if type(grads) is not list:
            raise WireError("a reply whose gradients are not a list")
        for item in grads:
            if type(item) is not list or len(item) != 2 or type(item[0]) is not int or item[0] not in sent:
                raise WireError("a gradient of an object that was never sent")
            decoded.append((("grad", sent[item[0]]), dec.decode(item[1])))
        for target, new in decoded:
            self.apply(name, target, new)
        for obj, sets, deleted in states:              # what the call changed of the notebook's objects
            _set_state(obj, sets, deleted)
        if dec.table or enc.table:                     # a function the call made keeps the call's objects
            made = _call_objects(enc.table, dec.table)
            for number in set(self.objects.functions) - made_before:
                fn = self.objects.functions[number]()
                if fn is not None:
                    fn.related = [_weak(o) for o in made]
        if tracker is not None:                        # what the call allocated, as the submission's kernel counted it
            memory = reply.get("memory")
            if not (type(memory) is list and len(memory) == 3 and all(type(v) is int and 0 <= v < 1 << 62 for v in memory)):
                raise WireError("a reply without the allocations the judge asked it to count")
            peak, total, count = memory
            tracker.peak = max(tracker.peak, tracker.current + peak)
            tracker.total += total
            tracker.count += count
        # A function that drew from a global generator there moves the judge's own one here (by a draw of the
        # judge's: the submission never chooses a random state of the judge's), so "the global random state is
        # left untouched" is checked as in one kernel
        if self.rng:
            draw_from(drew)
        if "graph" in reply and _torch() is not None and _torch().is_grad_enabled():
            result = self._attach(name, reply["graph"], header["seq"], sent, dec, result)
        return result

    def _attach(self, name, graph, call, sent, dec, result):
        """Connect the tensors the function returned to the judge's inputs that require grad, through an autograd
        Function whose backward asks the submission's kernel for the inputs' gradients."""
        torch = _torch()
        try:
            inputs = [sent[n] for n in graph["inputs"]]
            outputs = [dec.nodes[n] for n in graph["outputs"]]
        except (KeyError, TypeError):
            raise WireError("a graph naming objects the call did not have") from None
        if not all(isinstance(t, torch.Tensor) for t in inputs + outputs) or not all(t.requires_grad for t in inputs):
            raise WireError("a graph whose inputs and outputs are not the call's tensors that require grad")
        connected = _remote_grad().apply(self, call, outputs, *inputs)
        swap = {id(o): c for o, c in zip(outputs, connected)}

        def put(v):
            if id(v) in swap:
                return swap[id(v)]
            if type(v) in (tuple, list):
                return type(v)(put(x) for x in v)
            if type(v) is dict:
                return {k: put(x) for k, x in v.items()}
            return v

        return put(result)

    def backward(self, call, grads):
        """The gradients of a call's inputs, given those of its outputs (RemoteGrad.backward)."""
        self._own_connection()
        with self.lock:
            enc = Encoder()
            reply, buffers = self._roundtrip({"op": "backward", "call": call, "grads": enc.encode(tuple(grads))},
                                             enc.buffers)
            if reply.get("ok") is not True:
                return self.raise_error("the backward pass of a call", reply)
            return Decoder(buffers).decode(reply.get("result"))

    @staticmethod
    def apply(name, target, new):
        """Make the caller's object what the function left it: the in-place changes of a call."""
        torch, np = _torch(), _numpy()

        def fits(value, like, kind):
            """`value` is exactly a `kind` (torch.Tensor, np.ndarray) of `like`'s shape and dtype."""
            return type(value) is kind and value.shape == like.shape and value.dtype == like.dtype

        def became(value):
            return f"(to {tuple(getattr(value, 'shape', ()))}, {getattr(value, 'dtype', type(value).__name__)})"

        if type(target) is tuple and target[0] == "rebound":   # given other memory: `t.data = new` here too
            tensor = target[1]
            if not isinstance(tensor, torch.Tensor):
                raise WireError("a tensor's new memory for something that is not a tensor")
            if not fits(new, tensor, torch.Tensor):
                raise SubmissionError(f"{name} gave a tensor it was handed other memory of another shape or dtype "
                                      f"{became(new)}")
            tensor.data = new.detach().to(tensor.device)
        elif type(target) is tuple:                    # ("grad", a leaf tensor the judge handed)
            leaf = target[1]
            if not (isinstance(leaf, torch.Tensor) and leaf.is_leaf and leaf.requires_grad):
                raise WireError("a gradient of something that is not a leaf tensor requiring grad")
            if new is None:
                leaf.grad = None
            elif not fits(new, leaf, torch.Tensor):
                raise SubmissionError(f"{name} set the gradient of a tensor of shape {tuple(leaf.shape)} and dtype "
                                      f"{leaf.dtype} to one of shape {tuple(getattr(new, 'shape', ()))} and dtype "
                                      f"{getattr(new, 'dtype', type(new).__name__)}")
            elif leaf.grad is not None and fits(new, leaf.grad, torch.Tensor):
                with torch.no_grad():
                    leaf.grad.copy_(new)               # in place: whatever holds the gradient sees it
            else:
                leaf.grad = new.detach().to(leaf.device)
        elif torch is not None and isinstance(target, torch.optim.Optimizer):
            Client.apply_optimizer(name, target, new)
        elif torch is not None and isinstance(target, torch.Tensor):
            if not fits(new, target, torch.Tensor):
                raise SubmissionError(f"{name} changed the shape or dtype of a tensor it was handed, in place "
                                      f"{became(new)}")
            with torch.no_grad():
                target.copy_(new)
        elif torch is not None and isinstance(target, torch.Generator):
            if type(new) is not torch.Generator:
                raise WireError("a generator's state that is not one")
            target.set_state(new.get_state())
        elif np is not None and isinstance(target, np.ndarray):
            if not fits(new, target, np.ndarray):
                raise SubmissionError(f"{name} changed the shape or dtype of an array it was handed, in place "
                                      f"{became(new)}")
            target[...] = new
        elif type(target) is list and type(new) is list:
            target[:] = new
        elif type(target) in (dict, set) and type(new) is type(target):
            target.clear()
            target.update(new)
        else:
            raise WireError(f"an update of a {type(target).__name__} by a {type(new).__name__}")

    @staticmethod
    def apply_optimizer(name, target, new):
        """An optimizer's state and hyperparameters, as the call left them: state only for its own parameters,
        values tensors or numbers; hyperparameters only those its groups have, as numbers, booleans, None, or
        tuples of numbers (Adam's betas)."""
        torch = _torch()
        if not (type(new) is tuple and len(new) == 2 and type(new[0]) is list and type(new[1]) is list
                and len(new[1]) == len(target.param_groups)):
            raise WireError("an optimizer's update that is not (its state, its groups)")
        state, groups = new
        params = {id(p) for g in target.param_groups for p in g["params"]}
        plain = (bool, int, float, type(None))
        for group, values in zip(target.param_groups, groups):
            if type(values) is not dict or set(values) != set(group) - {"params"}:
                raise SubmissionError(f"{name} added or removed an optimizer's hyperparameters")
            for k, v in values.items():
                if not (type(v) in plain or (type(v) is tuple and all(type(e) in plain for e in v))
                        or (type(v) is torch.Tensor and v.numel() == 1)):
                    raise SubmissionError(f"{name} set the optimizer's {k} to a {type(v).__name__}")
        new_state = {}
        for entry in state:
            if not (type(entry) is list and len(entry) == 2 and id(entry[0]) in params and type(entry[1]) is dict
                    and all(type(k) is str and (type(v) is torch.Tensor or type(v) in plain)
                            for k, v in entry[1].items())):
                raise SubmissionError(f"{name} left the optimizer a state that is not, for its own parameters, "
                                      f"names of tensors or numbers")
            new_state[entry[0]] = {k: v.detach() if type(v) is torch.Tensor else v for k, v in entry[1].items()}
        for group, values in zip(target.param_groups, groups):
            group.update(values)
        target.state.clear()
        target.state.update(new_state)

    def raise_error(self, name, reply):
        kind, message = str(reply.get("type", "Exception")), str(reply.get("message", ""))
        where = str(reply.get("traceback", ""))
        text = f"{message}\n\n[raised by {name}, which ran in {self.where}:]\n{where}".rstrip()
        err = getattr(builtins, kind)(text) if kind in _RAISED_AS_ITSELF else SubmissionError(f"{kind}: {text}")
        err.from_submission = True                     # raised by the function itself: the call went through
        raise err from None
