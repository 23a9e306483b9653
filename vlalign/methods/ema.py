"""Momentum (EMA) copies of parameters: targets that follow the trained parameters slowly and get
no gradient of their own (MoCo / BriVL momentum encoders)."""

from typing import Any

import jax


def update(ema: Any, params: Any, momentum: float) -> Any:
  """m * ema + (1 - m) * params, leaf by leaf; `params` enter through stop_gradient, so nothing
  differentiated through the result reaches them."""
  params = jax.lax.stop_gradient(params)
  return jax.tree.map(lambda e, p: momentum * e + (1.0 - momentum) * p.astype(e.dtype), ema,
                      params)
