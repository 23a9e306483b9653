"""Bad command lines end in one line on stderr and exit status 2 (cli.parse_flags), not in
ml_collections' or absl's tracebacks."""

import os

import pytest
from absl import flags
from ml_collections import config_flags

from vlalign import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, 'configs', 'demo.py')


def _parse(capsys, *args):
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'test', values, lock_config=True,
                                  sys_argv=['prog', *args])  # it defines the override flags
  flags.DEFINE_integer('num_processes', 1, 'test', flag_values=values)
  with pytest.raises(SystemExit) as e:
    cli.parse_flags(['prog', *args], values)
  assert e.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1, lines
  return lines[0]


@pytest.mark.parametrize('args, want', [
    ((f'--config={DEMO}:tiny', '--config.totl_steps=5'),
     "vlalign: --config.totl_steps: the config has no field 'totl_steps' (Did you mean "
     '"total_steps" instead of "totl_steps"?)'),
    ((f'--config={DEMO}:tiny', '--config.model.image.widht=8'),
     "vlalign: --config.model.image.widht: the config has no field 'widht'"),
    ((f'--config={DEMO}:tny',), "vlalign: config file demo.py: unknown option(s) ['tny']"),
    (('--config=configs/none.py',), "No such file or directory: 'configs/none.py'"),
    ((f'--config={DEMO}:tiny', '--config.total_steps=abc'),
     'vlalign: flag --config.total_steps=abc: invalid literal for int()'),
    (('--num_processes=x',), 'vlalign: flag --num_processes=x'),
])
def test_bad_command_lines_are_one_line(capsys, args, want):
  assert want in _parse(capsys, *args)


def test_a_good_command_line_parses():
  argv = ['prog', f'--config={DEMO}:tiny', '--config.total_steps=7']
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'test', values, lock_config=True, sys_argv=argv)
  assert cli.parse_flags(argv, values) == ['prog']
  assert values.config.total_steps == 7
