"""Image decoding refuses oversized headers before allocating; sizes read from headers."""

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vlalign.data import image_ops


def _encode(fmt: str, h: int, w: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, format=fmt)
  return buf.getvalue()


@pytest.mark.parametrize('fmt', ['PNG', 'JPEG'])
def test_header_size_matches_the_image(fmt):
  data = _encode(fmt, 37, 53)
  np.testing.assert_array_equal(image_ops.encoded_size(tf.constant(data)).numpy(), [37, 53])
  assert image_ops.decode(tf.constant(data)).shape == (37, 53, 3)


def test_png_claiming_a_huge_size_is_refused_before_decoding():
  """A tiny PNG whose IHDR claims 100,000 x 100,000 pixels (10^10: 30 GB decoded)."""
  def chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack(
        '>I', zlib.crc32(kind + body) & 0xffffffff)
  ihdr = struct.pack('>IIBBBBB', 100_000, 100_000, 8, 2, 0, 0, 0)
  data = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 4)) \
      + chunk(b'IEND', b'')
  np.testing.assert_array_equal(image_ops.encoded_size(tf.constant(data)).numpy(),
                                [100_000, 100_000])
  with pytest.raises(tf.errors.InvalidArgumentError, match='more than 67108864 pixels'):
    image_ops.decode(tf.constant(data))
  # A small limit refuses an ordinary image the same way.
  with pytest.raises(tf.errors.InvalidArgumentError, match='more than 100 pixels'):
    image_ops.decode(tf.constant(_encode('PNG', 20, 20)), max_pixels=100)


def test_grayscale_view_is_luminance_and_keeps_the_crop():
  """grayscale=1 gives the ITU-R 601 luminance of the same crop in all channels; grayscale=0 is
  the plain view; over many keys about the requested fraction of views is grey."""
  rng = np.random.default_rng(0)
  img = tf.constant(rng.integers(0, 256, (40, 40, 3)), tf.uint8)
  key = tf.constant([3, 7], tf.int64)
  kw = dict(resize=36, crop=32, random_crop=True, flip=True)
  plain = image_ops.train_view(img, key, **kw).numpy()
  np.testing.assert_array_equal(image_ops.train_view(img, key, grayscale=0.0, **kw).numpy(), plain)
  grey = image_ops.train_view(img, key, grayscale=1.0, **kw).numpy()
  expected = (plain + 1) / 2 @ np.array([0.2989, 0.587, 0.114]) * 2 - 1  # views are in [-1, 1]
  for c in range(3):
    np.testing.assert_allclose(grey[..., c], expected, atol=2e-3)
  is_grey = [np.ptp(image_ops.train_view(img, tf.constant([3, k], tf.int64), grayscale=0.3,
                                         **kw).numpy(), axis=-1).max() == 0 for k in range(200)]
  assert 0.2 < np.mean(is_grey) < 0.4


def test_resize_shorter_antialiases_only_when_shrinking():
  """Enlarging uses plain bilinear, which equals the antialiased kernel there; shrinking keeps
  the antialiasing (a 1-pixel checkerboard averages to grey instead of aliasing)."""
  rng = np.random.RandomState(0)
  img = tf.constant(rng.randint(0, 256, (64, 80, 3)), tf.uint8)
  up = image_ops.resize_shorter(img, 68)
  assert up.shape == (68, 85, 3)
  np.testing.assert_allclose(up.numpy(), tf.image.resize(img, [68, 85], antialias=True).numpy(),
                             atol=1e-3)
  board = tf.constant(np.indices((64, 64)).sum(0)[..., None].repeat(3, -1) % 2 * 255, tf.uint8)
  down = image_ops.resize_shorter(board, 27).numpy()
  np.testing.assert_allclose(down, tf.image.resize(board, [27, 27], antialias=True).numpy(),
                             atol=1e-3)
  assert np.abs(down - 127.5).max() < 40  # not aliased


def test_normalize_with_checkpoint_statistics():
  """Per-channel (x - mean) / std for non-default statistics; the default stays x / 127.5 - 1."""
  img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5
  got = image_ops.normalize(tf.constant(img), image_ops.CLIP_MEAN, image_ops.CLIP_STD).numpy()
  want = (img.astype(np.float64) / 255 - [0.48145466, 0.4578275, 0.40821073]) / [
      0.26862954, 0.26130258, 0.27577711]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(image_ops.normalize(tf.constant(img)).numpy(),
                                img.astype(np.float32) / 127.5 - 1.0)
