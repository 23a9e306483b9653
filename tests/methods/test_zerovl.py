"""ZeroVL: decoupled gradient accumulation (the K = 4 micro-batch gradient equals the full-batch
gradient on 8 fake devices, softmax and sigmoid, with and without mixup; less compiled
temporary memory) and coin-flipping mixup (soft targets against NumPy, lambda = 1 is the plain
loss); both through main."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def checks():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'tests.methods.zerovl_checks'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('loss', ['softmax', 'sigmoid', 'softmax_unrolled'])
def test_decoupled_gradient_equals_the_full_batch_gradient(checks, loss):
  r = checks[loss]
  assert r['grad_norm'] > 0.1  # a real gradient, not a vanishing one
  assert r['rel_grad_err'] <= 1e-5
  assert r['loss_diff'] <= 1e-5 * abs(r['loss'])


@pytest.mark.parametrize('side', ['heads', 'tails'])
def test_decoupled_gradient_with_mixup_equals_the_one_pass_gradient(checks, side):
  r = checks['mixup'][side]
  assert r['rel_grad_err'] <= 1e-5 and r['loss_diff'] <= 1e-5 * r['loss']
  assert r['logged_lambda'] == r['lambda']


def test_mixup_soft_targets_against_numpy_and_lambda_one_is_the_plain_loss(checks):
  assert checks['mixup']['numpy_rel_err']['heads'] <= 1e-5
  assert checks['mixup']['numpy_rel_err']['tails'] <= 1e-5
  assert checks['mixup']['lambda1_diff'] == 0.0


def test_mixup_partner_is_the_mirror_within_each_micro_batch():
  """ZeroVL's accumulation runner mixes each micro-batch with its own flip: with 8 rows on
  one device in 2 micro-batches the partners are 3 2 1 0 7 6 5 4 ('device': 7 ... 0)."""
  import jax
  from tests.sharded_checks import _tiny_config
  from vlalign import parallel
  from vlalign.methods import zerovl
  config = _tiny_config()
  config.mixup.enabled, config.grad_accum.micro_batches = True, 2
  mesh = parallel.make_mesh({'data': 1}, jax.devices()[:1])
  rows = np.arange(8.0)[:, None]
  got = np.asarray(zerovl.Parts(config, None, mesh).flip(rows))[:, 0]
  np.testing.assert_array_equal(got, [3, 2, 1, 0, 7, 6, 5, 4])
  config.mixup.partner = 'device'
  got = np.asarray(zerovl.Parts(config, None, mesh).flip(rows))[:, 0]
  np.testing.assert_array_equal(got, np.arange(8)[::-1])


def test_accumulated_step_needs_less_temporary_memory(checks):
  m = checks['memory']
  assert m['temp_bytes_k8'] < 0.6 * m['temp_bytes_k1'], m


@pytest.mark.slow
def test_zerovl_recipe_trains_through_main_and_accumulation_changes_nothing(tmp_path, cache):
  """configs/zerovl_vit_b16.py:tiny (debiased sampling over the embedded sources, mixup, text
  augmentation, 2 decoupled micro-batches) against the same recipe in one pass, both with
  mixup partners mirrored within each device's rows (mixup.partner='device'; ZeroVL's default
  mirrors within each micro-batch, a different objective for each K)."""
  def run(workdir, micro):
    proc = subprocess.run([sys.executable, '-m', 'vlalign.main',
                           '--config=configs/zerovl_vit_b16.py:tiny',
                           f'--workdir={workdir}', '--config.total_steps=3',
                           '--config.log_every=1', '--config.evals.heldout=False',
                           f'--config.grad_accum.micro_batches={micro}',
                           '--config.mixup.partner=device'], cwd=ROOT,
                          env=dict(os.environ, JAX_PLATFORMS='cpu', VLALIGN_DATA_DIR=str(cache)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      return {r['step']: r for r in map(json.loads, f) if 'train/loss' in r}
  plain, accum = run(tmp_path / 'k1', 1), run(tmp_path / 'k2', 2)
  # The same data, parameters and mixup draw at step 1: the same loss and gradient norm.
  assert accum[1]['train/mixup/lambda'] == plain[1]['train/mixup/lambda']
  np.testing.assert_allclose(accum[1]['train/loss'], plain[1]['train/loss'], rtol=1e-5)
  np.testing.assert_allclose(accum[1]['train/grad_norm'], plain[1]['train/grad_norm'], rtol=1e-4)
  assert np.isfinite(accum[3]['train/loss'])
  # ZeroVL's temperature: fixed at 0.02, in the CPU variants too.
  assert all(r['train/temperature'] == pytest.approx(0.02) for r in accum.values())
