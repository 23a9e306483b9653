"""tf.data service (data.service_address): the group plan is pure graph, pipelines that call
Python are refused with one line, and a pure-graph source's examples come through an
in-process dispatcher and two workers with each (group, place) once and the same records as
the local stream."""

import numpy as np
import pytest
import tensorflow as tf

from vlalign import config_lib
from vlalign.data import filters, groups, pipeline, service, sources
from vlalign.data.source_kinds import tfrecord
from vlalign.data.text import WordpieceTokenizer


class GraphTFRecord(tfrecord.TFRecord):
  """tfrecord shards read and parsed by TF ops only (no checks): a source a worker can run."""

  def file_records(self, path, data_cfg, checks, monitor):
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ('image', 'text', 'id')}

    def parse(record):
      ex = tf.io.parse_single_example(record, spec)
      return ex['image'], ex['text'], ex['id'], tf.constant(0, tf.int32)
    return tf.data.TFRecordDataset(path).map(parse)


def _cfg():
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size, d.max_len, d.shuffle_buffer = 8, 16, 18, 16, 20
  d.cycle_length = 2
  return d


def _src(ds):
  files = sorted(f for p in ds['train'].values() for f in pipeline.list_files(p))
  return sources.Source('tfrecord:test', 'tfrecord', files=files)


@pytest.fixture(scope='module')
def two_workers():
  """host:port of an in-process dispatcher, and its two workers (they end with the process:
  stopping them costs seconds)."""
  svc = tf.data.experimental.service
  dispatcher = svc.DispatchServer(svc.DispatcherConfig(port=0))
  address = dispatcher.target.split('://')[1]
  workers = [svc.WorkerServer(svc.WorkerConfig(dispatcher_address=address)) for _ in range(2)]
  yield address, workers
  del dispatcher


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
  cfg.service_address = 'localhost:1'  # never contacted: the check comes first
  tok = WordpieceTokenizer(small_dataset['vocab'], 16)
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.data.service_address: config.data.sources\[0\]="
                           r"'tfrecord:test': the tfrecord reader \(Python parse.*PyFunc"):
    pipeline.TrainIterator(cfg, [_src(small_dataset)], tok, seed=0)


def _placed(ds, n):
  return {(int(e['group']), int(e['place'])): e['id'] for e in ds.take(n).as_numpy_iterator()}


def test_examples_come_through_two_workers_once_each_as_in_the_local_stream(
    small_dataset, two_workers, monkeypatch):
  monkeypatch.setattr(sources, 'kind_of', lambda kind: GraphTFRecord())
  cfg, src = _cfg(), _src(small_dataset)
  stream = pipeline.positioned_stream(src, cfg, filters.Checks(), seed=2, epochs=1)
  examples = pipeline.good_examples(stream, cfg, seed=2, source_id=0)
  local = _placed(examples, 500)
  served = [(int(e['group']), int(e['place']), e['id']) for e in service.distribute(
      examples, two_workers[0]).as_numpy_iterator()]
  assert len(served) == len(local) == 500  # one epoch: every record once
  assert {(g, k): uid for g, k, uid in served} == local
  # The job ran on both workers (which groups each got varies from run to run).
  assert [w._num_tasks() for w in two_workers[1]] == [1, 1]  # pylint: disable=protected-access


def test_train_iterator_hook_gives_batches_from_the_service(small_dataset, two_workers,
                                                            monkeypatch):
  monkeypatch.setattr(sources, 'kind_of', lambda kind: GraphTFRecord())
  cfg = _cfg()
  cfg.service_address = two_workers[0]
  tok = WordpieceTokenizer(small_dataset['vocab'], 16)
  it = pipeline.TrainIterator(cfg, [_src(small_dataset)], tok, seed=0)
  batches = [next(it) for _ in range(3)]
  it.close()
  assert batches[0]['image'].shape == (8, 16, 16, 3) and batches[0]['tokens'].shape == (8, 16)
  assert np.isfinite(batches[2]['image']).all()
