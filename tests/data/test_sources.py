"""Sources, bad records, convert, TFDS (mock_data), mixing and filters."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.data import bad_data
from vlalign import config_lib
from vlalign.data import filters, pipeline, sources
from vlalign.data.text import WordpieceTokenizer
from vlalign.tools import convert

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(batch=8, **kw):
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size, d.max_len, d.shuffle_buffer = batch, 32, 36, 24, 0
  d.update(kw)
  return d


def _values(**kw):
  d = _cfg()
  values = {k: d[k] for k in ('image_key', 'text_key', 'id_key', 'tfds_data_dir',
                              'max_text_bytes')}
  values.update({k: d.filters[k] for k in ('min_image_side', 'max_aspect_ratio', 'min_unigrams',
                                           'max_unigrams', 'max_shared_text',
                                           'min_unigram_count')})
  values.update(kw)
  return values


@pytest.fixture(scope='module')
def wds(small_dataset, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('wds'))
  pairs = bad_data.embedded_pairs(small_dataset['train']['studio'], 30)
  return {'dir': out, **bad_data.build_wds(out, pairs)}


def _raw_reasons(src, cfg, n):
  """Reason of each of the first n raw records of a source's stream (the test's own count)."""
  stream = pipeline.record_stream(src, cfg, filters.Checks(), seed=0)
  out = []
  for _, (image, _, uid, reason) in stream.take(n).as_numpy_iterator():
    if reason == 0:
      try:
        tf.io.decode_image(image, channels=3, expand_animations=False)
      except tf.errors.InvalidArgumentError:
        reason = filters.CODE['corrupt_image']
    out.append((uid.decode(), int(reason)))
  return out


def test_webdataset_bad_samples_are_skipped_counted_and_the_good_come_through(wds, tmp_path,
                                                                            small_dataset):
  """Convert (2 worker processes): every planted bad sample skipped under its reason, every
  good or unusual-but-valid sample written; the pipeline over the same tars counts the same
  reasons as a record-by-record replay of its stream."""
  out = str(tmp_path / 'tfr')
  total = convert.convert([f'wds:{wds["dir"]}/*.tar'], out, _values(), workers=2)
  assert total == {'written': len(wds['good_ids']), 'skipped': wds['skipped']}
  spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ('image', 'text', 'id')}
  written = [tf.io.parse_single_example(r, spec) for r in
             tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(f'{out}/part-*.tfrecord')))]
  assert sorted(x['id'].numpy().decode() for x in written) == wds['good_ids']
  texts = {x['id'].numpy().decode(): x['text'].numpy() for x in written}
  assert texts['json_caption'] == b'a caption from the json'

  # The training pipeline straight on the tars: unusual images come out as RGB crops, and the
  # skip counts equal the replayed stream's reasons up to the data position.
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  src = sources.resolve(f'wds:{wds["dir"]}/*.tar', _cfg())
  it = pipeline.TrainIterator(_cfg(batch=8), [src], tok, seed=0)
  seen = []
  while set(seen) != set(wds['good_ids']) and len(seen) < 800:  # until every good one came
    batch = next(it)
    assert batch['image'].shape == (8, 32, 32, 3) and np.isfinite(batch['image']).all()
    seen += [i.decode() for i in it.ids]
  assert set(wds['unusual']) <= set(seen) and set(seen) == set(wds['good_ids'])
  replay = _raw_reasons(src, _cfg(), it.position)
  assert [u for u, r in replay if r == 0] == seen
  expected = np.zeros(len(filters.REASONS), np.int64)
  for _, r in replay:
    if r:
      expected[r] += 1
  np.testing.assert_array_equal(it.skipped(), expected)
  assert set(filters.counts_dict(expected)) == set(wds['skipped'])


def test_convert_resumes_only_the_missing_shards_and_prints_a_json_summary(wds, tmp_path):
  out = tmp_path / 'tfr'
  cmd = [sys.executable, '-m', 'vlalign.tools.convert', f'--input=wds:{wds["dir"]}/*.tar',
         f'--output={out}', '--workers=1']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]
  summary = json.loads(first.stdout.strip().splitlines()[-1])
  assert summary == {'written': len(wds['good_ids']), 'skipped': wds['skipped']}
  # An interrupted run: one shard and its .done marker missing.
  keep = out / 'part-00000-of-00004.tfrecord'
  mtime = keep.stat().st_mtime_ns
  os.remove(out / 'part-00001-of-00004.tfrecord')
  os.remove(out / '.done' / 'part-00001-of-00004.json')
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert json.loads(again.stdout.strip().splitlines()[-1]) == summary
  assert keep.stat().st_mtime_ns == mtime  # not rewritten
  assert '(done before)' in again.stderr and (out / 'part-00001-of-00004.tfrecord').exists()


def test_truncated_tfrecord_and_malformed_records(tmp_path, small_dataset):
  pairs = bad_data.embedded_pairs(small_dataset['train']['sketch'], 6)

  def example(img, txt, uid):
    feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
             for k, v in (('image', img), ('text', txt), ('id', uid.encode()))}
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()

  path = str(tmp_path / 'a.tfrecord')
  with tf.io.TFRecordWriter(path) as w:
    w.write(example(*pairs[0]))
    w.write(b'\x08\x96\x01 not a tf.train.Example \xff')
    w.write(example(pairs[1][0], pairs[1][1], pairs[1][2]))
    w.write(example(*pairs[2]))
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:-40])  # the last record cut short
  reasons = [(uid, r) for _, _, uid, r in sources.read_tfrecord(path, ('image', 'text', 'id'),
                                                               filters.Checks())]
  assert [filters.REASONS[r] for _, r in reasons] == ['ok', 'malformed_record', 'ok',
                                                      'truncated_file']
  assert reasons[2][0] == pairs[1][2].encode()
  missing = list(sources.read_tfrecord(str(tmp_path / 'nope.tfrecord'), ('image', 'text', 'id'),
                                       filters.Checks()))
  assert [filters.REASONS[r] for *_, r in missing] == ['unreadable_shard']


def test_filters_count_each_rule(tmp_path):
  img = lambda h, w: bad_data.encode(bad_data.Image.new('RGB', (w, h)), 'PNG')
  texts = ['a red circle on grey'] * 12 + ['the zyzzyva sits', 'tiny', 'blue square in the middle',
                                           ' '.join(['word'] * 30)]
  stats = filters.TextStats.build(texts + ['a common word'] * 3)
  stats.save(str(tmp_path / 'stats.json'))
  stats = filters.TextStats.load(str(tmp_path / 'stats.json'))
  assert stats.shared[filters.text_key('A  red circle on GREY')] == 12
  checks = filters.Checks(min_image_side=20, max_aspect_ratio=3.0, min_unigrams=3,
                          max_unigrams=20, max_shared_text=10, min_unigram_count=2, stats=stats)
  cases = [(img(10, 40), 'blue square in the middle', 'small_image'),
           (img(30, 100), 'blue square in the middle', 'aspect_ratio'),
           (img(30, 30), 'tiny', 'few_unigrams'),
           (img(30, 30), ' '.join(['word'] * 30), 'many_unigrams'),
           (img(30, 30), 'a red circle on grey', 'shared_text'),
           (img(30, 30), 'the zyzzyva sits', 'rare_tokens'),
           (img(30, 80), 'a common word', 'ok')]
  got = [filters.REASONS[filters.check(i, t.encode(), checks)] for i, t, _ in cases]
  assert got == [r for *_, r in cases]
  for fmt in ('JPEG', 'PNG', 'GIF', 'BMP', 'WEBP'):
    data = bad_data.encode(bad_data.Image.new('RGB', (37, 23)), fmt)
    assert filters.image_format_and_size(data)[1:] == (23, 37), fmt


def _coco_like(pairs):
  """An as_dataset_fn for tfds.testing.mock_data (its random examples break on coco_captions'
  nested caption sequence): coco_captions-shaped examples (encoded image, two captions each,
  tfds_id), honouring tfds.even_splits shares."""

  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    del self, shuffle_files
    assert decoders and 'image' in decoders  # the image is asked for undecoded
    n = len(pairs)
    if dataclasses.is_dataclass(split):  # tfds.even_splits' share k of count
      share = dataclasses.asdict(split)
      k, count = share['index'], share['count']
      lo, hi = k * n // count, (k + 1) * n // count
    else:
      assert str(split) == 'train', split
      lo, hi = 0, n
    rows = pairs[lo:hi]
    data = {'image': [p[0] for p in rows],
            'captions': {'text': [[p[1], p[1] + b' again'] for p in rows],
                         'id': [[2 * i, 2 * i + 1] for i in range(lo, hi)]},
            'tfds_id': [f'coco_captions-train.tfrecord-00000-of-00001__{i}' for i in range(lo, hi)]}
    ds = tf.data.Dataset.from_tensor_slices(data)
    if not (read_config and read_config.add_tfds_id):
      ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k != 'tfds_id'})
    return ds

  return as_dataset


def test_tfds_source_with_several_captions_per_image(small_dataset, tmp_path):
  pairs = bad_data.embedded_pairs(small_dataset['train']['studio'], 16)
  cfg = _cfg(batch=8, text_key='captions/text')
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  with tfds.testing.mock_data(as_dataset_fn=_coco_like(pairs)):
    src = sources.resolve('tfds:coco_captions:train', cfg)
    ids = []
    it = pipeline.TrainIterator(cfg, [src], tok, seed=0)
    for _ in range(4):  # one epoch: 16 images x 2 captions
      next(it)
      ids += [i.decode() for i in it.ids]
    assert len(set(ids)) == 32 and sorted({i.split('#')[1] for i in ids}) == ['0', '1']
    # Four hosts (even splits of the split): disjoint, together the whole split.
    per_host = []
    for p in range(4):
      stream = pipeline.record_stream(src, cfg, filters.Checks(), seed=0, process_index=p,
                                      process_count=4, epochs=1)
      per_host.append({uid for _, (_, _, uid, _) in stream.as_numpy_iterator()})
    assert sum(len(h) for h in per_host) == 32 and set().union(*per_host) == {
        i.encode() for i in ids}
    # Convert reads TFDS too (in this process: mock_data patches only this one).
    total = convert.convert(['tfds:coco_captions:train'], str(tmp_path / 'tfr'),
                            _values(text_key='captions/text'), workers=1, tfds_shards=4)
    assert total == {'written': 32, 'skipped': {}}


def _mix_iter(small_dataset, mixing, weights=(), batch=8, **kw):
  cfg = _cfg(batch=batch, mixing=mixing, weights=weights, shuffle_buffer=32)
  cfg.embedded.train_sizes = {'studio': 300, 'sketch': 200}
  srcs = [sources.resolve(f'embedded:{n}', cfg, small_dataset) for n in ('studio', 'sketch')]
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  return pipeline.TrainIterator(cfg, srcs, tok, seed=0, **kw), srcs


def _source_of(ids):
  return [i.decode().split('/')[0] for i in ids]


def test_debiased_sampling_one_source_per_batch_same_on_every_host(small_dataset):
  hosts = [_mix_iter(small_dataset, 'debiased', process_index=p, process_count=2)[0]
           for p in range(2)]
  draws = []
  for _ in range(120):
    per_host = []
    for h in hosts:
      next(h)
      per_host.append(set(_source_of(h.ids)))
    assert all(len(s) == 1 for s in per_host) and per_host[0] == per_host[1]
    draws.append(per_host[0].pop())
  # Probability proportional to size: 300 / 500 studio.
  assert abs(draws.count('studio') / len(draws) - 0.6) < 0.13


def test_weighted_mixture_follows_the_weights_and_resumes_exactly(small_dataset):
  it, srcs = _mix_iter(small_dataset, 'weighted', weights=(0.85, 0.15))
  straight = []
  for _ in range(40):
    next(it)
    straight.append(list(it.ids))
  names = _source_of(np.concatenate(straight))
  assert abs(names.count('studio') / len(names) - 0.85) < 0.05
  first, _ = _mix_iter(small_dataset, 'weighted', weights=(0.85, 0.15))
  for _ in range(17):
    next(first)
  resumed, _ = _mix_iter(small_dataset, 'weighted', weights=(0.85, 0.15), state=first.state())
  for step in range(17, 40):
    next(resumed)
    assert list(resumed.ids) == straight[step]
  assert len(srcs) == 2 and first.state().positions[1] > 0


@pytest.mark.slow
def test_main_trains_on_converted_shards_mixed_with_the_raw_tars(wds, tmp_path, small_dataset):
  """Through vlalign.main: the converted shards and the broken tars as a weighted mixture; the
  run finishes, logs data/skipped/<reason> for the tars' bad samples and can be resumed."""
  out = str(tmp_path / 'tfr')
  convert.convert([f'wds:{wds["dir"]}/*.tar'], out, _values(), workers=1)
  workdir = tmp_path / 'wd'
  cmd = [sys.executable, '-m', 'vlalign.main', '--config=configs/demo.py:tiny',
         f'--workdir={workdir}', '--config.total_steps=8', '--config.log_every=4',
         f"--config.data.sources=('tfrecord:{out}/part-*.tfrecord', 'wds:{wds['dir']}/*.tar')",
         '--config.data.mixing=weighted', '--config.data.weights=(1.0, 3.0)',
         f'--config.data.vocab_file={small_dataset["vocab"]}', '--config.evals.heldout=False']
  env = dict(os.environ, JAX_PLATFORMS='cpu', VLALIGN_DATA_DIR=str(tmp_path / 'cache'))
  for stop in (4, 0):
    proc = subprocess.run(cmd + [f'--config.stop_at_step={stop}'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Resumed from checkpoint at step 4' in proc.stderr
  assert not (tmp_path / 'cache').exists()  # no embedded data needed
  with open(workdir / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  last = [r for r in rows if 'train/loss' in r][-1]
  assert last['step'] == 8 and np.isfinite(last['train/loss'])
  skipped = {k.split('/')[-1] for k, v in last.items() if k.startswith('data/skipped/') and v}
  assert skipped - {'total'} and skipped - {'total'} <= set(wds['skipped'])
