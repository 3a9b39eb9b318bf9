#!/usr/bin/env python3
"""Writes tests/fixtures/safetensors_small.safetensors with Python's safetensors package,
so that tests/core/safetensors_test.cpp checks interop with the reference writer:
one tensor of each dtype Troupe reads, with known values, and a metadata entry."""
import os

import torch
from safetensors.torch import save_file

out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "safetensors_small.safetensors")
t = {
    "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4,
    "bf16": torch.tensor([1.5, -2.0, 0.25], dtype=torch.bfloat16),
    "f16": torch.tensor([[0.5], [-3.0]], dtype=torch.float16),
    "i32": torch.tensor([1, -2, 3], dtype=torch.int32),
    "i64": torch.tensor([[1 << 40]], dtype=torch.int64),
    "empty": torch.zeros(0, 4),
}
save_file(t, out, metadata={"made_by": "safetensors " + __import__("safetensors").__version__})
print(out)
