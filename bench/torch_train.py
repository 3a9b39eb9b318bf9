#!/usr/bin/env python3
"""PyTorch eager peer for `troupe bench train`: the same GPT-2-shaped configs, the same
batch shapes and thread count, forward + backward + AdamW (+ clipping) per step.
Prints one JSON object on its last line. Usage:
  python3 bench/torch_train.py --configs small,gpt2-small --steps 3 --threads 2
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# name: (n_layer, n_head, d_model, vocab, max_seq, B, T): must match apps/bench_train.cpp
CONFIGS = {
    "small": (4, 4, 128, 49152, 128, 8, 128),
    "gpt2-small": (12, 12, 768, 50257, 1024, 4, 256),
}


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc, self.fc_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, -1)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(a)
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, NH, C, V, maxT):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(maxT, C)
        self.h = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        # GPT-2 init, as Troupe's init_weights: N(0, 0.02), residual projections scaled.
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith(("proj.weight", "fc_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def bench(name, steps):
    L, NH, C, V, maxT, B, T = CONFIGS[name]
    torch.manual_seed(0)
    m = GPT(L, NH, C, V, maxT)
    decay = [p for p in m.parameters() if p.dim() >= 2]
    rest = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    idx = torch.randint(0, V, (B, T))
    tgt = torch.randint(0, V, (B, T))
    times = []
    for s in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = m(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if s > 0:
            times.append(dt)
    times.sort()
    med = times[len(times) // 2]
    return {"config": name, "B": B, "T": T, "step_s_median": med, "tokens_per_s": B * T / med,
            "final_loss": loss.item()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="small,gpt2-small")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    res = [bench(n, a.steps) for n in a.configs.split(",")]
    print(json.dumps({"torch_version": torch.__version__, "threads": torch.get_num_threads(), "results": res}))


if __name__ == "__main__":
    main()
