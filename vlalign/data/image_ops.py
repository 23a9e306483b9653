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


def train_view(img: tf.Tensor, seed: tf.Tensor, *, resize: int, crop: int, random_crop: bool,
               flip: bool, grayscale: float = 0.0, mean=DEFAULT_MEAN, std=DEFAULT_STD) -> tf.Tensor:
  """ALIGN-style train view: resize shorter side, random (or centre) crop, optional flip; with
  probability `grayscale` the view is turned to grey (the same grey in all three channels)."""
  img = resize_shorter(img, resize)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  if random_crop:
    img = tf.image.stateless_random_crop(img, [crop, crop, 3], seed=seeds[0])
  else:
    img = center_crop(img, crop)
  if flip:
    img = tf.image.stateless_random_flip_left_right(img, seed=seeds[1])
  if grayscale:
    # Its own stream (fold_in), so crops and flips stay those of a run without it.
    u = tf.random.stateless_uniform([], seed=tf.random.experimental.stateless_fold_in(seed, 3))
    img = tf.where(u < grayscale, to_grey(img), img)
  return normalize(img, mean, std)


def to_grey(img: tf.Tensor) -> tf.Tensor:
  """ITU-R 601 luminance in all three channels."""
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(img))


def eval_view(img: tf.Tensor, *, resize: int, crop: int, mean=DEFAULT_MEAN,
              std=DEFAULT_STD) -> tf.Tensor:
  """Eval view: resize shorter side, centre crop, normalise."""
  return normalize(center_crop(resize_shorter(img, resize), crop), mean, std)


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
