"""WordPiece tokenization (kept for its importers; the tokenizers live in data/tokenizers/ and
are built from config by data.tokenizers.make_tokenizer)."""

from vlalign.data.tokenizers.base import TokenizerError
from vlalign.data.tokenizers.wordpiece import RESERVED, WordpieceTokenizer, read_vocab

__all__ = ['RESERVED', 'TokenizerError', 'WordpieceTokenizer', 'read_vocab']
