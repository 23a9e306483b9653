"""Hostile and unlucky input: every bound on what a file may claim (record length, tar member
and header size, JSON depth, image aspect) holds before anything is read or decoded, and each
rejection is counted under its reason."""

import gzip
import io
import os
import tarfile
import time

import pytest

from tests.data import bad_data
from vlalign import config_lib
from vlalign.data import filters, pipeline, safe_io, sources
from vlalign.data.spec import DataError
from vlalign.tools import build_vocab

KEYS = ('image', 'text', 'id')


def _reasons(records) -> list[str]:
  return [filters.REASONS[r] for *_, r in records]


def _example(text: bytes) -> bytes:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v])) for k, v in (
      ('image', bad_data.wide_png(40, 30)), ('text', text), ('id', text))}
  return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def test_tfrecord_length_bomb_is_counted_in_the_reader_and_build_vocab(tmp_path):
  """The 76-byte file that kills TensorFlow's reader (SIGSEGV) is one truncated_file record; a
  record over max_record_bytes is skipped and reading goes on; a bad data CRC is malformed."""
  bomb = tmp_path / 'bomb.tfrecord'
  bomb.write_bytes(bad_data.length_bomb())
  assert len(bad_data.length_bomb()) == 76
  assert _reasons(sources.read_tfrecord(str(bomb), KEYS, filters.Checks())) == ['truncated_file']
  good, big = _example(b'a small caption'), _example(b'x' * 5000)
  broken = bytearray(bad_data.tfrecord_frame(good))
  broken[20] ^= 0xFF  # a data byte: its CRC no longer matches
  mixed = tmp_path / 'mixed.tfrecord'
  mixed.write_bytes(bad_data.tfrecord_frame(good) + bad_data.tfrecord_frame(big) +
                    bytes(broken) + bad_data.tfrecord_frame(good))
  got = list(sources.read_tfrecord(str(mixed), KEYS, filters.Checks(max_record_bytes=4000)))
  assert _reasons(got) == ['ok', 'record_too_large', 'malformed_record', 'ok']
  assert got[3][1] == b'a small caption'
  # build_vocab reads the same way: the bomb is counted, the good captions come through.
  skipped = {}
  texts = list(build_vocab.texts_from_shards(str(tmp_path / '*.tfrecord'), skipped)
               .as_numpy_iterator())
  assert texts == [b'a small caption'] * 2
  assert skipped == {'truncated_file': 1, 'malformed_record': 1, 'text_too_long': 1}
  # An eval set is read whole: the bomb is one line naming the file, not a crash.
  with pytest.raises(DataError, match='bomb.tfrecord: record 0 is truncated_file'):
    pipeline.load_eval_set(str(bomb), config_lib.base_config().data, None)


def _tar(path, members: list[tuple[str, bytes]], mode: str = 'w', pax: dict | None = None):
  with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      if pax and name in pax:
        info.pax_headers = pax[name]
      tar.addfile(info, io.BytesIO(data))


def test_tar_members_are_bounded_from_their_headers(tmp_path):
  """Members over their bound are counted without being read; repeated adjacent keys, deep
  JSON, wide images and cut JPEGs are counted; a gzip tar is refused as compressed_shard; a
  huge pax header is refused before tarfile reads it."""
  cap = b'a red circle'
  jpeg = bad_data.encode(bad_data.Image.new('RGB', (40, 30), 'red'), 'JPEG')
  path = str(tmp_path / 'a.tar')
  _tar(path, [('k0.jpg', jpeg), ('k0.txt', cap),
              ('k1.jpg', b'\xff\xd8\xff' + bytes(5000)), ('k1.txt', cap),  # member too large
              ('k2.jpg', jpeg), ('k2.txt', b'word ' * 1000),  # txt over max_text_bytes
              ('k3.jpg', jpeg), ('k3.json', bad_data.deep_json(50)),
              ('k4.png', bad_data.wide_png(25, 1)), ('k4.txt', cap),
              ('k5.jpg', jpeg), ('k5.txt', cap), ('k5.jpg', jpeg), ('k5.txt', b'again'),
              ('k6.jpg', jpeg[:-2]), ('k6.txt', cap),
              ('k7.jpg', jpeg), ('k7.json', b'{"caption": "from json"}')])
  checks = filters.Checks(max_member_bytes=4096, max_text_bytes=1000, max_json_depth=8)
  got = list(sources.read_wds(path, checks))
  assert [(u.decode(), filters.REASONS[r]) for _, _, u, r in got] == [
      ('k0', 'ok'), ('k1', 'member_too_large'), ('k2', 'text_too_long'),
      ('k3', 'json_too_deep'), ('k4', 'extreme_aspect'), ('k5', 'ok'), ('k5', 'duplicate_key'),
      ('k6', 'corrupt_image'), ('k7', 'ok')]
  assert got[5][1] == cap and got[8][1] == b'from json'
  with open(path, 'rb') as f:
    (tmp_path / 'b.tar.gz').write_bytes(gzip.compress(f.read()))
  assert _reasons(sources.read_wds(str(tmp_path / 'b.tar.gz'), checks)) == ['compressed_shard']
  paxed = str(tmp_path / 'c.tar')
  _tar(paxed, [('p0.jpg', jpeg), ('p0.txt', cap), ('p1.jpg', jpeg)],
       pax={'p1.jpg': {'comment': 'x' * (safe_io.MAX_TAR_HEADER_BYTES + 10)}})
  assert _reasons(sources.read_wds(paxed, checks)) == ['ok', 'member_too_large']


def test_image_aspect_bound_and_cut_jpeg_are_decided_from_the_header():
  checks = filters.Checks(max_image_aspect=20.0)
  assert filters.check(bad_data.wide_png(20, 1), b'a cap', checks) == 0
  assert filters.REASONS[filters.check(bad_data.wide_png(21, 1), b'a cap', checks)] == \
      'extreme_aspect'
  assert filters.REASONS[filters.check(bad_data.wide_png(1, 200), b'a cap', checks)] == \
      'extreme_aspect'
  jpeg = bad_data.encode(bad_data.Image.new('RGB', (40, 30), 'red'), 'JPEG')
  assert filters.check(jpeg + b'trailing bytes', b'a cap', checks) == 0
  assert filters.REASONS[filters.check(jpeg[:-2], b'a cap', checks)] == 'corrupt_image'
  assert safe_io.json_depth(b'{"a": "[[[{\\"", "b": [[1], [2, {"c": 3}]]}') == 4


@pytest.mark.parametrize('field,value', [('max_record_bytes', 0), ('max_member_bytes', -1),
                                         ('max_json_depth', 0), ('max_wait_seconds', 0.0),
                                         ('max_image_aspect', 0.5)])
def test_bounds_are_validated(field, value):
  config = config_lib.base_config()
  config.data[field] = value
  with pytest.raises(config_lib.ConfigError, match=f'data.{field}'):
    config_lib.validate(config)


def test_convert_counts_the_bomb_and_a_dead_worker_and_never_waits_on_it(tmp_path, monkeypatch):
  """2 workers over three tars and the 76-byte TFRecord bomb; the worker converting 00001.tar
  dies of SIGSEGV: it is reported, its shard counted as worker_crashed, the rest converted."""
  from vlalign.tools import convert  # pylint: disable=g-import-not-at-top
  jpeg = bad_data.encode(bad_data.Image.new('RGB', (40, 30), 'red'), 'JPEG')
  for i in range(3):
    _tar(str(tmp_path / f'{i:05d}.tar'), [(f's{i}_{j}.{ext}', data) for j in range(2)
                                          for ext, data in (('jpg', jpeg), ('txt', b'a cap'))])
  (tmp_path / 'bomb.tfrecord').write_bytes(bad_data.length_bomb())
  monkeypatch.setenv('VLALIGN_TEST_CRASH_INPUT', '00001.tar')
  d = config_lib.base_config().data
  values = {k: d[k] for k in ('image_key', 'text_key', 'id_key', 'tfds_data_dir',
                              'max_text_bytes')}
  values.update({k: d.filters[k] for k in ('min_image_side', 'max_aspect_ratio', 'min_unigrams',
                                           'max_unigrams', 'max_shared_text',
                                           'min_unigram_count')})
  t0 = time.monotonic()
  total = convert.convert([f'wds:{tmp_path}/*.tar', f'tfrecord:{tmp_path}/*.tfrecord'],
                          str(tmp_path / 'out'), values, workers=2)
  assert time.monotonic() - t0 < 120
  assert total == {'written': 4, 'skipped': {'truncated_file': 1, 'worker_crashed': 1}}
  done = sorted(os.listdir(tmp_path / 'out' / '.done'))
  assert done == ['part-00000-of-00004.json', 'part-00002-of-00004.json',
                  'part-00003-of-00004.json']  # the crashed one is retried by a rerun
