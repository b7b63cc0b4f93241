"""Mr. DETR: backbone -> neck -> encoder -> two-stage selection -> multi-route decoder -> heads.

Training runs every configured route and returns the weighted losses; inference runs the primary
(one-to-one) route only. Variants (InsSeg, panoptic) extend the model through the hooks
:meth:`MrDETR.extend_encoded`, :meth:`MrDETR.run_route`, :meth:`MrDETR.criterion_inputs`,
:meth:`MrDETR.raw_output` and :meth:`MrDETR.instance_fields`; DINO/Align plug a ``denoising`` module and
a criterion in; see ``docs/architecture.md``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...layers import MLP
from ...structures import ImageList, Instances
from ..criterion import apply_weights
from ..denoising import ContrastiveDenoising, DNQueries, instruct_attention_mask, split_denoising
from ..outputs import MrDETROutput, Predictions, RawOutput, RouteOutput
from ..postprocessing import (
    TopKDetections,
    detector_postprocess,
    fuse_layer_scores,
    topk_detections,
)
from ..routes import Route, route_spec
from ..transformer import EncodedImage, MrDETRTransformer
from ..transformer.moe import collect_moe_aux_losses, reset_moe_aux_losses
from ..transformer.proposals import SelectedQueries
from .inputs import level_padding_masks, prepare_targets, validate_inputs


class MrDETR(nn.Module):
    """The Mr. DETR detector (Deformable-DETR++ with multi-route training).

    Args:
        backbone: returns a dict of feature maps.
        neck: maps the backbone dict to a list of L maps of width ``embed_dim``.
        position_embedding: sine embedding of a padding mask.
        transformer: encoder + proposals + multi-route decoder.
        num_classes: C.
        num_queries: Q matching queries (content embedding rows).
        embed_dim: d.
        criterion: ``MrDETRCriterion`` (unweighted loss terms), required for training.
        weight_dict: loss name -> weight; every produced term must have one.
        pixel_mean: per-channel mean of the 0..255 RGB input.
        pixel_std: per-channel std.
        train_routes: decoder routes run in training (PRIMARY must be among them).
        select_box_nums_for_evaluation: detections kept per image at inference.
        score_fusion_exponents: eval-time cross-layer score fusion exponents, or None to disable.
        prior_prob: initial class probability (class-head bias ``-log((1 - p) / p)``).
        instruct_proposal_wh_bias: initial w/h bias of the instruction-route proposal box head
            (-2.0 in the official init; every other box head starts at 0).
        padding_mask_mode: how pixel padding maps to feature levels (``"interpolate"``, official, or
            ``"exact"``; see ``level_padding_masks``).
        size_divisibility: pad batches to a multiple of this (0: official, no rounding). On CPU, a
            few distinct padded shapes let oneDNN reuse its convolution kernels across iterations
            (a new input shape costs a kernel build in forward and backward).
        eval_padding_mask: use the real padding mask at eval (the official code passes no mask at
            eval, so padded images of a batch attend to their padding; set False only to reproduce
            its batched outputs).
        denoising: contrastive denoising (Mr. DETR-DINO/Align): in training its queries are prepended
            to every route's matching queries; None (Deformable) builds none. Never used at eval.
        dn_number: the official config key ``model.dn_number``: DN budget before doubling (100);
            0 turns DN off. Sets ``denoising.dn_number``; None keeps the module's own value.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        neck: nn.Module,
        position_embedding: nn.Module,
        transformer: MrDETRTransformer,
        num_classes: int = 80,
        num_queries: int = 300,
        embed_dim: int = 256,
        criterion: nn.Module | None = None,
        weight_dict: dict[str, float] | None = None,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        train_routes: Sequence[Route | str] = (Route.PRIMARY, Route.INSTRUCT, Route.SEP_FFN),
        select_box_nums_for_evaluation: int = 300,
        score_fusion_exponents: tuple[float, float] | None = (2.001, 1.853),
        prior_prob: float = 0.01,
        instruct_proposal_wh_bias: float = -2.0,
        eval_padding_mask: bool = True,
        padding_mask_mode: str = "interpolate",
        size_divisibility: int = 0,
        denoising: ContrastiveDenoising | None = None,
        dn_number: int | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.position_embedding = position_embedding
        self.transformer = transformer
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.query_embedding = nn.Embedding(num_queries, embed_dim)
        num_layers = transformer.decoder.num_layers
        class_head = nn.Linear(embed_dim, num_classes)
        box_head = MLP(embed_dim, embed_dim, 4, 3)
        self.class_embed = nn.ModuleList(copy.deepcopy(class_head) for _ in range(num_layers))
        self.bbox_embed = nn.ModuleList(copy.deepcopy(box_head) for _ in range(num_layers))
        self.criterion = criterion
        self.weight_dict = dict(weight_dict or {})
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.train_routes = tuple(Route(r) for r in train_routes)
        if Route.PRIMARY not in self.train_routes:
            raise ValueError("train_routes must include Route.PRIMARY")
        heads = transformer.proposals.heads
        for route in self.train_routes:
            head = route_spec(route).proposal_head.value
            if head not in heads:
                raise ValueError(
                    f"MrDETR: route {route.name} is seeded by the proposal head {head!r}, but "
                    f"transformer.proposals.heads has only {sorted(heads)}"
                )
        self.select_box_nums_for_evaluation = select_box_nums_for_evaluation
        self.score_fusion_exponents = (
            tuple(score_fusion_exponents) if score_fusion_exponents is not None else None
        )
        self.eval_padding_mask = eval_padding_mask
        self.padding_mask_mode = padding_mask_mode
        self.size_divisibility = size_divisibility
        self.denoising = denoising
        if dn_number is not None:
            if denoising is None:
                raise ValueError("dn_number is set but the model has no denoising module")
            denoising.dn_number = int(dn_number)
        self._init_heads(prior_prob, instruct_proposal_wh_bias)

    def _init_heads(self, prior_prob: float, instruct_wh_bias: float) -> None:
        bias = -math.log((1 - prior_prob) / prior_prob)
        heads = self.transformer.proposals.heads
        class_heads = list(self.class_embed) + [h.class_embed for h in heads.values()]
        box_heads = list(self.bbox_embed) + [h.bbox_embed for h in heads.values()]
        for head in class_heads:
            nn.init.constant_(head.bias, bias)
        for head in box_heads:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        if Route.INSTRUCT.value in heads:
            nn.init.constant_(
                heads[Route.INSTRUCT.value].bbox_embed.layers[-1].bias[2:], instruct_wh_bias
            )
        nn.init.normal_(self.query_embedding.weight)

    @property
    def trains_every_parameter(self) -> bool:
        """Whether training gives every parameter a gradient.

        False when ``train_routes`` leaves a route out: its own parameters (instruction tokens,
        separate FFN, proposal head) then get none, and DDP must look for unused parameters
        (``create_ddp_model(find_unused_parameters="auto")`` reads this).
        """
        return set(self.train_routes) == set(Route)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ----------------------------------------------------------------------------------- stages
    def preprocess(self, batched_inputs: list[dict]) -> tuple[ImageList, Tensor]:
        """Normalise and pad the images.

        Returns:
            the padded batch and its [B, H, W] padding mask (True = padding).
        """
        validate_inputs(batched_inputs, require_instances=self.training)
        images = [
            (x["image"].to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std
            for x in batched_inputs
        ]
        image_list = ImageList.from_tensors(images, self.size_divisibility)
        mask = image_list.padding_mask()
        if not self.training and not self.eval_padding_mask:
            mask = torch.zeros_like(mask)
        return image_list, mask

    def encode(self, images: ImageList, mask: Tensor | None) -> EncodedImage:
        """Backbone, neck, position embeddings (on the level padding masks of
        ``padding_mask_mode``) and encoder; then :meth:`extend_encoded`.

        Args:
            images: the (padded) batch.
            mask: its [B, H, W] pixel padding mask, or None for a batch without padding (every
                level mask is then all False, which is what both padding modes give for unpadded
                images); the exported graph takes this form, whose sizes stay symbolic.
        """
        features = self.backbone(images.tensor)
        maps = self.neck(features)
        if mask is None:
            masks = [torch.zeros_like(m[:, 0], dtype=torch.bool) for m in maps]
        else:
            shapes = [tuple(f.shape[-2:]) for f in maps]
            masks = level_padding_masks(mask, images.image_sizes, shapes, self.padding_mask_mode)
        pos = [self.position_embedding(m) for m in masks]
        return self.extend_encoded(self.transformer.encode(maps, masks, pos), features)

    def extend_encoded(
        self, encoded: EncodedImage, backbone_features: dict[str, Tensor]
    ) -> EncodedImage:
        """Hook: add what a variant's heads need to the encoded image (nothing here).

        Args:
            encoded: the encoder output.
            backbone_features: ``{name: [B, C, H, W]}`` backbone maps of the batch.
        """
        return encoded

    def run_route(
        self,
        encoded: EncodedImage,
        route: Route,
        box_logits: Tensor,
        dn: DNQueries | None = None,
    ) -> RouteOutput:
        """Decode one route from its initial box logits and apply the shared heads per layer.

        With ``dn`` the P denoising queries are prepended (content, box logits, self-attention mask)
        and the output covers all P + Q queries (``split_denoising`` separates them).
        """
        b = box_logits.shape[0]
        query = self.query_embedding.weight.unsqueeze(0).expand(b, -1, -1)
        attn_mask = None
        if dn is not None:
            query = torch.cat((dn.content, query), 1)
            box_logits = torch.cat((dn.box_logits, box_logits), 1)
            attn_mask = dn.attn_mask
            if route_spec(route).instruction_tokens:
                self_attn = self.transformer.decoder.layers[0].self_attn
                num_instr = self_attn.instruction_content.num_embeddings
                attn_mask = instruct_attention_mask(attn_mask, dn.meta.num_dn_queries, num_instr)
        decoded = self.transformer.decode(
            encoded, route, query, box_logits, self.bbox_embed, attn_mask
        )
        layers = [
            Predictions(logits=self.class_embed[lvl](hidden), boxes=decoded.boxes[lvl])
            for lvl, hidden in enumerate(decoded.hidden)
        ]
        return RouteOutput(layers, decoded.hidden, decoded.references, box_logits.sigmoid())

    def forward_features(
        self,
        batched_inputs: list[dict],
        routes: Sequence[Route],
        targets: list[dict[str, Tensor]] | None = None,
        generator: torch.Generator | None = None,
    ) -> MrDETROutput:
        """Run the network for the given routes (no loss, no post-processing).

        In training with ``denoising`` and ``targets``, the DN queries are built once (drawing from
        ``generator``) and shared by all routes; their predictions go to ``MrDETROutput.denoising``.
        """
        images, mask = self.preprocess(batched_inputs)
        encoded = self.encode(images, mask)
        return self.decode_routes(encoded, images.image_sizes, routes, targets, generator)

    def decode_routes(
        self,
        encoded: EncodedImage,
        image_sizes: list[tuple[int, int]],
        routes: Sequence[Route],
        targets: list[dict[str, Tensor]] | None = None,
        generator: torch.Generator | None = None,
    ) -> MrDETROutput:
        """Select the proposals and decode ``routes`` from an encoded batch (see
        :meth:`forward_features`; ``image_sizes`` are the unpadded (h, w) of its images)."""
        seeds = self.select_proposals(encoded, routes)
        out = MrDETROutput(
            routes={},
            encoder={head: seed.predictions for head, seed in seeds.items()},
            image_sizes=image_sizes,
        )
        dn = None
        if self.training and self.denoising is not None and targets is not None:
            dn = self.denoising(targets, seeds[Route.PRIMARY].box_logits.shape[1], generator)
        for route in routes:
            seed = seeds[route_spec(route).proposal_head]
            if dn is None:
                route_out = self.run_route(encoded, route, seed.box_logits)
            else:
                route_out = self.run_route(encoded, route, seed.box_logits, dn)
                route_out, out.denoising[route] = split_denoising(route_out, dn.meta.num_dn_queries)
            out.routes[route] = route_out
        if dn is not None:
            out.dn_meta = dn.meta
        elif self.training and self.denoising is not None and routes:
            # keep label_enc in the graph without DN queries (DDP without find_unused_parameters)
            first = out.routes[routes[0]].layers[0]
            first.logits = first.logits + self.denoising.graph_anchor()
        return out

    def select_proposals(
        self, encoded: EncodedImage, routes: Sequence[Route]
    ) -> dict[Route, SelectedQueries]:
        """Top-K proposals of the PRIMARY head and of every other head that seeds one of ``routes``
        (``RouteSpec.proposal_head``), keyed by the route that owns the head."""
        heads = [Route.PRIMARY]
        for route in routes:
            head = route_spec(route).proposal_head
            if head not in heads:
                heads.append(head)
        return {head: self.transformer.select(encoded, head) for head in heads}

    # ------------------------------------------------------------------------------ entry points
    def forward(self, batched_inputs: list[dict]) -> dict[str, Tensor] | list[dict]:
        """Training: weighted loss dict. Eval: ``[{"instances": Instances}]`` per image."""
        if self.training:
            return self.losses(batched_inputs)
        raw = self.forward_raw(batched_inputs)
        return self.postprocess(raw, batched_inputs)

    def losses(
        self, batched_inputs: list[dict], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Weighted loss terms of one training batch (official key names)."""
        if self.criterion is None:
            raise RuntimeError("MrDETR was built without a criterion: it cannot compute losses")
        validate_inputs(batched_inputs, require_instances=True)
        targets = prepare_targets(batched_inputs, self.device)
        reset_moe_aux_losses(self)
        outputs = self.forward_features(batched_inputs, self.train_routes, targets, generator)
        inputs = self.criterion_inputs(outputs, batched_inputs)
        unweighted = self.criterion(outputs, targets, generator=generator, **inputs)
        losses = apply_weights(unweighted, self.weight_dict)
        losses.update(collect_moe_aux_losses(self))  # Mr. DETR++ balance losses (already weighted)
        return losses

    def criterion_inputs(self, outputs: MrDETROutput, batched_inputs: list[dict]) -> dict:
        """Hook: extra keyword inputs of the criterion for one training forward (none here; InsSeg:
        the predicted and target masks)."""
        return {}

    @torch.no_grad()
    def forward_raw(self, batched_inputs: list[dict]) -> RawOutput:
        """Primary route only: the tensors handed to :meth:`postprocess` (see :meth:`raw_output`)."""
        return self.raw_output(self.forward_features(batched_inputs, (Route.PRIMARY,)))

    def raw_output(self, out: MrDETROutput) -> RawOutput:
        """Hook: fused final logits [B, Q, C] and boxes [B, Q, 4] (normalised cxcywh) of the primary
        route; variants add their own per-query outputs."""
        layers = out.routes[Route.PRIMARY].layers
        return RawOutput(self.final_logits(layers), layers[-1].boxes, out.image_sizes)

    def final_logits(self, layers: list[Predictions]) -> Tensor:
        """Final-layer logits [B, Q, C] for inference: the eval-time cross-layer score fusion, or
        the last layer's logits when ``score_fusion_exponents`` is None."""
        if self.score_fusion_exponents is None:
            return layers[-1].logits
        return fuse_layer_scores([p.logits for p in layers], self.score_fusion_exponents)

    def postprocess(self, raw: RawOutput, batched_inputs: list[dict]) -> list[dict[str, Instances]]:
        """Top-K detections (with the fields of :meth:`instance_fields`) rescaled to each input's
        requested ``height``/``width``."""
        top = topk_detections(
            raw.pred_logits, raw.pred_boxes, raw.image_sizes, self.select_box_nums_for_evaluation
        )
        processed = []
        for i, (res, inp, (h, w)) in enumerate(zip(top.instances, batched_inputs, raw.image_sizes)):
            out_h, out_w = inp.get("height", h), inp.get("width", w)
            for name, value in self.instance_fields(raw, top, i, (int(out_h), int(out_w))).items():
                res.set(name, value)
            processed.append({"instances": detector_postprocess(res, out_h, out_w)})
        return processed

    def instance_fields(
        self, raw: RawOutput, top: TopKDetections, image: int, output_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Hook: extra per-detection fields of image ``image`` (none here; InsSeg: ``pred_masks``).

        Args:
            raw: the raw outputs of the batch.
            top: the batch's top-K detections and their query indices.
            image: index of the image in the batch.
            output_size: (height, width) the detections are rescaled to.

        Returns:
            ``{name: [K, ...]}`` fields, one row per detection of ``top.instances[image]``.
        """
        return {}
