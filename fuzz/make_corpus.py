#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/gguf_fuzz.cpp to fuzz/corpus/gguf/: a few tiny GGUF files
(each under 4 KB), valid ones covering every metadata type, every dequantizable tensor type and a
byte-level tokenizer, and invalid ones that stop at each kind of check.

Usage: python3 fuzz/make_corpus.py   (plain Python 3, no packages)
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B", U64: "<Q",
          I64: "<q", F64: "<d"}
GGML_F32, GGML_F16, GGML_Q4_1, GGML_Q8_0, GGML_BF16 = 0, 1, 3, 8, 30


def gstr(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STRING:
        return gstr(v)
    if t == ARRAY:
        elem, items = v
        return struct.pack("<IQ", elem, len(items)) + b"".join(value(elem, x) for x in items)
    return struct.pack(SCALAR[t], v)


def gguf(kvs, tensors=(), version=3, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, ne, ggml_type, data bytes)], each placed at the
    next multiple of the alignment; the file ends with the last tensor's data."""
    out = struct.pack("<IIQQ", 0x46554747, version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += gstr(key) + struct.pack("<I", t) + value(t, v)
    data = b""
    for name, ne, ty, blob in tensors:
        data += b"\0" * (-len(data) % alignment)
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", ty, len(data))
        data += blob
    if tensors:
        out += b"\0" * (-len(out) % alignment) + data
    return out


def f16(x):
    return struct.pack("<e", x)


def bf16(x):
    return struct.pack("<f", x)[2:]


def tensors_file(version=3, alignment=32):
    q8 = f16(0.5) + bytes((k - 16) & 0xFF for k in range(32))
    q4 = f16(0.125) + f16(-1.0) + bytes(((k * 7) % 16) | (((k * 3) % 16) << 4) for k in range(16))
    kvs = [
        ("general.architecture", STRING, "llama"),
        ("llama.block_count", U32, 2),
        ("t.u8", U8, 200), ("t.i8", I8, -5), ("t.u16", U16, 60000), ("t.i16", I16, -300),
        ("t.i32", I32, -7), ("t.f32", F32, 1.5), ("t.bool", BOOL, 1), ("t.u64", U64, 2**64 - 1),
        ("t.i64", I64, -(2**40)), ("t.f64", F64, 0.125),
        ("t.strings", ARRAY, (STRING, ["a", "", "ccc"])),
        ("t.i32s", ARRAY, (I32, [1, -2, 3])),
        ("t.nested", ARRAY, (ARRAY, [(U16, [1, 2]), (STRING, ["x"])])),
    ]
    if alignment != 32:
        kvs.append(("general.alignment", U32, alignment))
    tensors = [
        ("w.f32", [3, 2], GGML_F32, struct.pack("<6f", *[0.25 * k - 1 for k in range(6)])),
        ("w.f16", [4], GGML_F16, b"".join(f16(x) for x in (1.0, -2.5, 65504.0, 6.1035156e-05))),
        ("w.bf16", [2, 2], GGML_BF16, b"".join(bf16(x) for x in (1.0, -3.140625, 256.0, 0.0078125))),
        ("w.q8_0", [32, 1], GGML_Q8_0, q8),
        ("w.q4_1", [32], GGML_Q4_1, q4),
    ]
    return gguf(kvs, tensors, version, alignment)


def bytes_to_unicode():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def tokenizer_file():
    b2u = bytes_to_unicode()
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [b2u[b] for b in range(256)]
    types = [3, 3, 3] + [1] * 256
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s"]
    for m in merges:
        tokens.append(m.replace(" ", ""))
        types.append(1)
    kvs = [
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.pre", STRING, "smollm"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.token_type", ARRAY, (U8, types)),  # i32 in real files; u8 keeps this < 4 KB
        ("tokenizer.ggml.merges", ARRAY, (STRING, merges)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.add_bos_token", BOOL, 0),
        ("tokenizer.chat_template", STRING, "{% for m in messages %}{{ m['content'] }}{% endfor %}"),
    ]
    return gguf(kvs)


def main():
    os.makedirs(OUT, exist_ok=True)
    good = tensors_file()
    files = {
        "valid_tensors.gguf": good,
        "valid_v2_align64.gguf": tensors_file(version=2, alignment=64),
        "valid_tokenizer.gguf": tokenizer_file(),
        "bad_magic.gguf": b"GGML" + good[4:],
        "bad_version.gguf": good[:4] + struct.pack("<I", 1) + good[8:],
        "truncated.gguf": good[: len(good) // 2],
        "huge_kv_count.gguf": good[:16] + struct.pack("<Q", 2**60) + good[24:],
        "unknown_ggml_type.gguf": gguf([], [("w", [8], 77, b"\0" * 32)]),
        "offset_past_end.gguf": gguf([], [("w", [8], GGML_F32, b"\0" * 32)])[:-16],
        "q4_1_bad_row.gguf": gguf([], [("w", [48], GGML_Q4_1, b"\0" * 40)]),
    }
    for name, data in files.items():
        assert len(data) < 4096, (name, len(data))
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
