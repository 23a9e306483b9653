"""The loss choices reached through `python -m vlalign.main`: blockwise softmax and ring sigmoid on
8 fake devices train exactly like the gathered losses on 1 device (tiny demo config)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_main(config, workdir, cache, *overrides, devices=1):
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu')
  if devices > 1:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  cmd = [sys.executable, '-m', 'vlalign.main', f'--config=configs/{config}:tiny',
         f'--workdir={workdir}', '--config.log_every=1', *overrides]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [r for r in rows if 'train/loss' in r]


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
def test_blockwise_softmax_on_8_devices_trains_like_gathered_on_1(tmp_path, cache):
  plain = run_main('demo.py', tmp_path / 'plain', cache)
  block = run_main('demo.py', tmp_path / 'block', cache, '--config.loss.impl=blockwise',
                   '--config.loss.chunk=4', devices=8)  # b = 2 rows: 2 columns per device a step
  np.testing.assert_allclose([r['train/loss'] for r in block], [r['train/loss'] for r in plain],
                             rtol=1e-4)
  assert plain[-1]['train/loss'] != plain[0]['train/loss']


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
def test_siglip_config_ring_on_8_devices_trains_like_gathered_on_1(tmp_path, cache):
  ring = run_main('siglip_demo.py', tmp_path / 'ring', cache, devices=8)
  gather = run_main('siglip_demo.py', tmp_path / 'gather', cache, '--config.loss.impl=gather')
  # SigLIP initialisation: scale 10 (temperature 0.1), bias -10, both learned.
  np.testing.assert_allclose(ring[0]['train/temperature'], 0.1, rtol=1e-6)
  assert ring[0]['train/bias'] == pytest.approx(-10.0, abs=0.05)
  assert ring[-1]['train/bias'] != ring[0]['train/bias']
  for key in ('train/loss', 'train/bias', 'train/temperature'):
    np.testing.assert_allclose([r[key] for r in ring], [r[key] for r in gather], rtol=1e-4,
                               err_msg=key)
  # At initialisation (scale 10, bias -10) a positive pair costs softplus(10 - 10 cos) ~ 10 and
  # a negative softplus(10 cos - 10) ~ e^-10: the loss starts near 10 (1 - mean cos_ii) ~ 10.
  assert abs(ring[0]['train/loss'] - 10.0) < 1.5


def test_unknown_loss_impl_is_named(tmp_path, cache):
  env = dict(os.environ, VLALIGN_DATA_DIR=str(cache), JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'vlalign.main', '--config=configs/demo.py:tiny',
                         f'--workdir={tmp_path / "wd"}', '--config.loss.impl=ring'], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and 'loss.impl' in proc.stderr.strip().splitlines()[-1]
