from .decoder import InstructiveSelfAttention, MultiRouteDecoder, MultiRouteDecoderLayer, RouteFFN
from .encoder import DeformableEncoder, DeformableEncoderLayer
from .proposals import ProposalHead, TwoStageProposals
from .transformer import EncodedImage, MrDETRTransformer

__all__ = [
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
