"""Blockwise softmax and ring sigmoid losses on 8 fake CPU devices (one subprocess for all)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def result():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'tests.losses.loss_checks'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_gathered_softmax_matches_numpy_on_8_devices(result):
  r = result['blockwise']
  np.testing.assert_allclose([r['plain']['loss'], r['plain']['loss/i2t'], r['plain']['loss/t2i']],
                             r['numpy'], rtol=1e-5)
  assert r['plain_vs_numpy_grad'] < 1e-6
  assert [r['plain']['accuracy/i2t'], r['plain']['accuracy/t2i']] == r['numpy_acc']
  assert 0 < r['numpy_acc'][0] < 1  # the data has a miss, so the accuracy check can fail
  assert r['plain_hlo_has_bxB']  # the gathered loss does hold b x B logits


@pytest.mark.parametrize('chunk', [8, 12, 24])
@pytest.mark.parametrize('setting', ['0.1/sum', '0.0/mean'])
def test_blockwise_equals_gathered_and_never_holds_b_by_B(result, chunk, setting):
  c = result['blockwise']['chunks'][f'{chunk}/{setting}']
  assert c['value_diff'] < 2e-6 and c['grad_diff'] < 1e-6, c
  assert c['acc'] == result['blockwise']['numpy_acc']
  # Neither the b x B logits (4 x 32) nor the gathered B x d columns exist in the compiled
  # forward + backward program; they do when one chunk covers the whole batch.
  assert not c['hlo_has_bxB'] and not c['hlo_has_Bxd']


def test_blockwise_with_one_chunk_covering_the_batch(result):
  c = result['blockwise']['chunks']['4096/0.1/sum']
  assert c['value_diff'] < 2e-6 and c['grad_diff'] < 1e-6
  assert c['hlo_has_bxB'] and c['hlo_has_Bxd']  # the HLO probe sees b x B when it is there


@pytest.mark.parametrize('run', ['ring_1', 'gather_1', 'ring_8', 'gather_8'])
def test_sigmoid_loss_matches_numpy(result, run):
  r = result['sigmoid']
  got = r[run]
  np.testing.assert_allclose(got['loss'], r['numpy'], rtol=1e-6)
  assert got['grad_diff'] < 1e-6 and got['grad_scale_rel'] < 1e-5 and got['grad_bias_rel'] < 1e-5
  assert [got['acc_i2t'], got['acc_t2i']] == r['numpy_acc']


def test_ring_sigmoid_never_holds_b_by_B(result):
  assert not result['sigmoid']['ring_8']['hlo_has_bxB']
  assert result['sigmoid']['gather_8']['hlo_has_bxB']
