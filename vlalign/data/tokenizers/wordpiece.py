"""BERT WordPiece (tensorflow-text's FastBertTokenizer) over any BERT-format vocab.txt: the
vocabulary learned for the embedded data ([PAD] [UNK] [CLS] [SEP] [MASK] first) or BERT's own
([PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103), uncased or cased. Special ids are looked
up by name; ids equal Hugging Face's BertTokenizer on the same file
(tests/data/test_tokenizers.py)."""

import numpy as np
import tensorflow as tf
import tensorflow_text as tft

from vlalign.data.tokenizers import base
from vlalign.data.tokenizers.families import DEFAULTS

# The first five lines of the vocabularies build_vocab learns.
RESERVED = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')


def read_vocab(path: str) -> list[str]:
  """Vocabulary lines (one token each, id = line number); TokenizerError naming the file."""
  if not tf.io.gfile.exists(path):
    raise base.TokenizerError('vocab_file', f'vocabulary file {path} does not exist')
  with tf.io.gfile.GFile(path) as f:
    vocab = f.read().split('\n')
  if vocab and vocab[-1] == '':
    vocab.pop()  # the final newline
  if not vocab:
    raise base.TokenizerError('vocab_file', f'vocabulary file {path} is empty')
  if '' in vocab:
    raise base.TokenizerError('vocab_file', f'vocabulary file {path} has an empty line at line '
                              f'{vocab.index("") + 1} (ids are line numbers)')
  if len(set(vocab)) < len(vocab):
    seen, dups = set(), set()
    for t in vocab:
      (dups if t in seen else seen).add(t)
    raise base.TokenizerError('vocab_file', f'vocabulary file {path} has duplicate entries: '
                              f'{sorted(dups)[:10]}')
  return vocab


def normalize(texts: tf.Tensor, lower_case: bool) -> tf.Tensor:
  """BERT's text normalisation (as Hugging Face's BertTokenizer / BertNormalizer): control and
  format characters and U+FFFD dropped, whitespace to ' '; uncased: lower-cased, then NFD with
  the combining marks removed. (tf-text's own lower_case_nfd_strip_accents case-folds with NFKC,
  which changes ligatures, full-width forms, '…' and more.)"""
  texts = tf.strings.regex_replace(texts, r'[\t\n\r\p{Zs}]', ' ')
  texts = tf.strings.regex_replace(texts, '[\\p{C}\ufffd]', '')
  if not lower_case:
    return texts
  texts = tft.normalize_utf8(tf.strings.lower(texts, encoding='utf-8'), 'NFD')
  return tf.strings.regex_replace(texts, r'\p{Mn}', '')


class WordpieceTokenizer(base.Tokenizer):
  """BERT WordPiece: [CLS] pieces [SEP], truncated keeping [SEP], padded with [PAD]."""

  kind = 'wordpiece'

  def __init__(self, vocab_path: str, max_len: int, *, lower_case: bool = True,
               specials: dict | None = None):
    self.vocab = read_vocab(vocab_path)
    index = {t: i for i, t in enumerate(self.vocab)}
    names = dict(DEFAULTS['wordpiece'], **(specials or {}))
    ids = base.lookup_specials(names, index.get, vocab_path)
    if ids['unk'] is None:
      raise base.TokenizerError('unk', f'WordPiece needs an unknown token ({vocab_path})')
    super().__init__(max_len, ids)
    self.lower_case = lower_case
    self._tok = tft.FastBertTokenizer(self.vocab, token_out_type=tf.int32,
                                      lower_case_nfd_strip_accents=False,
                                      support_detokenization=True,
                                      unknown_token=self.vocab[self.unk_id])

  # BERT's names for the start and end tokens.
  cls_id = property(lambda self: self.bos_id)
  sep_id = property(lambda self: self.eos_id)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def _pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
    return self._tok.tokenize(normalize(texts, self.lower_case))

  def detokenize(self, ids) -> list[str]:
    """Text of each row: its ordinary tokens (regular_range) joined as BERT words."""
    lo, hi = self.regular_range
    rows = [[t for t in row if lo <= t < hi] for row in np.atleast_2d(np.asarray(ids))]
    ragged = tf.ragged.constant(rows, dtype=tf.int32, ragged_rank=1) if rows else None
    return [s.decode() for s in self._tok.detokenize(ragged).numpy()]
