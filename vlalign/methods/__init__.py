"""Training recipes ("methods"), one module each, looked up by config.method.name in METHODS.

The contract a method module fulfils is written in methods/base.py (validate, make_objective;
optionally init, extra_shardings, make_value_and_grad, data_needs); train.py and config_lib
use a method only through it. Shared pieces: bank.py (FIFO embedding bank), ema.py (momentum
parameters), logit_scale.py, data/views.py (extra views). zerovl.py holds ZeroVL's mixup and
decoupled accumulation, options of the plain 'clip' method (methods/clip.py).

Adding a recipe: its module here, its line in METHODS, its config file, its tests
(docs/METHODS.md, "Adding a recipe").
"""

from vlalign.methods import base, brivl, clip, declip, vicha

# name -> the method (explicit table, no import-time registration).
METHODS: dict[str, base.Method] = {
    name: base.from_module(name, module)
    for name, module in (('clip', clip), ('brivl', brivl), ('declip', declip), ('vicha', vicha))}


def get_method(name: str) -> base.Method:
  """The method for config.method.name."""
  if name not in METHODS:
    raise ValueError(f'config.method.name: {name!r} is not one of {sorted(METHODS)}')
  return METHODS[name]
