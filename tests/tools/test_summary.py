"""tools/summary on the ALIGN configs: exact parameter totals (docs/METHODS.md, Oracles) and
FLOPs."""

import json
import os
import subprocess
import sys

from vlalign import config_lib
from vlalign.tools import summary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str, arg: str = ''):
  """get_config(arg) of configs/<name>.py."""
  module = config_lib.load_config_module(os.path.join(ROOT, 'configs', f'{name}.py'))
  return module.get_config(arg)


def test_summary_cli_json_for_align_b7():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'vlalign.tools.summary',
                         '--config=configs/align_b7.py', '--json'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  s = json.loads(proc.stdout.strip().splitlines()[-1])
  assert s['params_total'] == 171_527_249
  assert s['params_image'] == 62_143_440  # B7 without top: no projection
  assert s['params_text'] == 108_891_648 + 768 * 640 + 640  # BERT-Base + Linear 768->640
  assert s['params_other'] == 1  # the temperature
  assert abs(s['flops_image'] / 19.49e9 - 1) < 0.05, s['flops_image']
  assert s['flops_text'] > 0


def test_summary_align_l2_total():
  s = summary.summarize(load_config('align_l2'))
  assert s['params_total'] == 802_722_485
  assert s['params_image'] == 467_219_796
  assert abs(s['flops_image'] / 141.3e9 - 1) < 0.05, s['flops_image']


def test_tool_modules_import_next_to_main_without_flag_clashes():
  """Library imports of the tools must not define absl flags (CI once failed on `--config` being
  defined by both vlalign.tools.summary and vlalign.main in one pytest session)."""
  code = ('import vlalign.tools.summary, vlalign.tools.build_vocab, vlalign.main; '
          'from absl import flags; print(flags.FLAGS["config"].help)')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
