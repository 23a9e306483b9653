"""Evaluators on other sources (config.evals.datasets): zero-shot top-1/top-5 on a TFDS
classification set and multi-caption retrieval on a TFDS caption set (both via
tfds.testing.mock_data) against brute-force NumPy on the same embeddings; the linear probe
against SciPy's L-BFGS on the same objective; all of it through vlalign.main."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.optimize
import tensorflow_datasets as tfds

from tests.data import bad_data
from tests.data.test_sources import _coco_like
from tests.evaluate.retrieval_checks import numpy_retrieval
from vlalign import config_lib
from vlalign.data.text import WordpieceTokenizer
from vlalign.evaluate import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg():
  d = config_lib.base_config().data
  d.image_size, d.resize_size, d.max_len = 32, 36, 24
  return d


def _embedders(vocab_size, d=16, seed=0):
  """Deterministic stand-ins for the towers: random projections, L2-normalised."""
  rng = np.random.default_rng(seed)
  w_img = rng.normal(size=(32 * 32 * 3, d))
  w_txt = rng.normal(size=(vocab_size, d))
  norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  img = lambda x: norm(x.reshape(len(x), -1) @ w_img)
  txt = lambda t: norm(np.stack([np.bincount(r[r > 0], minlength=vocab_size) for r in t])
                       @ w_txt)
  return img, txt


def test_zeroshot_top1_top5_on_tfds_equal_numpy(small_dataset, tmp_path):
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  templates = tmp_path / 'templates.txt'
  templates.write_text('a photo of a {}.\na drawing of the {}\n')
  entry = {'name': 'cifar', 'kind': 'zeroshot', 'source': 'tfds:cifar10:test',
           'templates_file': str(templates), 'max_examples': 30}
  with tfds.testing.mock_data(num_examples=40):
    ev = datasets.DatasetEvaluator.build(entry, _cfg(), tok, None)
    names = tfds.builder('cifar10').info.features['label'].names
  assert len(ev.images) == 30 and ev.num_classes == 10 and ev.num_templates == 2
  emb_img, emb_txt = _embedders(tok.vocab_size)
  got = ev.run(emb_img, emb_txt)
  # NumPy: prompts -> embeddings -> per-class mean -> renormalise -> rank.
  prompts = [t.format(c.replace('_', ' ')) for c in names
             for t in ('a photo of a {}.', 'a drawing of the {}')]
  p = emb_txt(np.asarray(tok.tokenize(np.array(prompts, dtype=object)))).reshape(10, 2, -1)
  cls = p.mean(1) / np.linalg.norm(p.mean(1), axis=1, keepdims=True)
  scores = emb_img(ev.images) @ cls.T
  rank = (scores > scores[np.arange(30), ev.labels][:, None]).sum(1)
  recall = [np.mean(scores[ev.labels == c].argmax(1) == c) for c in np.unique(ev.labels)]
  assert got == {'eval/cifar/top1': float((rank < 1).mean()),
                 'eval/cifar/top5': float((rank < 5).mean()),
                 'eval/cifar/mean_per_class_recall': pytest.approx(float(np.mean(recall)))}
  assert 0.0 < got['eval/cifar/top5'] < 1.0  # the check can tell right from wrong


def test_retrieval_with_several_captions_on_tfds_equals_numpy(small_dataset):
  tok = WordpieceTokenizer(small_dataset['vocab'], 24)
  pairs = bad_data.embedded_pairs(small_dataset['train']['studio'], 20)
  entry = {'name': 'coco', 'kind': 'retrieval', 'source': 'tfds:coco_captions:train',
           'text_key': 'captions/text', 'max_examples': 15}
  with tfds.testing.mock_data(as_dataset_fn=_coco_like(pairs)):
    ev = datasets.DatasetEvaluator.build(entry, _cfg(), tok, None)
  assert len(ev.images) == 15 and len(ev.text_tokens) == 30
  assert np.bincount(ev.text_image).tolist() == [2] * 15
  emb_img, emb_txt = _embedders(tok.vocab_size, seed=1)
  got = ev.run(emb_img, emb_txt)
  want = numpy_retrieval(emb_img(ev.images), emb_txt(ev.text_tokens), ev.text_image)
  assert got.keys() == {f'eval/coco/{k}' for k in want}
  for k, v in want.items():
    assert got[f'eval/coco/{k}'] == pytest.approx(v, abs=1e-9)


def test_linear_probe_matches_scipy_and_separates_what_is_separable():
  rng = np.random.default_rng(0)
  n, d, c = 120, 6, 3
  centres = rng.normal(size=(c, d)) * 4
  y = rng.integers(0, c, n)
  x = centres[y] + rng.normal(size=(n, d))
  res = datasets.linear_probe(x[:80], y[:80], x[80:], y[80:], c, l2=1e-2, steps=100)
  assert res['train_acc'] == 1.0 and res['test_acc'] >= 0.95

  def objective(flat):
    w, b = flat[:d * c].reshape(d, c), flat[d * c:]
    logits = x[:80] @ w + b
    logits = logits - logits.max(1, keepdims=True)
    ce = -(logits[np.arange(80), y[:80]] - np.log(np.exp(logits).sum(1))).mean()
    return ce + 0.5 * 1e-2 * (w ** 2).sum()

  best = scipy.optimize.minimize(objective, np.zeros(d * c + c), method='L-BFGS-B').fun
  assert res['final_loss'] == pytest.approx(best, rel=1e-3, abs=1e-4)
  # Labels unrelated to the features: the probe is near chance on held-out examples.
  noise = datasets.linear_probe(x[:80], rng.integers(0, c, 80), x[80:], rng.integers(0, c, 40),
                                c, l2=1e-2, steps=100)
  assert noise['test_acc'] < 0.6


@pytest.mark.slow
def test_evals_datasets_run_through_main_into_eval_files(tmp_path):
  workdir = tmp_path / 'wd'
  evals = ("({'name': 'shape_probe', 'kind': 'linear_probe', 'source': 'embedded:heldout', "
           "'label_key': 'shape', 'steps': 50}, {'name': 'color_zs', 'kind': 'zeroshot', "
           "'source': 'embedded:heldout', 'label_key': 'color'})")
  proc = subprocess.run([sys.executable, '-m', 'vlalign.main', '--config=configs/demo.py:tiny',
                         f'--workdir={workdir}', '--config.total_steps=2',
                         f'--config.evals.datasets={evals}'], cwd=ROOT,
                        env=dict(os.environ, JAX_PLATFORMS='cpu',
                                 VLALIGN_DATA_DIR=str(tmp_path / 'cache')),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  probe = json.loads((workdir / 'eval' / 'shape_probe.json').read_text())
  zs = json.loads((workdir / 'eval' / 'color_zs.json').read_text())
  heldout = json.loads((workdir / 'eval' / 'heldout.json').read_text())
  assert probe['step'] == 2 and 0.0 <= probe['eval/shape_probe/test_acc'] <= 1.0
  assert probe['eval/shape_probe/train_acc'] >= probe['eval/shape_probe/test_acc'] - 0.5
  # The embedded colour zero-shot through evals.datasets equals the built-in one.
  assert zs['eval/color_zs/top1'] == heldout['eval/zeroshot/color_top1']
  assert zs['eval/color_zs/top5'] == heldout['eval/zeroshot/color_top5']
