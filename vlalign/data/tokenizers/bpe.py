"""CLIP's byte-level BPE with Hugging Face `tokenizers` (Rust, batched), run inside the tf.data
graph through tf.numpy_function. Text is cleaned the way open_clip does (ftfy, HTML unescaped
twice, whitespace collapsed, lower-cased); ids equal open_clip's tokenizer
(tests/data/test_tokenizers.py). The vocabulary is built from the merges file as CLIP builds
it: the 256 byte symbols, the same with '</w>', one token per merge (at most 48,894, CLIP's
count) and <start_of_text>, <end_of_text>: 49,408 tokens for CLIP's file."""

import gzip
import html
import itertools

import ftfy
import numpy as np
import tensorflow as tf
import tokenizers

from vlalign.data.tokenizers import base

MAX_MERGES = 49152 - 256 - 2
SPECIAL = ('<start_of_text>', '<end_of_text>')
# open_clip's word split: contractions, letter runs, single digits, other non-space runs.
PATTERN = r"""(?i)'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def byte_table() -> list[tuple[int, str]]:
  """(byte, stand-in character) in CLIP's vocabulary order (GPT-2's reversible table): the
  printable Latin-1 bytes stand for themselves, the other bytes for code points 256, 257, ..."""
  printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1),
               *range(ord('®'), ord('ÿ') + 1)]
  others = [b for b in range(256) if b not in printable]
  return [(b, chr(b)) for b in printable] + [(b, chr(256 + i)) for i, b in enumerate(others)]


def read_merges(path: str) -> list[tuple[str, str]]:
  """The merge pairs of a CLIP merges file (.txt or .txt.gz; first line a header)."""
  if not tf.io.gfile.exists(path):
    raise base.TokenizerError('vocab_file', f'BPE merges file {path} does not exist')
  with tf.io.gfile.GFile(path, 'rb') as f:
    raw = f.read()
  try:
    text = (gzip.decompress(raw) if raw[:2] == b'\x1f\x8b' else raw).decode('utf-8')
  except (OSError, UnicodeDecodeError) as e:
    raise base.TokenizerError('vocab_file', f'BPE merges file {path} does not read: {e}') from e
  lines = text.split('\n')[1:MAX_MERGES + 1]
  merges = [tuple(line.split()) for line in lines if line.strip()]
  bad = [i + 2 for i, m in enumerate(merges) if len(m) != 2]
  if not merges or bad:
    raise base.TokenizerError('vocab_file', f'{path} is not a BPE merges file (a header line, '
                              f'then "a b" pairs); bad lines: {bad[:5]}')
  return merges


def clean(text: str, lower_case: bool) -> str:
  """open_clip's cleaning: ftfy, HTML entities (twice), whitespace runs to one space. Printable
  ASCII without '&' skips the first two, which leave it unchanged (checked on 100k random
  strings) and cost half the tokenizer's time."""
  if not (text.isascii() and text.isprintable() and '&' not in text):
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
  text = ' '.join(text.split())
  return text.lower() if lower_case else text


class ClipBpeTokenizer(base.Tokenizer):
  """CLIP's byte-level BPE: <start_of_text> pieces <end_of_text>, padded with id 0 ('!')."""

  kind = 'bpe'

  def __init__(self, merges_path: str, max_len: int, *, lower_case: bool, specials: dict):
    merges = read_merges(merges_path)
    table = byte_table()
    symbols = [c for _, c in table]
    vocab = symbols + [c + '</w>' for c in symbols] + [a + b for a, b in merges] + list(SPECIAL)
    self.vocab = {t: i for i, t in enumerate(vocab)}  # a repeat keeps its last id, as in CLIP
    super().__init__(max_len, base.lookup_specials(specials, self.vocab.get, merges_path))
    self.lower_case, self._size, self._inverse = lower_case, len(vocab), vocab
    self._byte = {c: b for b, c in table}
    model = tokenizers.models.BPE(vocab=self.vocab, merges=merges, end_of_word_suffix='</w>')
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(PATTERN), behavior='removed',
                                        invert=True),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.add_special_tokens([tokenizers.AddedToken(s, normalized=False) for s in SPECIAL])
    self._tok = tok

  @property
  def vocab_size(self) -> int:
    return self._size

  @property
  def regular_range(self) -> tuple[int, int]:
    """[0, first special): CLIP's specials are its last tokens."""
    return 0, min(self.bos_id, self.eos_id)

  def encode(self, texts: list[str]) -> list[list[int]]:
    """BPE ids of each cleaned text (no start/end tokens)."""
    cleaned = [clean(t, self.lower_case) for t in texts]
    return [e.ids for e in self._tok.encode_batch(cleaned, add_special_tokens=False)]

  def _encode_np(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = self.encode([t.decode('utf-8', errors='replace') for t in texts])
    lengths = np.asarray([len(i) for i in ids], np.int64)
    values = np.fromiter(itertools.chain.from_iterable(ids), np.int32, count=int(lengths.sum()))
    return values, lengths

  def _pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
    values, lengths = tf.numpy_function(self._encode_np, [texts], [tf.int32, tf.int64],
                                        stateful=False)
    values.set_shape([None])
    lengths.set_shape([None])
    return tf.RaggedTensor.from_row_lengths(values, lengths)

  def _decode(self, ids: list[int]) -> str:
    text = ''.join(self._inverse[i] for i in ids if i not in (self.bos_id, self.eos_id))
    raw = bytes(self._byte[c] for c in text)
    return raw.decode('utf-8', errors='replace').replace('</w>', ' ').strip()
