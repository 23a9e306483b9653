"""Standalone evaluation of a workdir's checkpoint:

  python -m vlalign.evaluate --workdir=workdirs/demo [--checkpoint=STEP] [--config=configs/demo.py]

Restores the newest checkpoint (or STEP) of the model the run's <workdir>/config.json (or
--config, with any --config.field overrides) builds, runs the configured
evaluators (`config.evals`) on the held-out split, logs the numbers and writes them to
<workdir>/eval/heldout_step<STEP>.json (the training run's own final numbers stay in
eval/heldout.json). Config files are Python and run as code: only load configs you trust.
"""

import json
import logging as pylogging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,wrong-import-position

from vlalign import cli  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def _define_flags() -> None:
  cli.define_config_flag(sys.argv, 'Config file (`path.py[:arg]`) instead of the workdir\'s '
                         'config.json; --config.<field>=<value> overrides either.')
  flags.DEFINE_string('workdir', None, 'The training workdir (its config.json and checkpoints/ '
                      'are read).')
  flags.DEFINE_integer('checkpoint', None, 'Step to evaluate (default: the newest).')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.workdir is None:
    raise app.UsageError('--workdir is required')
  for handler in pylogging.getLogger().handlers + pylogging.getLogger('absl').handlers:
    handler.addFilter(lambda r: r.levelno >= pylogging.WARNING or '/orbax/' not in r.pathname)
  from vlalign import errors, inference, train  # pylint: disable=g-import-not-at-top
  with errors.one_line('vlalign.evaluate'):  # user-facing errors: one line, exit 1
    config = inference.resolve_config(FLAGS.config, os.path.abspath(FLAGS.workdir))
    step, results = train.evaluate_checkpoint(config, os.path.abspath(FLAGS.workdir),
                                              FLAGS.checkpoint)
  path = os.path.join(os.path.abspath(FLAGS.workdir), 'eval', f'heldout_step{step}.json')
  print(json.dumps({'step': step, **results}))
  logging.info('wrote %s', path)


if __name__ == '__main__':
  _define_flags()
  app.run(main, argv=cli.resolve_config_args(sys.argv), flags_parser=cli.parse_flags)
