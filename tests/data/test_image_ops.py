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


def _photo(h: int, w: int, seed: int = 0, cell: int = 16) -> np.ndarray:
  """A smooth random image (structures of about `cell` pixels) with mild noise."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (h // cell + 2, w // cell + 2, 3)).astype(np.uint8)
  smooth = np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR), np.int16)
  return np.clip(smooth + rng.integers(-6, 7, smooth.shape), 0, 255).astype(np.uint8)


def _reference(img, key, resize, crop):
  """The view as computed before crop-first: resize the whole image, then crop, then flip."""
  seeds = tf.random.experimental.stateless_split(key, 2)
  out = tf.image.stateless_random_crop(image_ops.resize_shorter(img, resize), [crop, crop, 3],
                                       seed=seeds[0])
  return image_ops.normalize(tf.image.stateless_random_flip_left_right(out, seed=seeds[1]))


# (height, width, the path the geometry takes) for resize 64, crop 56.
_PATHS = [(64, 85, 'same'), (85, 64, 'same'), (50, 70, 'enlarge'), (80, 107, 'shrink'),
          (96, 96, 'shrink'), (150, 120, 'shrink')]


@pytest.mark.parametrize('h,w,path', _PATHS)
@pytest.mark.parametrize('encoding', ['decoded', 'JPEG', 'PNG'])
def test_crop_first_equals_resize_then_crop(h, w, path, encoding):
  """Random crop + flip of the window alone (decoded, or decoded from bytes only in the window)
  equals resizing the whole image and cropping it: bit for bit when no resize is needed ('same')
  or when enlarging, within float round-off (1e-2 of a level) when shrinking."""
  pixels = _photo(h, w)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format=encoding if encoding != 'decoded' else 'PNG')
  full = tf.constant(pixels) if encoding == 'decoded' else image_ops.decode(
      tf.constant(buf.getvalue()))
  given = full if encoding == 'decoded' else tf.constant(buf.getvalue())
  for k in range(4):
    key = tf.constant([11, k], tf.int64)
    want = _reference(full, key, 64, 56).numpy() * 127.5
    got = image_ops.train_view(given, key, resize=64, crop=56, random_crop=True, flip=True,
                               dct_scaling=True).numpy() * 127.5
    if path == 'shrink':
      np.testing.assert_allclose(got, want, atol=1e-2)
    else:
      np.testing.assert_array_equal(got, want)
  eval_want = image_ops.center_crop(image_ops.resize_shorter(full, 64), 56).numpy()
  eval_got = image_ops.resized_crop(given, 64, 56, lambda new: (new - 56) // 2).numpy()
  np.testing.assert_allclose(eval_got, eval_want, atol=1e-2 if path == 'shrink' else 0)


@pytest.mark.parametrize('h,w,path', _PATHS)
def test_uint8_view_is_the_float_view_rounded(h, w, path):
  """data.uint8_batches: the view as uint8 is the float view's pixels, exactly where no resampling
  happens ('same'), rounded to the nearest level otherwise (grey views within one); normalised in the train step
  (train.device_images, jax.numpy) it gives image_ops.normalize's values."""
  from vlalign import config_lib, train  # pylint: disable=import-outside-toplevel
  data = tf.io.encode_jpeg(_photo(h, w), quality=90)
  for k in range(3):
    key = tf.constant([5, k], tf.int64)
    kw = dict(resize=64, crop=56, random_crop=True, flip=True, dct_scaling=True,
              grayscale=0.0 if path == 'same' else 0.5)
    flt = image_ops.train_view(data, key, **kw).numpy()
    u8 = image_ops.train_view(data, key, uint8=True, **kw)
    assert u8.dtype == tf.uint8
    levels = flt * 127.5 + 127.5
    if path == 'same':
      np.testing.assert_array_equal(u8.numpy(), np.round(levels).astype(np.uint8))
      np.testing.assert_array_equal(image_ops.normalize(u8).numpy(), flt)
    else:
      # grey views: the luminance of rounded pixels, rounded (within a level)
      np.testing.assert_allclose(u8.numpy(), levels, atol=1.0 + 1e-3)
    d = config_lib.base_config().data
    for mean, std in ((d.pixel_mean, d.pixel_std), (image_ops.CLIP_MEAN, image_ops.CLIP_STD)):
      d.pixel_mean, d.pixel_std = mean, std
      on_device = train.device_images({'image': u8.numpy()[None], 'tokens': np.ones((1, 4))}, d)
      np.testing.assert_allclose(np.asarray(on_device['image'][0]),
                                 image_ops.normalize(u8, mean, std).numpy(), atol=1e-6)
      assert on_device['tokens'].dtype == np.float64  # not an image: untouched


def test_dct_ratio_is_the_smallest_scale_covering_the_target():
  """1/r with r in 1, 2, 4, 8: the shorter side divided by r still covers the resize target."""
  cases = {(256, 341): 1, (511, 700): 1, (512, 700): 2, (900, 700): 2, (1024, 1500): 4,
           (2047, 3000): 4, (2048, 3000): 8, (6000, 4000): 8}
  for hw, r in cases.items():
    assert int(image_ops.dct_ratio(tf.constant(hw, tf.int32), 256)) == r, hw


@pytest.mark.parametrize('h,w,ratio', [(300, 400, 2), (700, 520, 4), (1100, 1300, 8)])
def test_dct_scaled_view_is_close_to_the_full_decode(h, w, ratio):
  """A large JPEG's view decoded at 1/ratio and then resized exactly keeps the crop and flip of
  the full decode's view; its pixels are within a few levels of it (on these images, smooth over
  32 px: mean under 1.6, at most 16 of 255; measured 0.9-1.3 and 9-13); without dct_scaling it
  equals the full decode up to round-off."""
  data = tf.io.encode_jpeg(_photo(h, w, seed=1, cell=32), quality=90)
  resize = min(h, w) // ratio
  assert int(image_ops.dct_ratio(tf.constant([h, w]), resize)) == ratio
  full = image_ops.decode(data)
  for k in range(3):
    key = tf.constant([5, k], tf.int64)
    kw = dict(resize=resize, crop=resize - 8, random_crop=True, flip=True)
    want = _reference(full, key, resize, resize - 8).numpy() * 127.5
    exact = image_ops.train_view(data, key, dct_scaling=False, **kw).numpy() * 127.5
    np.testing.assert_allclose(exact, want, atol=1e-2)
    fast = image_ops.train_view(data, key, dct_scaling=True, **kw).numpy() * 127.5
    diff = np.abs(fast - want)
    assert 0 < diff.mean() < 1.6 and diff.max() <= 16, (diff.mean(), diff.max())


def test_jpeg_claiming_too_many_pixels_is_refused_on_the_window_path():
  """The bytes path checks the header's size against max_pixels before decoding anything."""
  data = tf.constant(_encode('JPEG', 40, 40))
  with pytest.raises(tf.errors.InvalidArgumentError, match='more than 100 pixels'):
    image_ops.train_view(data, tf.constant([0, 0], tf.int64), resize=36, crop=32,
                         random_crop=True, flip=False, max_pixels=100)


def _write_shard(path, images: list[np.ndarray]) -> None:
  with tf.io.TFRecordWriter(str(path)) as w:
    for i, img in enumerate(images):
      feats = {'image': tf.io.encode_jpeg(img, quality=90).numpy(),
               'text': b'a photo of a red dog on the beach', 'id': f'p/{i}'.encode()}
      w.write(tf.train.Example(features=tf.train.Features(feature={
          k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
          for k, v in feats.items()})).SerializeToString())


@pytest.mark.parametrize('dct', [False, True])
def test_config_dct_scaling_reaches_the_training_views(tmp_path, small_dataset, dct):
  """config.data.dct_scaling picks the training view of a large JPEG: the pipeline's batch
  equals train_view of the record's bytes keyed on (seed, index) with that setting, and the two
  settings give different pixels. With dct also data.uint8_batches: the batch is train_view's
  uint8 pixels."""
  from vlalign import config_lib  # pylint: disable=import-outside-toplevel
  from vlalign.data import pipeline, sources  # pylint: disable=import-outside-toplevel
  from vlalign.data.text import WordpieceTokenizer  # pylint: disable=import-outside-toplevel
  images = [_photo(300, 260 + 20 * i, seed=i, cell=32) for i in range(4)]
  _write_shard(tmp_path / 'big.tfrecord', images)
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size, d.max_len, d.shuffle_buffer = 4, 120, 128, 16, 1
  d.flip, d.dct_scaling, d.uint8_batches = True, dct, dct
  src = sources.Source('tfrecord:big', 'tfrecord', files=[str(tmp_path / 'big.tfrecord')])
  it = pipeline.TrainIterator(d, [src], WordpieceTokenizer(small_dataset['vocab'], 16), seed=7)
  got = next(it)['image']
  it.close()
  assert [bytes(x) for x in it.ids] == [f'p/{i}'.encode() for i in range(4)]  # in order
  for i, img in enumerate(images):
    data = tf.io.encode_jpeg(img, quality=90)
    key = tf.constant([7, i], tf.int64)
    kw = dict(resize=128, crop=120, random_crop=True, flip=True)
    want = image_ops.train_view(data, key, dct_scaling=dct, uint8=dct, **kw).numpy()
    assert got.dtype == (np.uint8 if dct else np.float32)
    np.testing.assert_array_equal(got[i], want)
    other = image_ops.train_view(data, key, dct_scaling=not dct, **kw).numpy()
    other = other * 127.5 + 127.5 if dct else other
    assert np.abs(other - want).mean() > 1e-3
