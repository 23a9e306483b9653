"""Console scripts (vlalign-train, vlalign-eval, ...) and --config paths that also resolve from
the installed package: `--config=configs/demo.py[:arg]` reads ./configs/demo.py when it exists,
else the copy shipped in the wheel (vlalign/configs/), else the source checkout's configs/."""

import importlib
import os
import re
import sys

from absl import app

# console script -> the module its `python -m` form runs.
SCRIPTS = {
    'vlalign-train': 'vlalign.main',
    'vlalign-eval': 'vlalign.evaluate.__main__',
    'vlalign-embed': 'vlalign.tools.embed',
    'vlalign-search': 'vlalign.tools.search',
    'vlalign-summary': 'vlalign.tools.summary',
    'vlalign-convert': 'vlalign.tools.convert',
    'vlalign-build-vocab': 'vlalign.tools.build_vocab',
    'vlalign-concepts': 'vlalign.tools.concepts',
    'vlalign-import-weights': 'vlalign.tools.import_weights',
    'vlalign-export': 'vlalign.tools.export',
    'vlalign-data-service': 'vlalign.tools.data_service',
}
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def packaged_config(name: str) -> str | None:
  """The absolute path of configs/<name> shipped in the wheel (vlalign/configs/) or in this
  source checkout (configs/ next to vlalign/); None when neither has it."""
  for root in (os.path.join(_PACKAGE, 'configs'),
               os.path.join(os.path.dirname(_PACKAGE), 'configs')):
    if os.path.isfile(os.path.join(root, name)):
      return os.path.join(root, name)
  return None


def config_path(path: str) -> str:
  """`path` itself when it exists; for a missing configs/<name>.py, the packaged copy."""
  if os.path.exists(path):
    return path
  parts = os.path.normpath(path).split(os.sep)
  if len(parts) == 2 and parts[0] == 'configs':
    return packaged_config(parts[1]) or path
  return path  # absl's config loader reports the missing file


def _resolve_value(value: str) -> str:
  file, sep, arg = value.partition(':')
  return config_path(file) + sep + arg


def resolve_config_args(argv: list[str]) -> list[str]:
  """argv with the file of `--config=FILE[:arg]` / `--config FILE[:arg]` resolved by
  config_path (field overrides such as --config.total_steps=5 are left alone)."""
  out, i = list(argv), 1
  while i < len(out):
    if out[i].startswith('--config='):
      out[i] = '--config=' + _resolve_value(out[i][len('--config='):])
    elif out[i] == '--config' and i + 1 < len(out):
      out[i + 1] = _resolve_value(out[i + 1])
      i += 1
    i += 1
  return out


def define_config_flag(argv: list[str], help_text: str, flag_values=None) -> None:
  """--config for the tools that read a workdir: a config file when --config is given, else the
  --workdir's config.json as the flag's value, so --config.<field>=<value> overrides it."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS if flag_values is None else flag_values
  given = any(a == '--config' or a.startswith('--config=') for a in argv[1:])
  workdirs = [a.split('=', 1)[1] for a in argv[1:] if a.startswith('--workdir=')]
  saved = os.path.join(workdirs[-1], 'config.json') if workdirs else ''
  if not given and saved and os.path.exists(saved):
    from vlalign import config_lib  # pylint: disable=g-import-not-at-top
    try:
      config = config_lib.load_json(saved)
    except config_lib.ConfigError as e:
      raise SystemExit(f'vlalign: {e}') from None
    config_flags.DEFINE_config_dict('config', config, help_text, flag_values, lock_config=True,
                                    sys_argv=argv)
  else:
    config_flags.DEFINE_config_file('config', None, help_text, flag_values, lock_config=True,
                                    sys_argv=argv)


def _one_line(error: Exception, argv: list[str]) -> str:
  """The message of a --config file / field that could not be parsed, in one line."""
  while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError(..))
    error = error.args[0]
  text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
  lines = [l.strip() for l in text.strip().splitlines() if l.strip()] or [repr(error)]
  if isinstance(error, (AttributeError, KeyError)):  # an override of a field that does not exist
    key = lines[0].strip('\'"')
    named = [a.split('=', 1)[0] for a in argv[1:] if a.startswith('--config.') and
             re.search(rf'\.{re.escape(key)}(\.|$)', a.split('=', 1)[0])]
    hint = f' ({lines[1]})' if len(lines) > 1 else ''
    return f'vlalign: {named[0] if named else "--config"}: the config has no field {key!r}{hint}'
  # absl wraps an error raised while loading the config file with its traceback: keep its last
  # line, without the exception's class name.
  return 'vlalign: ' + re.sub(r'^[\w.]*(Error|Exception): ', '', lines[-1])


def parse_flags(argv: list[str], flag_values=None) -> list[str]:
  """absl's flag parsing (app.run's flags_parser) with a bad flag, --config file or --config.*
  field reported in one line on stderr and exit status 2, instead of a traceback."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS if flag_values is None else flag_values
  try:
    rest = flag_values(argv)
    config = flag_values['config'].value if 'config' in flag_values else None
    if config is not None:
      getattr(config, 'keys')  # a config file that failed to load raises here, not above
    return rest
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    print(_one_line(e, argv), file=sys.stderr, flush=True)
    sys.exit(2)


def run(module_name: str) -> None:
  """Runs the `python -m module_name` program with this process's arguments."""
  module = importlib.import_module(module_name)
  if module_name == 'vlalign.tools.summary':  # abstract shapes only, as its __main__ does
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_platforms', 'cpu')
  if hasattr(module, '_define_flags'):
    module._define_flags()  # pylint: disable=protected-access
  app.run(module.main, argv=resolve_config_args(sys.argv), flags_parser=parse_flags)


def train() -> None:
  """vlalign-train: python -m vlalign.main."""
  run(SCRIPTS['vlalign-train'])


def evaluate() -> None:
  """vlalign-eval: python -m vlalign.evaluate."""
  run(SCRIPTS['vlalign-eval'])


def embed() -> None:
  """vlalign-embed: python -m vlalign.tools.embed."""
  run(SCRIPTS['vlalign-embed'])


def search() -> None:
  """vlalign-search: python -m vlalign.tools.search."""
  run(SCRIPTS['vlalign-search'])


def summary() -> None:
  """vlalign-summary: python -m vlalign.tools.summary."""
  run(SCRIPTS['vlalign-summary'])


def convert() -> None:
  """vlalign-convert: python -m vlalign.tools.convert."""
  run(SCRIPTS['vlalign-convert'])


def build_vocab() -> None:
  """vlalign-build-vocab: python -m vlalign.tools.build_vocab."""
  run(SCRIPTS['vlalign-build-vocab'])


def concepts() -> None:
  """vlalign-concepts: python -m vlalign.tools.concepts."""
  run(SCRIPTS['vlalign-concepts'])


def import_weights() -> None:
  """vlalign-import-weights: python -m vlalign.tools.import_weights."""
  run(SCRIPTS['vlalign-import-weights'])


def export() -> None:
  """vlalign-export: python -m vlalign.tools.export."""
  run(SCRIPTS['vlalign-export'])


def data_service() -> None:
  """vlalign-data-service: python -m vlalign.tools.data_service."""
  run(SCRIPTS['vlalign-data-service'])
