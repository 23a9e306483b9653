"""Multi-caption retrieval: brute-force NumPy oracle, 1 device and 8 fake devices."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.evaluate.retrieval_checks import data, numpy_retrieval
from vlalign.evaluate import metrics, retrieval

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_one_caption_per_image_equals_the_square_evaluator():
  rng = np.random.RandomState(3)
  img, txt = rng.randn(30, 6).astype(np.float32), rng.randn(30, 6).astype(np.float32)
  txt = img + 1.5 * txt
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  txt /= np.linalg.norm(txt, axis=1, keepdims=True)
  got = retrieval.retrieval_metrics_multi(img, txt, np.arange(30), chunk=7)
  want = metrics.retrieval_metrics(img, txt)
  for k in (1, 5, 10):
    assert got[f'i2t_r{k}'] == pytest.approx(want[f'i2t_r{k}'])
    assert got[f't2i_r{k}'] == pytest.approx(want[f't2i_r{k}'])
  assert 0 < got['i2t_r1'] < 1  # not trivially perfect or empty


def test_several_captions_per_image_equal_numpy_on_one_device():
  img, txt, owner = data()
  want = numpy_retrieval(img, txt, owner)
  got = retrieval.retrieval_metrics_multi(img, txt, owner, chunk=16)
  assert got == pytest.approx(want, abs=1e-9)
  assert 0 < want['i2t_r1'] < want['i2t_r5'] < 1 and 0 < want['t2i_r1'] < 1


def test_bad_caption_owners_are_refused():
  img, txt, owner = data()
  with pytest.raises(ValueError, match='image index'):
    retrieval.retrieval_metrics_multi(img, txt, owner + 1)
  with pytest.raises(ValueError, match='at least one caption'):
    retrieval.retrieval_metrics_multi(np.concatenate([img, img[:1]]), txt, owner)


def test_sharded_chunked_retrieval_on_8_devices_equals_numpy():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'tests.evaluate.retrieval_checks'], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  for name in ('one_device', 'eight', 'eight_chunk7', 'two_by_four'):
    assert r[name] == pytest.approx(r['numpy'], abs=1e-9), name


def test_non_finite_embeddings_are_refused_not_scored_perfect():
  """A NaN model used to score R@1 = 1.0 (NaN similarities compare false, so no candidate ranks
  above the match). Every evaluator entry point now refuses it with one line."""
  rng = np.random.RandomState(0)
  img = rng.normal(size=(6, 4)).astype(np.float32)
  txt = rng.normal(size=(6, 4)).astype(np.float32)
  nan = np.full_like(img, np.nan)
  assert ((nan @ txt.T) > np.diag(nan @ txt.T)[:, None]).sum() == 0  # why NaN looked perfect
  with pytest.raises(metrics.NonFiniteEmbeddingError, match='6 of 6 image embeddings'):
    metrics.retrieval_metrics(nan, txt)
  bad_txt = txt.copy()
  bad_txt[2, 1] = np.inf
  with pytest.raises(FloatingPointError, match='1 of 6 text embeddings are not finite'):
    retrieval.retrieval_metrics_multi(img, bad_txt, np.arange(6))
  with pytest.raises(FloatingPointError, match='image embeddings are not finite'):
    metrics.topk_accuracy(nan, txt[:3], np.zeros(6, int))
  with pytest.raises(FloatingPointError, match='similarity'):
    metrics.recall_at_k(nan @ txt.T)
  assert metrics.retrieval_metrics(img, txt)['rsum'] > 0  # finite input still scores
