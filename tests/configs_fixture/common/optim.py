"""Base optimizer config."""

optimizer = dict(lr=2e-4, weight_decay=1e-4, betas=[0.9, 0.999])
