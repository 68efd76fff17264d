import pytest
import tiktoken

from course_utils.text import (CORPORA, PRETOKENIZE, BPETokenizer, CharTokenizer, CorpusSource, _verified, download,
                               load_corpus, sha256_of)


def test_offline_corpus_is_verified_and_large_enough():
    corpus = load_corpus()
    assert corpus.name == "python-docs" and len(corpus.text) >= 300_000
    assert corpus.sha256 == sha256_of(CORPORA["python-docs"].path.read_bytes())
    assert "Python" in corpus.origin and "python-docs" in str(corpus)


def test_unknown_corpus_and_download_needs_consent():
    with pytest.raises(ValueError, match="unknown corpus 'shakespear'"):
        load_corpus("shakespear")
    with pytest.raises(ValueError, match="allow_download=True"):
        load_corpus("tiny-shakespeare")


def test_checksum_mismatch_is_an_error():
    source = CorpusSource("x", "test", sha256_of(b"abc"), 3)
    assert _verified(source, b"abc") == b"abc"
    with pytest.raises(ValueError, match="failed its checksum"):
        _verified(source, b"abd")


def test_download_uses_a_valid_cache_and_refetches_a_bad_one(tmp_path, monkeypatch):
    source = CorpusSource("toy", "test", sha256_of(b"hello"), 5, url="http://127.0.0.1:9/never")
    (tmp_path / "toy.txt").write_bytes(b"hello")
    assert download(source, cache_dir=tmp_path) == b"hello"        # no network touched
    (tmp_path / "toy.txt").write_bytes(b"hellx")
    calls = []

    class Response:
        def __enter__(self): return self
        def __exit__(self, *a): return False
        def read(self): return b"hello"

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: calls.append(url) or Response())
    assert download(source, cache_dir=tmp_path) == b"hello" and calls == [source.url]
    assert (tmp_path / "toy.txt").read_bytes() == b"hello"


def test_offline_download_falls_back_with_a_warning(monkeypatch, tmp_path):
    def refuse(url, timeout):
        raise OSError("network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    monkeypatch.setattr("course_utils.text.CACHE_DIR", tmp_path)
    monkeypatch.setattr("course_utils.text.download.__defaults__", (tmp_path, 30.0))
    with pytest.warns(UserWarning, match="falling back"):
        corpus = load_corpus("tiny-shakespeare", allow_download=True)
    assert corpus.name == "python-docs"


def test_char_tokenizer_round_trip_and_unknown_character():
    tok = CharTokenizer("hello world")
    assert tok.vocab_size == 8 and tok.decode(tok.encode("low")) == "low"
    with pytest.raises(ValueError, match="'z' is not in the tokenizer's vocabulary"):
        tok.encode("zebra")
    with pytest.raises(ValueError):
        CharTokenizer("")


def test_bpe_merges_the_most_frequent_pair_first():
    bpe = BPETokenizer.train("aaab aaab aaab", 258)
    assert bpe.vocab[256] == b"aa"
    assert bpe.vocab_size == 258
    text = "aaab ab aaaa"
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_matches_tiktoken_on_the_corpus():
    text = load_corpus().text[:60_000]
    bpe = BPETokenizer.train(text, 400)
    reference = tiktoken.Encoding(name="workbook-test", pat_str=PRETOKENIZE, mergeable_ranks=bpe.token_bytes(),
                                  special_tokens={})
    sample = load_corpus().text[60_000:90_000]  # unseen text, including unseen characters' bytes
    assert bpe.encode(sample) == reference.encode(sample)
    assert bpe.decode(bpe.encode(sample)) == sample
    assert len(bpe.encode(sample)) < 0.6 * len(sample.encode())


def test_bpe_rejects_bad_vocab_and_bad_merges():
    with pytest.raises(ValueError, match=">= 256"):
        BPETokenizer.train("abc", 100)
    with pytest.raises(ValueError, match="does not exist yet"):
        BPETokenizer([(1, 999)])
