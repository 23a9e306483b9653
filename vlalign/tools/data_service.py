"""A tf.data service dispatcher or worker, for training with config.data.service_address.

python -m vlalign.tools.data_service dispatcher --port=5050
python -m vlalign.tools.data_service worker --dispatcher=HOST:5050 --port=5051 [--host=NAME]

Training hosts set data.service_address=HOST:5050. A worker tells the dispatcher it is reached
at --host:--port (default localhost: set the machine's name when trainers run elsewhere). Each
prints one line when it serves, then a progress line every --report_s seconds (workers known to
the dispatcher; tasks a worker runs), and exits 0 on SIGTERM or SIGINT.
"""

import signal
import sys
import threading

import tensorflow as tf
import tensorflow_text  # pylint: disable=unused-import  (registers its ops: the tokenizers' graphs)
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer('port', 5050, 'port this server listens on')
flags.DEFINE_string('dispatcher', '', 'worker: the dispatcher\'s host:port')
flags.DEFINE_string('host', 'localhost', 'worker: the name trainers reach this machine by')
flags.DEFINE_float('report_s', 60.0, 'seconds between progress lines')
flags.DEFINE_integer('heartbeat_ms', 1000, 'worker: ms between its calls to the dispatcher (a '
                     'new job reaches the worker with the next one)')

_service = tf.data.experimental.service


def _say(line: str) -> None:
  """One line on stdout, now."""
  print(line, flush=True)


def dispatcher(port: int) -> tuple[object, callable]:
  """A started dispatcher and its progress line."""
  server = _service.DispatchServer(_service.DispatcherConfig(port=port))
  _say(f'data_service: dispatcher serving at {server.target} (trainers: '
       f'data.service_address=<this host>:{port})')
  return server, lambda: f'{server._num_workers()} worker(s) registered'  # pylint: disable=protected-access


def worker(port: int, dispatcher_address: str, host: str, heartbeat_ms: int
           ) -> tuple[object, callable]:
  """A started worker registered with `dispatcher_address` and its progress line."""
  if not dispatcher_address:
    raise app.UsageError('worker needs --dispatcher=HOST:PORT')
  server = _service.WorkerServer(_service.WorkerConfig(
      dispatcher_address=dispatcher_address.split('://')[-1], port=port,
      worker_address=f'{host}:%port%', heartbeat_interval_ms=heartbeat_ms))
  _say(f'data_service: worker serving at {host}:{port} for dispatcher {dispatcher_address}')
  return server, lambda: f'{server._num_tasks()} task(s) running'  # pylint: disable=protected-access


def main(argv: list[str]) -> None:
  if len(argv) != 2 or argv[1] not in ('dispatcher', 'worker'):
    raise app.UsageError('usage: data_service dispatcher|worker [--port=...] [--dispatcher=...]')
  stop = threading.Event()
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *unused: stop.set())
  if argv[1] == 'dispatcher':
    server, progress = dispatcher(FLAGS.port)
  else:
    server, progress = worker(FLAGS.port, FLAGS.dispatcher, FLAGS.host, FLAGS.heartbeat_ms)
  while not stop.wait(FLAGS.report_s):
    _say(f'data_service: {argv[1]}: {progress()}')
  _say(f'data_service: {argv[1]} stopping (signal)')
  del server
  sys.exit(0)


if __name__ == '__main__':
  app.run(main)
