"""paddle_lenet: pooling layers vs stride-2 convolutions, as a reproducible PaddlePaddle package."""

__version__ = "0.1.0"
