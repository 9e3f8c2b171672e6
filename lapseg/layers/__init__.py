"""Small linen blocks shared by backbones and decoders (NHWC, PyTorch-compatible padding)."""

from lapseg.layers.conv import ConvBN, torch_padding

__all__ = ["ConvBN", "torch_padding"]
