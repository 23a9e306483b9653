"""tf.data service (data.service_address): the group plan is pure graph, pipelines that call
Python are refused with one line, and a pure-graph source (data.tfrecord_reader='graph') gives
the native reader's records and comes through an in-process dispatcher and two workers with
each (group, place) once and the same records as the local stream."""

import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from vlalign import config_lib
from vlalign.data import filters, groups, pipeline, service, sources
from vlalign.data.text import WordpieceTokenizer


def _cfg():
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size, d.max_len, d.shuffle_buffer = 8, 16, 18, 16, 20
  d.cycle_length, d.tfrecord_reader = 2, 'graph'
  return d


def _src(ds, n=None):
  files = sorted(f for p in ds['train'].values() for f in pipeline.list_files(p))[:n]
  return sources.Source('tfrecord:test', 'tfrecord', files=files)


_KEEP = []  # the servers live until the process ends


@pytest.fixture(scope='module')
def two_workers():
  """host:port of an in-process dispatcher, and its two workers (they end with the process:
  stopping them costs seconds)."""
  svc = tf.data.experimental.service
  dispatcher = svc.DispatchServer(svc.DispatcherConfig(port=0))
  address = dispatcher.target.split('://')[1]
  workers = [svc.WorkerServer(svc.WorkerConfig(dispatcher_address=address,
                                               heartbeat_interval_ms=100)) for _ in range(2)]
  deadline = time.time() + 30
  while dispatcher._num_workers() < 2 and time.time() < deadline:  # pylint: disable=protected-access
    time.sleep(0.05)
  _KEEP.extend([dispatcher] + workers)
  return address, workers


def test_the_group_plan_is_pure_graph_and_orders_differ_by_epoch_and_seed():
  plan = groups.file_plan([f'f{i}' for i in range(20)], 8, seed=3, shuffle=True,
                          start=groups.Cursor(5, 1, 2), epochs=3)
  assert service.python_functions(plan) == []
  rows = list(plan.as_numpy_iterator())
  assert [int(r[0]) for r in rows] == list(range(1, 9))  # 3 groups an epoch (8, 8, 4 files)
  assert [int(r[2]) for r in rows] == [2] + [0] * 7  # the skip of the cursor's group only
  epoch1 = [p for r in rows[2:5] for p in r[3]]
  epoch2 = [p for r in rows[5:8] for p in r[3]]
  assert sorted(epoch1) == sorted(epoch2) == sorted(f'f{i}'.encode() for i in range(20))
  assert epoch1 != epoch2 and len({int(r[1]) for r in rows}) == len(rows)
  other = groups.file_plan([f'f{i}' for i in range(20)], 8, seed=4, shuffle=True,
                           start=groups.Cursor(), epochs=1)
  assert [p for r in other.as_numpy_iterator() for p in r[3]] != [
      p for r in groups.file_plan([f'f{i}' for i in range(20)], 8, seed=3, shuffle=True,
                                  start=groups.Cursor(), epochs=1).as_numpy_iterator()
      for p in r[3]]


def test_a_python_reader_is_refused_with_one_line_naming_the_source(small_dataset):
  cfg = _cfg()
  cfg.service_address, cfg.tfrecord_reader = 'localhost:1', 'native'  # never contacted
  tok = WordpieceTokenizer(small_dataset['vocab'], 16)
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.data.service_address: config.data.sources\[0\]="
                           r"'tfrecord:test': the tfrecord reader \(its Python pre-check.*"
                           r"tfrecord_reader='graph'.*PyFunc"):
    pipeline.TrainIterator(cfg, [_src(small_dataset)], tok, seed=0)


def _placed(ds, n):
  return {(int(e['group']), int(e['place'])): e['id'] for e in ds.take(n).as_numpy_iterator()}


def _records(cfg, src):
  stream = pipeline.positioned_stream(src, cfg, filters.Checks(), seed=2, epochs=1)
  return [(int(g), int(k), uid, int(r)) for _, (g, k), (_, _, uid, r) in
          stream.as_numpy_iterator()]


def test_the_graph_reader_gives_the_native_readers_records(small_dataset):
  native = _cfg()
  native.tfrecord_reader = 'native'
  src = _src(small_dataset, 1)
  graph = _records(_cfg(), src)
  assert len(graph) == 50
  assert graph == _records(native, src)


def test_examples_come_through_two_workers_once_each_as_in_the_local_stream(
    small_dataset, two_workers):
  """Each (group, place) once with the local stream's record and crop; the skip counts ride as deltas
  (records skipped since the previous kept one, on its worker): locally they sum to all the
  records skipped, served to that less the bad records after each worker's last kept one."""
  cfg, src = _cfg(), _src(small_dataset, 4)
  cfg.cycle_length = 1  # 4 groups, shared by the two workers
  checks = filters.Checks(max_unigrams=6)
  stream = pipeline.positioned_stream(src, cfg, checks, seed=2, epochs=1)
  tails, bad = {}, 0
  for _, (g, _), (_, _, _, reason) in stream.as_numpy_iterator():
    tails[int(g)] = 0 if reason == 0 else tails.get(int(g), 0) + 1  # bad after the last kept
    bad += int(reason > 0)
  examples = pipeline.good_examples(stream, cfg, seed=2, source_id=0, served=True)
  assert service.python_functions(examples) == []
  local = [(int(e['group']), int(e['place']), e['id'], e['counts'], e['image'])
           for e in examples.as_numpy_iterator()]
  assert bad > 20 and sum(r[3] for r in local).sum() == bad - tails[max(tails)]
  seen, done = [0, 0], threading.Event()

  def poll():  # a worker's task ends once the groups run out: watch while the job runs
    while not done.is_set():
      seen[:] = np.maximum(seen, _tasks(two_workers[1])).tolist()
      time.sleep(0.002)
  poller = threading.Thread(target=poll, daemon=True)
  poller.start()
  served = [(int(e['group']), int(e['place']), e['id'], e['counts'], e['image'])
            for e in service.distribute(examples, two_workers[0]).as_numpy_iterator()]
  done.set()
  poller.join()
  assert seen == [1, 1]  # the job ran on both workers
  assert len(served) == len(local) == 200 - bad  # one epoch (4 shards of 50): each record once
  mine = {(r[0], r[1]): r for r in local}
  for g, k, uid, _, image in served:  # the record and its augmentation (keyed on g, k)
    assert uid == mine[g, k][2] and np.array_equal(image, mine[g, k][4])
  assert len({(r[0], r[1]) for r in served}) == len(served)
  skipped = sum(r[3] for r in served).sum()
  assert bad - 2 * max(tails.values()) <= skipped <= bad


def _tasks(workers):
  return [w._num_tasks() for w in workers]  # pylint: disable=protected-access


def test_train_iterator_hook_gives_batches_from_the_service(small_dataset, two_workers):
  cfg = _cfg()
  cfg.service_address = two_workers[0]
  tok = WordpieceTokenizer(small_dataset['vocab'], 16)
  it = pipeline.TrainIterator(cfg, [_src(small_dataset)], tok, seed=0)
  batches = [next(it) for _ in range(3)]
  it.close()
  assert "'tfrecord:test' (read by the tf.data service workers of localhost:" in (
      it.monitors[0].describe())  # what a stall message says of a served source
  assert batches[0]['image'].shape == (8, 16, 16, 3) and batches[0]['tokens'].shape == (8, 16)
  assert np.isfinite(batches[2]['image']).all()



def test_a_python_tokenizer_in_a_worker_side_view_is_refused_naming_the_stage(small_dataset):
  from vlalign.data import tokenizers  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.data.max_len = 16
  config.data.tokenizer.kind = 'bpe'  # CLIP's BPE runs in Python (tf.numpy_function)
  cfg = _cfg()
  cfg.service_address, cfg.views.text_eda = 'localhost:1', True
  with pytest.raises(config_lib.ConfigError, match=r"source 0's decoding / extra views \("
                                                   r"config.data.views, the tokenizer\).*PyFunc"):
    pipeline.TrainIterator(cfg, [_src(small_dataset, 1)], tokenizers.make_tokenizer(config.data),
                           seed=0)
