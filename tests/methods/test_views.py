"""data/views.py: the second image view, MLM masking and EDA, each a pure function of (example,
key); the synonym table; the pipeline delivering the views without changing the first view."""

import numpy as np
import pytest
import tensorflow as tf

from tests.tools.test_summary import load_config
from vlalign import train
from vlalign.data import pipeline, views
from vlalign.data.embedded import scenes
from vlalign.data.text import WordpieceTokenizer


def _key(i: int) -> tf.Tensor:
  return tf.constant([7, i], tf.int64)


def _mapped(fn, *columns):
  """fn(*row, index) over the rows of `columns`, in one tf.data pass (traced once)."""
  n = len(columns[0])
  ds = tf.data.Dataset.from_tensor_slices((*columns, np.arange(n)))
  ds = ds.map(lambda *a: fn(*a[:-1], tf.stack([tf.constant(7, tf.int64), a[-1]])))
  return list(ds.batch(n).as_numpy_iterator())[0]


def test_mlm_rates_special_tokens_and_labels():
  rng = np.random.RandomState(0)
  tokens = rng.randint(5, 300, (4000, 10)).astype(np.int32)
  tokens[:, 0], tokens[:, -3], tokens[:, -2:] = 2, 3, 0  # [CLS] ... [SEP] [PAD] [PAD]
  f = lambda t, key: views.mlm_mask(t, key, prob=0.15, vocab_size=300, mask_id=4)
  masked, labels = _mapped(f, tokens)
  sel = labels >= 0
  regular = tokens >= 5
  assert not sel[~regular].any() and np.array_equal(masked[~regular], tokens[~regular])
  np.testing.assert_array_equal(labels[sel], tokens[sel])
  np.testing.assert_array_equal(masked[~sel], tokens[~sel])
  assert abs(sel[regular].mean() - 0.15) < 0.01, sel[regular].mean()
  as_mask = (masked[sel] == 4).mean()
  kept = (masked[sel] == tokens[sel]).mean()
  assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.02, (as_mask, kept)
  assert masked[sel].min() >= 4 and masked[sel].max() < 300
  again = f(tf.constant(tokens[5]), _key(5))
  np.testing.assert_array_equal(again[0].numpy(), masked[5])  # a pure function of the key


def _kind(words, out, table):
  """Which EDA operation explains `out` ('same' when it changed nothing)."""
  if out == words:
    return 'same'
  if len(out) == len(words) and sorted(out) == sorted(words):
    return 'swap'
  if len(out) < len(words):
    it = iter(words)
    assert all(w in it for w in out), (words, out)  # an ordered subsequence
    return 'delete'
  assert len(out) == len(words), (words, out)
  for w, o in zip(words, out):
    assert o == w or o in table[w], (w, o)
  return 'replace'


def test_eda_operations_and_determinism():
  table = views.load_synonyms()
  syn = views.SynonymTable(table)
  text = 'A picture of a large red circle, in the top-left'
  words = 'a picture of a large red circle in the top left'.split()
  f = lambda t, key: views.eda(t, key, alpha=0.1, table=syn)
  outs = [o.decode().split() for o in _mapped(f, np.array([text] * 60, object))]
  kinds = [_kind(words, o, table) for o in outs]
  assert {'swap', 'delete', 'replace'} <= set(kinds), kinds
  assert f(tf.constant(text), _key(3)).numpy().decode().split() == outs[3]
  # Replacement touches max(1, floor(0.1 * 11)) = 1 word; a swap exchanges one pair.
  for o, k in zip(outs, kinds):
    if k == 'replace':
      assert sum(a != b for a, b in zip(o, words)) == 1
    if k == 'swap':
      assert sum(a != b for a, b in zip(o, words)) == 2
  assert views.eda(tf.constant(''), _key(0), alpha=0.1, table=syn).numpy() == b''


def test_synonym_table_covers_the_embedded_vocabulary():
  table = views.load_synonyms()
  words = set(scenes.COLORS) | set(scenes.SHAPES) | set(scenes.SIZES)
  words |= {w for p in scenes.POSITIONS for w in p.split()}
  assert words <= set(table), words - set(table)
  for word, synonyms in table.items():
    assert synonyms and word not in synonyms and word == word.lower()


def test_second_image_view():
  rng = np.random.RandomState(1)
  img = tf.constant(rng.randint(0, 256, (64, 64, 3)).astype(np.uint8))
  view = lambda i, **kw: views.image_view2(img, _key(i), size=48, **kw).numpy()
  a, b = view(0), view(1)
  assert a.shape == (48, 48, 3) and a.min() >= -1 and a.max() <= 1
  np.testing.assert_array_equal(a, view(0))
  assert np.abs(a - b).mean() > 0.05
  plain = view(2, crop_scale=(1.0, 1.0), flip=False, color_jitter=0.0, grayscale=0.0, blur=0.0)
  want = tf.image.resize(tf.cast(img, tf.float32) / 255.0, [48, 48], antialias=True) * 2 - 1
  np.testing.assert_allclose(plain, want.numpy(), atol=1e-5)  # the whole image, resized
  gray = view(3, grayscale=1.0, color_jitter=0.0, blur=0.0)
  np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-6)


def test_blur_matches_a_numpy_gaussian():
  rng = np.random.RandomState(2)
  img = rng.rand(12, 10, 3).astype(np.float32)
  got = views.gaussian_blur(tf.constant(img), tf.constant(1.3), 4).numpy()
  x = np.arange(-4, 5)
  k = np.exp(-0.5 * (x / 1.3) ** 2)
  k /= k.sum()
  pad = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode='reflect')
  rows = sum(k[i] * pad[:, i:i + 10] for i in range(9))
  want = sum(k[i] * rows[i:i + 12] for i in range(9))
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.fixture(scope='module')
def tiny_data(cache):
  config = load_config('declip_vit_b32', 'tiny')
  config.data.cache_dir = str(cache)
  paths = train.prepare_data(config)
  return config, paths, WordpieceTokenizer(paths['vocab'], config.data.max_len)


def test_pipeline_delivers_the_views_and_keeps_the_first_view(tiny_data):
  config, paths, tok = tiny_data
  batch = next(pipeline.TrainIterator(config.data, paths['sources'], tok, seed=0))
  assert sorted(batch) == ['image', 'image2', 'mlm_labels', 'tokens', 'tokens_eda', 'tokens_mlm']
  n = config.data.global_batch
  assert batch['image2'].shape == batch['image'].shape == (n, 48, 48, 3)
  for k in ('tokens_mlm', 'mlm_labels', 'tokens_eda'):
    assert batch[k].shape == (n, config.data.max_len)
  sel = batch['mlm_labels'] >= 0
  np.testing.assert_array_equal(batch['mlm_labels'][sel], batch['tokens'][sel])
  np.testing.assert_array_equal(batch['tokens_mlm'][~sel], batch['tokens'][~sel])
  assert sel.any() and (batch['tokens_eda'] != batch['tokens']).any()
  # DeCLIP's first view is strong too (an independent draw of image2's augmentation); with
  # image1_strong off it is the plain train view, the same as without any extra view.
  assert config.data.views.image1_strong
  weak = config.data.copy_and_resolve_references()
  weak.views.image1_strong = False
  weak_batch = next(pipeline.TrainIterator(weak, paths['sources'], tok, seed=0))
  np.testing.assert_array_equal(weak_batch['image2'], batch['image2'])
  np.testing.assert_array_equal(weak_batch['tokens'], batch['tokens'])
  assert np.abs(batch['image'] - weak_batch['image']).mean() > 0.05
  assert np.abs(batch['image'] - batch['image2']).mean() > 0.05
  plain = config.data.copy_and_resolve_references()
  plain.views.update(image2=False, text_mlm=False, text_eda=False, image1_strong=False)
  first = next(pipeline.TrainIterator(plain, paths['sources'], tok, seed=0))
  assert sorted(first) == ['image', 'tokens']
  np.testing.assert_array_equal(first['image'], weak_batch['image'])
  np.testing.assert_array_equal(first['tokens'], batch['tokens'])
