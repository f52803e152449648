"""``benchmarks/corpus_identical.py``: what it leaves out of the byte comparison."""

import json

from test_bench import load_script


def _script():
    return load_script("corpus_identical")


def test_timing_fields_are_removed_at_any_depth_and_nothing_else():
    corpus = _script()
    a = {"seconds": 1.2, "results": [{"seconds": 0.3, "out_size": [8, 8]}],
         "megapixels_per_second": 4.0, "model": "m"}
    b = {"seconds": 9.9, "results": [{"seconds": 0.1, "out_size": [8, 8]}],
         "megapixels_per_second": 1.0, "model": "m"}
    assert corpus.normal_stdout(json.dumps(a).encode()) == \
        corpus.normal_stdout(json.dumps(b).encode())
    b["results"][0]["out_size"] = [8, 9]
    assert corpus.normal_stdout(json.dumps(a).encode()) != \
        corpus.normal_stdout(json.dumps(b).encode())
    assert corpus.normal_stdout(b"PNG bytes") == b"PNG bytes"


def test_corpus_is_the_same_every_time(tmp_path):
    corpus = _script()
    corpus.make_corpus(tmp_path / "a")
    corpus.make_corpus(tmp_path / "b")
    assert corpus.files_of(tmp_path / "a") == corpus.files_of(tmp_path / "b")
    assert len(corpus.files_of(tmp_path / "a")) == 7
