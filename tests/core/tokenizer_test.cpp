#include "core/tokenizer.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/unicode.h"
#include "test_util.h"

using namespace troupe;

namespace {

const std::string kModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

const Tokenizer& smollm2() {
  std::string path = test::data_path(kModelFile);
  if (access(path.c_str(), R_OK) != 0)
    FAIL("run scripts/setup.sh to fetch data/" << kModelFile << " (looked for " << path << ")");
  static Expected<Tokenizer> tok = Tokenizer::from_gguf_file(path);
  INFO((tok.ok() ? std::string() : tok.error().message));
  REQUIRE(tok.ok());
  return *tok;
}

struct Case {
  int line;
  bool parse_special;
  std::string text;
  std::vector<int32_t> ids;
  std::vector<size_t> piece_lengths;
};

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

template <class T>
std::vector<T> numbers(const std::string& s) {
  std::vector<T> v;
  std::istringstream in(s);
  for (long long x; in >> x;) v.push_back(T(x));
  return v;
}

std::vector<Case> load_cases() {
  std::ifstream in(test::fixture_path("tokenizer_cases.tsv"));
  REQUIRE(in.good());
  std::vector<Case> cases;
  std::string line;
  for (int n = 1; std::getline(in, line); n++) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> cols;
    std::istringstream ls(line);
    for (std::string col; std::getline(ls, col, '\t');) cols.push_back(col);
    while (cols.size() < 4) cols.push_back("");  // trailing empty columns (the empty text)
    cases.push_back({n, cols[0] == "1", from_hex(cols[1]), numbers<int32_t>(cols[2]), numbers<size_t>(cols[3])});
  }
  return cases;
}

std::string show(const std::string& s) {
  std::string out;
  for (unsigned char c : s) out += (c >= 32 && c < 127) ? std::string(1, char(c)) : strformat("\\x%02x", c);
  return out;
}

// ---- a tiny GGUF with only tokenizer metadata ---------------------------------------------------

struct MetaWriter {
  std::vector<uint8_t> kv;
  uint64_t n = 0;
  void raw(const void* p, size_t k) {
    const auto* c = static_cast<const uint8_t*>(p);
    kv.insert(kv.end(), c, c + k);
  }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void string(const std::string& key, const std::string& v) {
    str(key), u32(uint32_t(GgufValueType::String)), str(v), n++;
  }
  void id(const std::string& key, uint32_t v) { str(key), u32(uint32_t(GgufValueType::U32)), u32(v), n++; }
  void strings(const std::string& key, const std::vector<std::string>& v) {
    str(key), u32(uint32_t(GgufValueType::Array)), u32(uint32_t(GgufValueType::String)), u64(v.size());
    for (const auto& s : v) str(s);
    n++;
  }
  void i32s(const std::string& key, const std::vector<int32_t>& v) {
    str(key), u32(uint32_t(GgufValueType::Array)), u32(uint32_t(GgufValueType::I32)), u64(v.size());
    for (int32_t x : v) raw(&x, 4);
    n++;
  }
  std::vector<uint8_t> build() const {
    std::vector<uint8_t> b(24);
    uint32_t magic = 0x46554747, version = 3;
    uint64_t nt = 0;
    std::memcpy(b.data(), &magic, 4);
    std::memcpy(b.data() + 4, &version, 4);
    std::memcpy(b.data() + 8, &nt, 8);
    std::memcpy(b.data() + 16, &n, 8);
    b.insert(b.end(), kv.begin(), kv.end());
    return b;
  }
};

// Byte-level spelling of a byte string ("Ġ" for the space byte), as GGUF vocabularies store it.
std::string spell(const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) {
    uint32_t cp = b;
    if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))) {
      uint32_t next = 256;
      for (uint32_t x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE))) next++;
      cp = next;
    }
    utf8_append(cp, out);
  }
  return out;
}

// Vocabulary: <|end|> (control), every byte except 0x04, then the merge results.
struct ToyVocab {
  std::vector<std::string> tokens{"<|end|>"};
  std::vector<int32_t> types{3};
  std::vector<std::string> merges;
  ToyVocab() {
    for (int b = 0; b < 256; b++) {
      if (b == 4) continue;
      tokens.push_back(spell(std::string(1, char(b))));
      types.push_back(1);
    }
  }
  void merge(const std::string& a, const std::string& b) {
    merges.push_back(spell(a) + " " + spell(b));
    tokens.push_back(spell(a + b));
    types.push_back(1);
  }
};

Expected<Tokenizer> toy_tokenizer(const ToyVocab& v, const std::string& model = "gpt2",
                                  const std::string& pre = "smollm", uint32_t eos = 0) {
  MetaWriter w;
  w.string("tokenizer.ggml.model", model);
  w.string("tokenizer.ggml.pre", pre);
  w.strings("tokenizer.ggml.tokens", v.tokens);
  w.i32s("tokenizer.ggml.token_type", v.types);
  w.strings("tokenizer.ggml.merges", v.merges);
  w.id("tokenizer.ggml.eos_token_id", eos);
  std::vector<uint8_t> b = w.build();
  Expected<GgufFile> f = GgufFile::parse(b.data(), b.size(), "toy.gguf");
  if (!f) return f.error();
  return Tokenizer::from_gguf(*f);
}

std::vector<std::string> pieces(const Tokenizer& t, std::string_view s) {
  std::vector<std::string> out;
  for (std::string_view p : t.pre_tokenize(s)) out.emplace_back(p);
  return out;
}

using Pieces = std::vector<std::string>;

}  // namespace

TEST_CASE("tokenizer: SmolLM2 vocabulary and special tokens", "[tokenizer][data]") {
  const Tokenizer& t = smollm2();
  CHECK(t.vocab_size() == 49152);
  CHECK(t.bos_id() == 1);
  CHECK(t.eos_id() == 2);
  CHECK_FALSE(t.add_bos());
  CHECK(t.pre_type() == "smollm");
  CHECK(t.token_id("<|im_start|>") == 1);
  CHECK(t.token_id("<|im_end|>") == 2);
  CHECK(t.token_id("<|endoftext|>") == 0);
  CHECK(t.token_id("no such token") == std::nullopt);
  CHECK(t.is_control(2));
  CHECK_FALSE(t.is_control(100));
  CHECK(t.token_bytes(1) == "<|im_start|>");
  std::optional<int32_t> the = t.token_id("Ġthe");
  REQUIRE(the);
  CHECK(t.token_bytes(*the) == " the");
  CHECK(t.token_text(*the) == "Ġthe");
  CHECK(t.token_bytes(-1).empty());
  CHECK(t.token_bytes(49152).empty());
  CHECK(t.chat_template().find("<|im_start|>") != std::string::npos);
  CHECK(t.encode("<|im_start|>user\n") == std::vector<int32_t>{1, *t.token_id("user"), *t.token_id("Ċ")});
  // Without parse_special the marker is ordinary text.
  std::vector<int32_t> plain = t.encode("<|im_start|>", false);
  CHECK(plain.size() > 1);
  CHECK(std::find(plain.begin(), plain.end(), 1) == plain.end());
  CHECK(t.decode(plain) == "<|im_start|>");
}

TEST_CASE("tokenizer: matches Hugging Face tokenizers on every fixture case", "[tokenizer][data]") {
  const Tokenizer& t = smollm2();
  std::vector<Case> cases = load_cases();
  REQUIRE(cases.size() >= 100);
  int with_special = 0, unicode = 0;
  for (const Case& c : cases) {
    INFO("fixture line " << c.line << ": '" << show(c.text) << "' parse_special=" << c.parse_special);
    std::vector<int32_t> ids = t.encode(c.text, c.parse_special);
    CHECK(ids == c.ids);

    std::vector<size_t> lengths;
    for (std::string_view p : t.pre_tokenize(c.text)) lengths.push_back(p.size());
    CHECK(lengths == c.piece_lengths);

    // decode inverts encode, except for the bytes the vocabulary has no token for, which BPE drops.
    std::string kept;
    for (char ch : c.text)
      if (!t.encode(std::string(1, ch), false).empty()) kept += ch;
    CHECK(t.decode(ids) == kept);
    CHECK(t.decode(c.ids) == kept);

    with_special += c.text.find("<|") != std::string::npos;
    unicode += std::any_of(c.text.begin(), c.text.end(), [](char ch) { return uint8_t(ch) >= 0x80; });
  }
  CHECK(with_special >= 10);
  CHECK(unicode >= 20);
}

TEST_CASE("tokenizer: round trip on bytes that are not valid UTF-8", "[tokenizer][data]") {
  const Tokenizer& t = smollm2();
  std::string s = "caf\xc3\xa9 \xc3 \x80\x80 abc\xe2\x82 \xed\xa0\x80 \xc0\xaf";  // cut, stray, surrogate, overlong
  // 0xC0 has no token in SmolLM2's vocabulary; everything else comes back byte for byte.
  std::string expect = s;
  expect.erase(expect.find('\xc0'), 1);
  CHECK(t.decode(t.encode(s)) == expect);
  // Streaming: the bytes of each token, concatenated, are the text.
  std::string streamed;
  for (int32_t id : t.encode("naïve 日本語 😀")) streamed += t.token_bytes(id);
  CHECK(streamed == "naïve 日本語 😀");
}

TEST_CASE("tokenizer: pre-tokenizer splits like Digits + the GPT-2 regex", "[tokenizer]") {
  ToyVocab v;
  Expected<Tokenizer> r = toy_tokenizer(v);
  REQUIRE(r.ok());
  const Tokenizer& t = *r;
  CHECK(pieces(t, "Hello world") == Pieces{"Hello", " world"});
  CHECK(pieces(t, "Hello  world") == Pieces{"Hello", " ", " world"});
  CHECK(pieces(t, "a 12") == Pieces{"a", " ", "1", "2"});  // the space before a digit stands alone
  CHECK(pieces(t, "x  1") == Pieces{"x", "  ", "1"});      // \s+(?!\S) sees the digit as the end
  CHECK(pieces(t, "it's we'll I'VE") == Pieces{"it", "'s", " we", "'ll", " I", "'", "VE"});
  CHECK(pieces(t, "a\tb") == Pieces{"a", "\t", "b"});
  CHECK(pieces(t, "a \n b") == Pieces{"a", " \n", " b"});
  CHECK(pieces(t, "end  ") == Pieces{"end", "  "});
  CHECK(pieces(t, "f(x)!! ?") == Pieces{"f", "(", "x", ")!!", " ?"});
  CHECK(pieces(t, "é\u0301x") == Pieces{"é", "\u0301", "x"});  // a combining mark is not a letter
  CHECK(pieces(t, "日本 語") == Pieces{"日本", " 語"});
  CHECK(pieces(t, "Ⅻ½") == Pieces{"Ⅻ", "½"});  // number characters beyond 0-9 are isolated too
  CHECK(pieces(t, "\u3000\u3000\u3000x") == Pieces{"\u3000\u3000", "\u3000", "x"});  // backtrack over 3-byte spaces
  CHECK(pieces(t, "a\xff\xfe b") == Pieces{"a", "\xff\xfe", " b"});                  // invalid bytes group as "other"
  CHECK(pieces(t, "") == Pieces{});

  // The plain GPT-2 split keeps numbers together.
  Expected<Tokenizer> g = toy_tokenizer(v, "gpt2", "gpt2");
  REQUIRE(g.ok());
  CHECK(pieces(*g, "a 12 x  1") == Pieces{"a", " 12", " x", " ", " 1"});
}

TEST_CASE("tokenizer: BPE applies merges by rank, leftmost first", "[tokenizer]") {
  ToyVocab v;
  v.merge("b", "c");   // rank 0
  v.merge("a", "b");   // rank 1
  v.merge("a", "bc");  // rank 2
  v.merge("x", "x");   // rank 3
  v.merge("(", ")");   // rank 4
  Expected<Tokenizer> r = toy_tokenizer(v);
  REQUIRE(r.ok());
  const Tokenizer& t = *r;
  auto id = [&](const std::string& bytes) { return t.token_id(spell(bytes)).value(); };
  CHECK(t.encode("abc") == std::vector<int32_t>{id("abc")});  // bc first, then a+bc
  CHECK(t.encode("abd") == std::vector<int32_t>{id("ab"), id("d")});
  CHECK(t.encode("xxx") == std::vector<int32_t>{id("xx"), id("x")});  // leftmost of equal ranks
  CHECK(t.encode("xxxx") == std::vector<int32_t>{id("xx"), id("xx")});
  // A byte without a token is dropped and its neighbours in the piece then merge, as in HF.
  CHECK(t.encode("(\x04)") == std::vector<int32_t>{id("()")});
  CHECK(t.decode(t.encode("(\x04)")) == "()");
  // The control token is cut out first, and only when parse_special.
  CHECK(t.encode("abc<|end|>abc") == std::vector<int32_t>{id("abc"), 0, id("abc")});
  CHECK(t.encode("<|end|>", false).size() == 7);
  CHECK(t.encode("abc abc abc").size() == 5);  // "abc", then " abc" = " " + "abc" twice (cached)
}

TEST_CASE("tokenizer: bad tokenizer metadata is an error naming the field", "[tokenizer]") {
  ToyVocab v;
  auto message = [](const Expected<Tokenizer>& r) { return r.ok() ? std::string("(no error)") : r.error().message; };
  CHECK_THAT(message(toy_tokenizer(v, "llama")),
             Catch::Contains("toy.gguf: tokenizer: model 'llama' is not supported"));
  CHECK_THAT(message(toy_tokenizer(v, "gpt2", "qwen2")), Catch::Contains("pre-tokenizer 'qwen2' is not supported"));
  CHECK_THAT(message(toy_tokenizer(v, "gpt2", "smollm", 9999)),
             Catch::Contains("tokenizer.ggml.eos_token_id = 9999 is outside the vocabulary"));

  ToyVocab bad_merge = v;
  bad_merge.merges.push_back("a zz");
  CHECK_THAT(message(toy_tokenizer(bad_merge)), Catch::Contains("merge [0] 'a zz': 'zz' is not in the vocabulary"));
  ToyVocab no_space = v;
  no_space.merges.push_back("ab");
  CHECK_THAT(message(toy_tokenizer(no_space)),
             Catch::Contains("merge [0] 'ab' is not two tokens separated by one space"));
  ToyVocab short_types = v;
  short_types.types.pop_back();
  CHECK_THAT(message(toy_tokenizer(short_types)), Catch::Contains("token_type has 255 entries for 256 tokens"));

  MetaWriter w;
  w.string("tokenizer.ggml.model", "gpt2");
  std::vector<uint8_t> b = w.build();
  Expected<GgufFile> f = GgufFile::parse(b.data(), b.size(), "bare.gguf");
  REQUIRE(f.ok());
  CHECK_THAT(message(Tokenizer::from_gguf(*f)),
             Catch::Contains("bare.gguf: metadata key 'tokenizer.ggml.pre' is missing"));
}

TEST_CASE("unicode: UTF-8 decoding is strict and consumes every byte", "[tokenizer]") {
  uint32_t cp;
  CHECK(utf8_decode("\xe6\x97\xa5", 3, &cp) == 3);
  CHECK(cp == 0x65E5);
  CHECK(utf8_decode("\xf0\x9f\x98\x80", 4, &cp) == 4);
  CHECK(cp == 0x1F600);
  for (const char* bad : {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80", "\xff", "\xe6\x97"}) {
    CHECK(utf8_decode(bad, std::strlen(bad), &cp) == 1);
    CHECK(cp == kInvalidCodePoint);
  }
  CHECK(char_class('a') == CharClass::Letter);
  CHECK(char_class('7') == CharClass::Number);
  CHECK(char_class(0x3000) == CharClass::Space);
  CHECK(char_class(0x00BD) == CharClass::Number);  // ½
  CHECK(char_class(0x4E2D) == CharClass::Letter);  // 中
  CHECK(char_class(0x0301) == CharClass::Other);   // combining acute
  CHECK(char_class(0x200B) == CharClass::Other);   // zero-width space is not White_Space
  CHECK(char_class(0x10FFFF) == CharClass::Other);
}

// Throughput on about 4 MB of English-like text. Hidden: run with `troupe_core_tests [bench]`.
// TROUPE_BENCH_TEXT names a real text file to use instead.
TEST_CASE("tokenizer: encode throughput", "[.][bench][tokenizer]") {
  const Tokenizer& t = smollm2();
  std::string text;
  if (const char* p = std::getenv("TROUPE_BENCH_TEXT")) {
    std::ifstream in(p, std::ios::binary);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  if (text.empty()) {
    // Words drawn from the vocabulary with a fixed LCG: many distinct words, like real text.
    uint64_t s = 42;
    while (text.size() < (4u << 20)) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const std::string& w = t.token_bytes(int32_t(17 + (s >> 33) % 40000));
      text += w;
      if ((s >> 20) % 7 == 0) text += (s >> 13) % 3 ? ". " : ",\n";
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> ids = t.encode(text);
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("encode: %zu bytes -> %zu tokens in %.3f s (%.1f MB/s)\n", text.size(), ids.size(), sec,
              double(text.size()) / sec / 1e6);
  std::printf("{\"bench\": \"tokenizer_encode\", \"bytes\": %zu, \"tokens\": %zu, \"seconds\": %.4f}\n", text.size(),
              ids.size(), sec);
  CHECK(t.decode(ids).size() <= text.size());
}
