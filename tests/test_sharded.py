"""8 fake CPU devices against 1 device and NumPy (each check runs in its own subprocess)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_check(name: str) -> dict:
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'tests.sharded_checks', name], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_loss_on_8_devices_matches_1_device_and_numpy():
  r = run_check('loss')
  np.testing.assert_allclose(r['loss_8'], r['loss_numpy'], rtol=1e-5)
  np.testing.assert_allclose(r['loss_8'], r['loss_1'], rtol=1e-6)
  assert r['grad_x_diff'] < 1e-6 and r['grad_y_diff'] < 1e-6 and r['grad_s_diff'] < 1e-4
  assert r['grad_1v8_diff'] < 1e-6
  # Each device forms local b x B logits (4 x 32); no B x B matrix in the compiled program.
  assert r['hlo_has_bxB'] and not r['hlo_has_BxB']


def test_train_step_on_8_devices_matches_1_device():
  r = run_check('train_step')
  np.testing.assert_allclose(r['losses_8'], r['losses_1'], rtol=1e-5)
  assert r['losses_1'][2] != r['losses_1'][0]  # training changed something
  assert r['param_diff'] < 1e-5, r
