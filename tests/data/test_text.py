"""WordPiece tokenizer and the build_vocab tool."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vlalign.data.text import RESERVED, WordpieceTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _texts(ds, n=200):
  spec = {'text': tf.io.FixedLenFeature([], tf.string)}
  files = sorted(tf.io.gfile.glob(ds['train']['studio']))
  return [tf.io.parse_single_example(r, spec)['text'].numpy().decode()
          for r in tf.data.TFRecordDataset(files).take(n)]


def test_round_trip_and_layout(small_dataset):
  tok = WordpieceTokenizer(small_dataset['vocab'], 64)
  texts = [t for t in _texts(small_dataset) if not t[0].isupper()][:50]
  ids = tok.tokenize(np.array(texts, dtype=object)).numpy()
  assert ids.shape == (len(texts), 64) and ids.dtype == np.int32
  assert (ids[:, 0] == tok.cls_id).all()
  for row, text in zip(ids, texts):
    n = int((row != tok.pad_id).sum())
    assert row[n - 1] == tok.sep_id and (row[n:] == 0).all()
    assert tok.unk_id not in row
  back = tok.detokenize(ids)
  norm = lambda s: ''.join(s.lower().split())
  assert [norm(b) for b in back] == [norm(t) for t in texts]


def test_truncation_keeps_sep_and_scalar_input(small_dataset):
  tok = WordpieceTokenizer(small_dataset['vocab'], 6)
  row = tok.tokenize('a large red circle in the top left and a small blue star').numpy()
  assert row.shape == (6,) and row[0] == tok.cls_id and row[-1] == tok.sep_id


def test_works_inside_tf_data(small_dataset):
  tok = WordpieceTokenizer(small_dataset['vocab'], 16)
  ds = tf.data.Dataset.from_tensor_slices(['a red star', 'a blue cross']).map(tok.tokenize)
  rows = list(ds.as_numpy_iterator())
  np.testing.assert_array_equal(rows[0], tok.tokenize('a red star').numpy())
  assert tok.detokenize(np.stack(rows)) == ['a red star', 'a blue cross']


@pytest.mark.parametrize('content,match', [
    ('', 'empty'), ('foo\nbar\n', r"'\[PAD\]' \(pad\) is not in"), ('[PAD]\n\nb\n', 'line 2'),
    ('\n'.join(RESERVED + ('red', 'red')) + '\n', 'duplicate')])
def test_bad_vocab_files_are_named(tmp_path, content, match):
  path = tmp_path / 'vocab.txt'
  path.write_text(content)
  with pytest.raises(ValueError, match=match) as e:
    WordpieceTokenizer(str(path), 8)
  assert str(path) in str(e.value)
  with pytest.raises(ValueError, match='does not exist'):
    WordpieceTokenizer(str(tmp_path / 'missing.txt'), 8)


def test_build_vocab_cli(small_dataset, tmp_path):
  out = tmp_path / 'v.txt'
  proc = subprocess.run([sys.executable, '-m', 'vlalign.tools.build_vocab',
                         f'--input={small_dataset["train"]["studio"]}', f'--output={out}',
                         '--vocab_size=200'], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'wrote' in proc.stdout
  vocab = out.read_text().split('\n')
  assert tuple(vocab[:5]) == RESERVED and len(set(v for v in vocab if v)) == len([v for v in vocab if v])
  tok = WordpieceTokenizer(str(out), 64)
  ids = tok.tokenize(np.array(_texts(small_dataset), dtype=object)).numpy()
  assert (ids != tok.unk_id).all()


def test_default_ids_equal_the_tokenizer_before_data_tokenizer(small_dataset):
  """The embedded default keeps the ids of the earlier setup (FastBertTokenizer with its own
  NFKC case folding) on every training caption of both sources, noisy ones included."""
  import tensorflow_text as tft  # pylint: disable=g-import-not-at-top
  tok = WordpieceTokenizer(small_dataset['vocab'], 32)
  spec = {'text': tf.io.FixedLenFeature([], tf.string)}
  files = sorted(f for source in ('studio', 'sketch')
                 for f in tf.io.gfile.glob(small_dataset['train'][source]))
  texts = [tf.io.parse_single_example(r, spec)['text'].numpy().decode()
           for r in tf.data.TFRecordDataset(files)]
  assert len(texts) == 500
  old = tft.FastBertTokenizer(tok.vocab, token_out_type=tf.int32,
                              lower_case_nfd_strip_accents=True, unknown_token='[UNK]')
  pieces = old.tokenize(np.array(texts, dtype=object))[:, :30]
  n = len(texts)
  want = tf.concat([tf.fill([n, 1], 2), pieces, tf.fill([n, 1], 3)], axis=1).to_tensor(
      default_value=0, shape=[None, 32]).numpy()
  np.testing.assert_array_equal(tok.tokenize(np.array(texts, dtype=object)).numpy(), want)
