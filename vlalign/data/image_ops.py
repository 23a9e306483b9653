"""Image decoding and augmentation inside the tf.data graph (stateless, keyed per example)."""

import tensorflow as tf


def decode(image_bytes: tf.Tensor) -> tf.Tensor:
  """Encoded bytes (PNG/JPEG/GIF/BMP) -> uint8 [h, w, 3]."""
  img = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  img.set_shape([None, None, 3])
  return img


def resize_shorter(img: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes so the shorter side is `size` (bilinear, antialiased)."""
  shape = tf.cast(tf.shape(img)[:2], tf.float32)
  factor = tf.cast(size, tf.float32) / tf.reduce_min(shape)
  new = tf.cast(tf.math.round(shape * factor), tf.int32)
  return tf.image.resize(img, new, antialias=True)


def train_view(img: tf.Tensor, seed: tf.Tensor, *, resize: int, crop: int, random_crop: bool,
               flip: bool) -> tf.Tensor:
  """ALIGN-style train view: resize shorter side, random (or centre) crop, optional flip."""
  img = resize_shorter(img, resize)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  if random_crop:
    img = tf.image.stateless_random_crop(img, [crop, crop, 3], seed=seeds[0])
  else:
    img = center_crop(img, crop)
  if flip:
    img = tf.image.stateless_random_flip_left_right(img, seed=seeds[1])
  return normalize(img)


def eval_view(img: tf.Tensor, *, resize: int, crop: int) -> tf.Tensor:
  """Eval view: resize shorter side, centre crop."""
  return normalize(center_crop(resize_shorter(img, resize), crop))


def center_crop(img: tf.Tensor, crop: int) -> tf.Tensor:
  """Central crop x crop window."""
  h, w = tf.shape(img)[0], tf.shape(img)[1]
  top, left = (h - crop) // 2, (w - crop) // 2
  return img[top:top + crop, left:left + crop]


def normalize(img: tf.Tensor) -> tf.Tensor:
  """Pixels to float32 in [-1, 1]."""
  return tf.cast(img, tf.float32) / 127.5 - 1.0
