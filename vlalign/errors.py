"""User-facing errors: the types main and every tool turn into one line on stderr and a non-zero
exit (no traceback), and the SIGTERM / SIGINT handling of the setup phase.

A user-facing error is a bad config, bad or missing data, a checkpoint that does not fit or
does not read, a locked workdir, a lost peer process or non-finite numbers; anything else is a
bug and keeps its traceback.
"""

import contextlib
import os
import signal
import sys
import traceback
from typing import Iterator


class SetupInterrupted(Exception):
  """SIGTERM / SIGINT arrived before training started: nothing to save."""


def user_errors() -> tuple[type[BaseException], ...]:
  """The exception types that mean bad input or state, not a bug (imported lazily: they live
  in modules that import JAX / TensorFlow)."""
  from vlalign import checkpoint, config_lib, workdir_lock  # pylint: disable=g-import-not-at-top
  from vlalign.data.spec import DataError  # pylint: disable=g-import-not-at-top
  from vlalign.weights.common import WeightsError  # pylint: disable=g-import-not-at-top
  types = (config_lib.ConfigError, DataError, WeightsError, checkpoint.CheckpointMismatchError,
           checkpoint.CheckpointUnreadableError, workdir_lock.WorkdirLockedError,
           FloatingPointError, FileNotFoundError, NotADirectoryError, PermissionError)
  tf = sys.modules.get('tensorflow')
  if tf is not None:  # a missing or unreadable gs:// / local path read through tf.io.gfile
    types += (tf.errors.NotFoundError, tf.errors.PermissionDeniedError)
  return types


_pending = []  # the name of a signal received during setup


def _record(signum, frame) -> None:
  """Setup's handler: records the signal (raising here could land inside any library's broad
  `except`, e.g. logging's); a second one ends the process at once with one line."""
  del frame
  name = signal.Signals(signum).name
  if _pending:
    os.write(2, f'vlalign: second {name} during setup: exiting at once\n'.encode())
    os._exit(1)  # pylint: disable=protected-access
  _pending.append(name)


def handle_setup_signals() -> None:
  """SIGTERM / SIGINT during setup (imports, validation, data checks, restore) are recorded and
  raised as SetupInterrupted at the next `check_interrupted`; the train loop installs its own
  handler, which checkpoints."""
  for sig in (signal.SIGTERM, signal.SIGINT):
    try:
      signal.signal(sig, _record)
    except ValueError:  # not the main thread
      pass


def pending_signal() -> str:
  """The signal recorded during setup ('' when none): the train loop starts with it pending."""
  return _pending[0] if _pending else ''


def check_interrupted() -> None:
  """SetupInterrupted when a signal arrived during setup (called between setup stages)."""
  if _pending:
    raise SetupInterrupted(_pending[0])


@contextlib.contextmanager
def one_line(prog: str) -> Iterator[None]:
  """Turns user-facing errors into `prog: message` on stderr and exit status 1, and a setup
  interruption into one line and exit status 0 (the same command resumes)."""
  try:
    yield
  except SetupInterrupted as e:
    print(f'{prog}: {e} received during setup, before any training step: nothing to save; '
          f'exiting. Start the same command again to run.', file=sys.stderr, flush=True)
    raise SystemExit(0) from None
  except user_errors() as e:
    message = str(e) if isinstance(e, (ValueError, RuntimeError, FloatingPointError)) else (
        f'{type(e).__name__}: {str(e).strip()}')
    raise SystemExit(f'{prog}: {message}') from None


# What a collective's error says when the process at the other end is gone.
_PEER_GONE = ('Connection closed by peer', 'Connection reset by peer', 'heartbeat timeout',
              'Socket closed', 'Broken pipe')


@contextlib.contextmanager
def exit_at_once_in_pods(prog: str) -> Iterator[None]:
  """Multi-process runs: an error that is not a user-facing one (a collective whose peer died,
  or a bug) ends the process at once with status 1: one line for a lost peer, the traceback
  otherwise. Raising on would run JAX's shutdown, which waits at a barrier for the dead peer
  until the coordination service aborts this process with a C++ stack trace."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    jax = sys.modules.get('jax')
    if jax is None or jax.process_count() <= 1:
      raise
    where = f'{prog}: process {jax.process_index()} of {jax.process_count()}'
    text = str(e)
    first = (text.strip().splitlines() or [''])[0]
    if any(p in text for p in _PEER_GONE):
      msg = (f'{where}: a collective failed: a peer process died or hangs ({first}); exiting '
             f'without a checkpoint (the run resumes from its last one)')
    else:
      traceback.print_exc()
      msg = (f'{where}: {type(e).__name__}: {first}; exiting at once (an ordinary exit would '
             f'wait for every peer at JAX\'s shutdown barrier)')
    exit_now(msg)


def exit_now(msg: str) -> None:
  """Prints `msg` on stderr and ends the process with status 1 at once (no cleanup: other
  threads may wait in a collective or in JAX's shutdown barrier, which nothing else ends)."""
  print(msg, file=sys.stderr, flush=True)
  os._exit(1)  # pylint: disable=protected-access


def check_tfds(name: str, data_dir: str, field: str):
  """The TFDS builder of `name` when its data is prepared in `data_dir`; DataError naming
  `field` when TFDS does not know the name or the data is not there."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vlalign.data.spec import DataError  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(f'{field}: TFDS has no dataset named {name!r}') from None
  if not builder.is_prepared():
    where = data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
    raise DataError(f'{field}: TFDS dataset {name!r} is not prepared in {where} (prepare it '
                    f'with `tfds build {name} --data_dir=...` and set config.data.tfds_data_dir)')
  return builder
