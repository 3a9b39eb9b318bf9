// libFuzzer target for the GGUF reader and the BPE tokenizer (scripts/fuzz.sh runs it).
//
// Whatever the bytes, GgufFile::parse must return a file or an Error naming the file, never
// crash, read outside the buffer or allocate without bound. What parses must dequantize inside
// its bounds and must build a Tokenizer or say why; a Tokenizer built from fuzzed metadata, and a
// fixed byte-level one, must encode any bytes so that decode(encode(s)) == s whenever every byte
// of s has a token.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/gguf.h"
#include "core/tokenizer.h"

using namespace troupe;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// True when every byte of s can come back from decode(encode(s)).
bool all_bytes_have_tokens(const Tokenizer& t, std::string_view s) {
  bool seen[256] = {};
  for (unsigned char b : s) {
    if (seen[b]) continue;
    seen[b] = true;
    if (t.encode(std::string(1, char(b))).empty()) return false;
  }
  return true;
}

void exercise_tokenizer(const Tokenizer& t, std::string_view text) {
  std::vector<int32_t> ids = t.encode(text);
  for (int32_t id : ids) check(id >= 0 && id < t.vocab_size());
  std::vector<int32_t> plain = t.encode(text, /*parse_special=*/false);
  size_t covered = 0;
  for (std::string_view p : t.pre_tokenize(text)) {
    check(!p.empty() && p.data() == text.data() + covered);
    covered += p.size();
  }
  check(covered == text.size());
  if (all_bytes_have_tokens(t, text)) {
    check(t.decode(ids) == text);
    check(t.decode(plain) == text);
  }
}

// A fixed tokenizer: every byte, a few merges, one control token. It lets every input also
// exercise the pre-tokenizer and BPE as text.
Tokenizer byte_tokenizer() {
  std::vector<uint8_t> b;
  auto put = [&](const void* p, size_t n) { b.insert(b.end(), (const uint8_t*)p, (const uint8_t*)p + n); };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  auto str = [&](const std::string& s) { u64(s.size()), put(s.data(), s.size()); };
  auto spell = [](unsigned char c) {  // GPT-2 byte-to-unicode, as UTF-8
    uint32_t cp = c, next = 256;
    auto printable = [](uint32_t x) { return (x >= 33 && x <= 126) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE; };
    if (!printable(c)) {
      for (uint32_t x = 0; x < c; x++) next += !printable(x);
      cp = next;
    }
    std::string s;
    if (cp < 0x80)
      s += char(cp);
    else
      s += char(0xC0 | (cp >> 6)), s += char(0x80 | (cp & 0x3F));
    return s;
  };
  std::vector<std::string> tokens = {"<|x|>"};
  for (int c = 0; c < 256; c++) tokens.push_back(spell((unsigned char)c));
  std::vector<std::string> merges = {spell(' ') + " t", "h e", spell(' ') + "t he", "a a", "1 2"};
  for (const std::string& m : merges) {
    std::string joined = m;
    joined.erase(joined.find(' '), 1);
    tokens.push_back(joined);
  }
  u32(0x46554747), u32(3), u64(0), u64(5);
  str("tokenizer.ggml.model"), u32(8), str("gpt2");
  str("tokenizer.ggml.pre"), u32(8), str("smollm");
  str("tokenizer.ggml.tokens"), u32(9), u32(8), u64(tokens.size());
  for (const auto& t : tokens) str(t);
  str("tokenizer.ggml.merges"), u32(9), u32(8), u64(merges.size());
  for (const auto& m : merges) str(m);
  str("tokenizer.ggml.token_type"), u32(9), u32(5), u64(tokens.size());
  for (size_t k = 0; k < tokens.size(); k++) u32(k == 0 ? 3 : 1);
  return Tokenizer::from_gguf(GgufFile::parse(b.data(), b.size(), "byte.gguf").value()).value();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizer bytes = byte_tokenizer();
  exercise_tokenizer(bytes, std::string_view(reinterpret_cast<const char*>(data), size));

  Expected<GgufFile> f = GgufFile::parse(data, size, "fuzz.gguf");
  if (!f) {
    check(f.error().message.rfind("fuzz.gguf: offset ", 0) == 0);
    return 0;
  }
  for (const auto& [key, value] : f->metadata()) {
    (void)value.summary();
    (void)f->get_u32(key), (void)f->get_i64(key), (void)f->get_f32(key), (void)f->get_string(key);
    (void)f->get_i32_array(key), (void)f->get_f32_array(key);
  }
  for (const GgufTensorInfo& t : f->tensors()) {
    check(f->data_offset() + t.offset + t.nbytes <= size);
    Expected<Tensor> x = f->dequantize(t);
    if (!x) continue;
    check(x->numel() == t.numel);
    float acc = 0;
    for (float v : x->to_vector()) acc += v;  // reads every element (ASan checks the writes)
    (void)acc;
  }
  Expected<Tokenizer> tok = Tokenizer::from_gguf(*f);
  if (tok) {
    exercise_tokenizer(*tok, "Hello, world! It's 2024: na\xc3\xafve \xe6\x97\xa5 <|im_start|>user\n  x\t\ty");
    exercise_tokenizer(*tok, std::string_view(reinterpret_cast<const char*>(data), size));
  }
  return 0;
}
