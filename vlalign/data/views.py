"""Extra training views a method asks for (config.data.views), as pure tf functions in the
tf.data graph, keyed statelessly per example on (seed, record index) like image_ops.py.

  image2      a second augmented image view (DeCLIP / SimCLR-style): random resized crop of the
              decoded image (area fraction in crop_scale, aspect ratio 3/4..4/3) resized to
              image_size, random flip, colour jitter (brightness, contrast, saturation; no hue),
              random grayscale and random Gaussian blur, then [-1, 1] like the first view.
  image1_strong  the first view ('image') made with the same augmentation as image2 instead of
              the plain train view (DeCLIP applies MoCo-v2's augmentation to both views), drawn
              with its own sub-key, so the two views are independent draws.
  text_mlm    'tokens_mlm' and 'mlm_labels': BERT masking of the caption's tokens. Each word piece
              (an ordinary token: not [CLS] / [SEP] / [PAD] / [UNK], nor after the end token)
              is selected with mlm_prob; a selected piece
              becomes [MASK] (80%), a random piece (10%) or stays (10%); labels hold the original
              id at selected positions and -1 elsewhere. Masking is done here, in the pipeline,
              rather than in the jitted step: it is a function of the example alone (so it is the
              same for any device count and on resume), and the step stays free of tokenizer ids.
  text_eda    'tokens_eda': an EDA augmentation (Wei and Zou 2019) of the caption, one of
              synonym replacement, random swap or random deletion chosen at random. The caption is
              lower-cased and reduced to letters and spaces (EDA's own clean-up) first; synonyms
              come from the table data/synonyms.json.
"""

import json
import math
import os

import tensorflow as tf

from vlalign.data import image_ops
from vlalign.data.text import RESERVED

SYNONYMS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'synonyms.json')
_VIEWS = ('image2', 'text_mlm', 'text_eda', 'image1_strong')
# Sub-keys of the example key, distinct from the (split) key image_ops.train_view uses.
_IMAGE2, _MLM, _EDA, _IMAGE1 = 101, 102, 103, 100


def wanted(view_cfg) -> bool:
  """True when `view_cfg` (config.data.views, may be None) asks for any extra view."""
  return view_cfg is not None and any(bool(view_cfg.get(v, False)) for v in _VIEWS)


def load_synonyms(path: str = SYNONYMS_FILE) -> dict[str, list[str]]:
  """word -> synonyms (entries starting with '_' are comments)."""
  with open(path) as f:
    table = json.load(f)
  return {k: list(v) for k, v in table.items() if not k.startswith('_')}


def _keys(key: tf.Tensor, salt: int, n: int) -> tf.Tensor:
  return tf.random.experimental.stateless_split(
      tf.random.experimental.stateless_fold_in(key, salt), n)


def gaussian_blur(img: tf.Tensor, sigma: tf.Tensor, radius: int) -> tf.Tensor:
  """Separable Gaussian blur of a float [h, w, 3] image (reflect padding)."""
  x = tf.range(-radius, radius + 1, dtype=tf.float32)
  k = tf.exp(-0.5 * tf.square(x / sigma))
  k = k / tf.reduce_sum(k)
  padded = tf.pad(img[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], 'REFLECT')
  kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
  ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
  out = tf.nn.depthwise_conv2d(padded, kx, [1, 1, 1, 1], 'VALID')
  return tf.nn.depthwise_conv2d(out, ky, [1, 1, 1, 1], 'VALID')[0]


def image_view2(img: tf.Tensor, key: tf.Tensor, *, size: int, crop_scale=(0.2, 1.0),
                flip: bool = True, color_jitter: float = 0.4, grayscale: float = 0.2,
                blur: float = 0.5, mean=image_ops.DEFAULT_MEAN,
                std=image_ops.DEFAULT_STD, salt: int = _IMAGE2) -> tf.Tensor:
  """uint8 [h, w, 3] -> float32 [size, size, 3] normalised by mean / std (default [-1, 1]), the
  augmentations of the module docstring; a pure function of (img, key, salt)."""
  k = _keys(key, salt, 8)
  begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(img), tf.zeros([1, 0, 4]), seed=k[0], min_object_covered=0.0,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=tuple(crop_scale), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  x = tf.slice(img, begin, extent)
  x = tf.image.resize(tf.cast(x, tf.float32) / 255.0, [size, size], antialias=True)
  if flip:
    x = tf.image.stateless_random_flip_left_right(x, seed=k[1])
  if color_jitter:
    s = color_jitter
    x = tf.image.stateless_random_brightness(x, s, seed=k[2])
    x = tf.image.stateless_random_contrast(x, 1 - s, 1 + s, seed=k[3])
    x = tf.image.stateless_random_saturation(tf.clip_by_value(x, 0, 1), 1 - s, 1 + s, seed=k[4])
    x = tf.clip_by_value(x, 0.0, 1.0)
  u = tf.random.stateless_uniform([3], seed=k[5])
  if grayscale:
    x = tf.where(u[0] < grayscale, image_ops.to_grey(x), x)
  if blur:
    # sigma in [0.1, 2.0] px at 224 px (SimCLR / DeCLIP), scaled to this image size.
    factor = size / 224.0
    sigma = (0.1 + 1.9 * u[2]) * factor
    radius = max(1, math.ceil(3 * 2.0 * factor))
    x = tf.where(u[1] < blur, gaussian_blur(x, sigma, radius), x)
  x = tf.ensure_shape(x, [size, size, 3])
  if tuple(mean) == image_ops.DEFAULT_MEAN and tuple(std) == image_ops.DEFAULT_STD:
    return x * 2.0 - 1.0  # bit-identical to the recorded runs
  return image_ops.normalize(x * 255.0, mean, std)


def _regular(tokens: tf.Tensor, lo: int, hi: int, eos_id: int | None) -> tf.Tensor:
  """Positions holding ordinary tokens: ids in [lo, hi) before the row's first eos (CLIP's
  padding id 0 is the real token '!', so the pad id alone cannot tell padding apart)."""
  ok = (tokens >= lo) & (tokens < hi)
  if eos_id is not None:
    ok &= tf.cumsum(tf.cast(tokens == eos_id, tf.int32), axis=-1, exclusive=True) == 0
  return ok


def mlm_mask(tokens: tf.Tensor, key: tf.Tensor, *, prob: float, vocab_size: int,
             mask_id: int, first_regular: int = len(RESERVED),
             regular: tuple[int, int] | None = None,
             eos_id: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
  """(masked tokens, labels) for int32 tokens [L]: see the module docstring. Only ordinary
  tokens are selected and drawn as replacements: ids in `regular` = [lo, hi) (the tokenizer's
  regular_range; default [first_regular, vocab_size)) before the first `eos_id`."""
  lo, hi = regular or (first_regular, vocab_size)
  k = _keys(key, _MLM, 3)
  shape = tf.shape(tokens)
  drawn = tf.random.stateless_uniform(shape, seed=k[0]) < prob
  selected = _regular(tokens, lo, hi, eos_id) & drawn
  action = tf.random.stateless_uniform(shape, seed=k[1])
  random_ids = tf.random.stateless_uniform(shape, seed=k[2], minval=lo, maxval=hi, dtype=tf.int32)
  replaced = tf.where(action < 0.8, tf.fill(shape, mask_id),
                      tf.where(action < 0.9, random_ids, tokens))
  masked = tf.where(selected, replaced, tokens)
  return masked, tf.where(selected, tokens, tf.fill(shape, -1))


class SynonymTable:
  """Dense tensors of a synonym table for in-graph lookup: keys [K], synonyms [K, S] ('' pads),
  counts [K]."""

  def __init__(self, table: dict[str, list[str]]):
    words = sorted(table)
    width = max(len(table[w]) for w in words)
    self.keys = tf.constant(words)
    self.synonyms = tf.constant([table[w] + [''] * (width - len(table[w])) for w in words])
    self.counts = tf.constant([len(table[w]) for w in words], tf.int32)


def _replace(words, n, key, alpha, table: SynonymTable):
  k = tf.random.experimental.stateless_split(key, 2)
  match = tf.equal(words[:, None], table.keys[None, :])  # [n, K]
  has = tf.reduce_any(match, axis=1)
  row = tf.argmax(tf.cast(match, tf.int32), axis=1, output_type=tf.int32)
  u = tf.random.stateless_uniform([n, 2], seed=k[0])
  # The n_rep eligible words with the largest draws are replaced (EDA: n = max(1, alpha * words)).
  n_rep = tf.maximum(1, tf.cast(tf.floor(alpha * tf.cast(n, tf.float32)), tf.int32))
  score = tf.where(has, u[:, 0], -1.0)
  rank = tf.argsort(tf.argsort(score, direction='DESCENDING'))
  chosen = has & (rank < n_rep)
  pick = tf.minimum(tf.cast(u[:, 1] * tf.cast(tf.gather(table.counts, row), tf.float32), tf.int32),
                    tf.gather(table.counts, row) - 1)
  synonym = tf.gather_nd(table.synonyms, tf.stack([row, tf.maximum(pick, 0)], axis=1))
  return tf.where(chosen, synonym, words)


def _swap(words, n, key, alpha):
  n_swap = tf.maximum(1, tf.cast(tf.floor(alpha * tf.cast(n, tf.float32)), tf.int32))
  pairs = tf.random.stateless_uniform([n_swap, 2], seed=key, minval=0, maxval=tf.maximum(n, 1),
                                      dtype=tf.int32)

  def body(i, w):
    a, b = pairs[i, 0], pairs[i, 1]
    return i + 1, tf.tensor_scatter_nd_update(w, [[a], [b]], tf.stack([w[b], w[a]]))
  return tf.while_loop(lambda i, w: i < n_swap, body, (0, words))[1]


def _delete(words, n, key, alpha):
  k = tf.random.experimental.stateless_split(key, 2)
  keep = tf.random.stateless_uniform([n], seed=k[0]) >= alpha
  only = tf.random.stateless_uniform([], seed=k[1], minval=0, maxval=tf.maximum(n, 1),
                                     dtype=tf.int32)
  keep = tf.cond(tf.reduce_any(keep), lambda: keep, lambda: tf.equal(tf.range(n), only))
  return tf.boolean_mask(words, keep)


def eda(text: tf.Tensor, key: tf.Tensor, *, alpha: float, table: SynonymTable) -> tf.Tensor:
  """An EDA-augmented scalar caption (see the module docstring); '' stays ''."""
  k = _keys(key, _EDA, 2)
  clean = tf.strings.regex_replace(tf.strings.lower(text), '[^a-z ]', ' ')
  words = tf.strings.split(clean)
  n = tf.size(words)
  op = tf.random.stateless_uniform([], seed=k[0], minval=0, maxval=3, dtype=tf.int32)
  augment = lambda: tf.switch_case(op, [lambda: _replace(words, n, k[1], alpha, table),
                                        lambda: _swap(words, n, k[1], alpha),
                                        lambda: _delete(words, n, k[1], alpha)])
  out = tf.cond(n > 0, augment, lambda: words)
  return tf.strings.reduce_join(out, separator=' ')


def strong_view(view_cfg, image_uint8: tf.Tensor, key: tf.Tensor, image_cfg,
                salt: int) -> tf.Tensor:
  """image_view2 with config.data.views' augmentation settings and the sub-key `salt`."""
  return image_view2(image_uint8, key, size=image_cfg.image_size,
                     crop_scale=tuple(view_cfg.crop_scale), flip=view_cfg.flip,
                     color_jitter=view_cfg.color_jitter, grayscale=view_cfg.grayscale,
                     blur=view_cfg.blur, salt=salt, **image_ops.pixel_stats(image_cfg))


def extra_views(view_cfg, image_uint8: tf.Tensor, text: tf.Tensor, key: tf.Tensor, tokenizer,
                image_cfg, table: SynonymTable | None = None) -> dict[str, tf.Tensor]:
  """The views `view_cfg` (config.data.views) asks for, for one example: a dict with some of
  'image2', 'tokens_mlm', 'mlm_labels', 'tokens_eda', and 'image' (the first view) with
  image1_strong; `image_cfg` is config.data (image_size)."""
  out = {}
  if view_cfg.image2:
    out['image2'] = strong_view(view_cfg, image_uint8, key, image_cfg, _IMAGE2)
  if view_cfg.get('image1_strong', False):
    out['image'] = strong_view(view_cfg, image_uint8, key, image_cfg, _IMAGE1)
  if view_cfg.text_mlm:
    out['tokens_mlm'], out['mlm_labels'] = mlm_mask(
        tokenizer.tokenize(text), key, prob=view_cfg.mlm_prob, vocab_size=tokenizer.vocab_size,
        mask_id=tokenizer.mask_id, regular=tokenizer.regular_range, eos_id=tokenizer.eos_id)
  if view_cfg.text_eda:
    table = table or SynonymTable(load_synonyms())
    out['tokens_eda'] = tokenizer.tokenize(eda(text, key, alpha=view_cfg.eda_alpha, table=table))
  return out


def zerovl_text_augment(tokens: tf.Tensor, key: tf.Tensor, *, prob: float, vocab_size: int,
                        mask_id: int, pad_id: int = 0,
                        first_regular: int = len(RESERVED),
                        regular: tuple[int, int] | None = None,
                        eos_id: int | None = None) -> tf.Tensor:
  """ZeroVL's text augmentation of a batch of token rows [N, L] (config.data.zerovl_text_aug =
  prob): each word piece (not a special token) is selected with `prob`; of the selected, half
  become [MASK], a tenth a random piece and the rest are deleted (the row closes up and is
  padded again). `key` is a stateless seed [2] for the whole batch; `regular` and `eos_id` as
  in mlm_mask."""
  lo, hi = regular or (first_regular, vocab_size)
  k = _keys(key, 104, 3)
  shape = tf.shape(tokens)
  drawn = tf.random.stateless_uniform(shape, seed=k[0]) < prob
  selected = _regular(tokens, lo, hi, eos_id) & drawn
  action = tf.random.stateless_uniform(shape, seed=k[1])
  random_ids = tf.random.stateless_uniform(shape, seed=k[2], minval=lo, maxval=hi, dtype=tf.int32)
  out = tf.where(selected & (action < 0.5), tf.fill(shape, mask_id),
                 tf.where(selected & (action < 0.6), random_ids, tokens))
  keep = ~(selected & (action >= 0.6))
  return tf.ragged.boolean_mask(out, keep).to_tensor(default_value=pad_id, shape=shape)
