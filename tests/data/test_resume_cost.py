"""Resume in O(files): a cursor (group, place) continues a stream exactly, a deep position reads
no more than its group (and the next, opened ahead), and older data states are handled."""

import os

import numpy as np
import pytest

from vlalign import checkpoint, config_lib, train
from vlalign.data import filters, groups, pipeline, sources


def _cfg(cycle=2, reader='native'):
  d = config_lib.base_config().data
  d.shuffle_buffer, d.cycle_length, d.tfrecord_reader = 40, cycle, reader
  return d


def _source(ds):
  files = sorted(f for p in ds['train'].values() for f in pipeline.list_files(p))
  return sources.Source('tfrecord:test', 'tfrecord', files=files)


def _stream(src, cfg, n, start=groups.Cursor(), monitor=None):
  ds = pipeline.positioned_stream(src, cfg, filters.Checks(), seed=5, start=start,
                                  monitor=monitor)
  return [(int(i), int(g), int(k), uid) for i, (g, k), (_, _, uid, _) in
          ds.take(n).as_numpy_iterator()]


def test_a_cursor_continues_the_stream_exactly_across_groups_and_epochs(small_dataset):
  """500 records in 8 files, groups of 2 files: resumed at a place inside a group of the second
  epoch, the next 300 records (into the third epoch) equal the straight stream's."""
  src, cfg = _source(small_dataset), _cfg()
  straight = _stream(src, cfg, 1400)
  assert [r[0] for r in straight] == list(range(1400))
  assert sorted(u for *_, u in straight[:500]) == sorted(u for *_, u in straight[500:1000])
  at = 777
  index, group, place, _ = straight[at]
  assert place > 0 and group >= 4  # inside a group of epoch 1 (4 groups per epoch)
  resumed = _stream(src, cfg, 300, groups.Cursor(index, group, place))
  assert resumed == straight[at:at + 300]


def test_resume_deep_into_a_run_reads_one_group_not_the_history(small_dataset):
  """A cursor 100 epochs in (50,000 records consumed) reads its group's records (and the reads
  ahead), counted by the source's Monitor (every record any reader made)."""
  src, cfg = _source(small_dataset), _cfg()
  sizes = {}
  for _, g, _, _ in _stream(src, cfg, 1000):
    sizes[g] = sizes.get(g, 0) + 1
  biggest = max(sizes.values())  # records of the largest group
  monitor = sources.Monitor(src.spec)
  epoch_100 = groups.Cursor(50_000 + 10, 400, 10)  # group 400 = epoch 100's first
  first = _stream(src, cfg, 1, epoch_100, monitor)
  assert first[0][:3] == (50_010, 400, 10)
  read = sum(monitor.counts)
  # Its group, and what the readers fetch ahead (the next group is opened while one is read):
  # bounded by a few groups' records whatever the position, not by the 50,000 before it.
  assert 0 < read <= 3 * biggest, (read, biggest)


def _item(version, positions):
  config = config_lib.base_config()
  config.data.sources = ('embedded',)
  n = len(positions)
  rows = [[0, 0] + sum(([p, 0] + [0] * pipeline.NUM_REASONS for p in positions), [])]
  return config, {'version': version, 'sources': ['embedded'] * n, 'mixing': 'none',
                  'host_split': 'files', 'process_count': 1, 'hosts': rows}


def test_a_data_state_of_the_previous_format_resumes_from_the_start_or_stops_with_one_line():
  config, item = _item(2, [0])
  assert train._data_state(item, config).cursor(0) == groups.Cursor()  # nothing consumed yet
  config, item = _item(2, [320])
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r'format 2\) gives stream positions \[320\].*resume_allow_changes'):
    train._data_state(item, config)
  config.resume_allow_changes = True  # deliberate: the stream restarts, the counts are kept
  state = train._data_state(item, config)
  assert state.cursor(0) == groups.Cursor() and state.unplaced() == []
  config.resume_allow_changes = False  # format 3: groups of the NumPy file order of before
  item = _item(3, [320])[1]
  item['hosts'] = [[0, 0, 320, 0, 5, 2] + [0] * pipeline.NUM_REASONS]
  with pytest.raises(checkpoint.CheckpointMismatchError, match=r'format 3\) gives stream'):
    train._data_state(item, config)
  item['hosts'] = [[0, 0, 0, 0, 0, 0] + [0] * pipeline.NUM_REASONS]
  assert train._data_state(item, config).cursor(0) == groups.Cursor()
  with pytest.raises(checkpoint.CheckpointMismatchError, match='format 1'):
    train._data_state({'position': 64}, config_lib.base_config())
  saved = train.data_item(config, [pipeline.DataState([9], [8], [[0] * pipeline.NUM_REASONS],
                                                      groups=[2], in_group=[3]).to_vector()])
  assert saved['version'] == 4 and train._data_state(saved, config).cursor(0) == groups.Cursor(
      9, 2, 3)


def test_native_reader_reads_clean_shards_and_leaves_hostile_ones_to_the_python_reader(
    tmp_path, small_dataset):
  """A clean shard passes the pre-check (TFRecordDataset reads it); the 76-byte length bomb
  (a SIGSEGV for TensorFlow's reader), a shard with a bad data CRC and an oversize record, and a
  shard cut short fail it and are read by the Python reader: every record, id and reason equals
  the all-Python stream's, in the same order."""
  from tests.data import bad_data  # pylint: disable=g-import-not-at-top
  from vlalign.data.source_kinds import tfrecord  # pylint: disable=g-import-not-at-top
  good = [r for r in _raw(pipeline.list_files(small_dataset['train']['studio'])[0])][:12]
  frames = [bad_data.tfrecord_frame(r) for r in good]
  limit = max(len(r) for r in good)
  broken = bytearray(frames[3])
  broken[20] ^= 0xFF
  (tmp_path / 'a_clean.tfrecord').write_bytes(b''.join(frames))
  (tmp_path / 'b_bomb.tfrecord').write_bytes(bad_data.length_bomb())
  (tmp_path / 'c_mixed.tfrecord').write_bytes(
      b''.join(frames[:3]) + bytes(broken) + bad_data.tfrecord_frame(b'x' * (limit + 1)) +
      b''.join(frames[4:8]))
  (tmp_path / 'd_cut.tfrecord').write_bytes(b''.join(frames)[:-30])
  src = sources.Source('tfrecord:t', 'tfrecord', files=sorted(
      str(p) for p in tmp_path.glob('*.tfrecord')))
  checks = filters.Checks(max_record_bytes=limit)
  got = {}
  for reader in ('python', 'native'):
    cfg = _cfg(cycle=4, reader=reader)
    ds = pipeline.record_stream(src, cfg, checks, seed=1, epochs=1)
    got[reader] = [(u, int(r)) for _, (_, _, u, r) in ds.as_numpy_iterator()]
  assert got['native'] == got['python']
  reasons = [filters.REASONS[r] for _, r in got['native'] if r]
  assert sorted(reasons) == ['malformed_record', 'record_too_large', 'truncated_file',
                             'truncated_file']
  assert sum(1 for _, r in got['native'] if r == 0) == 12 + 7 + 11
  verdicts = {os.path.basename(p): v[1] for p, v in tfrecord._VERDICTS.items()  # pylint: disable=protected-access
              if p.startswith(str(tmp_path))}
  assert verdicts == {'a_clean.tfrecord': True, 'b_bomb.tfrecord': False,
                      'c_mixed.tfrecord': False, 'd_cut.tfrecord': False}


def _raw(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def test_resume_refuses_a_changed_grouping_unless_allowed():
  """data.cycle_length and data.shuffle_buffer define the groups a cursor points into."""
  config = config_lib.base_config()
  saved = train.data_item(config, [pipeline.DataState.initial(1).to_vector()])
  train._check_resume_settings(saved, config)
  config.data.cycle_length = 4
  with pytest.raises(config_lib.ConfigError, match='config.data.cycle_length: 4 differs'):
    train._check_resume_settings(saved, config)
  config.data.cycle_length, config.data.shuffle_buffer = 8, 16
  with pytest.raises(config_lib.ConfigError, match='config.data.shuffle_buffer: 16 differs'):
    train._check_resume_settings(saved, config)
