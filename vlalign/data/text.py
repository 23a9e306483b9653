"""WordPiece tokenization with tensorflow-text, usable inside the tf.data graph."""

import numpy as np
import tensorflow as tf
import tensorflow_text as tft

RESERVED = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')


def read_vocab(path: str) -> list[str]:
  """Vocabulary lines; ValueError naming the file when it cannot be used."""
  if not tf.io.gfile.exists(path):
    raise ValueError(f'vocabulary file {path} does not exist')
  with tf.io.gfile.GFile(path) as f:
    vocab = [line.rstrip('\n') for line in f if line.rstrip('\n')]
  if not vocab:
    raise ValueError(f'vocabulary file {path} is empty')
  if tuple(vocab[:len(RESERVED)]) != RESERVED:
    raise ValueError(f'vocabulary file {path} must start with {RESERVED}, got {vocab[:5]}')
  dups = sorted({t for t in vocab if vocab.count(t) > 1}) if len(set(vocab)) < len(vocab) else []
  if dups:
    raise ValueError(f'vocabulary file {path} has duplicate entries: {dups[:10]}')
  return vocab


class WordpieceTokenizer:
  """Lower-cased BERT WordPiece: [CLS] pieces [SEP], truncated, padded with [PAD]=0."""

  def __init__(self, vocab_path: str, max_len: int):
    if max_len < 3:
      raise ValueError(f'max_len={max_len} cannot hold [CLS], a token and [SEP]')
    self.vocab = read_vocab(vocab_path)
    self.max_len = max_len
    self._tok = tft.FastBertTokenizer(self.vocab, token_out_type=tf.int32, lower_case_nfd_strip_accents=True,
                                      support_detokenization=True, unknown_token='[UNK]')
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = range(len(RESERVED))

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def tokenize(self, texts) -> tf.Tensor:
    """int32 [N, max_len] for a 1-D string tensor, [max_len] for a scalar string."""
    texts = tf.convert_to_tensor(texts, tf.string)
    scalar = texts.shape.rank == 0
    pieces = self._tok.tokenize(tf.reshape(texts, [-1]))
    pieces = pieces[:, :self.max_len - 2]
    n = tf.shape(pieces.row_lengths())[0]
    cls = tf.fill([n, 1], self.cls_id)
    sep = tf.fill([n, 1], self.sep_id)
    ids = tf.concat([cls, pieces, sep], axis=1)
    ids = ids.to_tensor(default_value=self.pad_id, shape=[None, self.max_len])
    return ids[0] if scalar else ids

  def detokenize(self, ids) -> list[str]:
    """Text of each row, special tokens dropped."""
    ids = np.atleast_2d(np.asarray(ids))
    rows = [[t for t in row if t >= len(RESERVED)] for row in ids]
    ragged = tf.ragged.constant(rows, dtype=tf.int32, ragged_rank=1) if rows else None
    return [s.decode() for s in self._tok.detokenize(ragged).numpy()]
