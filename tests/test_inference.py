"""vlalign.inference.load(workdir): the held-out evaluation's embeddings and numbers from the
workdir alone (config.json + a params-only restore), preprocessing, batching and errors."""

import json
import os
import shutil

import numpy as np
import pytest

from vlalign import inference


@pytest.fixture(scope='module')
def loaded(tiny_workdir):
  return inference.load(str(tiny_workdir))


@pytest.fixture(scope='module')
def heldout(loaded):
  """The held-out split as the run's evaluator reads it (eval views, ids, texts, labels)."""
  from vlalign import train  # pylint: disable=g-import-not-at-top
  from vlalign.data import pipeline  # pylint: disable=g-import-not-at-top
  paths = train.prepare_data(loaded.config)
  return pipeline.load_eval_set(paths['heldout'], loaded.config.data, loaded.tokenizer), paths


def _raw_heldout(pattern: str, folder) -> dict:
  """The held-out records as a user holds them: each image's bytes written to a file, its
  caption and attribute labels (the first of each list, -1 for none), in shard order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = {'image': tf.io.FixedLenFeature([], tf.string),
          'text': tf.io.FixedLenFeature([], tf.string),
          'num_objects': tf.io.FixedLenFeature([], tf.int64),
          **{k: tf.io.VarLenFeature(tf.int64) for k in ('colors', 'shapes', 'sizes')}}
  out = {'file': [], 'text': [], 'num_objects': [], 'colors': [], 'shapes': [], 'sizes': []}
  for record in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))):
    ex = tf.io.parse_single_example(record, spec)
    out['file'].append(str(folder / f'{len(out["file"])}.img'))
    with open(out['file'][-1], 'wb') as f:
      f.write(ex['image'].numpy())
    out['text'].append(ex['text'].numpy().decode())
    out['num_objects'].append(int(ex['num_objects']))
    for k in ('colors', 'shapes', 'sizes'):
      out[k].append(int(ex[k].values[0]) if ex[k].values.shape[0] else -1)
  return {k: v if k in ('file', 'text') else np.array(v) for k, v in out.items()}


def test_load_reproduces_the_runs_heldout_numbers(tiny_workdir, loaded, heldout, tmp_path):
  """The held-out images from files through preprocess + encode_image, the captions through
  encode_text, and the run's metric definitions: every number in <workdir>/eval/heldout.json
  within rtol 1e-6 (recall and accuracy are counts over 100 pairs, so any ranking change
  would move them by 0.01)."""
  from vlalign.data.embedded import generator  # pylint: disable=g-import-not-at-top
  from vlalign.evaluate import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  data = _raw_heldout(heldout[1]['heldout'], tmp_path)
  with open(tiny_workdir / 'eval' / 'heldout.json') as f:
    want = json.load(f)
  assert loaded.step == want['step'] == 6
  img = loaded.encode_image(loaded.preprocess(data['file']))
  txt = loaded.encode_text(data['text'])
  assert img.dtype == txt.dtype == np.float32 and img.shape == (100, 32)
  np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, rtol=1e-5)
  got = {f'eval/retrieval/{k}': v for k, v in metrics_lib.retrieval_metrics(img, txt).items()}
  prompts, single = generator.load_prompts(), data['num_objects'] == 1
  for attribute, plural in (('color', 'colors'), ('shape', 'shapes'), ('size', 'sizes')):
    entry = prompts[attribute]
    emb = loaded.encode_text([t.format(c) for c in entry['classes'] for t in entry['templates']])
    cls = metrics_lib.class_embeddings(emb.reshape(len(entry['classes']), -1, emb.shape[1]))
    for k in (1, 5) if len(entry['classes']) > 5 else (1,):
      got[f'eval/zeroshot/{attribute}_top{k}'] = metrics_lib.topk_accuracy(
          img[single], cls, data[plural][single], k)
  assert set(got) == set(want) - {'step'}
  for key, value in got.items():
    np.testing.assert_allclose(value, want[key], rtol=1e-6, err_msg=key)


def test_embeddings_equal_the_evaluators_row_for_row(tiny_workdir, loaded, heldout):
  from vlalign import train  # pylint: disable=g-import-not-at-top
  from vlalign.evaluate.heldout import HeldoutEvaluator  # pylint: disable=g-import-not-at-top
  data, paths = heldout
  r = train.restore_for_inference(loaded.config, str(tiny_workdir), loaded.step)
  ev = HeldoutEvaluator(loaded.config, r['model'], r['tokenizer'], paths['heldout'],
                        with_datasets=False)
  assert list(ev.data['id']) == list(data['id'])  # the same rows, in the same order
  img, txt = ev.embed(ev.variables(r['params'], r['model_state']))
  np.testing.assert_allclose(loaded.encode_image(data['image']), img, atol=1e-6)
  np.testing.assert_allclose(loaded.encode_text([t.decode() for t in data['text']]), txt,
                             atol=1e-6)
  assert loaded.logit_scale == pytest.approx(float(np.exp(r['params']['log_scale'])), rel=1e-6)
  assert loaded.logit_bias is None


def test_restores_parameters_only(tiny_workdir, loaded):
  assert set(loaded.variables) == {'params'}  # the ViT demo has no batch-norm state
  # A fixed batch size pads the last batch: 7 rows at a time give the same embeddings.
  small = inference.load(str(tiny_workdir), batch_size=7)
  texts = [f'a red circle {i}' for i in range(10)]
  np.testing.assert_allclose(small.encode_text(texts), loaded.encode_text(texts), atol=1e-6)


def test_preprocess_from_arrays_and_files_matches_the_eval_view(loaded, heldout, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  data, paths = heldout
  files = sorted(tf.io.gfile.glob(paths['heldout']))
  raw = [tf.io.parse_single_example(r, {'image': tf.io.FixedLenFeature([], tf.string)})['image']
         for r in tf.data.TFRecordDataset(files[:1]).take(3)]
  arrays = [tf.io.decode_image(b, channels=3).numpy() for b in raw]
  views = loaded.preprocess(arrays)
  assert views.dtype == np.float32 and views.shape == (3, 48, 48, 3)
  np.testing.assert_array_equal(views, data['image'][:3])  # first shard's first rows
  pngs = []
  for i, a in enumerate(arrays):
    pngs.append(str(tmp_path / f'{i}.png'))
    Image.fromarray(a).save(pngs[-1])
  np.testing.assert_array_equal(loaded.preprocess(pngs), views)
  grey = loaded.preprocess([arrays[0][..., 0]])
  np.testing.assert_array_equal(grey[0, ..., 1], grey[0, ..., 0])


def test_bad_inputs_fail_with_one_clear_error(loaded, tiny_workdir, tmp_path):
  with pytest.raises(ValueError, match=r'float32 \[N, 48, 48, 3\].*preprocess'):
    loaded.encode_image(np.zeros((2, 64, 64, 3), np.float32))
  with pytest.raises(ValueError, match='image 0 is float64'):
    loaded.preprocess([np.zeros((8, 8, 3))])
  with pytest.raises(TypeError, match='list of strings'):
    loaded.encode_text('a red circle')
  with pytest.raises(FileNotFoundError, match='no checkpoint at step 5'):
    inference.load(str(tiny_workdir), step=5)
  bare = tmp_path / 'bare'
  shutil.copytree(tiny_workdir / 'checkpoints', bare / 'checkpoints')
  from vlalign import config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(config_lib.ConfigError, match='config.json does not exist'):
    inference.load(str(bare))


def test_a_config_that_does_not_fit_the_checkpoint_lists_the_parameters(tiny_workdir):
  from vlalign import checkpoint, config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_json(str(tiny_workdir / 'config.json'))
  config.model.embed_dim = 24
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r'params/image_proj/kernel: in checkpoint \(32, 32\) float32, config '
                           r'builds \(32, 24\)'):
    inference.load(str(tiny_workdir), config=config)
