"""Triton FP8 attention kernels with PyTorch references and CPU fallbacks."""
