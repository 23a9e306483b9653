"""The logit-scale clamps of DeCLIP and ALBEF / ViCHA keep the parameter's gradient and keep
the parameter in range (methods/logit_scale.py, optim.project_log_scale)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.methods import method_checks
from vlalign import config_lib, optim
from vlalign.methods import declip, logit_scale


def test_capped_scale_keeps_the_gradient_past_the_cap():
  theta = jnp.float32(5.5)  # exp(5.5) = 245 > 100
  f = lambda t: 2.0 * logit_scale.capped(jnp.exp(t), 100.0)
  assert float(f(theta)) == pytest.approx(200.0)
  # d/dtheta as DeCLIP's in-place clamp: 2 * exp(theta), where jnp.minimum gives 0 (the trap).
  assert float(jax.grad(f)(theta)) == pytest.approx(2.0 * math.exp(5.5), rel=1e-5)
  assert float(jax.grad(lambda t: 2.0 * jnp.minimum(jnp.exp(t), 100.0))(theta)) == 0.0
  assert float(jax.grad(f)(jnp.float32(2.0))) == pytest.approx(2.0 * math.exp(2.0), rel=1e-5)


@pytest.mark.parametrize('bounds,u', [((3.0, 6.0), 10.0), ((3.0, 6.0), -10.0),
                                      ((math.log(2.0), math.log(1000.0)), 50.0)])
def test_projection_keeps_log_scale_in_range_and_leaves_the_rest(bounds, u):
  params = {'log_scale': jnp.float32(4.0), 'w': jnp.ones((2, 2))}
  updates = {'log_scale': jnp.float32(u), 'w': jnp.full((2, 2), 0.5)}
  tx = optim.project_log_scale(*bounds)
  out, _ = tx.update(updates, tx.init(params), params)
  new = jax.tree.map(lambda p, d: p + d, params, out)
  assert float(new['log_scale']) == pytest.approx(bounds[1] if u > 0 else bounds[0], abs=1e-6)
  np.testing.assert_array_equal(out['w'], updates['w'])


def test_log_scale_range_is_validated():
  config = config_lib.base_config()
  config.optimizer.log_scale_range = (6.0, 3.0)
  with pytest.raises(config_lib.ConfigError, match='optimizer.log_scale_range'):
    config_lib._validate_loss_and_optimizer(config)


def test_declip_scale_has_a_gradient_past_the_cap():
  """The whole DeCLIP objective at log_scale 5.5 (scale capped at 100): the parameter's
  gradient is not zero. (tests/methods/test_recipes.py checks the tiny run's temperature stays
  within [1/100, e^-3] through main: the log-scale clamped to [3, 6] at init and every step.)"""
  config = method_checks.config_for('declip')
  config.optimizer.log_scale_range = (3.0, 6.0)
  run = method_checks.Run(config, 1)
  # Init clamps log(1 / 0.07) = 2.66 up to 3, as DeCLIP's clamp before the first step.
  assert float(run.state.params['log_scale']) == pytest.approx(3.0)
  batch = method_checks.batches('declip', 1)[0]
  params = {**run.state.params, 'log_scale': jnp.float32(5.5)}
  objective = declip.make_objective(config, run.model, run.mesh)
  loss = lambda p: objective(p, run.state.model_state, run.state.extra, batch,
                             jax.random.key(0))[0]
  grad = jax.jit(jax.grad(loss))(params)
  assert abs(float(grad['log_scale'])) > 1e-3  # exactly zero with minimum(exp, 100)
