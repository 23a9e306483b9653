"""Entry point: python -m vlalign.main --config=configs/demo.py --workdir=DIR.

Config files are Python and run as code: only load configs you trust.
"""

import logging as pylogging
import os
import pathlib
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging
from ml_collections import config_flags

from vlalign import cli  # pylint: disable=wrong-import-position

_DEMO = cli.packaged_config('demo.py')  # the checkout's or the installed package's copy

config_flags.DEFINE_config_file('config', _DEMO, 'Config file (`path.py` or `path.py:arg`).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and evals go '
                    '(default: workdirs/<config name>).')
flags.DEFINE_string('coordinator', None, 'host:port of process 0 for multi-process runs.')
flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process index in a multi-process run.')
FLAGS = flags.FLAGS


class _QuietLibraries(pylogging.Filter):
  """Drops INFO chatter of orbax (per-save details) from the console; warnings pass."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or '/orbax/' not in record.pathname


def _cluster_env() -> str | None:
  """The multi-process environment this job runs in, if any: a SLURM job step with several
  tasks, or a Cloud TPU VM slice with several workers (JAX reads the details itself)."""
  if int(os.environ.get('SLURM_NTASKS', '1') or 1) > 1 and 'SLURM_STEP_ID' in os.environ:
    return 'SLURM'
  if len([h for h in os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]) > 1:
    return 'Cloud TPU pod'
  return None


def _maybe_init_distributed() -> None:
  """jax.distributed for multi-process runs: from --coordinator/--num_processes/--process_id
  (launch/local.sh), else detected from the SLURM or Cloud TPU environment."""
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.num_processes and FLAGS.num_processes > 1:
    if FLAGS.coordinator is None or FLAGS.process_id is None:
      raise SystemExit('vlalign: --num_processes > 1 needs --coordinator=host:port and '
                       '--process_id')
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                               heartbeat_timeout_seconds=_heartbeat_s())
  elif (env := _cluster_env()) is not None:
    logging.info('multi-process %s environment detected: jax.distributed.initialize()', env)
    jax.distributed.initialize(heartbeat_timeout_seconds=_heartbeat_s())


def _heartbeat_s() -> int:
  """JAX's own peer heartbeat bound, kept above config.peer_timeout_s so that vlalign's
  one-line message (preemption.PeerWatchdog) comes first."""
  return int(max(100, FLAGS.config.peer_timeout_s + 60))


def main(argv) -> None:
  """Validates the config, then trains; user-facing errors end as one line (vlalign.errors)."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from vlalign import errors  # pylint: disable=g-import-not-at-top
  errors.handle_setup_signals()  # from here on a SIGTERM says so in one line
  for handler in pylogging.getLogger().handlers + pylogging.getLogger('absl').handlers:
    handler.addFilter(_QuietLibraries())
  with errors.exit_at_once_in_pods('vlalign'), errors.one_line('vlalign'):
    _run()


def _run() -> None:
  from vlalign import config_lib, errors  # pylint: disable=g-import-not-at-top
  # Fails in seconds with one line naming the field, before TF, devices or the workdir.
  config_lib.validate(FLAGS.config)
  errors.check_interrupted()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # keep tf.data on the CPU
  errors.check_interrupted()
  _maybe_init_distributed()
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:  # process 0 reports; the others speak up only for warnings
    logging.set_verbosity(logging.WARNING)
  from vlalign import train  # pylint: disable=g-import-not-at-top
  name = pathlib.Path(FLAGS['config'].config_filename.split(':')[0]).stem
  workdir = os.path.abspath(FLAGS.workdir or os.path.join('workdirs', name))
  os.makedirs(workdir, exist_ok=True)
  logging.info('config %s, workdir %s', FLAGS['config'].config_filename, workdir)
  train.train_and_evaluate(FLAGS.config, workdir)


if __name__ == '__main__':
  app.run(main, argv=cli.resolve_config_args(sys.argv), flags_parser=cli.parse_flags)
