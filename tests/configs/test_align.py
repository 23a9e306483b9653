"""configs/align_b7.py and align_l2.py: the full configs stop at once without data, naming the
field; the runlocal variant trains through main on the embedded data."""

import json
import os
import subprocess
import sys

import pytest

from tests.tools.test_summary import ROOT, load_config
from vlalign import config_lib


@pytest.mark.parametrize('name', ['align_b7', 'align_l2'])
def test_full_configs_need_data_and_name_the_field(name):
  config = load_config(name)
  assert config.data.global_batch == 16_384 and config.optimizer.name == 'lamb'
  with pytest.raises(config_lib.ConfigError, match='config.data.sources'):
    config_lib.validate(config)
  config_lib.validate(load_config(name, 'runlocal'))


def test_main_stops_at_once_with_one_line_naming_the_field(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'vlalign.main', '--config=configs/align_b7.py',
                         f'--workdir={tmp_path / "wd"}'], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      'vlalign: config.data.sources: must be a non-empty tuple of source specs (e.g. '
      '"tfrecord:gs://bucket/pairs-*", "wds:/data/laion/*.tar", "embedded"), got ()')
  assert 'Traceback' not in proc.stderr and not (tmp_path / 'wd').exists()


@pytest.mark.slow
def test_align_b7_runlocal_trains_through_main(tmp_path):
  # EfficientNet (batch norm, stochastic depth) + BERT (dropout), held-out eval with the batch
  # statistics. align_l2:runlocal (remat, 2-axis mesh) runs the same code path; it takes longer.
  env = dict(os.environ, VLALIGN_DATA_DIR=str(tmp_path / 'cache'), JAX_PLATFORMS='cpu')
  workdir = tmp_path / 'wd'
  proc = subprocess.run([sys.executable, '-m', 'vlalign.main',
                         '--config=configs/align_b7.py:runlocal', f'--workdir={workdir}',
                         '--config.total_steps=4'], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=400)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(workdir / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  assert len(losses) == 2 and all(0 < l < 20 for l in losses)
  assert any('eval/retrieval/rsum' in r for r in rows)
