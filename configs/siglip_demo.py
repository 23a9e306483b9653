"""SigLIP on the demo data: configs/demo.py's towers, data and schedule with the sigmoid loss.

Logit scale s initialised at 10 (temperature 0.1, learned as log s) and a learnable logit bias at
-10, the SigLIP initialisation; the loss goes round the device ring (loss.impl='blockwise', b x b
logits per device). get_config(arg) takes demo.py's args (`tiny` for tests); with none it
uses demo.py's `v48` towers, the ones its rows in docs/BENCHMARKS.md were measured with.
"""

import os

from vlalign import config_lib


def _load_demo():
  """configs/demo.py, loaded by path like any config file."""
  return config_lib.load_config_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'demo.py'))


OPTIONS = ('conv', 'v48', 'tiny')  # configs/demo.py's, passed on to it


def get_config(arg: str = ''):
  """The demo config with the SigLIP loss and initialisation."""
  args = config_lib.parse_variants(arg, OPTIONS, __file__)
  # With no option: v48, the towers its BENCHMARKS rows used.
  config = _load_demo().get_config(','.join(sorted(args)) or 'v48')
  config.loss.update(name='sigmoid', impl='blockwise')
  config.model.temperature_init = 0.1
  config.model.bias_init = -10.0
  return config_lib.finish(config)
