"""The in-graph record checks (native_checks.py) against their oracle filters.check, and the
native TFRecord path against the Python reader: same records, ids, reasons, order and counts."""

import numpy as np
import pytest
import tensorflow as tf

from tests.data import bad_data
from vlalign import config_lib
from vlalign.data import filters, native_checks, sources
from vlalign.data.source_kinds import tfrecord

SEED = 20261202
STRICT = filters.Checks(max_text_bytes=100, max_image_aspect=3.0, min_image_side=20,
                        max_aspect_ratio=1.4, min_unigrams=2, max_unigrams=4)
TEXTS = [b'a red circle', b'', b' \t\n ', '\u3000\xa0\x1c\u2029'.encode(), b'x' * 150,
         b'caf\xe9', b'\xed\xa0\x80 surrogate', b'\xc0\xaf overlong', b'\xe2\x82',
         'ok \ufffd'.encode(), b'one', 'tab\tand\u2003em\u3000space'.encode(),
         b'w ' * 6, b'a\x00b c', 'caf\u00e9 au lait'.encode()]


def _mutate(rng, data: bytes) -> bytes:
  b = bytearray(data)
  kind = rng.integers(3)
  if kind == 0 and b:
    for i in rng.integers(0, len(b), size=rng.integers(1, 6)):
      b[i] = rng.integers(256)
  elif kind == 1:
    return bytes(b[:rng.integers(len(b) + 1)])
  else:
    i = rng.integers(min(len(b), 40) + 1)
    b[i:i] = rng.integers(0, 256, rng.integers(1, 16), dtype=np.uint8).tobytes()
  return bytes(b)


def _images() -> list[bytes | None]:
  """Good images of every format, their header prefixes, planted bad ones, fuzzed ones."""
  rng = np.random.default_rng(SEED)
  rgb = bad_data.Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
  good = [bad_data.encode(rgb, f) for f in ('PNG', 'JPEG', 'GIF', 'BMP', 'WEBP')]
  good += [bad_data.encode(rgb, 'WEBP', lossless=True), bad_data.encode(rgb.resize((90, 30)),
                                                                        'JPEG', progressive=True),
           bad_data.encode(rgb.resize((16, 18)), 'PNG')]
  good += [v for _, v in bad_data.unusual_images().values()]
  bmp = bytearray(good[3])
  bmp[22:26] = (-24).to_bytes(4, 'little', signed=True)  # top-down BMP
  jpeg = good[1]
  fill = lambda k: jpeg[:2] + b'\xff' * k + jpeg[2:]  # fill bytes before the first marker
  out = good + [bytes(bmp), fill(500), fill(filters.MAX_JPEG_STEPS + 10), None,
                jpeg + b'\xff', bad_data.wide_png(20, 1), bad_data.wide_png(21, 1),
                bad_data.png_header(1 << 31, 1 << 31), bad_data.png_header(3, 1 << 30)]
  out += [parts.get('jpg', parts.get('png')) for _, parts in bad_data.broken_samples(jpeg)
          if len(parts.get('txt', b'')) < 1000]
  out += [g[:k] for g in good[:6] for k in range(0, 34, 3)]
  return out + [_mutate(rng, good[i % len(good)]) for i in range(160)]


def _cases() -> list[tuple[bytes | None, bytes | None]]:
  images = _images()
  cases = [(img, TEXTS[i % len(TEXTS)]) for i, img in enumerate(images)]
  return cases + [(images[1], t) for t in TEXTS] + [(images[0], None), (None, None)]


@pytest.mark.parametrize('checks', [filters.Checks(), STRICT], ids=['default', 'filters'])
def test_reasons_equal_filters_check(checks):
  cases = _cases()
  want = [filters.check(img, txt, checks) for img, txt in cases]
  fn = tf.function(lambda *a: native_checks.reasons(*a, checks))
  got = fn(tf.constant([img or b'' for img, _ in cases]),
           tf.constant([img is not None for img, _ in cases]),
           tf.constant([txt or b'' for _, txt in cases]),
           tf.constant([txt is not None for _, txt in cases])).numpy()
  diff = [(i, filters.REASONS[w], filters.REASONS[g]) for i, (w, g) in enumerate(zip(want, got))
          if w != g]
  assert not diff
  assert len(set(want)) == (16 if checks is STRICT else 11)  # the cases reach most rules


def _example(image, text, uid) -> bytes:
  feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v] if v else []))
           for k, v in (('image', image), ('text', text), ('id', uid)) if v is not None}
  return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _read(path: str, reader: str, checks: filters.Checks):
  d = config_lib.base_config().data
  d.tfrecord_reader = reader
  monitor = sources.Monitor('test')
  ds = tf.data.Dataset.from_tensors(path).flat_map(
      lambda p: tfrecord.TFRecord().file_records(p, d, checks, monitor))
  return [tuple(x) for x in ds.as_numpy_iterator()], monitor.counts


def test_native_path_reads_like_the_python_reader(tmp_path):
  cases = _cases()
  path = str(tmp_path / 'mixed.tfrecord')
  with tf.io.TFRecordWriter(path) as w:
    for i, (img, txt) in enumerate(cases):
      uid = None if i % 3 == 0 else (b'' if i % 3 == 1 else f'rec{i}'.encode())
      w.write(_example(img, txt, uid))
  keys = ('image', 'text', 'id')
  assert tfrecord.clean(path, 64 << 20, keys)  # the native path reads it
  for checks in (filters.Checks(), STRICT):
    native, native_counts = _read(path, 'native', checks)
    python, python_counts = _read(path, 'python', checks)
    assert native == python
    assert native_counts == python_counts
    assert len(native) == len(cases) and native_counts[0] < len(cases) // 2
  assert native[0][2] == b'mixed.tfrecord:0' and native[2][2] == b'rec2'


@pytest.mark.parametrize('bad', ['not_an_example', 'int64_text'])
def test_records_the_parser_would_stop_on_send_the_shard_to_the_python_reader(tmp_path, bad):
  good = _example(_images()[1], b'a red circle', b'g')
  odd = (b'\x08\x96\x01 not a tf.train.Example \xff' if bad == 'not_an_example' else
         tf.train.Example(features=tf.train.Features(feature={
             'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'x'])),
             'text': tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))})
                          ).SerializeToString())
  path = str(tmp_path / f'{bad}.tfrecord')
  with tf.io.TFRecordWriter(path) as w:
    for rec in (good, odd, good):
      w.write(rec)
  assert not tfrecord.clean(path, 64 << 20, ('image', 'text', 'id'))
  native, counts = _read(path, 'native', filters.Checks())
  assert native == _read(path, 'python', filters.Checks())[0]
  want = 'malformed_record' if bad == 'not_an_example' else 'missing_text'
  assert [filters.REASONS[r[3]] for r in native] == ['ok', want, 'ok']
  assert counts[0] == 2


def test_corpus_statistics_filters_keep_the_python_checks():
  stats = filters.TextStats.build(['a b', 'a b'])
  assert native_checks.supports(filters.Checks(min_unigrams=3))
  assert not native_checks.supports(filters.Checks(max_shared_text=1, stats=stats))
  assert not native_checks.supports(filters.Checks(min_unigram_count=2, stats=stats))
