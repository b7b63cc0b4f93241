"""Variant base: imports the common bases four levels up, as projects/<variant>/configs/*.py do."""

from ....common.model import model
from ....common.optim import optimizer  # noqa: F401 - re-exported config node
from ....common.train import train

train.output_dir = "./output/v_base"
model.transformer.decoder.num_layers = 3
