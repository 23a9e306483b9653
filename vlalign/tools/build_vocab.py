"""Learns a WordPiece vocabulary from the `text` feature of TFRecord shards.

python -m vlalign.tools.build_vocab --input='DIR/train/*.tfrecord' --output=vocab.txt [--vocab_size=1000]
"""

import logging
import time
from typing import Iterable

import tensorflow as tf
from absl import app, flags
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bert_vocab

from vlalign.data import filters, sources
from vlalign.data.pipeline import list_files
from vlalign.data.text import RESERVED


def learn_vocab(texts: Iterable[str] | tf.data.Dataset, vocab_size: int,
                lower_case: bool = True) -> list[str]:
  """WordPiece vocabulary (reserved tokens first, no duplicates) learned by tensorflow-text."""
  ds = texts if isinstance(texts, tf.data.Dataset) else tf.data.Dataset.from_tensor_slices(
      list(texts))
  vocab = bert_vocab.bert_vocab_from_dataset(
      ds.batch(1024).prefetch(2), vocab_size=vocab_size, reserved_tokens=list(RESERVED),
      bert_tokenizer_params={'lower_case': lower_case}, learn_params={})
  seen, out = set(), []
  for tok in vocab:  # the learner can emit a reserved token twice; duplicates break lookup
    if tok not in seen:
      seen.add(tok)
      out.append(tok)
  return out


def write_vocab(vocab: list[str], path: str) -> None:
  """One token per line."""
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write('\n'.join(vocab) + '\n')


def texts_from_shards(pattern: str, skipped: dict[str, int] | None = None) -> tf.data.Dataset:
  """The `text` feature of every record in the shards matching the glob, read by the pipeline's
  reader (sources.read_tfrecord: a damaged shard or record is skipped and counted by reason in
  `skipped`, never a crash); records without a UTF-8 caption are skipped too."""
  files = list_files(pattern)
  checks = filters.Checks()
  skipped = {} if skipped is None else skipped

  def texts():
    for path in files:
      for _, text, _, reason in sources.read_tfrecord(path, ('image', 'text', 'id'), checks):
        name = filters.REASONS[reason]
        if name in _TEXT_USABLE:
          yield text
        else:
          skipped[name] = skipped.get(name, 0) + 1

  return tf.data.Dataset.from_generator(texts, output_signature=tf.TensorSpec([], tf.string))


# Reasons about the image only: the caption is still good vocabulary.
_TEXT_USABLE = frozenset(('ok', 'missing_image', 'empty_image', 'unsupported_format',
                          'zero_size_image', 'absurd_dimensions', 'corrupt_image',
                          'extreme_aspect'))


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Command-line flags, defined only when run as a program (the module is also a library,
  and absl refuses a flag name that another imported tool already defined)."""
  flags.DEFINE_string('input', None, 'Glob of TFRecord shards with a `text` feature.')
  flags.DEFINE_string('output', None, 'Where to write vocab.txt.')
  flags.DEFINE_integer('vocab_size', 1000, 'Target vocabulary size.')
  flags.DEFINE_bool('lower_case', True, 'Lower-case text before learning.')


def main(argv) -> None:
  del argv
  if not FLAGS.input or not FLAGS.output:
    raise app.UsageError('--input and --output are required')
  t0 = time.time()
  logging.info('learning a WordPiece vocabulary from %s', FLAGS.input)
  skipped = {}
  from vlalign import errors  # pylint: disable=g-import-not-at-top
  with errors.one_line('vlalign.tools.build_vocab'):  # unreadable input / output: one line
    vocab = learn_vocab(texts_from_shards(FLAGS.input, skipped), FLAGS.vocab_size,
                        FLAGS.lower_case)
    write_vocab(vocab, FLAGS.output)
  if skipped:
    logging.warning('records skipped (no usable caption): %s', dict(sorted(skipped.items())))
  print(f'wrote {len(vocab)} tokens to {FLAGS.output} in {time.time() - t0:.1f}s', flush=True)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
