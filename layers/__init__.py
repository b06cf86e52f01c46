"""Shared Keras 3 layers of the suite; every public class is re-exported here."""

from layers.attention import (
    AdditiveAttention,
    MultiHeadSelfAttention,
    PositionalEncoding,
    TransformerDecoder,
    TransformerEncoder,
)
from layers.blocks import (
    DenseBlock,
    InceptionBlock,
    NiNBlock,
    ResidualBlock,
    ResNeXtBlock,
    SqueezeExcitation,
    TransitionLayer,
)
from layers.convolution import DilatedConvBlock, FactorizedInceptionBlock, GridReductionBlock, SeparableConvBlock
from layers.generative import MinibatchDiscrimination, Reparameterization, VirtualBatchNormalization
from layers.misc import GramMatrix, GuidedReLU, Maxout, Perceptron
from layers.pooling import (
    FractionalMaxPooling2D,
    LpPooling2D,
    MaxPoolingWithArgmax2D,
    MaxUnpooling2D,
    RoIAlign,
    RoIPooling,
    SpatialPyramidPooling2D,
    StochasticPooling2D,
)
from layers.recurrent import ElmanCell, GRUCell, LSTMCell
from layers.regularization import DropConnect, StochasticDepth

__all__ = [
    "DropConnect",
    "StochasticDepth",
    "Reparameterization",
    "MinibatchDiscrimination",
    "VirtualBatchNormalization",
    "Maxout",
    "Perceptron",
    "GramMatrix",
    "GuidedReLU",
    "LpPooling2D",
    "StochasticPooling2D",
    "FractionalMaxPooling2D",
    "SpatialPyramidPooling2D",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "RoIPooling",
    "RoIAlign",
    "ElmanCell",
    "LSTMCell",
    "GRUCell",
    "AdditiveAttention",
    "MultiHeadSelfAttention",
    "PositionalEncoding",
    "TransformerEncoder",
    "TransformerDecoder",
    "ResidualBlock",
    "InceptionBlock",
    "DenseBlock",
    "TransitionLayer",
    "SqueezeExcitation",
    "ResNeXtBlock",
    "NiNBlock",
    "DilatedConvBlock",
    "SeparableConvBlock",
    "FactorizedInceptionBlock",
    "GridReductionBlock",
]
