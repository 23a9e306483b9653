"""The wheel carries configs, templates and benchmark data files and the console scripts; a
--config=configs/<name>.py that is not in the working directory resolves to the shipped copy."""

import configparser
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from vlalign import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  """A wheel built (no dependencies, no build isolation) from a copy of the source tree, so
  the checkout gets no build/ directory."""
  src = tmp_path_factory.mktemp('src')
  for name in ('setup.py', 'requirements.txt'):
    shutil.copy(os.path.join(ROOT, name), src / name)
  ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
  for name in ('vlalign', 'configs'):
    shutil.copytree(os.path.join(ROOT, name), src / name, ignore=ignore)
  out = tmp_path_factory.mktemp('wheel')
  proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                         '--no-build-isolation', '-q', str(src), '-w', str(out)],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  path, = glob.glob(str(out / 'vlalign-*.whl'))
  return zipfile.ZipFile(path)


def test_wheel_holds_configs_templates_and_data_files(wheel):
  names = set(wheel.namelist())
  configs = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))}
  assert {f'vlalign/configs/{c}' for c in configs} <= names and 'demo.py' in configs
  data = [os.path.relpath(p, ROOT) for pattern in (
      'vlalign/evaluate/*.txt', 'vlalign/evaluate/benchmark_data/*', 'vlalign/data/*.json',
      'vlalign/data/embedded/*.json') for p in glob.glob(os.path.join(ROOT, pattern))]
  assert 'vlalign/evaluate/templates.txt' in data
  assert 'vlalign/evaluate/benchmark_data/imagenet_classes.txt' in data
  assert 'vlalign/evaluate/benchmark_data/clip_templates.txt' in data
  missing = set(data) - names
  assert not missing, f'not in the wheel: {sorted(missing)}'
  with open(os.path.join(ROOT, 'configs', 'demo.py'), 'rb') as f:
    assert wheel.read('vlalign/configs/demo.py') == f.read()


def test_wheel_declares_the_console_scripts(wheel):
  entry, = [n for n in wheel.namelist() if n.endswith('.dist-info/entry_points.txt')]
  parser = configparser.ConfigParser()
  parser.read_string(wheel.read(entry).decode())
  scripts = dict(parser['console_scripts'])
  assert set(scripts) == set(cli.SCRIPTS)
  for name, target in scripts.items():
    module, fn = target.split(':')
    assert module == 'vlalign.cli' and callable(getattr(cli, fn)), name
    assert getattr(cli, fn).__doc__.startswith(f'{name}:'), name


def test_config_paths_resolve_from_the_package(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no ./configs here
  shipped = os.path.join(ROOT, 'configs', 'demo.py')
  assert cli.config_path('configs/demo.py') == shipped
  assert cli.resolve_config_args(['prog', '--config=configs/demo.py:tiny', '--workdir=w',
                                  '--config.total_steps=3']) == [
                                      'prog', f'--config={shipped}:tiny', '--workdir=w',
                                      '--config.total_steps=3']
  assert cli.resolve_config_args(['prog', '--config', 'configs/demo.py']) == [
      'prog', '--config', shipped]
  assert cli.config_path('configs/nope.py') == 'configs/nope.py'  # absl reports it
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'demo.py').write_text('# a local file wins\n')
  assert cli.config_path('configs/demo.py') == 'configs/demo.py'
