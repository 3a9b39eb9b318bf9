#!/usr/bin/env python3
"""Writes the fixtures that tests/core/tokenizer_test.cpp and tests/core/gguf_test.cpp hold the
GGUF reader and the BPE tokenizer to, from the real SmolLM2-135M-Instruct Q4_1 GGUF:

  tests/fixtures/tokenizer_cases.tsv   one case per line (lines starting with # are comments):
      parse_special (0/1) TAB text as hex TAB token ids TAB byte lengths of the pre-tokenizer pieces
  tests/fixtures/gguf_dequant.txt      for one F32, one Q4_1 and one Q8_0 tensor: name, ggml type,
      ne, element count, sum and a position-weighted sum of all values (float64), and the first 64
      values, all from the gguf package's dequantize.

Which reference tokenizer, and why. SmolLM2's own tokenizer.json (HuggingFaceTB/SmolLM2-135M-Instruct)
is a byte-level BPE with
    normalizer: null
    pre_tokenizer: Sequence[Digits(individual_digits=True),
                            ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]
    model: BPE(unk_token=None, byte_fallback=False, ignore_merges=False), ByteLevel decoder
    added tokens: ids 0..16 (<|endoftext|>, <|im_start|>, <|im_end|>, <repo_name>, ...), special,
                  lstrip/rstrip/single_word/normalized all false.
llama.cpp agrees: its "smollm" pre-type (llama-vocab.cpp) runs the regex "\\p{N}" and then the
GPT-2 regex, i.e. every number character is its own piece.

transformers' own GGUF path (AutoTokenizer.from_pretrained(dir, gguf_file=...), transformers 5.x)
is NOT faithful here: it has no entry for the "smollm" pre-type, so it builds a GPT2Tokenizer whose
pre-tokenizer is ByteLevel alone, without Digits: " 2024" becomes one piece instead of " ", "2",
"0", "2", "4". It also maps unknown_token_id to an unk token, which the real tokenizer does not
have. So this script builds the reference tokenizers.Tokenizer directly from the GGUF's vocabulary
and merges with SmolLM2's tokenizer.json configuration above, and reports (without failing) on
how many cases transformers' GGUF tokenizer disagrees.

Needs: gguf, numpy, tokenizers (transformers optional, for the comparison).
Usage: python3 tests/reference/make_tokenizer_fixture.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""

import os
import random
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def field(reader, key):
    return reader.fields[key].contents()


def reference_tokenizer(reader):
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ")) for m in field(reader, "tokenizer.ggml.merges")]
    types = field(reader, "tokenizer.ggml.token_type")
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False,
                               ignore_merges=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    control = [t for t, ty in zip(tokens, types) if ty == 3]
    assert control == tokens[:17], control  # SmolLM2's added tokens are ids 0..16
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tok


PROSE = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
         "want of a wife. However little known the feelings or views of such a man may be on his first entering "
         "a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
         "considered the rightful property of some one or other of their daughters.")

CASES = [
    "",
    "Hello world",
    "Hello, world!",
    PROSE,
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple     internal      spaces",
    "   ",
    " ",
    "a  b   c    d",
    "tabs\tbetween\t\twords",
    "\t\tleading tabs",
    "line one\nline two\n\nline four\n",
    "\n\n\n",
    "windows\r\nline\r\nendings",
    "mixed \t\n whitespace \n\t runs",
    "word\n    indented",
    "7",
    "2024",
    "Pi is 3.14159265358979 and e is 2.718281828",
    "Call 555-0123 or +1 (800) 555-0199.",
    "123456789012345678901234567890",
    "room 101, floor 12, 1,000,000 dollars, 0.5%",
    "v1.2.3-rc4",
    "x1y2z3",
    "It's, you'll, we've, I'm, they'd, we're, don't",
    "IT'S YOU'LL WE'VE I'M THEY'D WE'RE DON'T",
    "'s 't 're 've 'm 'll 'd",
    "''quoted'' and 'single' quotes",
    "rock'n'roll o'clock",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "#include <vector>\nstd::vector<int> v{1, 2, 3};\n",
    "template <class T> auto f(T&& x) -> decltype(x) { return std::forward<T>(x); }",
    "if (a != b && c >= d || !e) return -1;",
    "SELECT name, COUNT(*) FROM users WHERE age > 21 GROUP BY name;",
    "https://example.com/path?query=1&lang=en#section",
    "user@example.org",
    "!!! ??? ... --- *** ### $$$ %%% &&& ((( )))",
    "<<>> [[]] {{}} || \\\\ // ~~ ``",
    "#!/bin/bash\necho \"$HOME\" | grep -v '^#'",
    "Café naïve résumé façade Ångström",
    "e\u0301 combining acute, a\u0308 combining diaeresis",
    "Ελληνικά και Русский текст",
    "你好，世界！这是一个测试。",
    "日本語のテキストとカタカナ",
    "한국어 텍스트입니다",
    "مرحبا بالعالم",
    "שלום עולם",
    "Emoji: 😀👍🏽🇺🇸 and ❤️ and 👨‍👩‍👧‍👦",
    "math: ∀x ∈ ℝ, x² ≥ 0; ∑ᵢ aᵢ ≠ ∞",
    "full\u3000width\u00a0nbsp\u2009thin\u200bzero",
    "Roman Ⅻ, superscript ²³, fractions ½ ¾, Arabic-Indic ٣٤٥",
    "\u0000nul\u0001soh\u0004eot\u001fus\u007fdel",
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n",
    "<|im_start|>",
    "<|im_end|><|im_end|>",
    "<|endoftext|>",
    "text<|im_start|>glued<|im_end|>text",
    "<|im_start|> spaced <|im_end|>",
    "<|im_start|assistant",
    "<|im_start|system\n",
    "<repo_name>troupe<file_sep>core/gguf.cpp<filename>x<gh_stars>5",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
     "<|im_start|>user\nWrite a haiku about actors passing messages.<|im_end|>\n<|im_start|>assistant\n"),
    "A" * 300,
    " " * 40 + "x",
    "-" * 80,
    "a\u00adsoft hyphen",
]

# Cases encoded with parse_special = False (special token text tokenized as ordinary text).
PLAIN_CASES = [
    "<|im_start|>user\nhi<|im_end|>\n",
    "<|endoftext|>",
    "a<jupyter_code>b",
]

# Pools for seeded random strings: they exercise the split at every class boundary.
POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " ", " ", " ", "\t", "\n", "\r",
    "'\"!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`",
    "éñüßøåçÉÑÜ",
    "αβγδЖЗИЙ",
    "中文字日本語한국",
    "٠١٢٣½²Ⅻ",
    "😀🎉👍🏽❤️",
    "\u00a0\u3000\u2028\u0085",
    "\u0301\u0308\u200d\u200b",
]


def random_cases(n, seed=1234):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(1, 40)
        s = "".join(rng.choice(rng.choice(POOLS)) for _ in range(length))
        if rng.random() < 0.15:
            s = s[: len(s) // 2] + rng.choice(["<|im_start|>", "<|im_end|>", "<|endoftext|>"]) + s[len(s) // 2:]
        out.append(s)
    return out


def piece_lengths(tok, text):
    """Byte lengths of the pre-tokenizer's pieces (offsets are in characters)."""
    pieces = tok.pre_tokenizer.pre_tokenize_str(text)
    lengths = [len(text[a:b].encode("utf-8")) for _, (a, b) in pieces]
    assert sum(lengths) == len(text.encode("utf-8"))
    return lengths


def write_tokenizer_cases(reader, path):
    tok = reference_tokenizer(reader)
    cases = [(True, s) for s in CASES + random_cases(40)] + [(False, s) for s in PLAIN_CASES]
    lines = [
        "# Generated by tests/reference/make_tokenizer_fixture.py from " + GGUF_NAME + "; do not edit.",
        "# parse_special<TAB>text as hex<TAB>token ids<TAB>byte lengths of the pre-tokenizer pieces",
    ]
    results = []
    for special, text in cases:
        tok.encode_special_tokens = not special
        ids = tok.encode(text, add_special_tokens=False).ids
        results.append(ids)
        lines.append("\t".join([str(int(special)), text.encode("utf-8").hex(), " ".join(map(str, ids)),
                                " ".join(map(str, piece_lengths(tok, text)))]))
    tok.encode_special_tokens = False
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}: {len(cases)} cases")
    compare_with_transformers(cases, results)


def compare_with_transformers(cases, results):
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "data", GGUF_NAME)
    try:
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    except Exception as e:  # informational only
        print(f"(transformers comparison skipped: {e})")
        return
    differ = [text for (special, text), ids in zip(cases, results)
              if special and hf.encode(text, add_special_tokens=False) != ids]
    print(f"transformers' GGUF tokenizer disagrees with the reference on {len(differ)} of {len(cases)} cases, "
          f"e.g. {differ[:3]!r}")


def write_dequant(reader, path):
    chosen = {}
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind in ("F32", "Q4_1", "Q8_0") and kind not in chosen:
            chosen[kind] = t
    lines = [
        "# Generated by tests/reference/make_tokenizer_fixture.py from " + GGUF_NAME + " with gguf's dequantize.",
        "# name type ne(comma-separated, GGUF order) numel sum wsum then the first 64 values;",
        "# wsum = sum of v[i] * ((i % 17) - 8), sums in float64 over the values in file order.",
    ]
    for kind in ("F32", "Q4_1", "Q8_0"):
        t = chosen[kind]
        v = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        assert v.size == int(np.prod(t.shape)), (t.name, v.size, t.shape)
        w = (np.arange(v.size) % 17 - 8).astype(np.float64)
        vd = v.astype(np.float64)
        head = " ".join("%.9g" % x for x in v[:64])
        ne = ",".join(str(int(d)) for d in t.shape)
        lines.append(f"{t.name} {kind} {ne} {v.size} {vd.sum():.17g} {(vd * w).sum():.17g} {head}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}: " + ", ".join(f"{chosen[k].name} ({k})" for k in ("F32", "Q4_1", "Q8_0")))


def main():
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "data", GGUF_NAME)
    if not os.path.exists(gguf_path):
        sys.exit(f"{gguf_path} not found: run scripts/setup.sh to fetch data/{GGUF_NAME}")
    reader = GGUFReader(gguf_path)
    os.makedirs(FIXTURES, exist_ok=True)
    write_tokenizer_cases(reader, os.path.join(FIXTURES, "tokenizer_cases.tsv"))
    write_dequant(reader, os.path.join(FIXTURES, "gguf_dequant.txt"))


if __name__ == "__main__":
    main()
