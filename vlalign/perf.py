"""Step FLOPs, model FLOPs utilisation (MFU) and profiler traces for the training loop.

FLOPs per step are XLA's cost analysis of the compiled, partitioned train step: the work one
device does per step (forward, backward and optimizer update). MFU = that figure x steps per
second / the device's peak FLOP/s. The peak comes from `config.peak_flops_per_device` or, for
bfloat16 compute on a known accelerator, from the vendor's dense bf16 figure below; elsewhere
(CPUs, float32) MFU is not logged and the log says why.
"""

import logging
import os
from typing import Any

import jax

# Dense (no sparsity) bfloat16 peak FLOP/s per device, from the vendors' data sheets. Matched as
# lower-case substrings of jax.Device.device_kind, first match wins.
BF16_PEAK_FLOPS = (
    ('h200', 989e12),
    ('h100', 989e12),   # SXM; the PCIe card is 756e12: set config.peak_flops_per_device
    ('a100', 312e12),
    ('tpu v5p', 459e12),
    ('tpu v5 lite', 197e12),
    ('tpu v5e', 197e12),
    ('tpu v4', 275e12),
    ('tpu v6', 918e12),
)


def peak_flops_per_device(config, device_kind: str | None = None) -> tuple[float, str]:
  """(peak FLOP/s of one device, where it came from); 0.0 when unknown. `device_kind` defaults
  to that of jax.devices()[0]."""
  if config.peak_flops_per_device:
    return float(config.peak_flops_per_device), 'config.peak_flops_per_device'
  kind = device_kind or jax.devices()[0].device_kind
  if config.model.compute_dtype != 'bfloat16':
    return 0.0, (f'no table peak for compute_dtype={config.model.compute_dtype} on {kind!r}; '
                 'set config.peak_flops_per_device')
  for key, peak in BF16_PEAK_FLOPS:
    if key in kind.lower():
      return peak, f'bf16 peak of {kind!r}'
  return 0.0, f'peak FLOP/s of {kind!r} unknown; set config.peak_flops_per_device'


def compiled_flops(compiled: Any) -> float:
  """FLOPs of one call of a compiled (per-device, partitioned) computation; 0.0 if unknown."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get('flops', 0.0))


def perf_metrics(flops_per_step: float, steps_per_sec: float, peak: float) -> dict[str, float]:
  """Scalars for the metrics log: per-device FLOPs per step, achieved FLOP/s and MFU."""
  out = {'perf/flops_per_device_step': flops_per_step,
         'perf/gflops_per_sec_per_device': flops_per_step * steps_per_sec / 1e9}
  if peak:
    out['train/mfu'] = flops_per_step * steps_per_sec / peak
  return out


class Profiler:
  """Captures a jax.profiler trace of steps [start, start + num) into workdir/profile
  (TensorBoard's profile plugin reads it); inactive when start is 0."""

  def __init__(self, workdir: str, start: int, num: int):
    self.dir = os.path.join(workdir, 'profile')
    self.start, self.stop = start, start + num
    self.active = False

  def before_step(self, step: int) -> None:
    if self.start and step == self.start:
      jax.profiler.start_trace(self.dir)
      self.active = True
      logging.info('profiling steps %d..%d into %s', self.start, self.stop - 1, self.dir)

  def after_step(self, step: int, state: Any) -> None:
    if self.active and step + 1 >= self.stop:
      self.close(state)

  def close(self, state: Any = None) -> None:
    if self.active:
      if state is not None:
        jax.block_until_ready(state)  # the traced steps' device work belongs in the trace
      jax.profiler.stop_trace()
      self.active = False
      logging.info('profile written to %s (tensorboard --logdir %s)', self.dir, self.dir)
