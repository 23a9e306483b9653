"""A source with no usable record: training stops within config.data.max_wait_seconds with one
line naming the source and its skip counts, and signals are honoured while waiting."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from vlalign import config_lib
from vlalign.data import fetcher, pipeline, sources
from vlalign.data.text import WordpieceTokenizer


def _iterator(small_dataset, **kw):
  d = config_lib.base_config().data
  d.global_batch, d.image_size, d.resize_size, d.max_len, d.shuffle_buffer = 4, 32, 36, 16, 0
  d.update(kw)
  spec = f'tfrecord:{small_dataset["train"]["studio"]}'
  src = sources.resolve(spec, d)
  tok = WordpieceTokenizer(small_dataset['vocab'], 16)
  return pipeline.TrainIterator(d, [src], tok, seed=0), spec


def test_no_usable_record_stops_in_bounded_time_naming_the_source(small_dataset):
  """A typo in data.image_key: every record is missing_image, read in an endless loop. (The
  Python reader: the native one's graph takes 1-5 s to start on a shared 2-core host, longer
  than this wait; the stall is the fetcher's, whichever reader.)"""
  it, spec = _iterator(small_dataset, image_key='imag', max_wait_seconds=1.5,
                       tfrecord_reader='python')
  t0 = time.monotonic()
  with pytest.raises(fetcher.DataStall) as err:
    next(it)
  assert 1.5 <= time.monotonic() - t0 < 15
  msg = str(err.value)
  assert msg.startswith('config.data.sources: no batch in') and repr(spec) in msg
  assert ' 0 usable, skipped {\'missing_image\': ' in msg and '\n' not in msg
  read = it.monitors[0].counts
  assert read[0] == 0 and read[4] > 300  # past the 300 records of the source: it loops
  thread = it._it._thread  # pylint: disable=protected-access
  it.close()
  assert not thread.is_alive()  # the readers stopped: nothing keeps spinning after the stall


def test_sigterm_while_waiting_for_data_is_honoured(small_dataset):
  """The main thread waits in short slices: a SIGTERM handler runs at once and the wait ends."""
  it, _ = _iterator(small_dataset, image_key='imag', max_wait_seconds=600.0)
  got = []
  old = signal.signal(signal.SIGTERM, lambda *_: got.append(time.monotonic()))
  try:
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    t0 = time.monotonic()
    assert it.next_batch(lambda: bool(got)) is None
    assert got and time.monotonic() - got[0] < 1.0 and time.monotonic() - t0 < 10
  finally:
    signal.signal(signal.SIGTERM, old)
    it.close()


def test_good_source_is_unaffected_by_the_fetcher(small_dataset):
  it, _ = _iterator(small_dataset, max_wait_seconds=60.0)
  batches = [next(it) for _ in range(3)]
  assert all(b['image'].shape == (4, 32, 32, 3) for b in batches)
  assert it.monitors[0].counts[0] >= 12
  it.close()


def test_main_stops_with_one_line_and_exit_1(tmp_path, cache):
  """Through the entry point: the typo'd image_key run ends in bounded time, exit status 1, and
  its last line names the source and the skip counts."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, JAX_PLATFORMS='cpu', VLALIGN_DATA_DIR=str(cache))
  t0 = time.monotonic()
  proc = subprocess.run([sys.executable, '-m', 'vlalign.main', '--config=configs/demo.py:tiny',
                         f'--workdir={tmp_path}', '--config.data.image_key=imag',
                         '--config.data.max_wait_seconds=3',
                         '--config.data.tfrecord_reader=python'], cwd=root, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("vlalign: config.data.sources: no batch in 3 s") and \
      "'embedded': " in last and "0 usable, skipped {'missing_image': " in last, last
  assert time.monotonic() - t0 < 200


def test_fetcher_passes_items_and_the_end_through_and_stalls_on_a_silent_iterator():
  monitor = sources.Monitor('tfrecord:/x/*')
  f = fetcher.Fetcher(iter([1, 2]), [monitor], max_wait=0.5)
  assert (f.get(), f.get()) == (1, 2)
  for _ in range(2):  # the end stays the end (no stall after it)
    with pytest.raises(StopIteration):
      f.get()
  f.close()
  silent = threading.Event()
  stuck = fetcher.Fetcher(iter(lambda: silent.wait() and 0, 1), [monitor], max_wait=0.3)
  monitor.see(4)
  with pytest.raises(fetcher.DataStall, match=r"'tfrecord:/x/\*': 1 records read, 0 usable, "
                                              r"skipped \{'missing_image': 1\}"):
    stuck.get()
  silent.set()
  stuck.close()


def test_data_state_of_a_checkpoint_with_fewer_reasons_is_padded():
  old_width = 2 + 20  # position, good, then the 20 reasons of the first checkpoint format
  v = [7, 3] + [11, 9] + [0, 1] + [0] * (old_width - 4) + [5, 4] + [0] * (old_width - 2)
  state = pipeline.DataState.from_vector(v, 2, version=2)
  assert state.positions == [11, 5] and state.good == [9, 4] and (state.examples,
                                                                  state.batches) == (7, 3)
  assert state.skipped[0][1] == 1 and len(state.skipped[1]) == pipeline.NUM_REASONS
  assert state.unplaced() == [0, 1]  # format 2 positions carry no group
  state.groups, state.in_group = [3, 1], [2, 5]
  assert pipeline.DataState.from_vector(state.to_vector(), 2) == state
  with pytest.raises(ValueError, match='does not hold 2 sources'):
    pipeline.DataState.from_vector(v[:-1], 2, version=2)
