"""Word-level tokenizers built with the `tokenizers` library from the corpus vocabulary.

The tiny default models have no pretrained tokenizer to borrow, so they get a word-level one
over every text they will ever see; words outside it map to <unk> rather than failing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>", "<image>")
_WORD = re.compile(r"[a-z0-9#]+|[^\sa-z0-9#]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation: the unit both tokenizers and caption metrics count."""
    return _WORD.findall(text.lower())


def build_word_tokenizer(texts: Iterable[str], model_max_length: int = 512):
    """A PreTrainedTokenizerFast over every word in `texts`, with
    <pad>/<unk>/<bos>/<eos>/<image>."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for text in texts:
        for w in words(text):
            vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    # Regex(...): a plain str pattern would be matched literally, leaving "left," one <unk> word
    split = pre_tokenizers.Split(
        pattern=Regex(r"[a-z0-9#]+|<image>|[^\sa-z0-9#]"), behavior="isolated"
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), split])
    tok.post_processor = processors.TemplateProcessing(single="$A", special_tokens=[])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=model_max_length,
        extra_special_tokens={"image_token": "<image>"},
    )
