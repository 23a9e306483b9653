"""SentencePiece models (T5 / SigLIP style) with tensorflow-text's SentencepieceTokenizer: the
pieces are the sentencepiece library's own; rows are [bos] pieces </s> pad..., </s> kept last
when truncated (T5, big_vision's eos='sticky'), no bos by default."""

import tensorflow as tf
import tensorflow_text as tft

from vlalign.data.tokenizers import base


def _lower(texts: tf.Tensor) -> tf.Tensor:
  """Unicode lower-casing (as Python's str.lower); TF's stops at a NUL, so each NUL-separated
  part is lower-cased and the NULs put back."""
  parts = tf.strings.lower(tf.strings.split(texts, '\x00'), encoding='utf-8')
  joined = tf.strings.reduce_join(tf.strings.join([parts, tf.constant('\x00')]), axis=-1)
  length = tf.strings.length(joined) - 1
  return tf.strings.substr(joined, tf.zeros_like(length), length)


class SentencePieceTokenizer(base.Tokenizer):
  """A SentencePiece .model file; special ids looked up by piece name."""

  kind = 'sentencepiece'

  def __init__(self, model_path: str, max_len: int, *, lower_case: bool, specials: dict):
    if not tf.io.gfile.exists(model_path):
      raise base.TokenizerError('vocab_file', f'SentencePiece model {model_path} does not exist')
    with tf.io.gfile.GFile(model_path, 'rb') as f:
      proto = f.read()
    try:
      self._tok = tft.SentencepieceTokenizer(model=proto, out_type=tf.int32)
      n = int(self._tok.vocab_size())
    except (tf.errors.OpError, ValueError) as e:
      raise base.TokenizerError('vocab_file', f'{model_path} is not a SentencePiece model: '
                                f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from e
    pieces = [p.decode() for p in self._tok.id_to_string(tf.range(n)).numpy()]
    index = {p: i for i, p in enumerate(pieces)}
    super().__init__(max_len, base.lookup_specials(specials, index.get, model_path))
    self.pieces, self.lower_case = pieces, lower_case

  @property
  def vocab_size(self) -> int:
    return len(self.pieces)

  def _pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
    if self.lower_case:
      texts = _lower(texts)
    return self._tok.tokenize(texts)

  def _decode(self, ids: list[int]) -> str:
    return self._tok.detokenize(tf.constant(ids, tf.int32)).numpy().decode()
