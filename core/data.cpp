#include "core/data.h"

#include <cstring>

#include "core/bytes.h"
#include "core/file_io.h"
#include "core/rng.h"

namespace troupe::data {

namespace {

const char kMagic[8] = {'T', 'R', 'P', 'T', 'O', 'K', '1', '\0'};

}  // namespace

Expected<void> write_token_file(const std::string& path, const std::vector<int32_t>& tokens, uint32_t vocab_size) {
  uint32_t width = vocab_size <= 65536 ? 2 : 4;
  std::string body;
  body.reserve(tokens.size() * width);
  for (size_t i = 0; i < tokens.size(); i++) {
    if (tokens[i] < 0 || uint32_t(tokens[i]) >= vocab_size)
      return make_error(strformat("%s: token %d at index %zu is outside the vocabulary of %u", path.c_str(), tokens[i],
                                  i, vocab_size));
    if (width == 2)
      append_le<uint16_t>(body, uint16_t(tokens[i]));
    else
      append_le<int32_t>(body, tokens[i]);
  }
  std::string hdr(kMagic, 8);
  append_le<uint32_t>(hdr, 1);
  append_le<uint32_t>(hdr, vocab_size);
  append_le<uint32_t>(hdr, width);
  append_le<uint32_t>(hdr, 0);
  append_le<uint64_t>(hdr, tokens.size());
  append_le<uint64_t>(hdr, fnv1a64(body.data(), body.size()));
  return write_file_atomic(path, {{hdr.data(), hdr.size()}, {body.data(), body.size()}});
}

Expected<TokenFile> TokenFile::open(const std::string& path) {
  auto m = MappedFile::open(path);
  if (!m) return m.error();
  auto bad = [&](size_t off, const std::string& what) {
    return make_error(strformat("%s: offset %zu: ", path.c_str(), off) + what);
  };
  if (m->size < kTokenFileHeaderBytes)
    return bad(0, strformat("file of %zu bytes is shorter than the %zu-byte header", m->size, kTokenFileHeaderBytes));
  if (std::memcmp(m->data, kMagic, 8) != 0) return bad(0, "magic: not a Troupe token file (expected TRPTOK1)");
  uint32_t version = load_le<uint32_t>(m->data + 8);
  if (version != 1) return bad(8, strformat("version: %u is not supported (expected 1)", version));
  TokenFile f;
  f.vocab_ = load_le<uint32_t>(m->data + 12);
  f.width_ = load_le<uint32_t>(m->data + 16);
  if (f.vocab_ == 0) return bad(12, "vocab_size: must be positive");
  if (f.width_ != (f.vocab_ <= 65536 ? 2u : 4u))
    return bad(16, strformat("bytes per token: %u does not fit vocab_size %u", f.width_, f.vocab_));
  uint64_t count = load_le<uint64_t>(m->data + 24);
  uint64_t body = m->size - kTokenFileHeaderBytes;
  if (count > body / f.width_ || count * f.width_ != body)
    return bad(24, strformat("token count: %llu tokens of %u bytes, but the file holds %llu bytes of tokens",
                             (unsigned long long)count, f.width_, (unsigned long long)body));
  uint64_t sum = load_le<uint64_t>(m->data + 32);
  if (fnv1a64(m->data + kTokenFileHeaderBytes, size_t(body)) != sum)
    return bad(32, "checksum: the tokens do not match the header's FNV-1a checksum (file corrupted?)");
  f.tokens_ = m->data + kTokenFileHeaderBytes;
  for (uint64_t i = 0; i < count; i++) {
    int32_t t = f.width_ == 2 ? int32_t(load_le<uint16_t>(f.tokens_ + 2 * i)) : load_le<int32_t>(f.tokens_ + 4 * i);
    if (t < 0 || uint32_t(t) >= f.vocab_)
      return bad(size_t(kTokenFileHeaderBytes + i * f.width_),
                 strformat("token %d is outside the vocabulary of %u", t, f.vocab_));
  }
  f.count_ = int64_t(count);
  f.mapping_ = std::move(m->owner);
  f.path_ = path;
  return f;
}

TokenDataset::TokenDataset(TokenFile file, double val_fraction) : file_(std::move(file)) {
  TROUPE_CHECK(val_fraction > 0 && val_fraction < 1, "val_fraction %g not in (0, 1)", val_fraction);
  split_ = file_.size() - int64_t(double(file_.size()) * val_fraction);
}

BatchSampler::BatchSampler(const TokenDataset& ds, Split split, int B, int T, uint64_t seed)
    : ds_(ds), split_(split), B_(B), T_(T), seed_(seed) {
  TROUPE_CHECK(B > 0 && T > 0, "batch B=%d T=%d", B, T);
  windows_ = ds.num_tokens(split) > T ? (ds.num_tokens(split) - 1) / T : 0;
  TROUPE_CHECK(windows_ >= B, "the %s split has %lld tokens: too few for %d windows of %d + 1",
               split == Split::Train ? "train" : "validation", (long long)ds.num_tokens(split), B, T);
}

int64_t BatchSampler::window_start(int64_t w) const {
  int64_t epoch = w / windows_, i = w % windows_;
  if (epoch != perm_epoch_) {
    perm_.resize(size_t(windows_));
    for (int64_t k = 0; k < windows_; k++) perm_[size_t(k)] = k;
    RngStream rng(seed_, {uint64_t(epoch), 0x7368756666ull});
    for (int64_t k = windows_ - 1; k > 0; k--) {
      // Unbiased enough for window counts << 2^32: a 64-bit draw reduced mod (k+1).
      uint64_t r = uint64_t(rng.bits(2 * uint64_t(k))) << 32 | rng.bits(2 * uint64_t(k) + 1);
      std::swap(perm_[size_t(k)], perm_[size_t(r % uint64_t(k + 1))]);
    }
    perm_epoch_ = epoch;
  }
  return ds_.begin(split_) + perm_[size_t(i)] * T_;
}

static void fill(const TokenDataset& ds, int64_t start, int T, int32_t* x, int32_t* y) {
  for (int t = 0; t < T; t++) {
    x[t] = ds.token(start + t);
    y[t] = ds.token(start + t + 1);
  }
}

void BatchSampler::batch(int64_t step, std::vector<int32_t>& tokens, std::vector<int32_t>& targets) const {
  TROUPE_CHECK(step >= 0, "negative step %lld", (long long)step);
  tokens.resize(size_t(B_) * T_);
  targets.resize(size_t(B_) * T_);
  for (int b = 0; b < B_; b++)
    fill(ds_, window_start(step * B_ + b), T_, tokens.data() + size_t(b) * T_, targets.data() + size_t(b) * T_);
}

void BatchSampler::eval_batch(int i, std::vector<int32_t>& tokens, std::vector<int32_t>& targets) const {
  TROUPE_CHECK(i >= 0 && i < num_eval_batches(), "eval batch %d of %d", i, num_eval_batches());
  tokens.resize(size_t(B_) * T_);
  targets.resize(size_t(B_) * T_);
  for (int b = 0; b < B_; b++)
    fill(ds_, ds_.begin(split_) + (int64_t(i) * B_ + b) * T_, T_, tokens.data() + size_t(b) * T_,
         targets.data() + size_t(b) * T_);
}

}  // namespace troupe::data
