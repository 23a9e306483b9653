"""Metric writers (TensorBoard via clu, plus metrics.jsonl) and console progress."""

import json
import os
import time
from typing import Any, Mapping

import jax
from clu import metric_writers


class JsonlWriter(metric_writers.interface.MetricWriter):
  """Appends one JSON object per written step: {"step": s, "<name>": value, ...}."""

  def __init__(self, path: str):
    self._path = path

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {'step': int(step)}
    row.update({k: float(v) for k, v in scalars.items()})
    with open(self._path, 'a') as f:
      f.write(json.dumps(row) + '\n')

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def make_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + metrics.jsonl on process 0; logging only elsewhere."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(workdir, just_logging=True)
  tb = metric_writers.create_default_writer(workdir, asynchronous=False)
  return metric_writers.MultiWriter([tb, JsonlWriter(os.path.join(workdir, 'metrics.jsonl'))])


class Progress:
  """Console line with step, loss, steps/s and ETA."""

  def __init__(self, total_steps: int, start_step: int):
    self.total, self.start = total_steps, start_step
    self.t0 = time.time()
    self.last_t, self.last_step = self.t0, start_step

  def rate(self, step: int) -> float:
    """Steps per second since the previous call."""
    now = time.time()
    r = (step - self.last_step) / max(now - self.last_t, 1e-9)
    self.last_t, self.last_step = now, step
    return r

  def line(self, step: int, steps_per_sec: float, metrics: Mapping[str, float]) -> str:
    """Human-readable progress line."""
    eta = (self.total - step) / max(steps_per_sec, 1e-9)
    return (f'step {step}/{self.total} ({100 * step / self.total:.0f}%) '
            f'loss {metrics.get("train/loss", float("nan")):.4f} | '
            f'{steps_per_sec:.2f} steps/s | elapsed {time.time() - self.t0:.0f}s | '
            f'ETA {eta / 60:.1f} min')
