"""int8 weights for CPU inference: the model's RNN and linear layers, quantized dynamically."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import ConfigError
from .network import LanguageModel


def quantize_int8(model: LanguageModel) -> LanguageModel:
    """int8 dynamic quantization of the RNN, projection and output layer, for CPU inference.

    Weights become int8 (a quarter of the memory traffic that bounds one-stream decoding);
    activations stay float and are quantized on the fly. The embedding stays float, so
    the tied matrix is stored twice. Inference only: the result cannot be trained or saved.
    The quantized RNN replaces `model.rnn`, so the model's forward runs it as one module.
    """
    from torch.ao.quantization import quantize_dynamic

    if model.embedding.weight.device.type != "cpu":
        raise ConfigError("int8 weights run on the CPU only — load the model with device='cpu', or use --fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao points users at torchao; the eager API still works
        quantized = quantize_dynamic(model.eval(), {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8, inplace=False)
    quantized.config = model.config
    return quantized
