"""MFU and profiler traces through `python -m vlalign.main` (tiny demo config)."""

import glob
import os

import numpy as np
import pytest

from tests.train.test_main import read_metrics, run_main
from vlalign import config_lib, perf


@pytest.mark.slow  # CI budget (docs/BENCHMARKS.md, "Test suite")
def test_mfu_is_logged_from_xla_flops_and_a_profile_is_written(tmp_path):
  workdir = tmp_path / 'wd'
  proc = run_main(workdir, tmp_path / 'cache', '--config.peak_flops_per_device=1e9',
                  '--config.profile.start_step=2', '--config.profile.num_steps=2',
                  '--config.log_every=2')
  rows = [r for r in read_metrics(workdir) if 'train/loss' in r]
  assert len(rows) == 3
  for r in rows:
    assert r['perf/flops_per_device_step'] > 1e6  # forward + backward + update of the model
    np.testing.assert_allclose(
        r['train/mfu'], r['perf/flops_per_device_step'] * r['train/steps_per_sec'] / 1e9,
        rtol=1e-5)
    np.testing.assert_allclose(r['perf/gflops_per_sec_per_device'], r['train/mfu'], rtol=1e-5)
  assert 'logged against 1e+09 FLOP/s per device' in proc.stderr
  traces = glob.glob(os.path.join(workdir, 'profile', 'plugins', 'profile', '*', '*.xplane.pb'))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 1000, traces
  assert 'profile written to' in proc.stderr


def test_peak_table_and_why_mfu_is_not_logged():
  config = config_lib.base_config()
  assert perf.peak_flops_per_device(config, 'cpu')[0] == 0.0  # float32 on a CPU: unknown
  config.model.compute_dtype = 'bfloat16'
  assert perf.peak_flops_per_device(config, 'NVIDIA H100 80GB HBM3') == (
      989e12, "bf16 peak of 'NVIDIA H100 80GB HBM3'")
  assert perf.peak_flops_per_device(config, 'TPU v4')[0] == 275e12
  peak, why = perf.peak_flops_per_device(config, 'cpu')
  assert peak == 0.0 and 'config.peak_flops_per_device' in why
  config.peak_flops_per_device = 5e12
  assert perf.peak_flops_per_device(config, 'TPU v4')[0] == 5e12
  np.testing.assert_allclose(perf.perf_metrics(2e9, 3.0, 1e10)['train/mfu'], 0.6)
  assert 'train/mfu' not in perf.perf_metrics(2e9, 3.0, 0.0)
