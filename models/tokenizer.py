"""Tokenizer code: the embedded model's byte-level BPE tokenizer and the special ids no response may contain."""

from __future__ import annotations

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"


def train_bpe(corpus: list[str], vocab_size: int, special_tokens: list[str]):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `corpus` (lossless decode; one token per digit)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # Digits split one by one so "10" and "24" are always made of the same digit tokens.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_tokenizer(corpus: list[str], vocab_size: int):
    """The embedded model's tokenizer: `train_bpe` with its four special tokens, as a transformers tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(corpus, vocab_size, [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN]),
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=4096,
    )


def banned_token_ids(tokenizer) -> list[int]:
    """Special ids a response may not contain: everything special except EOS.

    The rollout engine excludes them from sampling and the learner masks the same ids, so both sides normalise
    their log-probs over the same token set.
    """
    return sorted(i for i in tokenizer.all_special_ids if i != tokenizer.eos_token_id)
