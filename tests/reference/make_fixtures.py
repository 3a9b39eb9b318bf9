#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures that tests/model/*_test.cpp hold Troupe to.

For a small GPT-2 config and a small Llama config (same parameter names and layouts as
ops/model/transformer.cpp: Linear weights are (out, in); q/k/v and gate/up separate in
Llama, fused qkv in GPT-2) it writes tests/fixtures/model_<arch>.safetensors with:
  - every parameter (float32) under its Troupe name,
  - tokens and targets (int32, (B, T)),
  - logits (B*T, V) and the mean cross-entropy loss,
  - grad.<name> for every parameter (loss = mean cross-entropy),
  - metadata: the config, the AdamW hyperparameters, and the losses of 10 AdamW steps
    (with global-norm clipping) on the same batch, as JSON.

Everything is computed in float32 with one thread, as Troupe does.
Usage: python3 tests/reference/make_fixtures.py   (needs torch and safetensors)
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures")

HP = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0, steps=10)


def gpt2_params(cfg, g):
    V, C, L, T = cfg["vocab_size"], cfg["d_model"], cfg["n_layer"], cfg["max_seq_len"]
    H = cfg["d_ff"]
    p = {"wte.weight": torch.randn(V, C, generator=g) * 0.05, "wpe.weight": torch.randn(T, C, generator=g) * 0.05}
    for l in range(L):
        s = f"h.{l}."
        p[s + "ln_1.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
        p[s + "ln_1.bias"] = 0.02 * torch.randn(C, generator=g)
        p[s + "attn.qkv.weight"] = 0.05 * torch.randn(3 * C, C, generator=g)
        p[s + "attn.qkv.bias"] = 0.02 * torch.randn(3 * C, generator=g)
        p[s + "attn.proj.weight"] = 0.05 * torch.randn(C, C, generator=g)
        p[s + "attn.proj.bias"] = 0.02 * torch.randn(C, generator=g)
        p[s + "ln_2.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
        p[s + "ln_2.bias"] = 0.02 * torch.randn(C, generator=g)
        p[s + "mlp.fc.weight"] = 0.05 * torch.randn(H, C, generator=g)
        p[s + "mlp.fc.bias"] = 0.02 * torch.randn(H, generator=g)
        p[s + "mlp.proj.weight"] = 0.05 * torch.randn(C, H, generator=g)
        p[s + "mlp.proj.bias"] = 0.02 * torch.randn(C, generator=g)
    p["ln_f.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
    p["ln_f.bias"] = 0.02 * torch.randn(C, generator=g)
    return p


def llama_params(cfg, g):
    V, C, L, H = cfg["vocab_size"], cfg["d_model"], cfg["n_layer"], cfg["d_ff"]
    HS = C // cfg["n_head"]
    KD = cfg["n_kv_head"] * HS
    p = {"embed_tokens.weight": torch.randn(V, C, generator=g) * 0.05}
    for l in range(L):
        s = f"layers.{l}."
        p[s + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
        p[s + "self_attn.q_proj.weight"] = 0.05 * torch.randn(C, C, generator=g)
        p[s + "self_attn.k_proj.weight"] = 0.05 * torch.randn(KD, C, generator=g)
        p[s + "self_attn.v_proj.weight"] = 0.05 * torch.randn(KD, C, generator=g)
        p[s + "self_attn.o_proj.weight"] = 0.05 * torch.randn(C, C, generator=g)
        p[s + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
        p[s + "mlp.gate_proj.weight"] = 0.05 * torch.randn(H, C, generator=g)
        p[s + "mlp.up_proj.weight"] = 0.05 * torch.randn(H, C, generator=g)
        p[s + "mlp.down_proj.weight"] = 0.05 * torch.randn(C, H, generator=g)
    p["norm.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
    p["lm_head.weight"] = 0.05 * torch.randn(V, C, generator=g)
    return p


def attention(q, k, v, NH, NKV):
    # q (B, T, NH, HS), k/v (B, T, NKV, HS) -> (B, T, NH, HS); query head h uses kv head h // (NH/NKV)
    rep = NH // NKV
    k = k.repeat_interleave(rep, dim=2)
    v = v.repeat_interleave(rep, dim=2)
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    HS = q.shape[-1]
    att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
    T = q.shape[2]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    att = att.masked_fill(~mask, float("-inf")).softmax(-1)
    return (att @ v).transpose(1, 2)


def rope(x, theta):
    # HF Llama rotate-half: pairs (i, i + HS/2), angle pos * theta^(-2i/HS)
    B, T, NH, HS = x.shape
    inv = 1.0 / (theta ** (torch.arange(0, HS, 2, dtype=torch.float32) / HS))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1)[None, :, None, :]
    sin = torch.cat([ang.sin(), ang.sin()], -1)[None, :, None, :]
    x1, x2 = x[..., : HS // 2], x[..., HS // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def forward(cfg, p, tokens):
    B, T = tokens.shape
    C, NH, NKV = cfg["d_model"], cfg["n_head"], cfg["n_kv_head"]
    HS = C // NH
    eps = cfg["norm_eps"]
    if cfg["arch"] == "gpt2":
        x = p["wte.weight"][tokens] + p["wpe.weight"][:T][None]
        for l in range(cfg["n_layer"]):
            s = f"h.{l}."
            h = F.layer_norm(x, (C,), p[s + "ln_1.weight"], p[s + "ln_1.bias"], eps)
            qkv = h @ p[s + "attn.qkv.weight"].T + p[s + "attn.qkv.bias"]
            q, k, v = qkv.split(C, -1)
            a = attention(q.view(B, T, NH, HS), k.view(B, T, NH, HS), v.view(B, T, NH, HS), NH, NH)
            x = x + a.reshape(B, T, C) @ p[s + "attn.proj.weight"].T + p[s + "attn.proj.bias"]
            h = F.layer_norm(x, (C,), p[s + "ln_2.weight"], p[s + "ln_2.bias"], eps)
            h = F.gelu(h @ p[s + "mlp.fc.weight"].T + p[s + "mlp.fc.bias"], approximate="tanh")
            x = x + h @ p[s + "mlp.proj.weight"].T + p[s + "mlp.proj.bias"]
        x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps)
        return x @ p["wte.weight"].T
    x = p["embed_tokens.weight"][tokens]
    for l in range(cfg["n_layer"]):
        s = f"layers.{l}."
        h = rmsnorm(x, p[s + "input_layernorm.weight"], eps)
        q = (h @ p[s + "self_attn.q_proj.weight"].T).view(B, T, NH, HS)
        k = (h @ p[s + "self_attn.k_proj.weight"].T).view(B, T, NKV, HS)
        v = (h @ p[s + "self_attn.v_proj.weight"].T).view(B, T, NKV, HS)
        q, k = rope(q, cfg["rope_theta"]), rope(k, cfg["rope_theta"])
        a = attention(q, k, v, NH, NKV).reshape(B, T, C)
        x = x + a @ p[s + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, p[s + "post_attention_layernorm.weight"], eps)
        h = F.silu(h @ p[s + "mlp.gate_proj.weight"].T) * (h @ p[s + "mlp.up_proj.weight"].T)
        x = x + h @ p[s + "mlp.down_proj.weight"].T
    x = rmsnorm(x, p["norm.weight"], eps)
    return x @ p["lm_head.weight"].T


def make(cfg, seed, name):
    g = torch.Generator().manual_seed(seed)
    p = gpt2_params(cfg, g) if cfg["arch"] == "gpt2" else llama_params(cfg, g)
    B, T, V = cfg["B"], cfg["T"], cfg["vocab_size"]
    data = torch.randint(0, V, (B, T + 1), generator=g)
    tokens, targets = data[:, :T].contiguous(), data[:, 1:].contiguous()
    init = {k: v.clone() for k, v in p.items()}

    params = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    logits = forward(cfg, params, tokens)
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
    loss.backward()
    out = {k: v for k, v in init.items()}
    out["tokens"] = tokens.to(torch.int32)
    out["targets"] = targets.to(torch.int32)
    out["logits"] = logits.detach().reshape(B * T, V).contiguous()
    for k, v in params.items():
        out["grad." + k] = v.grad.contiguous()

    # 10 AdamW steps on the same batch, decay on matrices only, global-norm clipping.
    params = {k: v.clone().requires_grad_(True) for k, v in init.items()}
    decay = [v for v in params.values() if v.dim() >= 2]
    no_decay = [v for v in params.values() if v.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": HP["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"], foreach=False,
    )
    losses = []
    for _ in range(HP["steps"]):
        opt.zero_grad()
        l = F.cross_entropy(forward(cfg, params, tokens).view(-1, V), targets.view(-1))
        l.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), HP["grad_clip"], foreach=False)
        opt.step()
        losses.append(l.item())

    meta = {"config": json.dumps(cfg), "hparams": json.dumps(HP), "loss": repr(loss.item()),
            "losses": json.dumps(losses)}
    path = os.path.join(OUT, f"model_{name}.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
    print(f"{path}: loss {loss.item():.6f}, 10-step losses {losses[0]:.4f} .. {losses[-1]:.4f}")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make(dict(arch="gpt2", vocab_size=256, max_seq_len=32, n_layer=2, n_head=4, n_kv_head=4, d_model=64, d_ff=256,
              norm_eps=1e-5, rope_theta=10000.0, B=2, T=16), 1, "gpt2")
    make(dict(arch="llama", vocab_size=256, max_seq_len=32, n_layer=2, n_head=4, n_kv_head=2, d_model=64, d_ff=160,
              norm_eps=1e-5, rope_theta=10000.0, B=2, T=16), 2, "llama")
