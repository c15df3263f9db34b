"""Dataset contract errors name the file and line; the sampler is exact per epoch."""

import json

import pytest

from posttrain.core.data import DatasetError, PromptSampler, load_rows


def _write(tmp_path, lines):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


GOOD = json.dumps({"id": "a", "prompt": "What is 1 + 1?", "answer": "2"})


@pytest.mark.parametrize("bad,msg", [
    ("{not json", "not valid JSON"),
    (json.dumps({"prompt": "x", "answer": "1"}), "field 'id'"),
    (json.dumps({"id": "b", "prompt": "", "answer": "1"}), "field 'prompt'"),
    (json.dumps({"id": "b", "prompt": "x", "answer": 3}), "field 'answer' must be a string"),
    (json.dumps({"id": "b", "prompt": [{"role": "user"}], "answer": "1"}), "prompt message 0"),
    (json.dumps({"id": "b", "prompt": "x", "answer": "1", "hints": ["h"]}), "5 strings"),
    (json.dumps({"id": "a", "prompt": "x", "answer": "1"}), "duplicate id 'a' \\(first on line 1\\)"),
    (json.dumps([1, 2]), "must be a JSON object"),
])
def test_bad_row_names_file_and_line(tmp_path, bad, msg):
    p = _write(tmp_path, [GOOD, bad])
    with pytest.raises(DatasetError, match=rf"d\.jsonl:2: .*{msg}"):
        load_rows(p)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_rows(tmp_path / "none.jsonl")
    with pytest.raises(DatasetError, match="no rows"):
        load_rows(_write(tmp_path, [""]))


def test_chat_prompts_and_extra_keys_pass_through(tmp_path):
    row = {"id": "c", "prompt": [{"role": "user", "content": "hi"}], "answer": "x", "tests": ["assert 1"]}
    assert load_rows(_write(tmp_path, [json.dumps(row)])) == [row]


@pytest.mark.parametrize("kill_after", [0, 3, 7, 10, 13])
def test_sampler_each_row_once_per_epoch_and_resume_anywhere(kill_after):
    ref = PromptSampler(10, seed=1, fingerprint="f")
    stream = [i for _ in range(6) for i in ref.next_batch(4)]  # 24 draws over 3 epochs
    for e in range(2):
        assert sorted(stream[e * 10:(e + 1) * 10]) == list(range(10))
    assert stream[:10] != stream[10:20]  # a new order each epoch
    a = PromptSampler(10, seed=1, fingerprint="f")
    got = [i for _ in range(kill_after) for i in a.next_batch(1)]
    b = PromptSampler(10, seed=1, fingerprint="f")
    b.load_state_dict(a.state_dict())
    got += [i for _ in range(24 - kill_after) for i in b.next_batch(1)]
    assert got == stream


def test_sampler_refuses_changed_dataset():
    a = PromptSampler(10, fingerprint="f")
    with pytest.raises(DatasetError, match="dataset changed"):
        PromptSampler(10, fingerprint="g").load_state_dict(a.state_dict())


def test_invalid_utf8_and_directories_name_the_problem(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(GOOD.encode() + b"\n" + b'{"id": "b", "prompt": "caf\xe9", "answer": "1"}\n')
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        load_rows(p)
    with pytest.raises(DatasetError, match="is a directory, not a dataset file"):
        load_rows(tmp_path)


def test_oversized_prompts_are_named_by_file_and_line(tmp_path, tiny_model):
    from posttrain.core.data import check_prompt_lengths
    from posttrain.core.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    p = tmp_path / "d.jsonl"
    big = {"id": "big", "prompt": "What is " + "12 + " * 2000 + "1?", "answer": "1"}
    p.write_text(GOOD + "\n\n" + json.dumps(big) + "\n")
    rows = load_rows(p)
    check_prompt_lengths(p, rows[:1], tok, 100, "that fit")
    with pytest.raises(DatasetError, match=r"d\.jsonl:3: row 'big' has a \d+-token prompt, over the 100 tokens"):
        check_prompt_lengths(p, rows, tok, 100, "that fit")


def test_sft_refuses_rows_longer_than_max_length(tmp_path, tiny_model):
    from posttrain.core.models import load_tokenizer
    from posttrain.phases.sft_data import check_lengths, load_source

    tok = load_tokenizer(tiny_model)
    p = tmp_path / "d.jsonl"
    p.write_text(GOOD + "\n" + json.dumps({"id": "b", "prompt": "What is 1 + 1?", "answer": "2" * 3000}) + "\n")
    src = load_source(str(p))
    check_lengths(src, tok, None)
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: row is \d+ tokens, over train.max_length=64"):
        check_lengths(src, tok, 64)
