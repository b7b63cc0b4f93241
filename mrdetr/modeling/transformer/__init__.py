from .decoder import (
    DecoderOutput,
    InstructiveSelfAttention,
    MultiRouteDecoder,
    MultiRouteDecoderLayer,
    RouteFFN,
)
from .encoder import DeformableEncoder, DeformableEncoderLayer
from .proposals import ProposalHead, TwoStageProposals
from .transformer import EncodedImage, MrDETRTransformer

__all__ = [
    "DecoderOutput",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "EncodedImage",
    "InstructiveSelfAttention",
    "MrDETRTransformer",
    "MultiRouteDecoder",
    "MultiRouteDecoderLayer",
    "ProposalHead",
    "RouteFFN",
    "TwoStageProposals",
]
