"""The logit scale as DeCLIP and ALBEF/ViCHA treat it: value clamps that keep the gradient.

`capped`: the forward value is min(s, cap) but the gradient is that of s (a straight-through
clamp, as DeCLIP's in-place clamp of the exp's value). A plain `jnp.minimum(s, cap)` would give
the log-scale parameter a zero gradient past the cap, and with no weight decay on it nothing
would bring it back.

`clamp_params`: the log-scale parameter projected into config.optimizer.log_scale_range at
init (DeCLIP and ALBEF clamp the parameter before every forward; after the first step the
optimizer's projection, optim.project_log_scale, keeps it in range).
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp


def capped(scale: jnp.ndarray, cap: float) -> jnp.ndarray:
  """min(scale, cap) in the forward pass, the identity's gradient in the backward pass."""
  return scale + jax.lax.stop_gradient(jnp.minimum(scale, cap) - scale)


def clamp_params(params: Any, bounds: Sequence[float]) -> Any:
  """params with params['log_scale'] clipped into bounds (unchanged for empty bounds)."""
  if not bounds or 'log_scale' not in params:
    return params
  lo, hi = bounds
  return {**params, 'log_scale': jnp.clip(params['log_scale'], lo, hi)}
