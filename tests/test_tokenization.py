"""Tokenization follows each tokenizer's own BOS convention unless the user switches it."""

import pytest

from workbench.errors import InputError


def test_lab_tokenizer_convention_and_switch(lab_model):
    bos = lab_model.bos_token_id
    default = lab_model.tokenize("t1 t2 t3")
    assert (default[0] == bos) == lab_model.tokenizer_prepends_bos
    on = lab_model.tokenize("t1 t2 t3", prepend_bos=True)
    off = lab_model.tokenize("t1 t2 t3", prepend_bos=False)
    assert on[0] == bos and off[0] != bos
    assert on[1:] == off


def test_str_tokens_round_trip(lab_model):
    ids = lab_model.tokenize("t1 t2 t3", prepend_bos=False)
    assert lab_model.str_tokens(ids) == ["t1", "t2", "t3"]  # one string per token, BOS excluded


@pytest.mark.parametrize("prompt", ["", "   ", "\n"])
def test_empty_prompt(lab_model, prompt):
    with pytest.raises(InputError, match="empty"):
        lab_model.tokenize(prompt)


def test_prompt_longer_than_context(lab_model):
    too_long = " ".join(["t1"] * (lab_model.n_ctx + 5))
    with pytest.raises(InputError) as info:
        lab_model.tokenize(too_long)
    assert str(lab_model.n_ctx) in info.value.message and "shorten" in info.value.hint


@pytest.mark.smollm2
def test_token_pieces_of_a_character_are_labelled_by_their_bytes(smollm2):
    ids = smollm2.tokenizer("é ✓ 本", add_special_tokens=False)["input_ids"]
    texts = [smollm2.token_text(i) for i in ids]
    assert "\ufffd" not in "".join(texts)
    assert texts[0] == "é" and texts[-1] == "本"  # whole characters stay as they are
    pieces = [t for t in texts if "<0x" in t]
    assert pieces and "".join(pieces).replace(" ", "").count("<0x") == 3  # ✓ is E2 9C 93
    assert " <0xE2>" in texts  # the leading space stays a space
