"""Loading a sibling config with LazyConfig.load_rel and a folder import."""

from mrdetr.config import LazyConfig

from .... import common
from ....common import train as train_module

model = LazyConfig.load_rel("base.py", "model")
model.hidden_dim = 16
train = train_module.train
optimizer = common.optim.optimizer
optimizer.lr = 1e-3
