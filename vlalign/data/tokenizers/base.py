"""What every tokenizer shares: special ids looked up by name and the row layout
[bos] pieces [eos] pad..., truncated so that eos stays the last token."""

from typing import Callable

import numpy as np
import tensorflow as tf

from vlalign.data.tokenizers.families import ROLES


class TokenizerError(ValueError):
  """A tokenizer file or setting that cannot work; `field` names the data.tokenizer field."""

  def __init__(self, field: str, message: str):
    super().__init__(message)
    self.field = field


def lookup_specials(names: dict, lookup: Callable[[str], int | None], path: str) -> dict:
  """{role: id or None} for the ROLES named in `names` ('' = none); TokenizerError naming the
  role's field when a name is not in the vocabulary."""
  ids = {}
  for role in ROLES:
    name = names.get(role, '')
    ids[role] = lookup(name) if name else None
    if name and ids[role] is None:
      raise TokenizerError(role, f'special token {name!r} ({role}) is not in the vocabulary {path}')
  if ids['pad'] is None:
    raise TokenizerError('pad', f'a pad token is needed (no default for this kind; {path})')
  return ids


def frame(pieces: tf.RaggedTensor, max_len: int, bos: int | None, eos: int | None,
          pad: int) -> tf.Tensor:
  """int32 [N, max_len]: [bos] + the first pieces that fit + [eos], then pad."""
  keep = max_len - (bos is not None) - (eos is not None)
  pieces = pieces[:, :keep]
  n = tf.shape(pieces.row_lengths())[0]
  parts = [tf.fill([n, 1], bos)] if bos is not None else []
  parts.append(pieces)
  if eos is not None:
    parts.append(tf.fill([n, 1], eos))
  ids = tf.concat(parts, axis=1) if len(parts) > 1 else pieces
  return ids.to_tensor(default_value=pad, shape=[None, max_len])


class Tokenizer:
  """Strings to int32 rows of `max_len` ids inside or outside the tf.data graph. Subclasses set
  `kind`, `vocab_size`, the special ids (`pad_id`, `unk_id`, `bos_id`, `eos_id`, `mask_id`;
  None where the vocabulary has none) and implement `_pieces` and `_decode`."""

  kind = ''

  def __init__(self, max_len: int, ids: dict):
    minimum = 1 + (ids['bos'] is not None) + (ids['eos'] is not None)
    if max_len < minimum:
      raise TokenizerError('max_len', f'max_len={max_len} cannot hold the special tokens and a '
                           f'token ({minimum})')
    self.max_len = max_len
    self.pad_id, self.unk_id, self.bos_id = ids['pad'], ids['unk'], ids['bos']
    self.eos_id, self.mask_id = ids['eos'], ids['mask']

  vocab_size: int

  @property
  def special_ids(self) -> tuple[int, ...]:
    """The distinct ids of the named special tokens."""
    ids = (self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.mask_id)
    return tuple(sorted({i for i in ids if i is not None}))

  @property
  def regular_range(self) -> tuple[int, int]:
    """[lo, hi) of ordinary tokens (MLM / ZeroVL random replacements are drawn from it)."""
    return max(self.special_ids) + 1, self.vocab_size

  def _pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
    raise NotImplementedError

  def _decode(self, ids: list[int]) -> str:
    raise NotImplementedError

  def tokenize(self, texts) -> tf.Tensor:
    """int32 [N, max_len] for a 1-D string tensor, [max_len] for a scalar string."""
    texts = tf.convert_to_tensor(texts, tf.string)
    scalar = texts.shape.rank == 0
    pieces = self._pieces(tf.reshape(texts, [-1]))
    ids = frame(pieces, self.max_len, self.bos_id, self.eos_id, self.pad_id)
    return ids[0] if scalar else ids

  def content(self, row) -> list[int]:
    """The ids of a row between its bos and its first eos (the text's own pieces)."""
    row = [int(t) for t in row]
    if self.bos_id is not None and row and row[0] == self.bos_id:
      row = row[1:]
    if self.eos_id is not None and self.eos_id in row:
      return row[:row.index(self.eos_id)]
    return [t for t in row if t != self.pad_id]

  def detokenize(self, ids) -> list[str]:
    """Text of each row (its content, special tokens dropped)."""
    return [self._decode(self.content(row)) for row in np.atleast_2d(np.asarray(ids))]
