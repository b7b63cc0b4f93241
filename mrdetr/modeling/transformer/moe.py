"""Mixture-of-Experts FFNs of Mr. DETR++: route-aware decoder MoE and token-choice encoder MoE.

Both replace a transformer FFN ``fc2(relu(fc1(x)))`` (no residual, no norm: the caller's layer adds
them). Dispatch is vectorised: tokens are flattened, the router picks ``top_k`` experts per token,
gates are the softmax probabilities of the chosen experts renormalised to sum to 1, and each expert
runs once on the gathered tokens routed to it (a loop over experts, none over tokens).

Capacity: with ``capacity_factor`` set, expert ``e`` accepts at most
``ceil(capacity_factor * T * top_k / E)`` assignments (T = tokens of the call). Assignments are
served in priority order -- every token's first choice before any second choice, then token order --
and an overflowing assignment is dropped: it contributes nothing, the remaining gates of that token
are *not* renormalised, and a token that loses every assignment passes through the caller's residual
connection (plus the shared expert when ``shared_expert=True``). ``capacity_factor=None`` never drops.

Load balancing (Switch Transformer): ``aux = E * sum_e f_e * P_e`` with ``f_e`` the fraction of the
T * top_k assignments (before capacity dropping) that chose expert ``e`` and ``P_e`` the mean router
probability of ``e`` over the tokens; it is 1 for perfectly balanced routing. Each training forward
stores ``aux_loss_weight * aux`` on the module; :func:`collect_moe_aux_losses` sums and clears them.
A forward re-run by activation checkpointing during backward stores nothing (see ``checkpointing``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from functools import partial

import torch
from torch import Tensor, nn

from ...layers import FFN
from ..routes import Route
from .checkpointing import is_recomputing

ROUTERS = ("token", "route", "token+route")
MOE_AUX_LOSS_KEY = "loss_moe_aux"


class MoEFFN(nn.Module):
    """Token-choice top-k Mixture-of-Experts FFN (used on the encoder's coarse levels).

    Args:
        embed_dim: token width d.
        hidden_dim: hidden width of every expert.
        num_experts: number of routed experts E.
        top_k: experts per token (1 <= top_k <= E).
        shared_expert: add a dense FFN applied to every token (not gated) to the routed output.
        capacity_factor: per-expert capacity multiplier (see module docstring), or None for no limit.
        aux_loss_weight: weight of the load-balancing loss stored after each training forward
            (0 disables it).
        dropout: dropout inside each expert.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        hidden_dim: int = 2048,
        num_experts: int = 4,
        top_k: int = 2,
        shared_expert: bool = False,
        capacity_factor: float | None = None,
        aux_loss_weight: float = 0.01,
        dropout: float = 0.0,
    ):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"{type(self).__name__}: num_experts must be >= 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(
                f"{type(self).__name__}: top_k must be in [1, num_experts={num_experts}], got {top_k}"
            )
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(
                f"{type(self).__name__}: capacity_factor must be > 0 or None, got {capacity_factor}"
            )
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.aux_loss_weight = aux_loss_weight
        self.experts = nn.ModuleList(
            FFN(embed_dim=embed_dim, hidden_dim=hidden_dim, dropout=dropout)
            for _ in range(num_experts)
        )
        self.shared = (
            FFN(embed_dim=embed_dim, hidden_dim=hidden_dim, dropout=dropout)
            if shared_expert
            else None
        )
        self.router = self._make_router(embed_dim)
        self.aux_losses: list[Tensor] = []

    def _make_router(self, embed_dim: int) -> nn.Linear | None:
        return nn.Linear(embed_dim, self.num_experts)

    @property
    def last_aux_loss(self) -> Tensor | None:
        """The weighted balance loss of the most recent training forward (None if none is stored)."""
        return self.aux_losses[-1] if self.aux_losses else None

    def capacity(self, num_tokens: int) -> int | None:
        """Assignments each expert accepts for ``num_tokens`` tokens (None = unlimited)."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """Route every token.

        Args:
            x: [..., d] tokens.
            valid: [...] bool, False for tokens to skip (e.g. padding): they get a zero routed output
                and do not count for capacity or the balance loss. None = all valid.

        Returns:
            [..., d].
        """
        flat = x.reshape(-1, x.shape[-1])
        logits = self.router(flat)
        keep = None if valid is None else valid.reshape(-1)
        return self.dispatch(flat, logits, keep).view_as(x)

    def dispatch(self, x: Tensor, logits: Tensor, valid: Tensor | None = None) -> Tensor:
        """Top-k gating, capacity, expert evaluation and (in training) the balance loss.

        Args:
            x: [T, d] tokens.
            logits: [T, E] router logits.
            valid: [T] bool or None.

        Returns:
            [T, d] gated sum of the chosen experts (+ shared expert).
        """
        if valid is not None:
            x_in, logits = x[valid], logits[valid]
        else:
            x_in = x
        probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(-1)
        top_probs, top_idx = probs.topk(self.top_k, dim=-1)  # [T, k]
        gates = (top_probs / top_probs.sum(-1, keepdim=True)).to(x.dtype)
        num_tokens = x_in.shape[0]
        # Assignment order: all first choices (token order), then all second choices, ...
        expert_of = top_idx.t().reshape(-1)  # [k*T]
        token_of = torch.arange(num_tokens, device=x.device).repeat(self.top_k)
        gate_of = gates.t().reshape(-1)
        capacity = self.capacity(num_tokens)
        if capacity is not None:
            one_hot = nn.functional.one_hot(expert_of, self.num_experts)
            position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1  # rank within its expert
            kept = position < capacity
            expert_of = torch.where(kept, expert_of, expert_of.new_full((), -1))
        out = torch.zeros_like(x_in)
        for e, expert in enumerate(self.experts):
            sel = (expert_of == e).nonzero(as_tuple=True)[0]
            tok = token_of[sel]
            y = expert(x_in[tok]) * gate_of[sel, None]
            out = out.index_add(0, tok, y.to(out.dtype))
        if self.shared is not None:
            out = out + self.shared(x_in)
        if self.training and torch.is_grad_enabled() and self.aux_loss_weight > 0:
            # computed on a checkpointed re-run too (it must save the same tensors for backward as
            # the first forward), but stored only once
            aux = self.aux_loss_weight * switch_balance_loss(probs, top_idx)
            if not is_recomputing():
                self.aux_losses.append(aux)
        if valid is None:
            return out
        full = torch.zeros_like(x)
        return full.index_put((valid.nonzero(as_tuple=True)[0],), out)


class RouteAwareMoEFFN(MoEFFN):
    """Decoder FFN of Mr. DETR++: experts shared by the routes, routing aware of the route.

    Drop-in for ``RouteFFN`` via ``MultiRouteDecoder(ffn_factory=route_aware_moe_factory(...))``.
    A route listed in ``route_to_expert`` is routed deterministically: all its tokens go to that one
    expert with gate 1 and no other expert (nor the router) is evaluated; this is how PRIMARY can stay a
    plain dense FFN at inference. Other routes use the learned router:

    - ``"token"``: logits = ``W x + b`` (per token);
    - ``"route"``: logits = a learned vector per route (every token of a route gets the same experts);
    - ``"token+route"``: the sum of both (a linear router on ``[x, one_hot(route)]``).

    With ``num_experts=2``, ``route_to_expert={"primary": 0, "instruct": 0, "sep_ffn": 1}``,
    ``shared_expert=False`` this is exactly Mr. DETR's ``RouteFFN`` (``experts.0`` = ``primary``,
    ``experts.1`` = ``sep``; see :func:`route_ffn_to_moe_state_dict`). When every route is
    deterministic no router parameters are built, so the two layouts hold the same tensors.

    Args:
        router: ``"token"``, ``"route"`` or ``"token+route"``.
        route_to_expert: ``{route or route value: expert index}`` for deterministic routes, or None.
        **kwargs: see :class:`MoEFFN`.
    """

    def __init__(
        self,
        *,
        router: str = "token+route",
        route_to_expert: Mapping[Route | str, int] | None = None,
        **kwargs,
    ):
        if router not in ROUTERS:
            raise ValueError(f"RouteAwareMoEFFN: router must be one of {ROUTERS}, got {router!r}")
        if router == "route" and kwargs.get("capacity_factor") is not None:
            raise ValueError(
                "RouteAwareMoEFFN: router='route' sends every token of a route to the same experts, "
                f"so capacity_factor must be None (got {kwargs['capacity_factor']})"
            )
        self.router_type = router
        super().__init__(**kwargs)
        self.route_to_expert = _parse_route_map(route_to_expert, self.num_experts)
        # stored flat ([len(Route) * E]) so the transformer's xavier init of matrices keeps it at 0
        self.route_logits = (
            nn.Parameter(torch.zeros(len(Route) * self.num_experts)) if "route" in router else None
        )
        if set(self.route_to_expert) == set(Route):  # no route is learned: build no router
            self.router = None
            self.route_logits = None

    def _make_router(self, embed_dim: int) -> nn.Linear | None:
        return nn.Linear(embed_dim, self.num_experts) if "token" in self.router_type else None

    def router_logits(self, x: Tensor, route: Route) -> Tensor:
        """[T, d] tokens of one route -> [T, E] router logits."""
        logits = (
            self.router(x) if self.router is not None else x.new_zeros(x.shape[0], self.num_experts)
        )
        if self.route_logits is not None:
            table = self.route_logits.view(len(Route), self.num_experts)
            logits = logits + table[list(Route).index(route)].to(logits.dtype)
        return logits

    def forward(self, x: Tensor, route: Route) -> Tensor:  # type: ignore[override]
        """[B, Q, d] -> [B, Q, d] for the tokens of one decoder route."""
        expert = self.route_to_expert.get(route)
        if expert is not None:
            out = self.experts[expert](x)
            return out + self.shared(x) if self.shared is not None else out
        flat = x.reshape(-1, x.shape[-1])
        return self.dispatch(flat, self.router_logits(flat, route)).view_as(x)


def switch_balance_loss(probs: Tensor, top_idx: Tensor) -> Tensor:
    """Switch-Transformer load-balancing loss ``E * sum_e f_e * P_e``.

    Args:
        probs: [T, E] router probabilities.
        top_idx: [T, k] chosen experts.

    Returns:
        scalar (1 when routing is perfectly balanced; 0 for T = 0).
    """
    num_tokens, num_experts = probs.shape
    if num_tokens == 0:
        return probs.sum()
    counts = torch.zeros(num_experts, device=probs.device, dtype=probs.dtype)
    counts = counts.index_add(
        0, top_idx.reshape(-1), torch.ones_like(top_idx.reshape(-1), dtype=probs.dtype)
    )
    fraction = counts / top_idx.numel()
    return num_experts * (fraction * probs.mean(0)).sum()


def _parse_route_map(
    mapping: Mapping[Route | str, int] | None, num_experts: int
) -> dict[Route, int]:
    out: dict[Route, int] = {}
    for key, expert in (mapping or {}).items():
        try:
            route = key if isinstance(key, Route) else Route(key)
        except ValueError:
            raise ValueError(
                f"RouteAwareMoEFFN: route_to_expert key {key!r} is not a route; expected one of "
                f"{[r.value for r in Route]}"
            ) from None
        if not 0 <= int(expert) < num_experts:
            raise ValueError(
                f"RouteAwareMoEFFN: route_to_expert[{key!r}] = {expert} is not an expert index in "
                f"[0, {num_experts})"
            )
        out[route] = int(expert)
    return out


def _factory(cls: type[nn.Module], kwargs: dict) -> Callable[[], nn.Module]:
    try:
        inspect.signature(cls).bind(**kwargs)
        if cls is RouteAwareMoEFFN:
            inspect.signature(MoEFFN).bind(
                **{k: v for k, v in kwargs.items() if k not in ("router", "route_to_expert")}
            )
    except TypeError as exc:
        raise TypeError(f"{cls.__name__}: bad arguments {sorted(kwargs)}: {exc}") from None
    return partial(cls, **kwargs)


def route_aware_moe_factory(**kwargs) -> Callable[[], RouteAwareMoEFFN]:
    """A zero-argument builder of :class:`RouteAwareMoEFFN` for ``MultiRouteDecoder(ffn_factory=...)``
    (configs cannot pass a class positionally to ``functools.partial``)."""
    return _factory(RouteAwareMoEFFN, kwargs)


def moe_ffn_factory(**kwargs) -> Callable[[], MoEFFN]:
    """A zero-argument builder of :class:`MoEFFN` for ``DeformableEncoder(moe_factory=...)``."""
    return _factory(MoEFFN, kwargs)


def moe_modules(model: nn.Module) -> list[MoEFFN]:
    """Every MoE FFN inside ``model``."""
    return [m for m in model.modules() if isinstance(m, MoEFFN)]


def reset_moe_aux_losses(model: nn.Module) -> None:
    """Drop stored balance losses (the model calls it at the start of each training step, so that
    losses of a forward whose loss was never collected do not leak into the next step)."""
    for m in moe_modules(model):
        m.aux_losses.clear()


def collect_moe_aux_losses(model: nn.Module) -> dict[str, Tensor]:
    """Sum (and clear) the weighted balance losses stored by every MoE FFN since the last call.

    Returns:
        ``{"loss_moe_aux": scalar}`` (already weighted by each module's ``aux_loss_weight``; summed over
        modules, layers and routes), or ``{}`` when the model has no MoE or nothing was stored.
    """
    terms = []
    for m in moe_modules(model):
        terms.extend(m.aux_losses)
        m.aux_losses.clear()
    if not terms:
        return {}
    return {MOE_AUX_LOSS_KEY: torch.stack([t.float() for t in terms]).sum()}


def route_ffn_to_moe_state_dict(
    state_dict: Mapping[str, Tensor],
    *,
    primary_expert: int = 0,
    sep_expert: int = 1,
) -> dict[str, Tensor]:
    """Rename Mr. DETR ``RouteFFN`` weights (our layout) to the ``RouteAwareMoEFFN`` layout.

    ``*.ffn.primary.*`` -> ``*.ffn.experts.{primary_expert}.*`` and ``*.ffn.sep.*`` ->
    ``*.ffn.experts.{sep_expert}.*``; every other key is unchanged. Official checkpoints go through
    ``mrdetr.checkpoint.convert_official_to_ours`` first. Router, extra experts and encoder MoE
    weights are not in a Mr. DETR checkpoint and keep their fresh initialisation.
    """
    renames = {
        ".ffn.primary.": f".ffn.experts.{primary_expert}.",
        ".ffn.sep.": f".ffn.experts.{sep_expert}.",
    }
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        for old, new in renames.items():
            if old in key:
                key = key.replace(old, new, 1)
                break
        out[key] = value
    return out
