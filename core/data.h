#pragma once
// Training data: token files on disk, a train/validation split, and batches that are a
// pure function of (seed, step), so a run resumed at step s sees exactly the batches
// the uninterrupted run saw.
//
// Token file (little-endian): magic "TRPTOK1\0", u32 version (1), u32 vocab_size,
// u32 bytes per token (2 when vocab_size <= 65536, else 4), u32 reserved (0),
// u64 token count, u64 FNV-1a-64 of the token bytes, then the tokens.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace troupe::data {

constexpr size_t kTokenFileHeaderBytes = 40;

Expected<void> write_token_file(const std::string& path, const std::vector<int32_t>& tokens, uint32_t vocab_size);

class TokenFile {
 public:
  static Expected<TokenFile> open(const std::string& path);
  int64_t size() const { return count_; }
  uint32_t vocab_size() const { return vocab_; }
  int32_t operator[](int64_t i) const {
    return width_ == 2 ? int32_t(reinterpret_cast<const uint16_t*>(tokens_)[i])
                       : reinterpret_cast<const int32_t*>(tokens_)[i];
  }
  const std::string& path() const { return path_; }

 private:
  std::shared_ptr<const void> mapping_;
  const uint8_t* tokens_ = nullptr;
  int64_t count_ = 0;
  uint32_t vocab_ = 0, width_ = 0;
  std::string path_;
};

enum class Split { Train, Val };

// The last val_fraction of the tokens is the validation split (the corpus is the six
// novels in publication order, so validation is the end of Persuasion: text the
// model never trains on, not shuffled windows of the same pages).
class TokenDataset {
 public:
  TokenDataset(TokenFile file, double val_fraction = 0.05);
  int64_t begin(Split s) const { return s == Split::Train ? 0 : split_; }
  int64_t end(Split s) const { return s == Split::Train ? split_ : file_.size(); }
  int64_t num_tokens(Split s) const { return end(s) - begin(s); }
  int32_t token(int64_t i) const { return file_[i]; }
  uint32_t vocab_size() const { return file_.vocab_size(); }

 private:
  TokenFile file_;
  int64_t split_;
};

// Batches of B windows of T+1 tokens (inputs and next-token targets). The split holds
// W = (n-1)/T windows starting at begin + w*T (neighbours share one token: the last
// target of one is the first input of the next). Training visits them in an order that
// is a Fisher-Yates permutation per epoch keyed by RngStream(seed, {epoch, ...}):
// sequence k of step s is entry (s*B + k) mod W of the permutation of epoch
// (s*B + k) / W, so batch(s) depends on (seed, s) only and a restarted run can start
// at any step. Validation batches are fixed and in order: eval batch i is windows
// i*B .. i*B+B-1; the last W mod B windows (fewer than one batch) are not evaluated.
// The epoch permutation is cached inside, so one sampler must not be used from two
// threads at once (build one per thread: they agree).
class BatchSampler {
 public:
  BatchSampler(const TokenDataset& ds, Split split, int B, int T, uint64_t seed);
  int B() const { return B_; }
  int T() const { return T_; }
  int64_t windows() const { return windows_; }
  // tokens and targets are resized to B*T.
  void batch(int64_t step, std::vector<int32_t>& tokens, std::vector<int32_t>& targets) const;
  int num_eval_batches() const { return int(windows_ / B_); }
  void eval_batch(int i, std::vector<int32_t>& tokens, std::vector<int32_t>& targets) const;

 private:
  int64_t window_start(int64_t w) const;  // w-th window of the shuffled stream
  const TokenDataset& ds_;
  Split split_;
  int B_, T_;
  uint64_t seed_;
  int64_t windows_;
  mutable std::vector<int64_t> perm_;  // cached permutation of one epoch
  mutable int64_t perm_epoch_ = -1;
};

}  // namespace troupe::data
