#include "core/tokenizer.h"

#include <algorithm>
#include <cstring>

#include "core/unicode.h"

namespace troupe {

namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// (controls, space, DEL, NBSP, soft hyphen) take code points 256, 257, ... in byte order, so
// that every token is a printable string ("Ġ" = U+0120 is the space byte).
std::array<uint32_t, 256> byte_to_code_point() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; b++) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    map[b] = printable ? b : next++;
  }
  return map;
}

// Inverse of byte_to_code_point over [0, 324); -1 for code points that stand for no byte.
std::array<int16_t, 324> code_point_to_byte() {
  std::array<int16_t, 324> inv;
  inv.fill(-1);
  std::array<uint32_t, 256> map = byte_to_code_point();
  for (int b = 0; b < 256; b++) inv[map[size_t(b)]] = int16_t(b);
  return inv;
}

// Raw bytes of a vocabulary entry: each character maps back to its byte. An entry with any
// character outside the byte alphabet is taken as plain UTF-8 (transformers' rule for GGUF).
std::string vocab_entry_bytes(const std::string& text, const std::array<int16_t, 324>& inv) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    i += size_t(utf8_decode(text.data() + i, text.size() - i, &cp));
    if (cp >= inv.size() || inv[cp] < 0) return text;
    out += char(inv[cp]);
  }
  return out;
}

// llama.cpp pre-tokenizer names whose split is Digits(individual) then the GPT-2 regex
// (llama-vocab.cpp groups them under one regex list), and names using the GPT-2 regex alone.
constexpr std::string_view kDigitSplitPre[] = {"smollm",    "starcoder", "refact", "command-r",
                                               "codeshell", "exaone",    "minerva"};
constexpr std::string_view kGpt2Pre[] = {"gpt-2", "gpt2", "mpt", "olmo", "jais", "trillion"};

const std::string kEmpty;

}  // namespace

// Per-call working memory: encode() is const and thread-safe, so nothing is cached across calls.
struct Tokenizer::Scratch {
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours in the word, -1 at the ends
    bool alive;
  };
  struct Candidate {  // a possible merge of symbols[pos] with its right neighbour
    int32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  // Pieces already encoded in this call: piece -> [start, start + len) of `out`.
  std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> cache;
};

Expected<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  const std::string& file = f.name();
  auto fail = [&](const std::string& msg) { return make_error(file + ": tokenizer: " + msg); };

  Expected<std::string> model = f.get_string("tokenizer.ggml.model");
  if (!model) return model.error();
  if (*model != "gpt2") return fail("model '" + *model + "' is not supported (only 'gpt2', byte-level BPE)");

  Tokenizer t;
  Expected<std::string> pre = f.get_string("tokenizer.ggml.pre");
  if (!pre) return pre.error();
  t.pre_type_ = *pre;
  if (std::find(std::begin(kDigitSplitPre), std::end(kDigitSplitPre), t.pre_type_) != std::end(kDigitSplitPre)) {
    t.split_digits_ = true;
  } else if (std::find(std::begin(kGpt2Pre), std::end(kGpt2Pre), t.pre_type_) != std::end(kGpt2Pre)) {
    t.split_digits_ = false;
  } else {
    return fail("pre-tokenizer '" + t.pre_type_ +
                "' is not supported (supported: smollm, starcoder and others "
                "splitting digits then the GPT-2 regex; gpt2)");
  }

  Expected<std::vector<std::string>> tokens = f.get_string_array("tokenizer.ggml.tokens");
  if (!tokens) return tokens.error();
  if (tokens->empty()) return fail("tokenizer.ggml.tokens is empty");
  if (tokens->size() > size_t(INT32_MAX)) return fail("more than 2^31 tokens");
  const int32_t n = int32_t(tokens->size());
  t.text_ = std::move(*tokens);

  std::vector<int32_t> types;
  if (f.has("tokenizer.ggml.token_type")) {
    Expected<std::vector<int32_t>> tt = f.get_i32_array("tokenizer.ggml.token_type");
    if (!tt) return tt.error();
    if (tt->size() != size_t(n))
      return fail(strformat("tokenizer.ggml.token_type has %zu entries for %d tokens", tt->size(), n));
    types = std::move(*tt);
  }

  const std::array<int16_t, 324> inv = code_point_to_byte();
  t.bytes_.resize(size_t(n));
  t.control_.assign(size_t(n), 0);
  t.id_of_text_.reserve(size_t(n));
  for (int32_t id = 0; id < n; id++) {
    t.bytes_[size_t(id)] = vocab_entry_bytes(t.text_[size_t(id)], inv);
    t.id_of_text_[t.text_[size_t(id)]] = id;  // a repeated spelling maps to its last id, as in HF's vocab
  }

  const std::array<uint32_t, 256> b2u = byte_to_code_point();
  for (int b = 0; b < 256; b++) {
    std::string s;
    utf8_append(b2u[size_t(b)], s);
    auto it = t.id_of_text_.find(s);
    t.byte_id_[size_t(b)] = it == t.id_of_text_.end() ? -1 : it->second;
  }

  // Merges "left right", rank = position. A repeated pair keeps its last rank, as HF's map does.
  Expected<std::vector<std::string>> merges = f.get_string_array("tokenizer.ggml.merges");
  if (!merges) return merges.error();
  t.merges_.reserve(merges->size());
  for (size_t k = 0; k < merges->size(); k++) {
    const std::string& m = (*merges)[k];
    size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() || m.find(' ', sp + 1) != std::string::npos)
      return fail(strformat("merge [%zu] '%s' is not two tokens separated by one space", k, m.c_str()));
    std::string left = m.substr(0, sp), right = m.substr(sp + 1);
    auto l = t.id_of_text_.find(left), r = t.id_of_text_.find(right), res = t.id_of_text_.find(left + right);
    if (l == t.id_of_text_.end() || r == t.id_of_text_.end() || res == t.id_of_text_.end())
      return fail(strformat("merge [%zu] '%s': '%s' is not in the vocabulary", k, m.c_str(),
                            (l == t.id_of_text_.end()   ? left
                             : r == t.id_of_text_.end() ? right
                                                        : left + right)
                                .c_str()));
    if (k > size_t(INT32_MAX)) return fail("more than 2^31 merges");
    t.merges_[uint64_t(uint32_t(l->second)) << 32 | uint32_t(r->second)] = Merge{int32_t(k), res->second};
  }

  // Control tokens (type 3) and user-defined tokens (type 4) are matched whole in the text.
  for (int32_t id = 0; id < n && !types.empty(); id++) {
    int32_t ty = types[size_t(id)];
    if ((ty != 3 && ty != 4) || t.bytes_[size_t(id)].empty()) continue;
    t.control_[size_t(id)] = ty == 3;
    t.specials_.push_back(Special{t.bytes_[size_t(id)], id, ty == 3});
    t.special_first_byte_[uint8_t(t.bytes_[size_t(id)][0])] = true;
  }
  std::stable_sort(t.specials_.begin(), t.specials_.end(),
                   [](const Special& a, const Special& b) { return a.bytes.size() > b.bytes.size(); });

  auto optional_id = [&](const char* key, int32_t* out) -> Expected<void> {
    if (!f.has(key)) return {};
    Expected<uint32_t> v = f.get_u32(key);
    if (!v) return v.error();
    if (*v >= uint32_t(n)) return fail(strformat("%s = %u is outside the vocabulary of %d", key, *v, n));
    *out = int32_t(*v);
    return {};
  };
  if (Expected<void> r = optional_id("tokenizer.ggml.bos_token_id", &t.bos_id_); !r) return r.error();
  if (Expected<void> r = optional_id("tokenizer.ggml.eos_token_id", &t.eos_id_); !r) return r.error();
  if (f.has("tokenizer.ggml.add_bos_token")) {
    Expected<bool> b = f.get_bool("tokenizer.ggml.add_bos_token");
    if (!b) return b.error();
    t.add_bos_ = *b;
  }
  if (f.has("tokenizer.chat_template")) {
    Expected<std::string> ct = f.get_string("tokenizer.chat_template");
    if (!ct) return ct.error();
    t.chat_template_ = std::move(*ct);
  }
  return t;
}

Expected<Tokenizer> Tokenizer::from_gguf_file(const std::string& path) {
  Expected<GgufFile> f = GgufFile::open(path);
  if (!f) return f.error();
  return from_gguf(*f);
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  return id >= 0 && id < vocab_size() ? bytes_[size_t(id)] : kEmpty;
}

const std::string& Tokenizer::token_text(int32_t id) const {
  return id >= 0 && id < vocab_size() ? text_[size_t(id)] : kEmpty;
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token_text) const {
  auto it = id_of_text_.find(std::string(token_text));
  if (it == id_of_text_.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && id < vocab_size() && control_[size_t(id)];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

// ---- pre-tokenization -------------------------------------------------------------------------

// End of the piece starting at s[i]: the alternatives of
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// tried in order, as a backtracking regex engine would. With split_digits_ (Digits first) every
// number character is a piece of its own, and the regex sees the text between two number
// characters as a whole input: `(?!\S)` then holds before a number character.
size_t Tokenizer::piece_end(std::string_view s, size_t i) const {
  const size_t n = s.size();
  uint32_t c;
  size_t len = size_t(utf8_decode(s.data() + i, n - i, &c));
  CharClass cls = c == kInvalidCodePoint ? CharClass::Other : char_class(c);
  if (split_digits_ && cls == CharClass::Number) return i + len;

  if (c == '\'' && i + 1 < n) {
    char a = s[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
      char b = s[i + 2];
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
  }

  // ` ?X+` for X = letters, numbers (without Digits), others.
  size_t j = i;
  CharClass run = cls;
  if (c == ' ' && i + 1 < n) {
    uint32_t c2;
    int len2 = utf8_decode(s.data() + i + 1, n - i - 1, &c2);
    CharClass cls2 = c2 == kInvalidCodePoint ? CharClass::Other : char_class(c2);
    if (cls2 != CharClass::Space && !(split_digits_ && cls2 == CharClass::Number)) {
      run = cls2;
      j = i + 1 + size_t(len2);
    }
  } else if (cls != CharClass::Space) {
    j = i + len;
  }
  if (run != CharClass::Space) {
    while (j < n) {
      uint32_t cj;
      int lj = utf8_decode(s.data() + j, n - j, &cj);
      CharClass k = cj == kInvalidCodePoint ? CharClass::Other : char_class(cj);
      if (k != run) break;
      j += size_t(lj);
    }
    return j;
  }

  // Whitespace run [i, k); last_start is where its last character begins.
  size_t k = i, last_start = i;
  int chars = 0;
  CharClass after = CharClass::Other;
  while (k < n) {
    uint32_t ck;
    int lk = utf8_decode(s.data() + k, n - k, &ck);
    after = ck == kInvalidCodePoint ? CharClass::Other : char_class(ck);
    if (after != CharClass::Space) break;
    last_start = k;
    k += size_t(lk);
    chars++;
  }
  bool at_end = k == n || (split_digits_ && after == CharClass::Number);
  if (at_end) return k;               // \s+(?!\S) takes the whole run
  if (chars >= 2) return last_start;  // \s+(?!\S) backtracks one character
  return k;                           // \s+ : a single whitespace character before a non-space
}

std::vector<std::string_view> Tokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < text.size();) {
    size_t j = piece_end(text, i);
    pieces.push_back(text.substr(i, j - i));
    i = j;
  }
  return pieces;
}

// ---- BPE --------------------------------------------------------------------------------------

const Tokenizer::Merge* Tokenizer::find_merge(int32_t left, int32_t right) const {
  auto it = merges_.find(uint64_t(uint32_t(left)) << 32 | uint32_t(right));
  return it == merges_.end() ? nullptr : &it->second;
}

// Merges the byte tokens of one piece, always the lowest-rank pair first and the leftmost of
// equal ranks (a min-heap of candidates; stale ones are skipped when popped). This is the
// algorithm of tokenizers' BPE model, including its staleness test: a candidate is still good if
// the pair now at its position merges into the same token.
void Tokenizer::bpe(std::string_view piece, Scratch& sc, std::vector<int32_t>& out) const {
  auto& syms = sc.symbols;
  syms.clear();
  for (unsigned char b : piece) {
    int32_t id = byte_id_[b];
    if (id < 0) continue;  // no token for this byte and no unk token: dropped, as HF does
    int32_t pos = int32_t(syms.size());
    if (pos > 0) syms.back().next = pos;
    syms.push_back({id, pos - 1, -1, true});
  }
  if (syms.size() > 1) {
    auto later = [](const Scratch::Candidate& a, const Scratch::Candidate& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    };
    auto& heap = sc.heap;
    heap.clear();
    for (size_t p = 0; p + 1 < syms.size(); p++)
      if (const Merge* m = find_merge(syms[p].id, syms[p + 1].id)) heap.push_back({m->rank, int32_t(p), m->new_id});
    std::make_heap(heap.begin(), heap.end(), later);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), later);
      Scratch::Candidate top = heap.back();
      heap.pop_back();
      Scratch::Symbol& cur = syms[size_t(top.pos)];
      if (!cur.alive || cur.next < 0) continue;
      Scratch::Symbol& right = syms[size_t(cur.next)];
      const Merge* now = find_merge(cur.id, right.id);
      if (!now || now->new_id != top.new_id) continue;  // stale
      cur.id = top.new_id;
      right.alive = false;
      cur.next = right.next;
      if (cur.next >= 0) syms[size_t(cur.next)].prev = top.pos;
      if (cur.prev >= 0)
        if (const Merge* m = find_merge(syms[size_t(cur.prev)].id, cur.id)) {
          heap.push_back({m->rank, cur.prev, m->new_id});
          std::push_heap(heap.begin(), heap.end(), later);
        }
      if (cur.next >= 0)
        if (const Merge* m = find_merge(cur.id, syms[size_t(cur.next)].id)) {
          heap.push_back({m->rank, top.pos, m->new_id});
          std::push_heap(heap.begin(), heap.end(), later);
        }
    }
  }
  for (const auto& s : syms)
    if (s.alive) out.push_back(s.id);
}

void Tokenizer::encode_stretch(std::string_view s, Scratch& sc, std::vector<int32_t>& out) const {
  for (size_t i = 0; i < s.size();) {
    size_t j = piece_end(s, i);
    std::string_view piece = s.substr(i, j - i);
    i = j;
    if (piece.size() == 1) {
      int32_t id = byte_id_[uint8_t(piece[0])];
      if (id >= 0) out.push_back(id);
      continue;
    }
    auto [it, fresh] = sc.cache.try_emplace(piece, uint32_t(out.size()), 0u);
    if (!fresh) {
      for (uint32_t k = 0; k < it->second.second; k++) {
        int32_t id = out[it->second.first + k];
        out.push_back(id);
      }
      continue;
    }
    bpe(piece, sc, out);
    it->second.second = uint32_t(out.size() - it->second.first);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 16);
  Scratch sc;
  size_t begin = 0;  // start of the stretch not yet encoded
  for (size_t i = 0; i < text.size() && !specials_.empty(); i++) {
    if (!special_first_byte_[uint8_t(text[i])]) continue;
    for (const Special& sp : specials_) {  // longest first
      if (sp.control && !parse_special) continue;
      if (text.size() - i < sp.bytes.size() || std::memcmp(text.data() + i, sp.bytes.data(), sp.bytes.size()) != 0)
        continue;
      encode_stretch(text.substr(begin, i - begin), sc, out);
      out.push_back(sp.id);
      begin = i + sp.bytes.size();
      i = begin - 1;
      break;
    }
  }
  encode_stretch(text.substr(begin), sc, out);
  return out;
}

}  // namespace troupe
