"""An offline word-level tokenizer for tiny CLIP models.

Tiny CLIPs only ever read prompts made of the templates and the class names, so a word-level
vocabulary over those words is enough, needs no download, and saves as a `tokenizer.json` that
`AutoTokenizer.from_pretrained` reloads.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|pad|>"
UNK_TOKEN = "<|unk|>"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])


def _words(texts: Iterable[str]) -> list[str]:
    normalizer, splitter = _normalizer(), pre_tokenizers.Whitespace()
    seen: dict[str, None] = {}
    for text in texts:
        for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)):
            seen.setdefault(word, None)
    return list(seen)


def build_word_level_tokenizer(texts: Iterable[str], model_max_length: int) -> PreTrainedTokenizerFast:
    """Tokenizer whose vocabulary is every word of `texts` (lower-cased, punctuation split off).

    Ids: pad 0, unk 1, words, then BOS and EOS last, so EOS is the largest id like in OpenAI's
    CLIP vocabulary (CLIP's text tower pools at the EOS position). Every encoding is
    `BOS words EOS`, padded with pad.
    """
    words = _words(texts)
    vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1}
    for word in words:
        vocab[word] = len(vocab)
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.normalizer = _normalizer()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
        special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN]), (EOS_TOKEN, vocab[EOS_TOKEN])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
    )
