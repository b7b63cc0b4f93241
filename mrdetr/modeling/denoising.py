"""Contrastive denoising (DN) queries of Mr. DETR-DINO and Mr. DETR-Align (DINO-style).

In training, once per batch, noised copies of the ground truth are turned into extra decoder queries that
are prepended to the matching queries of **every** route (shared by PRIMARY, INSTRUCT and SEP_FFN):

- ``dn_number`` (100) is doubled (a positive and a negative copy) and divided by twice the largest
  number of GT boxes ``m`` of the batch: ``G = (2 * dn_number) // (2 * m)`` groups (at least 1);
  nothing is built when ``m == 0`` or ``dn_number <= 0``.
- Per image the ``P = 2 m G`` DN slots form ``2G`` blocks of ``m`` slots: block ``2g`` holds the positives
  of group ``g``, block ``2g + 1`` its negatives; slot ``t < n_i`` of a block is GT ``t`` of the image and
  the remaining slots stay empty (zero content, zero box logit).
- Label noise: each copy's class is replaced, with probability ``label_noise_ratio / 2``, by a uniform
  random class. Box noise: corners move by ``sign * u * box_noise_scale * (w/2, h/2, w/2, h/2)`` with
  ``u ~ U[0, 1)`` for positives and ``U[1, 2)`` for negatives, clamped to ``[0, 1]``.
- The self-attention mask (True = blocked): matching queries never see DN queries, and DN groups
  (``2m`` slots each) never see each other; DN queries see the matching queries.

Random draws follow the official order (label noise, new labels, box signs, box magnitudes) so that a
seeded CPU run consumes the random stream exactly like the official code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..structures import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid
from .matcher import MatchIndices, Targets
from .outputs import DNMeta, Predictions, RouteOutput

__all__ = [
    "ContrastiveDenoising",
    "DNMeta",
    "DNQueries",
    "denoising_attention_mask",
    "dn_match_indices",
    "instruct_attention_mask",
    "split_denoising",
]


@dataclass
class DNQueries:
    """DN decoder inputs of one batch, shared by every route.

    Attributes:
        content: [B, P, d] label embeddings of the noised classes (zeros in empty slots).
        box_logits: [B, P, 4] inverse-sigmoid of the noised cxcywh boxes (zeros in empty slots).
        attn_mask: [P + Q, P + Q] bool self-attention mask, True = blocked.
        meta: the slot layout.
    """

    content: Tensor
    box_logits: Tensor
    attn_mask: Tensor
    meta: DNMeta


def denoising_attention_mask(
    num_groups: int, single_padding: int, num_queries: int, device: torch.device | None = None
) -> Tensor:
    """Self-attention mask over ``[DN (P) ; matching (Q)]`` queries, True = blocked.

    Args:
        num_groups: G.
        single_padding: slots per group (2m).
        num_queries: Q matching queries.
        device: where to build it.

    Returns:
        [P + Q, P + Q] bool: rows ``P:`` x columns ``:P`` blocked; within the first P rows/columns,
        everything outside the block diagonal of ``single_padding``-sized groups blocked.
    """
    num_dn = num_groups * single_padding
    size = num_dn + num_queries
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[num_dn:, :num_dn] = True
    group = torch.arange(num_dn, device=device) // single_padding
    mask[:num_dn, :num_dn] = group[:, None] != group[None, :]
    return mask


def instruct_attention_mask(dn_mask: Tensor, num_dn: int, num_instruction_tokens: int) -> Tensor:
    """Mask of the INSTRUCT route's self-attention with DN queries.

    The instruction tokens are prepended to the keys only (``InstructiveSelfAttention`` computes no
    instruction rows), so the mask is ``[P + Q, I + P + Q]``: the first I columns are visible to the
    matching queries (rows ``P:``) and blocked for the DN queries; the rest is ``dn_mask``. Built from P
    and Q explicitly (the official code hard-codes "the last 900 queries", wrong for Q != 900).

    Args:
        dn_mask: [P + Q, P + Q] bool (True = blocked).
        num_dn: P.
        num_instruction_tokens: I.

    Returns:
        [P + Q, I + P + Q] bool.
    """
    rows = dn_mask.shape[0]
    instr = torch.zeros(rows, num_instruction_tokens, dtype=torch.bool, device=dn_mask.device)
    instr[:num_dn] = True
    return torch.cat((instr, dn_mask), dim=1)


def dn_match_indices(meta: DNMeta, targets: Targets) -> list[MatchIndices]:
    """Fixed ``(query, gt)`` pairs of the DN loss: the positive slots only.

    Query ``g * single_padding + t`` is paired with GT ``t`` (``t < n_i``) for every group g, groups
    first (official order). Negatives and empty slots are background.

    Args:
        meta: the DN layout of the batch.
        targets: B dicts with ``"labels"`` [n_i] (and ``"boxes"``).

    Returns:
        B pairs of int64 [G * n_i] tensors on the labels' device.
    """
    indices = []
    for t in targets:
        device = t["labels"].device
        n = int(t["labels"].shape[0])
        gt = torch.arange(n, dtype=torch.int64, device=device)
        offsets = (
            torch.arange(meta.num_groups, dtype=torch.int64, device=device) * meta.single_padding
        )
        query = (offsets[:, None] + gt[None, :]).flatten()
        indices.append((query, gt.repeat(meta.num_groups)))
    return indices


def split_denoising(output: RouteOutput, num_dn: int) -> tuple[RouteOutput, list[Predictions]]:
    """Split a route decoded on ``[DN (P) ; matching (Q)]`` queries into its two parts.

    Args:
        output: the route output over P + Q queries.
        num_dn: P.

    Returns:
        The matching part as a ``RouteOutput`` over Q queries, and the DN predictions of every layer
        ([B, P, C] logits, [B, P, 4] boxes).
    """
    matching = RouteOutput(
        layers=[Predictions(p.logits[:, num_dn:], p.boxes[:, num_dn:]) for p in output.layers],
        hidden=output.hidden[:, :, num_dn:],
        references=output.references[:, :, num_dn:],
        init_reference=output.init_reference[:, num_dn:],
    )
    dn = [Predictions(p.logits[:, :num_dn], p.boxes[:, :num_dn]) for p in output.layers]
    return matching, dn


class ContrastiveDenoising(nn.Module):
    """Builds the DN queries of a training batch and owns the DN label embedding.

    Args:
        num_classes: C (rows of ``label_enc``; noised labels are drawn from ``[0, C)``).
        embed_dim: d.
        dn_number: DN copies per GT budget before doubling (official 100); ``<= 0`` disables DN.
        label_noise_ratio: twice the probability that a copy's class is replaced.
        box_noise_scale: lambda of the box noise; 0 disables it.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        dn_number: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 0.4,
    ):
        super().__init__()
        if num_classes < 1 or embed_dim < 1:
            raise ValueError(
                "ContrastiveDenoising: num_classes and embed_dim must be >= 1, got "
                f"{num_classes}, {embed_dim}"
            )
        if not 0.0 <= label_noise_ratio <= 1.0 or box_noise_scale < 0:
            raise ValueError(
                "ContrastiveDenoising: label_noise_ratio must lie in [0, 1] and box_noise_scale "
                f"be >= 0, got {label_noise_ratio}, {box_noise_scale}"
            )
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.dn_number = dn_number
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.label_enc = nn.Embedding(num_classes, embed_dim)  # N(0, 1) init, as the official one

    def extra_repr(self) -> str:
        return (
            f"dn_number={self.dn_number}, label_noise_ratio={self.label_noise_ratio}, "
            f"box_noise_scale={self.box_noise_scale}"
        )

    def layout(self, targets: Targets) -> DNMeta | None:
        """Groups and slots for these targets, or None when no DN query is built."""
        max_gt = max((int(t["labels"].shape[0]) for t in targets), default=0)
        if self.dn_number <= 0 or max_gt == 0:
            return None
        num_groups = max((2 * self.dn_number) // (2 * max_gt), 1)
        return DNMeta(single_padding=2 * max_gt, num_groups=num_groups)

    def graph_anchor(self) -> Tensor:
        """A zero scalar connected to ``label_enc`` (added to an output when no DN query is built, so
        DDP without ``find_unused_parameters`` sees a gradient for it)."""
        return self.label_enc.weight[0, 0] * 0

    def forward(
        self,
        targets: Targets,
        num_queries: int,
        generator: torch.Generator | None = None,
    ) -> DNQueries | None:
        """Noised DN queries for a batch.

        Args:
            targets: B dicts with ``"labels"`` int64 [n_i] and ``"boxes"`` [n_i, 4] normalised cxcywh.
            num_queries: Q matching queries that follow the DN queries (for the mask size).
            generator: random generator; None uses the default generator of the targets' device.

        Returns:
            The DN inputs, or None when DN is disabled or the batch has no GT box.
        """
        meta = self.layout(targets)
        if meta is None:
            return None
        device = self.label_enc.weight.device
        batch_size = len(targets)
        num_copies = 2 * meta.num_groups  # positive and negative blocks
        sizes = [int(t["labels"].shape[0]) for t in targets]
        labels = torch.cat([t["labels"].to(device, torch.int64) for t in targets])
        boxes = torch.cat([t["boxes"].to(device, torch.float32) for t in targets])
        image = torch.cat([torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(sizes)])
        slot = torch.cat([torch.arange(n, dtype=torch.int64) for n in sizes])
        total = labels.shape[0]

        # [2G * total]: block k holds every GT of the batch (image-major); even blocks are positives.
        noised_labels = labels.repeat(num_copies)
        noised_boxes = boxes.repeat(num_copies, 1)
        if self.label_noise_ratio > 0:
            draw = self._rand((num_copies * total,), generator, device)
            chosen = (draw < self.label_noise_ratio * 0.5).nonzero().flatten()
            new_labels = self._randint(self.num_classes, chosen.shape, generator, device)
            noised_labels = noised_labels.scatter(0, chosen, new_labels)
        if self.box_noise_scale > 0:
            noised_boxes = self._noise_boxes(noised_boxes, total, generator)

        content = self.label_enc(noised_labels)
        box_logits = inverse_sigmoid(noised_boxes)
        block = torch.arange(num_copies, dtype=torch.int64).repeat_interleave(total)
        slots = (slot.repeat(num_copies) + block * meta.max_gt).to(device)
        images = image.repeat(num_copies).to(device)
        num_dn = meta.num_dn_queries
        dn_content = content.new_zeros(batch_size, num_dn, self.embed_dim)
        dn_boxes = box_logits.new_zeros(batch_size, num_dn, 4)
        dn_content = dn_content.index_put((images, slots), content)
        dn_boxes = dn_boxes.index_put((images, slots), box_logits)
        mask = denoising_attention_mask(meta.num_groups, meta.single_padding, num_queries, device)
        return DNQueries(content=dn_content, box_logits=dn_boxes, attn_mask=mask, meta=meta)

    def _noise_boxes(self, boxes: Tensor, total: int, generator: torch.Generator | None) -> Tensor:
        """Corner noise on [2G * total, 4] cxcywh boxes; odd blocks (negatives) get ``u + 1``."""
        device = boxes.device
        corners = box_cxcywh_to_xyxy(boxes)
        half_wh = boxes[:, 2:] / 2
        diff = torch.cat((half_wh, half_wh), dim=1)
        sign = self._randint(2, boxes.shape, generator, device).to(boxes.dtype) * 2.0 - 1.0
        magnitude = self._rand(boxes.shape, generator, device)
        negative = (torch.arange(boxes.shape[0], device=device) // total) % 2 == 1
        magnitude = magnitude + negative[:, None].to(magnitude.dtype)
        corners = corners + magnitude * sign * diff * self.box_noise_scale
        return box_xyxy_to_cxcywh(corners.clamp(min=0.0, max=1.0))

    @staticmethod
    def _rand(shape, generator: torch.Generator | None, device: torch.device) -> Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.rand(shape, generator=generator, device=gen_device).to(device)

    @staticmethod
    def _randint(
        high: int, shape, generator: torch.Generator | None, device: torch.device
    ) -> Tensor:
        gen_device = generator.device if generator is not None else device
        out = torch.randint(0, high, tuple(shape), generator=generator, device=gen_device)
        return out.to(device)
