"""The bootstrap tokenizer: a small BPE over the corpus (zh characters and en words merge into
tokens), with byte fallback so that any text still encodes, and the control and slot tokens kept
whole. Saved as a ``PreTrainedTokenizerFast`` that ``AutoTokenizer`` loads."""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerFast

from generator.prompts import BOS, CONTROL_TOKENS, EOS, PAD, SLOT_TOKENS

_SPACE = "▁"


def train_tokenizer(texts: Iterable[str], *, vocab_size: int) -> PreTrainedTokenizerFast:
    """BPE on ``texts`` (the copy only: prompts are made of control tokens)."""
    tok = Tokenizer(models.BPE(byte_fallback=True))
    # spaces become a visible mark so that BPE can merge them and decoding restores them
    tok.normalizer = normalizers.Replace(" ", _SPACE)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_SPACE), behavior="merged_with_next")
    tok.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    reserved = [*CONTROL_TOKENS, *SLOT_TOKENS]
    trainer = BpeTrainer(vocab_size=vocab_size - 256, special_tokens=reserved, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    # byte fallback needs the 256 byte tokens in the model's own vocabulary
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    # slots are ordinary tokens (kept when decoding); control tokens are special (dropped)
    for entry in spec["added_tokens"]:
        entry["special"] = entry["content"] in CONTROL_TOKENS
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_tokens([AddedToken(s, normalized=False, special=False) for s in SLOT_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[t for t in CONTROL_TOKENS if t not in (BOS, EOS, PAD)],
        padding_side="left",  # generation pads on the left
    )
    return fast
