"""tf.data pipeline: determinism, exact resume by position, disjoint per-process shards."""

import numpy as np
import pytest
import tensorflow as tf

from vlalign import config_lib
from vlalign.data import filters, pipeline, sources
from vlalign.data.text import WordpieceTokenizer


def _cfg(batch=8):
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size, d.max_len, d.shuffle_buffer = batch, 32, 36, 24, 50
  return d


def _files(ds):
  return sorted(f for p in ds['train'].values() for f in pipeline.list_files(p))


def _src(files):
  return [sources.Source('tfrecord:test', 'tfrecord', files=list(files))]


def _iter(cfg, files, tok, **kw):
  return pipeline.TrainIterator(cfg, _src(files), tok, **kw)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_same_seed_same_batches_other_seed_differs(small_dataset):
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  a = _take(_iter(_cfg(), _files(small_dataset), tok, seed=3), 3)
  b = _take(_iter(_cfg(), _files(small_dataset), tok, seed=3), 3)
  c = _take(_iter(_cfg(), _files(small_dataset), tok, seed=4), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['tokens'], y['tokens'])
  assert not np.array_equal(a[0]['tokens'], c[0]['tokens'])
  assert a[0]['image'].shape == (8, 32, 32, 3) and a[0]['image'].dtype == np.float32
  assert -1.0 <= a[0]['image'].min() and a[0]['image'].max() <= 1.0


def test_resume_from_position_continues_exactly(small_dataset):
  """Across an epoch boundary (500 records, batch 8): 70 batches straight vs 40 + resume + 30."""
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  straight = _take(_iter(_cfg(), _files(small_dataset), tok, seed=0), 70)
  first = _iter(_cfg(), _files(small_dataset), tok, seed=0)
  _take(first, 40)
  assert first.position == 320
  resumed = _take(_iter(_cfg(), _files(small_dataset), tok, seed=0, state=first.state()), 30)
  for x, y in zip(straight[40:], resumed):
    np.testing.assert_array_equal(x['tokens'], y['tokens'])
    np.testing.assert_array_equal(x['image'], y['image'])


def _ids(files, pi, pc, n):
  cfg = _cfg()
  cfg.shuffle_buffer = 16
  ds = pipeline.record_stream(_src(files)[0], cfg, filters.Checks(), seed=0, process_index=pi,
                              process_count=pc)
  return [uid for _, (_, _, uid, _) in ds.take(n).as_numpy_iterator()]


@pytest.mark.parametrize('num_files', [4, 2])
def test_four_processes_read_disjoint_slices_covering_everything(small_dataset, num_files):
  """File-level split with 4 shards; example-level split when there are fewer files than hosts."""
  files = _files(small_dataset)
  studio = [f for f in files if 'studio' in f]  # 4 shards, 300 examples
  files = studio[:num_files]
  counts = [sum(1 for _ in tf.data.TFRecordDataset(f)) for f in files]
  total = sum(counts)
  if num_files >= 4:
    per_host = [counts[i] for i in range(4)]
  else:
    per_host = [len(range(i, total, 4)) for i in range(4)]
  # Two epochs' worth per host: records of the next epoch mix in through the shuffle buffer,
  # so compare sets: each host sees exactly its slice, the slices are disjoint.
  seen = [set(_ids(files, i, 4, 2 * per_host[i])) for i in range(4)]
  assert [len(s) for s in seen] == per_host
  union = set().union(*seen)
  assert len(union) == total
  all_ids = {tf.io.parse_single_example(r, {'id': tf.io.FixedLenFeature([], tf.string)})['id']
             .numpy() for r in tf.data.TFRecordDataset(files)}
  assert union == all_ids


def test_eval_set_has_attributes(small_dataset):
  tok = WordpieceTokenizer(small_dataset['vocab'], 40)
  ev = pipeline.load_eval_set(small_dataset['heldout'], _cfg(), tok)
  assert len(ev['image']) == 120 and ev['image'].shape[1:] == (32, 32, 3)
  single = ev['num_objects'] == 1
  assert 0.25 < single.mean() < 0.6
  assert (ev['colors'][single] >= 0).all() and (ev['colors'][single] < 8).all()
  assert (ev['tokens'][:, 0] == tok.cls_id).all()


def test_batch_split_hosts_together_give_the_single_process_batches_and_resume(small_dataset):
  """host_split 'batch': the 3 hosts' batches, concatenated in process order, equal the batches
  one process reads (images, augmentation included, and tokens); each host resumed from its
  saved state continues exactly."""
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  cfg = _cfg(batch=12)
  cfg.host_split = 'batch'
  files = _files(small_dataset)
  single = _take(_iter(cfg, files, tok, seed=0), 5)
  hosts = [_iter(cfg, files, tok, seed=0, process_index=p, process_count=3) for p in range(3)]
  per_host = [_take(h, 3) for h in hosts]
  # Global stream positions after each host's slice of global batch 3 (4 records per host).
  assert [h.position for h in hosts] == [28, 32, 36]
  for step in range(3):
    for key in ('image', 'tokens'):
      np.testing.assert_array_equal(
          np.concatenate([per_host[p][step][key] for p in range(3)]), single[step][key])
  resumed = [_take(_iter(cfg, files, tok, seed=0, state=hosts[p].state(), process_index=p,
                         process_count=3), 2) for p in range(3)]
  for step in range(2):
    np.testing.assert_array_equal(
        np.concatenate([resumed[p][step]['tokens'] for p in range(3)]), single[3 + step]['tokens'])
    np.testing.assert_array_equal(
        np.concatenate([resumed[p][step]['image'] for p in range(3)]), single[3 + step]['image'])
