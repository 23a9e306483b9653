"""The embedded dataset: deterministic, written once, held-out combos, noise, two styles."""

import os

import numpy as np
import pytest
import tensorflow as tf

from vlalign.data.embedded import captions, generator, scenes

SMALL = dict(train_sizes={'studio': 300, 'sketch': 200}, heldout_size=120, num_shards=4,
             vocab_size=300)


def _records(pattern):
  spec = generator.feature_spec()
  out = []
  for r in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))):
    ex = tf.io.parse_single_example(r, spec)
    out.append({k: (tf.sparse.to_dense(v).numpy() if isinstance(v, tf.sparse.SparseTensor)
                    else v.numpy()) for k, v in ex.items()})
  return out


def _shard_bytes(ds):
  files = sorted(tf.io.gfile.glob(os.path.join(ds['dir'], '*', '*.tfrecord')))
  return [open(f, 'rb').read() for f in files] + [open(ds['vocab'], 'rb').read()]


def test_deterministic_and_written_once(tmp_path, small_dataset):
  again = generator.ensure_dataset(str(tmp_path / 'a'), seed=0, **SMALL)
  assert _shard_bytes(again) == _shard_bytes(small_dataset)
  other = generator.ensure_dataset(str(tmp_path / 'b'), seed=1, **SMALL)
  assert _shard_bytes(other) != _shard_bytes(small_dataset)
  manifest = os.path.join(again['dir'], 'manifest.json')
  mtime = os.path.getmtime(manifest)
  assert generator.ensure_dataset(str(tmp_path / 'a'), seed=0, **SMALL)['dir'] == again['dir']
  assert os.path.getmtime(manifest) == mtime
  assert not [d for d in os.listdir(tmp_path / 'a') if d.startswith('.partial')]


def test_heldout_combos_only_in_heldout(small_dataset):
  combos = {(scenes.COLORS.index(c), scenes.SHAPES.index(s)) for c, s in scenes.HELDOUT_COMBOS}
  train = [r for p in small_dataset['train'].values() for r in _records(p)]
  held = _records(small_dataset['heldout'])
  assert len(train) == 500 and len(held) == 120
  for r in train:
    assert not combos & set(zip(r['colors'], r['shapes']))
  novel = [r for r in held if r['novel']]
  assert 0.15 < len(novel) / len(held) < 0.45
  assert all(combos & set(zip(r['colors'], r['shapes'])) for r in novel)
  assert not any(r['noisy'] for r in held)


def test_clean_captions_mention_every_attribute(small_dataset):
  recs = [r for p in small_dataset['train'].values() for r in _records(p)]
  recs += _records(small_dataset['heldout'])
  clean = [r for r in recs if not r['noisy']]
  named = {'studio': [], 'sketch': []}
  for r in clean:
    text = r['text'].decode()
    has_pos = []
    for c, s, z, p in zip(r['colors'], r['shapes'], r['sizes'], r['positions']):
      for word in (scenes.COLORS[c], scenes.SHAPES[s], scenes.SIZES[z]):
        assert word in text, (word, text)
      pos = scenes.POSITIONS[p]
      has_pos.append(pos in text or pos.replace(' ', '-') in text)
    assert all(has_pos) or not any(has_pos), text  # all positions or none
    named[r['source'].decode()].append(all(has_pos))
  assert all(named['sketch'])  # tag-style captions always name positions
  assert abs(np.mean(named['studio']) - captions.POSITION_RATE) < 0.1


def test_noise_fraction_and_kinds():
  rng = np.random.default_rng(0)
  exs = [generator.make_example(rng, style='studio', uid=str(i), heldout=False,
                                noise_fraction=0.25, num_objects=2) for i in range(2000)]
  kinds = [e.features.feature['noise_kind'].bytes_list.value[0].decode() for e in exs]
  noisy = [k for k in kinds if k]
  assert abs(len(noisy) / len(kinds) - 0.25) < 0.03
  assert set(noisy) == set(captions.NOISE_KINDS)


def test_two_sources_differ_in_pixels_and_captions(small_dataset):
  def stats(name):
    recs = _records(small_dataset['train'][name])
    imgs = np.stack([tf.io.decode_png(r['image']).numpy() for r in recs[:50]]).astype(float)
    texts = [r['text'].decode() for r in recs if not r['noisy']]
    return imgs.mean(), np.mean(['|' in t or ' of ' in t for t in texts])
  studio_mean, studio_tags = stats('studio')
  sketch_mean, sketch_tags = stats('sketch')
  assert sketch_mean - studio_mean > 60  # light textured vs mid-grey backgrounds
  assert studio_tags < 0.3 and sketch_tags > 0.9


@pytest.mark.parametrize('style', scenes.STYLES)
def test_single_object_pixels_have_its_colour(style):
  rng = np.random.default_rng(1)
  for _ in range(20):
    objs = scenes.sample_scene(rng, num_objects=1, heldout=False)
    img = np.asarray(scenes.render(objs, style, rng)).reshape(-1, 3).astype(int)
    saturated = img[(img.max(1) - img.min(1)) > 80]  # backgrounds are grey
    assert len(saturated) > 10
    dists = [np.abs(saturated - np.array(rgb)).sum(1).mean() for rgb in scenes.RGB]
    assert int(np.argmin(dists)) == objs[0].color


def test_a_second_writer_keeps_the_first_writers_copy(tmp_path, monkeypatch):
  """Two processes generating the same dataset into one shared cache: the one that finishes
  second drops its copy instead of replacing the folder the first one's readers use."""
  tiny = dict(train_sizes={'studio': 12}, heldout_size=8, num_shards=1, vocab_size=60)
  first = generator.ensure_dataset(str(tmp_path), seed=0, **tiny)
  manifest = os.path.join(first['dir'], 'manifest.json')
  before = {f: os.stat(os.path.join(first['dir'], f)).st_ino for f in os.listdir(first['dir'])}
  real_exists, calls = os.path.exists, []

  def late(path):  # the first writer's manifest lands just after each of the second's checks
    calls.append(path)
    return False if path == manifest else real_exists(path)

  monkeypatch.setattr(generator.os.path, 'exists', late)
  second = generator.ensure_dataset(str(tmp_path), seed=0, **tiny)
  assert second['dir'] == first['dir'] and manifest in calls
  after = {f: os.stat(os.path.join(first['dir'], f)).st_ino for f in os.listdir(first['dir'])}
  assert after == before  # the same files, not replaced
  assert not [d for d in os.listdir(tmp_path) if d.startswith('.partial')]
