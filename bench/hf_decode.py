#!/usr/bin/env python3
"""The transformers peer of `troupe bench decode`: single-stream greedy decoding of a GGUF
model (dequantized to float32 by transformers, as Troupe does) on the CPU with the given
number of threads. Prints one JSON line: decode tokens/s (after the prompt), the prompt's
time, and the generated ids (so the benchmark can check both sides decoded the same).

    python3 bench/hf_decode.py --gguf data/SmolLM2-135M-Instruct.Q4_1.gguf --ids 1,2,3 --tokens 128 --threads 2
Needs torch, transformers, gguf and accelerate (pip)."""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--ids", required=True, help="prompt token ids, comma-separated")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    d, f = os.path.split(os.path.abspath(a.gguf))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
    ids = torch.tensor([[int(x) for x in a.ids.split(",")]])
    best = None
    with torch.inference_mode():
        for _ in range(a.reps):
            # Prompt alone (one token), then the whole run: decode time is the difference.
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=1, do_sample=False)
            t1 = time.perf_counter()
            out = model.generate(ids, max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False)
            t2 = time.perf_counter()
            prompt_s, decode_s = t1 - t0, (t2 - t1) - (t1 - t0)
            if best is None or decode_s < best[1]:
                best = (prompt_s, decode_s, out[0, ids.shape[1]:].tolist())
    prompt_s, decode_s, gen = best
    print(json.dumps({"tokens_per_s": (a.tokens - 1) / decode_s, "prompt_s": prompt_s, "threads": a.threads,
                      "torch": torch.__version__, "transformers": transformers.__version__, "tokens": gen}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the benchmark reports the peer as skipped, with this reason
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
