"""tools/embed and tools/search on any source spec (tfrecord, wds, the held-out split), from the
workdir alone; the contact sheet undoes the config's own pixel normalisation."""

import io
import json
import os
import tarfile

import numpy as np
import pytest

from vlalign import config_lib, inference
from vlalign.tools import embed, search

COLOURS = {'red': (230, 20, 20), 'green': (20, 200, 40), 'blue': (30, 40, 220),
           'yellow': (240, 220, 10)}


def _png(rgb, size=(70, 60)) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.new('RGB', size, rgb).save(buf, format='PNG')
  return buf.getvalue()


def _write_tfrecord(path: str) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feats = lambda **kw: tf.train.Example(features=tf.train.Features(feature={
      k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v])) for k, v in kw.items()}))
  with tf.io.TFRecordWriter(path) as w:
    for name, rgb in COLOURS.items():
      w.write(feats(image=_png(rgb), text=f'a {name} square'.encode(),
                    id=name.encode()).SerializeToString())
    w.write(feats(image=_png((0, 0, 0)), text=b'', id=b'no_text').SerializeToString())


@pytest.fixture(scope='module')
def clip_stats(tiny_workdir):
  """The run's config with CLIP's pixel statistics (same parameters, other normalisation)."""
  from vlalign.data import image_ops  # pylint: disable=g-import-not-at-top
  config = config_lib.load_json(str(tiny_workdir / 'config.json'))
  config.data.pixel_mean, config.data.pixel_std = image_ops.CLIP_MEAN, image_ops.CLIP_STD
  return config


def test_embed_a_tfrecord_source_and_search_it(tiny_workdir, clip_stats, tmp_path):
  _write_tfrecord(str(tmp_path / 'pairs.tfrecord'))
  index = str(tmp_path / 'index')
  meta = embed.export(str(tiny_workdir), index, f'tfrecord:{tmp_path}/*.tfrecord', clip_stats)
  assert meta['count'] == 4 and meta['skipped'] == {'empty_text': 1} and meta['step'] == 6
  with open(os.path.join(index, 'items.jsonl')) as f:
    items = [json.loads(line) for line in f]
  assert [it['id'] for it in items] == list(COLOURS)
  model = inference.load(str(tiny_workdir), config=clip_stats)
  want = model.encode_image(model.preprocess([np.full((60, 70, 3), c, np.uint8)
                                              for c in COLOURS.values()]))
  np.testing.assert_allclose(np.load(os.path.join(index, 'image_emb.npy')), want, atol=1e-6)
  np.testing.assert_allclose(np.load(os.path.join(index, 'text_emb.npy')),
                             model.encode_text([it['text'] for it in items]), atol=1e-6)
  hits = search.search(index, image='row:2', k=4, output=str(tmp_path / 's.png'),
                       config=clip_stats)
  assert hits[0]['id'] == 'blue' and abs(hits[0]['score'] - 1.0) < 1e-5
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(tmp_path / 's.png') as sheet:
    tiles = [sheet.getpixel((8 + i * 168 + 80, 40 + 80)) for i in range(4)]
  # Each tile shows its hit's colour: the sheet undoes CLIP's mean/std, not x*127.5+127.5.
  assert tiles == [COLOURS[h['id']] for h in hits]


def test_embed_a_webdataset_source(tiny_workdir, tmp_path):
  with tarfile.open(tmp_path / 'shard-0.tar', 'w') as tar:
    for i, (name, rgb) in enumerate(COLOURS.items()):
      for ext, data in (('png', _png(rgb)), ('txt', f'{name} thing'.encode())):
        info = tarfile.TarInfo(f'{i:04d}.{ext}')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  meta = embed.export(str(tiny_workdir), str(tmp_path / 'wds_index'),
                      f'wds:{tmp_path}/shard-*.tar', max_examples=3, dtype='float16')
  assert meta['count'] == 3 and meta['source'].startswith('wds:') and meta['dtype'] == 'float16'
  emb = np.load(tmp_path / 'wds_index' / 'text_emb.npy', allow_pickle=False)
  assert emb.dtype == np.float16 and emb.shape == (3, 32)


def test_heldout_index_keeps_its_labels_and_the_evaluators_rows(tiny_workdir, tmp_path):
  meta = embed.export(str(tiny_workdir), str(tmp_path / 'heldout'))
  assert meta['source'] == 'embedded:heldout' and meta['count'] == 100
  with open(tmp_path / 'heldout' / 'items.jsonl') as f:
    items = [json.loads(line) for line in f]
  assert {'colors', 'shapes', 'sizes', 'num_objects'} <= set(items[0])
  hits = search.search(str(tmp_path / 'heldout'), text='a red circle', k=3,
                       output=str(tmp_path / 'h.png'))
  assert len(hits) == 3 and hits[0]['score'] >= hits[1]['score'] >= hits[2]['score']


def test_to_pixels_inverts_each_normalisation():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign.data import image_ops  # pylint: disable=g-import-not-at-top
  cfg = config_lib.base_config().data
  img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  for mean, std in ((image_ops.DEFAULT_MEAN, image_ops.DEFAULT_STD),
                    (image_ops.CLIP_MEAN, image_ops.CLIP_STD)):
    cfg.pixel_mean, cfg.pixel_std = mean, std
    view = image_ops.normalize(tf.constant(img), mean, std).numpy()
    np.testing.assert_array_equal(search.to_pixels(view, cfg), img)


def test_bad_queries_and_sources_fail_clearly(tiny_workdir, tmp_path):
  from vlalign.data.spec import DataError  # pylint: disable=g-import-not-at-top
  with pytest.raises(DataError, match='tfrecord:/nonexistent'):
    embed.export(str(tiny_workdir), str(tmp_path / 'x'), 'tfrecord:/nonexistent/*.tfrecord')
  with pytest.raises(ValueError, match='give --text, --image or both'):
    search.search(str(tmp_path))
