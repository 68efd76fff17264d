"""Text for the language-model notebooks: an offline corpus with a checksum, an opt-in classic corpus that is
downloaded, verified and cached, and two tokenizers (characters, and byte-level BPE trained from scratch)."""
from __future__ import annotations

import hashlib
import os
import urllib.request
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import regex

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
CACHE_DIR = Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "scaleml-workbook"))


@dataclass(frozen=True)
class CorpusSource:
    name: str
    origin: str
    sha256: str
    nbytes: int
    path: Path | None = None   # shipped with course_utils
    url: str | None = None     # downloaded on request


CORPORA = {
    "python-docs": CorpusSource(
        "python-docs",
        "The topic pages of the Python 3.11.7 documentation (pydoc_data.topics, shipped with every CPython), "
        "joined in sorted order; PSF License. Regenerate with data/make_python_docs_corpus.py.",
        "2a95af4ac93f5b719944030ce3769070ddf827d847cba42192afa8da989e5dc4", 466195, path=CORPUS_DIR / "python_docs.txt"),
    "tiny-shakespeare": CorpusSource(
        "tiny-shakespeare",
        "40,000 lines of Shakespeare from Andrej Karpathy's char-rnn repository (checksum as recorded by "
        "TensorFlow Datasets).",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1115394,
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"),
}


@dataclass(frozen=True)
class Corpus:
    name: str
    text: str
    origin: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.name}: {len(self.text):,} characters, sha256 {self.sha256[:12]}...; {self.origin}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified(source: CorpusSource, data: bytes) -> bytes:
    digest = sha256_of(data)
    if len(data) != source.nbytes or digest != source.sha256:
        raise ValueError(f"corpus {source.name!r} failed its checksum: {len(data)} bytes, sha256 {digest} "
                         f"(expected {source.nbytes} bytes, {source.sha256})")
    return data


def download(source: CorpusSource, cache_dir: Path = CACHE_DIR, timeout: float = 30.0) -> bytes:
    """The bytes of a downloadable corpus: from the cache if present and valid, else fetched, verified, cached."""
    if source.url is None:
        raise ValueError(f"corpus {source.name!r} is shipped, not downloaded")
    cached = Path(cache_dir) / f"{source.name}.txt"
    if cached.exists():
        try:
            return _verified(source, cached.read_bytes())
        except ValueError:
            cached.unlink()  # a truncated or altered cache: fetch again
    with urllib.request.urlopen(source.url, timeout=timeout) as response:
        data = _verified(source, response.read())
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(cached)
    return data


def load_corpus(name: str = "python-docs", *, allow_download: bool = False) -> Corpus:
    """A verified corpus by name. 'python-docs' ships with course_utils (no network). 'tiny-shakespeare' needs
    allow_download=True (e.g. in Colab); when it cannot be fetched, this warns and falls back to 'python-docs'."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}: choose one of {', '.join(CORPORA)}")
    source = CORPORA[name]
    if source.path is not None:
        data = _verified(source, source.path.read_bytes())
    elif not allow_download:
        raise ValueError(f"corpus {name!r} must be downloaded: pass allow_download=True (needs the network)")
    else:
        try:
            data = download(source)
        except (OSError, ValueError) as err:  # offline, blocked, or a bad download
            warnings.warn(f"could not fetch {name!r} ({err}); falling back to the offline 'python-docs' corpus")
            return load_corpus("python-docs")
    return Corpus(name, data.decode("utf-8"), source.origin, source.sha256)


class CharTokenizer:
    """One token per character seen in the training text."""

    def __init__(self, text: str):
        if not text:
            raise ValueError("CharTokenizer needs a non-empty text to build its vocabulary")
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the tokenizer's vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


# GPT-2's pre-tokenization: merges never cross a word, number or punctuation run (leading space kept with the word).
PRETOKENIZE = r"""'(?:s|t|re|ve|m|ll|d)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class BPETokenizer:
    """Byte-level byte-pair encoding: start from the 256 byte values and repeatedly merge the most frequent
    adjacent pair (ties broken by the smaller pair) until the vocabulary has vocab_size tokens."""

    def __init__(self, merges: list[tuple[int, int]]):
        self.merges = list(merges)
        self.vocab = [bytes([i]) for i in range(256)]
        self.ranks: dict[tuple[int, int], int] = {}
        for rank, (a, b) in enumerate(self.merges):
            if not (0 <= a < len(self.vocab) and 0 <= b < len(self.vocab)):
                raise ValueError(f"merge {rank} refers to a token that does not exist yet: {(a, b)}")
            self.ranks[(a, b)] = rank
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._pattern = regex.compile(PRETOKENIZE)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an integer >= 256 (the byte alphabet), got {vocab_size!r}")
        words = Counter(regex.findall(PRETOKENIZE, text))
        seqs = [list(w.encode("utf-8")) for w in words]
        freqs = list(words.values())
        pair_counts: Counter = Counter()
        where: dict[tuple[int, int], set[int]] = {}
        for wid, seq in enumerate(seqs):
            for pair in zip(seq, seq[1:]):
                pair_counts[pair] += freqs[wid]
                where.setdefault(pair, set()).add(wid)
        vocab = [bytes([i]) for i in range(256)]
        known = set(vocab)
        merges: list[tuple[int, int]] = []
        while len(vocab) < vocab_size and pair_counts:
            best = min(pair_counts, key=lambda p: (-pair_counts[p], p))
            if pair_counts[best] <= 0:
                break
            merged = vocab[best[0]] + vocab[best[1]]
            if merged in known:  # the same bytes reached by another route: never two tokens for one string
                del pair_counts[best]
                continue
            new_id = len(vocab)
            vocab.append(merged); known.add(merged); merges.append(best)
            for wid in list(where.get(best, ())):
                seq, f = seqs[wid], freqs[wid]
                for pair in zip(seq, seq[1:]):
                    pair_counts[pair] -= f
                out, i = [], 0
                while i < len(seq):
                    if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                        out.append(new_id); i += 2
                    else:
                        out.append(seq[i]); i += 1
                seqs[wid] = out
                for pair in zip(out, out[1:]):
                    pair_counts[pair] += f
                    where.setdefault(pair, set()).add(wid)
            del pair_counts[best]
            pair_counts = +pair_counts  # drop pairs whose count fell to zero
        return cls(merges)

    def _encode_word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        ids = list(word.encode("utf-8"))
        while len(ids) > 1:
            pairs = [(self.ranks.get(p, len(self.ranks)), i) for i, p in enumerate(zip(ids, ids[1:]))]
            rank, _ = min(pairs)
            if rank == len(self.ranks):
                break  # no mergeable pair left
            a, b = self.merges[rank]
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                    out.append(256 + rank); i += 2
                else:
                    out.append(ids[i]); i += 1
            ids = out
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        return [t for word in self._pattern.findall(text) for t in self._encode_word(word)]

    def decode(self, ids) -> str:
        return b"".join(self.vocab[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self) -> dict[bytes, int]:
        """{token bytes: rank}, the form tiktoken.Encoding(mergeable_ranks=...) takes."""
        return {b: i for i, b in enumerate(self.vocab)}
