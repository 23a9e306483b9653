"""Image decoding and augmentation inside the tf.data graph (stateless, keyed per example)."""

import tensorflow as tf


# Decoded images larger than this are refused before any pixel buffer is allocated (a 60-byte
# PNG header can claim 2^31 x 2^31 pixels).
MAX_PIXELS = 1 << 26  # 67 megapixels

# Per-channel pixel statistics in 0..255 units (config.data.pixel_mean / pixel_std). The
# default maps [0, 255] to [-1, 1]; CLIP and ImageNet checkpoints want their own (below).
DEFAULT_MEAN = (127.5, 127.5, 127.5)
DEFAULT_STD = (127.5, 127.5, 127.5)
CLIP_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
CLIP_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def encoded_size(image_bytes: tf.Tensor) -> tf.Tensor:
  """(height, width) int64 read from a JPEG's or PNG's header without decoding; (0, 0) for
  other formats (GIF/BMP: their decoders bound the size by the byte length)."""
  def png():
    raw = tf.io.decode_raw(tf.strings.substr(image_bytes, 16, 8), tf.uint8)
    v = tf.cast(raw, tf.int64)
    width = ((v[0] * 256 + v[1]) * 256 + v[2]) * 256 + v[3]
    height = ((v[4] * 256 + v[5]) * 256 + v[6]) * 256 + v[7]
    return tf.stack([height, width])

  def jpeg():
    return tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64)

  is_png = tf.logical_and(tf.strings.length(image_bytes) >= 24,
                          tf.equal(tf.strings.substr(image_bytes, 0, 8), b'\x89PNG\r\n\x1a\n'))
  return tf.case([(is_png, png), (tf.io.is_jpeg(image_bytes), jpeg)],
                 default=lambda: tf.zeros([2], tf.int64))


def decode(image_bytes: tf.Tensor, max_pixels: int = MAX_PIXELS) -> tf.Tensor:
  """Encoded bytes (PNG/JPEG/GIF/BMP) -> uint8 [h, w, 3]; an image whose header claims more than
  `max_pixels` pixels is an InvalidArgumentError before anything is allocated."""
  hw = encoded_size(image_bytes)
  check = tf.debugging.Assert(
      hw[0] * hw[1] <= max_pixels,
      [f'image header claims more than {max_pixels} pixels: (height, width) =', hw])
  with tf.control_dependencies([check]):
    img = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  img.set_shape([None, None, 3])
  return img


def resize_shorter(img: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes so the shorter side is `size` (bilinear; antialiased when shrinking). Enlarging
  takes the plain bilinear kernel, which for factors above 1 equals the antialiased one up to
  float round-off (tested) at about a third of the cost (docs/BENCHMARKS.md, "Demo step")."""
  shape = tf.cast(tf.shape(img)[:2], tf.float32)
  factor = tf.cast(size, tf.float32) / tf.reduce_min(shape)
  new = tf.cast(tf.math.round(shape * factor), tf.int32)
  return tf.cond(factor < 1.0, lambda: tf.image.resize(img, new, antialias=True),
                 lambda: tf.image.resize(img, new, antialias=False))


# JPEG DCT-domain scales (decode_jpeg's `ratio`: the image decoded at 1/ratio of its size).
DCT_RATIOS = (1, 2, 4, 8)


def shorter_side_geometry(hw: tf.Tensor, resize: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(new size int32 [2], factor, per-axis scale float32 [2]) of resizing an image of (height,
  width) `hw` so that its shorter side is `resize`: resize_shorter's and tf.image.resize's
  arithmetic."""
  shape = tf.cast(hw, tf.float32)
  factor = tf.cast(resize, tf.float32) / tf.reduce_min(shape)
  new = tf.cast(tf.math.round(shape * factor), tf.int32)
  return new, factor, tf.cast(new, tf.float32) / shape


def random_offset(new: tf.Tensor, crop: int, seed: tf.Tensor) -> tf.Tensor:
  """(top, left) int32 of a random crop x crop window in an image of size `new`: the offset
  tf.image.stateless_random_crop draws for that seed (so crops are those of resize-then-crop)."""
  u = tf.random.stateless_uniform([3], seed=seed, maxval=tf.int32.max, dtype=tf.int32)
  return u[:2] % (new - crop + 1)


def dct_ratio(hw: tf.Tensor, resize: int) -> tf.Tensor:
  """The largest JPEG DCT scale 1/r (r in 1, 2, 4, 8) at which the shorter side still covers
  `resize` pixels (so the exact resize after it still shrinks)."""
  short = tf.reduce_min(hw)
  r = tf.constant(1, tf.int32)
  for k in DCT_RATIOS[1:]:
    r = tf.where(short >= resize * k, tf.constant(k, tf.int32), r)
  return r


def _window(off: tf.Tensor, crop: int, scale: tf.Tensor, size: tf.Tensor):
  """[lo, hi) per axis of a source of `size` pixels that the (antialiased triangle) kernel of
  output pixels off .. off + crop - 1 reaches at `scale`, with a pixel to spare each side (a
  JPEG window needs that margin even at scale 1: its chroma upsampling reads neighbours)."""
  radius = tf.maximum(1.0, 1.0 / scale)
  first = (tf.cast(off, tf.float32) + 0.5) / scale - 0.5 - radius
  last = (tf.cast(off + crop, tf.float32) - 0.5) / scale - 0.5 + radius
  lo = tf.maximum(tf.cast(tf.math.floor(first), tf.int32) - 1, 0)
  hi = tf.minimum(tf.cast(tf.math.ceil(last), tf.int32) + 2, size)
  return lo, hi


def _resample(src, origin, ratio, geometry, off, crop: int, flip_seed=None,
              dtype=tf.float32) -> tf.Tensor:
  """[crop, crop, 3] of `dtype` (float32 0..255, or uint8 rounded): the window at `off` of the
  resized image, computed from `src`, the part from `origin` of the image decoded at
  1/`ratio`, flipped at random by `flip_seed`. Enlarging (whole image given) keeps
  resize_shorter's plain bilinear; an image already at size is sliced (and flipped before any
  conversion; as uint8 it is the decoded pixels themselves); shrinking resamples only the
  window with tf.image.resize's antialiased kernel (equal to resize-then-crop up to float
  round-off)."""
  new, factor, scale = geometry
  start = tf.concat([off - origin, [0]], 0)
  mirror = lambda x: x if flip_seed is None else tf.image.stateless_random_flip_left_right(
      x, seed=flip_seed)  # the same draw for any dtype
  # Resampled pixels as uint8: rounded to the nearest level (ties away from zero) and clipped.
  out_type = ((lambda x: tf.cast(x, tf.float32)) if dtype == tf.float32 else
              (lambda x: tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)))

  def enlarge():
    return out_type(mirror(tf.slice(tf.image.resize(src, new, antialias=False), start,
                                    [crop, crop, 3])))

  def same():
    return tf.cast(mirror(tf.slice(src, start, [crop, crop, 3])), dtype)

  def shrink():
    s = scale * tf.cast(ratio, tf.float32)
    t = tf.cast(origin, tf.float32) * s - tf.cast(off, tf.float32)
    # tf.image.resize(antialias=True) is this op with translation 0.
    return out_type(mirror(tf.raw_ops.ScaleAndTranslate(
        images=src[None], size=[crop, crop], scale=s, translation=t, kernel_type='triangle',
        antialias=True)[0]))

  out = tf.case([(factor > 1.0, enlarge), (tf.equal(factor, 1.0), same)], default=shrink)
  out.set_shape([crop, crop, 3])
  return out


def _crop_jpeg(data, resize: int, crop: int, place, dct_scaling: bool, max_pixels: int,
               flip_seed=None, dtype=tf.float32):
  """resized_crop of JPEG bytes: decodes only the window the crop needs (decode_and_crop_jpeg),
  at the smallest DCT scale that still covers `resize` when `dct_scaling`."""
  hw = tf.image.extract_jpeg_shape(data)[:2]
  big = tf.cast(hw[0], tf.int64) * tf.cast(hw[1], tf.int64) > max_pixels
  check = tf.debugging.Assert(tf.logical_not(big), [
      f'image header claims more than {max_pixels} pixels: (height, width) =', hw])
  geometry = shorter_side_geometry(hw, resize)
  new, factor, scale = geometry
  off = place(new)
  ratio = dct_ratio(hw, resize) if dct_scaling else tf.constant(1, tf.int32)
  size = (hw + ratio - 1) // ratio
  lo, hi = _window(off, crop, scale * tf.cast(ratio, tf.float32), size)
  lo = tf.where(factor > 1.0, tf.zeros_like(lo), lo)  # enlarging reads the whole image
  hi = tf.where(factor > 1.0, size, hi)
  window = tf.concat([lo, hi - lo], 0)
  branches = [lambda r=r: tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=r)
              for r in DCT_RATIOS]
  with tf.control_dependencies([check]):
    if dct_scaling:
      index = tf.cast(tf.math.log(tf.cast(ratio, tf.float32)) / tf.math.log(2.0) + 0.5, tf.int32)
      src = tf.switch_case(index, branches)
    else:
      src = branches[0]()
  src.set_shape([None, None, 3])
  return _resample(src, lo, ratio, geometry, off, crop, flip_seed, dtype)


def resized_crop(img: tf.Tensor, resize: int, crop: int, place, *, dct_scaling: bool = False,
                 max_pixels: int = MAX_PIXELS, flip_seed: tf.Tensor | None = None,
                 dtype=tf.float32) -> tf.Tensor:
  """float32 (0..255; or uint8 with `dtype`, see _resample) [crop, crop, 3]: the crop x crop
  window at `place(new size)` of `img`
  resized so its shorter side is `resize`, i.e. resize_shorter then crop, without resizing
  the rest. `img` is uint8 [h, w, 3] or encoded bytes; JPEG bytes are decoded only in the
  window, and with `dct_scaling` a large JPEG at the smallest DCT scale that still covers
  `resize` (then resized exactly: close to, not equal to, the full decode's pixels). With
  `flip_seed` the crop is mirrored as tf.image.stateless_random_flip_left_right would."""
  if img.dtype != tf.string:
    hw = tf.shape(img)[:2]
    geometry = shorter_side_geometry(hw, resize)
    return _resample(img, tf.zeros([2], tf.int32), 1, geometry, place(geometry[0]), crop,
                     flip_seed, dtype)

  def other():
    full = decode(img, max_pixels)
    geometry = shorter_side_geometry(tf.shape(full)[:2], resize)
    return _resample(full, tf.zeros([2], tf.int32), 1, geometry, place(geometry[0]), crop,
                     flip_seed, dtype)

  return tf.cond(tf.io.is_jpeg(img), lambda: _crop_jpeg(
      img, resize, crop, place, dct_scaling, max_pixels, flip_seed, dtype), other)


def train_view(img: tf.Tensor, seed: tf.Tensor, *, resize: int, crop: int, random_crop: bool,
               flip: bool, grayscale: float = 0.0, mean=DEFAULT_MEAN, std=DEFAULT_STD,
               dct_scaling: bool = False, max_pixels: int = MAX_PIXELS,
               uint8: bool = False) -> tf.Tensor:
  """ALIGN-style train view: resize shorter side, random (or centre) crop, optional flip; with
  probability `grayscale` the view is turned to grey (the same grey in all three channels).
  `img` is a decoded uint8 image or, cheaper, the encoded bytes (see `resized_crop`). Float32
  normalised by mean / std, or with `uint8` the pixels (train.device_images does the rest)."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  if random_crop:
    place = lambda new: random_offset(new, crop, seeds[0])
  else:
    place = lambda new: (new - crop) // 2
  img = resized_crop(img, resize, crop, place, dct_scaling=dct_scaling, max_pixels=max_pixels,
                     flip_seed=seeds[1] if flip else None,
                     dtype=tf.uint8 if uint8 else tf.float32)
  if grayscale:
    # Its own stream (fold_in), so crops and flips stay those of a run without it.
    u = tf.random.stateless_uniform([], seed=tf.random.experimental.stateless_fold_in(seed, 3))
    grey = to_grey(tf.cast(img, tf.float32))
    grey = tf.cast(tf.round(grey), tf.uint8) if uint8 else grey
    img = tf.where(u < grayscale, grey, img)
  return img if uint8 else normalize(img, mean, std)


def to_grey(img: tf.Tensor) -> tf.Tensor:
  """ITU-R 601 luminance in all three channels."""
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(img))


def eval_view(img: tf.Tensor, *, resize: int, crop: int, mean=DEFAULT_MEAN,
              std=DEFAULT_STD) -> tf.Tensor:
  """Eval view: resize shorter side, centre crop, normalise (`img` decoded or encoded, as in
  train_view; decoded images never take the DCT path)."""
  return normalize(resized_crop(img, resize, crop, lambda new: (new - crop) // 2), mean, std)


def center_crop(img: tf.Tensor, crop: int) -> tf.Tensor:
  """Central crop x crop window."""
  h, w = tf.shape(img)[0], tf.shape(img)[1]
  top, left = (h - crop) // 2, (w - crop) // 2
  return img[top:top + crop, left:left + crop]


def pixel_stats(data_cfg) -> dict[str, tuple[float, float, float]]:
  """{'mean': ..., 'std': ...} of config.data, as keyword arguments of train_view / eval_view /
  normalize."""
  return {'mean': tuple(float(x) for x in data_cfg.pixel_mean),
          'std': tuple(float(x) for x in data_cfg.pixel_std)}


def normalize(img: tf.Tensor, mean=DEFAULT_MEAN, std=DEFAULT_STD) -> tf.Tensor:
  """Pixels (0..255) to float32 (x - mean) / std per channel; the defaults give [-1, 1]."""
  x = tf.cast(img, tf.float32)
  if tuple(mean) == DEFAULT_MEAN and tuple(std) == DEFAULT_STD:
    return x / 127.5 - 1.0  # bit-identical to the recorded runs
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
