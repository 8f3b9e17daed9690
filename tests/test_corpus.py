import numpy as np
import pytest

import lm
from lm.data.corpus import load_corpus, prepare_tokenizer, split_text, token_ids

from conftest import make_text


def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def test_one_file_splits_into_contiguous_train_valid_test(tmp_path):
    text = make_text(400)
    corpus = load_corpus([str(write(tmp_path / "a.txt", text))])
    assert corpus.train + corpus.valid + corpus.test == text
    assert corpus.train.endswith("\n") and corpus.valid.endswith("\n")
    assert 0.85 < len(corpus.train) / len(text) < 0.95
    assert load_corpus([str(tmp_path / "a.txt")]).fingerprint() == corpus.fingerprint()


def test_valid_file_overrides_the_split(tmp_path):
    corpus = load_corpus([str(write(tmp_path / "a.txt", "one two\n"))], valid=str(write(tmp_path / "v.txt", "three\n")))
    assert (corpus.train, corpus.valid, corpus.test) == ("one two\n", "three\n", "")


def test_folder_reads_its_text_files_in_order(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "b.txt", "bee\n")
    write(tmp_path / "sub" / "c.txt", "sea\n")
    write(tmp_path / "a.txt", "ay")
    write(tmp_path / "skip.bin", "nope")
    corpus = load_corpus([str(tmp_path)], valid=str(tmp_path / "b.txt"))
    assert corpus.train == "ay\nbee\nsea\n"
    assert corpus.name == "a"


def test_a_folder_laid_out_in_splits_uses_them(tmp_path):
    for name in ("train", "valid", "test"):
        (tmp_path / f"{name}.txt").write_text(f"the {name} text\n" * 5)
    corpus = load_corpus([str(tmp_path)])
    assert (corpus.train, corpus.valid, corpus.test) == tuple(f"the {name} text\n" * 5 for name in ("train", "valid", "test"))
    assert corpus.name == tmp_path.name


def test_a_split_folder_without_valid_holds_it_out_of_train(tmp_path):
    (tmp_path / "wiki.train.tokens").write_text("".join(f"line {i}\n" for i in range(100)))
    (tmp_path / "wiki.test.tokens").write_text("held out\n")
    corpus = load_corpus([str(tmp_path)])
    assert corpus.test == "held out\n" and corpus.valid.startswith("line 9") and corpus.train.startswith("line 0")
    assert corpus.train + corpus.valid == "".join(f"line {i}\n" for i in range(100))


def test_hf_dataset_path_reads_splits_from_a_local_dataset(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    write(folder / "train.txt", "line one\nline two\n")
    write(folder / "validation.txt", "held out\n")
    corpus = load_corpus([f"hf:{folder}"])
    assert corpus.train == "line one\nline two\n"
    assert corpus.valid == "held out\n"
    assert corpus.sources == [f"hf:{folder}"]


def test_token_ids_are_cached_and_memory_mapped(tmp_path, monkeypatch):
    corpus = load_corpus([str(write(tmp_path / "a.txt", make_text(200)))])
    tok = prepare_tokenizer(corpus, lm.TokenizerConfig(kind="char"), cache_dir=tmp_path / "cache")
    first = token_ids(corpus.train, tok, tmp_path / "cache")
    assert isinstance(first, np.memmap)
    assert first.tolist() == tok.encode(corpus.train)
    monkeypatch.setattr(type(tok), "encode_array", lambda *a: pytest.fail("tokenized twice"))
    assert token_ids(corpus.train, tok, tmp_path / "cache").tolist() == first.tolist()


def test_cache_key_follows_content_not_path(tmp_path):
    path = write(tmp_path / "a.txt", "abc abc abc\n" * 50)
    corpus = load_corpus([str(path)])
    tok = prepare_tokenizer(corpus, lm.TokenizerConfig(kind="char"), cache_dir=tmp_path / "cache")
    before = token_ids(corpus.train, tok, tmp_path / "cache").tolist()
    write(path, "xyz xyz xyz\n" * 50)
    changed = load_corpus([str(path)])
    assert token_ids(changed.train, tok, tmp_path / "cache").tolist() != before


def test_split_falls_back_to_characters_for_a_single_line():
    train, valid, test = split_text("x" * 100, 0.1, 0.1)
    assert (len(train), len(valid), len(test)) == (80, 10, 10)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p / "missing.txt", "does not exist"),
        (lambda p: write(p / "empty.txt", ""), "empty or only whitespace"),
        (lambda p: write(p / "blank.txt", " \n\t\n"), "empty or only whitespace"),
        (lambda p: p, "holds no text files"),
        (lambda p: (p / "bin.txt").write_bytes(b"abc\0\1\2") and p / "bin.txt", "looks binary .a NUL byte at offset 3"),
        (lambda p: (p / "latin.txt").write_bytes(b"caf\xe9 au lait\n") and p / "latin.txt", "byte 0xe9 at offset 3 .* --encoding"),
    ],
)
def test_bad_corpora_give_one_clear_error(tmp_path, setup, message):
    (tmp_path / "sub").mkdir()
    path = setup(tmp_path / "sub")
    with pytest.raises(lm.CorpusError, match=message):
        load_corpus([str(path)])


def test_encoding_flag_reads_latin1(tmp_path):
    (tmp_path / "latin.txt").write_bytes(("café au lait\n" * 20).encode("latin-1"))
    corpus = load_corpus([str(tmp_path / "latin.txt")], encoding="latin-1")
    assert "café" in corpus.train


def test_corpus_too_small_to_hold_out_validation(tmp_path):
    with pytest.raises(lm.CorpusError, match="too small"):
        load_corpus([str(write(tmp_path / "a.txt", "x"))])
