"""csv: sources (OpenCLIP-style TSV of image paths and captions) through training, convert and
the evaluators, with bad rows counted by reason."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.data import bad_data
from vlalign import config_lib
from vlalign.data import filters, pipeline, sources
from vlalign.data.text import WordpieceTokenizer
from vlalign.evaluate import datasets
from vlalign.tools import convert

BOUNDS = {'max_record_bytes': 20000, 'max_member_bytes': 50000}
EXPECTED = {'missing_file': 1, 'path_escape': 2, 'malformed_record': 1, 'text_too_long': 1,
            'record_too_large': 1, 'member_too_large': 1, 'unsupported_format': 1,
            'missing_image': 1}


def _cfg(batch=8, **kw):
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size, d.max_len, d.shuffle_buffer = batch, 32, 36, 24, 0
  d.update(BOUNDS, **kw)
  return d


@pytest.fixture(scope='module')
def planted(small_dataset, tmp_path_factory):
  """A TSV with 24 good rows (one absolute path inside the folder) and one bad row per reason,
  the bad ones among the first rows; labels i % 3 in a 'label' column."""
  top = tmp_path_factory.mktemp('csv')
  root = top / 'ds'
  (root / 'images').mkdir(parents=True)
  (top / 'outside.png').write_bytes(bad_data.embedded_pairs(
      small_dataset['train']['studio'], 1)[0][0])
  (root / 'images' / 'big.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'0' * 60000)
  (root / 'images' / 'notes.txt').write_bytes(b'not an image')
  good, rows = [], []
  for i, (image, text, _) in enumerate(bad_data.embedded_pairs(
      small_dataset['train']['studio'], 24)):
    (root / 'images' / f'{i}.png').write_bytes(image)
    path = str(root / 'images' / f'{i}.png') if i == 5 else f'images/{i}.png'
    rows.append(f'{path}\t{text.decode()}\t{i % 3}')
    good.append(i)
  bad = ['images/nope.png\ta caption\t0', '../outside.png\ta caption\t0',
         f'{top / "outside.png"}\ta caption\t0', 'images/0.png', 'images/1.png\t' +
         'long ' * 1000 + '\tn/a', 'images/2.png\t' + 'x' * 30000 + '\t0',
         'images/big.png\ta caption\t0', 'images/notes.txt\ta caption\t0', '\ta caption\t0']
  lines = rows[:2] + [x for pair in zip(bad, rows[2:]) for x in pair] + rows[2 + len(bad):]
  (root / 'pairs.tsv').write_text('filepath\ttitle\tlabel\n' + '\n'.join(lines) + '\n')
  ids = {f'pairs.tsv:{n}' for n, line in enumerate(lines) if line in rows}
  return {'spec': f'csv:{root}/pairs.tsv', 'ids': ids, 'labels': [i % 3 for i in good]}


def test_csv_trains_with_bad_rows_counted_and_resumes_exactly(planted, small_dataset):
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  cfg = _cfg()
  src = sources.resolve(planted['spec'], cfg)
  it = pipeline.TrainIterator(cfg, [src], tok, seed=0)
  seen = []
  for _ in range(2):
    batch = next(it)
    assert batch['image'].shape == (8, 32, 32, 3) and np.isfinite(batch['image']).all()
    seen += [i.decode() for i in it.ids]
  assert set(seen) <= planted['ids'] and len(set(seen)) == 16
  assert filters.counts_dict(it.skipped()) == EXPECTED
  state = it.state()
  resumed = pipeline.TrainIterator(cfg, [src], tok, seed=0, state=state)
  next(it), next(resumed)
  assert list(resumed.ids) == list(it.ids)
  it.close()
  resumed.close()


def test_csv_single_file_is_split_between_hosts_by_row(planted):
  cfg = _cfg()
  src = sources.resolve(planted['spec'], cfg)
  hosts = [[u for _, (_, _, u, _) in pipeline.record_stream(
      src, cfg, filters.Checks(), seed=0, process_index=p, process_count=2,
      epochs=1).as_numpy_iterator()] for p in range(2)]
  assert not set(hosts[0]) & set(hosts[1])
  assert len(hosts[0]) + len(hosts[1]) == len(planted['ids']) + sum(EXPECTED.values())


def test_csv_converts_to_tfrecord_with_the_same_counts(planted, tmp_path):
  values = {k: v for k, v in _cfg().items() if k in ('image_key', 'text_key', 'id_key',
                                                     'tfds_data_dir', 'max_text_bytes')}
  values.update(BOUNDS, min_image_side=0, max_aspect_ratio=0.0, min_unigrams=0, max_unigrams=0,
                max_shared_text=0, min_unigram_count=0)
  total = convert.convert([planted['spec']], str(tmp_path), values, workers=1)
  assert total == {'written': len(planted['ids']), 'skipped': EXPECTED}
  spec = {'id': tf.io.FixedLenFeature([], tf.string)}
  ids = {tf.io.parse_single_example(r, spec)['id'].numpy().decode() for r in
         tf.data.TFRecordDataset(tf.io.gfile.glob(f'{tmp_path}/part-*.tfrecord'))}
  assert ids == planted['ids']


def test_evaluators_read_a_csv_source(planted):
  cfg = _cfg()
  entry = datasets.entry_defaults({'name': 'c', 'kind': 'retrieval', 'source': planted['spec']})
  images, texts, owner = datasets.read_captioned(entry, cfg)
  assert images.shape == (len(planted['ids']), 32, 32, 3) and len(texts) == len(owner)
  entry = datasets.entry_defaults({'name': 'z', 'kind': 'zeroshot', 'source': planted['spec']})
  images, labels, names = datasets.read_labelled(entry, cfg, None)
  assert images.shape[0] == len(planted['labels']) and names is None
  np.testing.assert_array_equal(np.sort(labels), np.sort(planted['labels']))


def test_csv_config_errors_name_the_field(planted):
  config = config_lib.base_config()
  config.data.csv.separator = ';'
  with pytest.raises(config_lib.ConfigError, match='data.csv.separator'):
    config_lib.validate(config)
  with pytest.raises(sources.DataError, match='data.csv.image_column'):
    sources.resolve(planted['spec'], _cfg(csv={'image_column': 'path', 'caption_column': 'title',
                                              'separator': '\t'}))
