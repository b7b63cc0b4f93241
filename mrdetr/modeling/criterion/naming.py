"""Names of the loss terms of each route, read from the route table (``modeling/routes.py``).

Official names, D decoder layers, layer l = 0..D-1:

| route      | decoder layer l                    | proposal head | denoising (DINO/Align)            |
| ---------- | ---------------------------------- | ------------- | --------------------------------- |
| PRIMARY    | ``""`` for l = D-1, else ``_{l}``  | ``_enc``      | ``_dn`` / ``_dn_{l}``             |
| INSTRUCT   | ``_group_{l}``                     | ``_enc_o2m``  | ``_dn_o2m`` / ``_dn_o2m_{l}``     |
| SEP_FFN    | ``_sep_{l}``                       | (none)        | ``_dn_sep`` / ``_dn_sep_{l}``     |

The criterion and the weight-dict builders both name terms through these functions, so a weight dict
holds exactly the terms the criterion produces.
"""

from __future__ import annotations

from mrdetr.modeling.routes import Route, route_spec

__all__ = ["LOSS_TERMS", "dn_layer_suffix", "encoder_suffix", "layer_suffix"]

# The terms every supervised prediction set produces, before the suffix.
LOSS_TERMS = ("loss_class", "loss_bbox", "loss_giou")


def _indexed(suffix: str, layer: int, num_layers: int, index_final_layer: bool) -> str:
    if layer == num_layers - 1 and not index_final_layer:
        return suffix
    return f"{suffix}_{layer}"


def layer_suffix(route: Route, layer: int, num_layers: int) -> str:
    """Suffix of decoder layer ``layer`` (0-based) of ``num_layers`` on ``route``."""
    spec = route_spec(route)
    return _indexed(spec.suffix, layer, num_layers, spec.index_final_layer)


def encoder_suffix(route: Route) -> str:
    """Suffix of the loss terms of ``route``'s proposal head."""
    return route_spec(route).encoder_suffix


def dn_layer_suffix(route: Route, layer: int, num_layers: int) -> str:
    """Suffix of the denoising terms of decoder layer ``layer`` (0-based) of ``num_layers`` on ``route``:
    the final layer is unindexed on every route (``_dn``, ``_dn_o2m``, ``_dn_sep``)."""
    return _indexed(route_spec(route).dn_suffix, layer, num_layers, index_final_layer=False)
