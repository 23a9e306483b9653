"""Standalone evaluation of a workdir's checkpoint:

  python -m vlalign.evaluate --config=configs/demo.py --workdir=workdirs/demo [--checkpoint=STEP]

Restores the newest checkpoint (or STEP) of the model the config builds, runs the configured
evaluators (`config.evals`) on the held-out split, logs the numbers and writes them to
<workdir>/eval/heldout_step<STEP>.json (the training run's own final numbers stay in
eval/heldout.json). Config files are Python and run as code: only load configs you trust.
"""

import json
import logging as pylogging
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def _define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'Config file (`path.py` or `path.py:arg`).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training workdir (its checkpoints/ are read).')
  flags.DEFINE_integer('checkpoint', None, 'Step to evaluate (default: the newest).')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError('--config and --workdir are required')
  for handler in pylogging.getLogger().handlers + pylogging.getLogger('absl').handlers:
    handler.addFilter(lambda r: r.levelno >= pylogging.WARNING or '/orbax/' not in r.pathname)
  from vlalign import config_lib, errors, train  # pylint: disable=g-import-not-at-top
  with errors.one_line('vlalign.evaluate'):  # user-facing errors: one line, exit 1
    config_lib.validate(FLAGS.config)
    step, results = train.evaluate_checkpoint(FLAGS.config, os.path.abspath(FLAGS.workdir),
                                              FLAGS.checkpoint)
  path = os.path.join(os.path.abspath(FLAGS.workdir), 'eval', f'heldout_step{step}.json')
  print(json.dumps({'step': step, **results}))
  logging.info('wrote %s', path)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
