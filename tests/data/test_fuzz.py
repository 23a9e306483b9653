"""Seeded fuzzing of the record readers and image checks: random and mutated TFRecord shards,
tar shards and images. Nothing raises out of a reader, every record ends kept or counted under
a known reason (a shard whose framing survived yields exactly its records), and the Python
memory of reading stays under a stated bound however large the lengths the bytes claim."""

import io
import struct
import tarfile
import tracemalloc

import numpy as np
import pytest

from tests.data import bad_data
from vlalign.data import filters, sources

SEED = 20261202
MEMORY_BOUND = 32 << 20  # bytes of Python allocations at peak while reading one fuzzed shard
CHECKS = filters.Checks(max_record_bytes=1 << 16, max_member_bytes=1 << 16)


def _images(rng) -> list[bytes]:
  img = bad_data.Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
  return [bad_data.encode(img, f) for f in ('PNG', 'JPEG', 'GIF', 'BMP', 'WEBP')]


def _mutate(rng, data: bytes, lo: int = 0, hi: int | None = None) -> bytes:
  """Random byte flips, a cut, an inserted run or a planted huge 8-byte number in [lo, hi)."""
  b = bytearray(data)
  hi = len(b) if hi is None else hi
  kind = rng.integers(4)
  if kind == 0 or hi - lo < 9:
    for i in rng.integers(lo, max(hi, lo + 1), size=rng.integers(1, 8)):
      b[min(i, len(b) - 1)] = rng.integers(256)
  elif kind == 1:
    return bytes(b[:rng.integers(len(b))])
  elif kind == 2:
    i = rng.integers(lo, hi)
    b[i:i] = rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes()
  else:
    i = rng.integers(lo, hi - 8)
    b[i:i + 8] = struct.pack('<Q', int(rng.integers(1 << 40, 1 << 62)))
  return bytes(b)


def _read_all(reader, *args) -> list[tuple]:
  """Every record of a reader, with the peak Python memory it took checked."""
  tracemalloc.start()
  try:
    out = list(reader(*args))
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < MEMORY_BOUND, peak
  for rec in out:
    assert len(rec) == 4 and 0 <= rec[3] < len(filters.REASONS)
    if rec[3] == 0:  # kept: it passes the checks on its own
      assert filters.check(rec[0], rec[1], CHECKS) == 0
  return out


def _tfrecord(rng, images) -> tuple[bytes, list[tuple[int, int]]]:
  """A shard of 6 records and the (start, end) of each record's payload."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data, spans = b'', []
  for i in range(6):
    feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v])) for k, v in (
        ('image', images[i % len(images)]), ('text', f'caption {i}'.encode()))}
    ex = tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
    spans.append((len(data) + 12, len(data) + 12 + len(ex)))
    data += bad_data.tfrecord_frame(ex)
  return data, spans


@pytest.mark.timeout(60)  # bounded time: a reader that loops fails here
def test_fuzzed_tfrecord_shards(tmp_path):
  rng = np.random.default_rng(SEED)
  data, spans = _tfrecord(rng, _images(rng))
  path = str(tmp_path / 'f.tfrecord')
  for trial in range(120):
    framed = trial % 2 == 0  # payload bytes only: the framing holds, so 6 records come out
    lo, hi = spans[rng.integers(len(spans))] if framed else (0, len(data))
    mutated = _mutate(rng, data, lo, hi) if not framed else _mutate_in_place(rng, data, lo, hi)
    with open(path, 'wb') as f:
      f.write(mutated)
    out = _read_all(sources.read_tfrecord, path, ('image', 'text', 'id'), CHECKS)
    if framed:
      assert len(out) == 6, [filters.REASONS[r[3]] for r in out]
  with open(path, 'wb') as f:
    f.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
  assert [filters.REASONS[r[3]] for r in _read_all(
      sources.read_tfrecord, path, ('image', 'text', 'id'), CHECKS)] == ['truncated_file']


def _mutate_in_place(rng, data: bytes, lo: int, hi: int) -> bytes:
  b = bytearray(data)
  for i in rng.integers(lo, hi, size=rng.integers(1, 16)):
    b[i] = rng.integers(256)
  return bytes(b)


def _tar(rng, images) -> tuple[bytes, list[tuple[int, int]]]:
  """A tar of 5 samples (image + txt) and the (start, end) of each member's data."""
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w') as tar:
    for i in range(5):
      for ext, data in (('jpg', images[i % len(images)]), ('txt', f'caption {i}'.encode())):
        info = tarfile.TarInfo(f's{i}.{ext}')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  raw = buf.getvalue()
  spans, pos = [], 0
  while pos + 512 <= len(raw) and raw[pos:pos + 1] != b'\0':
    size = int(raw[pos + 124:pos + 135].strip(b'\0 ') or b'0', 8)
    spans.append((pos + 512, pos + 512 + size))
    pos += 512 + (size + 511) // 512 * 512
  return raw, spans


@pytest.mark.timeout(60)  # bounded time: a reader that loops fails here
def test_fuzzed_tar_shards(tmp_path):
  rng = np.random.default_rng(SEED + 1)
  data, spans = _tar(rng, _images(rng))
  assert len(spans) == 10
  path = str(tmp_path / 'f.tar')
  for trial in range(120):
    framed = trial % 2 == 0  # member data only: the headers hold, so 5 samples come out
    lo, hi = spans[rng.integers(len(spans))]
    mutated = _mutate_in_place(rng, data, lo, hi) if framed else _mutate(rng, data)
    with open(path, 'wb') as f:
      f.write(mutated)
    out = _read_all(sources.read_wds, path, CHECKS)
    if framed:
      assert len(out) == 5, [filters.REASONS[r[3]] for r in out]


@pytest.mark.timeout(60)  # bounded time: a reader that loops fails here
def test_fuzzed_images_are_kept_only_within_the_bounds():
  """Mutated headers: an image is kept only within the pixel and aspect bounds, and a kept one
  decodes to the eval view's shape or fails with the decoder's error (corrupt_image)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(SEED + 2)
  images = _images(rng)
  kept, decoded = 0, 0
  for trial in range(600):
    img = images[trial % len(images)]
    data = _mutate(rng, img, 0, min(len(img), 64))  # headers mostly
    reason = filters.check(data, b'a caption', CHECKS)
    assert 0 <= reason < len(filters.REASONS)
    if reason == 0:
      kept += 1
      fmt, h, w = filters.image_format_and_size(data)
      assert fmt and 0 < h * w <= filters.MAX_PIXELS
      assert max(h, w) <= CHECKS.max_image_aspect * min(h, w)
      if kept <= 80:
        decoded += _eval_view_or_error(tf, data)
  assert 0 < kept < 600 and decoded > 0


def _eval_view_or_error(tf, data: bytes) -> int:
  """1 if the bytes decode into a 32x32x3 eval view, 0 if the decoder refuses them."""
  from vlalign.data import image_ops  # pylint: disable=g-import-not-at-top
  try:
    view = image_ops.eval_view(image_ops.decode(tf.constant(data)), resize=36, crop=32)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
    return 0
  assert view.shape == (32, 32, 3)
  return 1
