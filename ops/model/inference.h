#pragma once
// Inference with a paged KV cache (vLLM's PagedAttention layout, on the CPU): keys and
// values live in fixed-size blocks of positions taken from one pool; a sequence holds a
// table of its blocks, so sequences of any length share the pool without fragmentation,
// and a full block whose tokens (and all tokens before them) equal another sequence's is
// shared by reference: requests with a common prompt prefix compute it once.
//
// InferenceEngine::step runs one forward over a batch of sequences, each contributing its
// positions not yet cached (a whole prompt, or the one token decoded last): the matrices
// see all rows together (one GEMM per weight per step, as continuous batching needs);
// RoPE and attention run per row at its own position against its own blocks. Weights are
// read from a Transformer (Llama architecture, the whole model), so a model being
// trained and one loaded from a GGUF serve the same way.

#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "ops/model/transformer.h"

namespace troupe::model {

class KvCache {
 public:
  KvCache(const ModelConfig& cfg, int num_blocks, int block_tokens = 16);
  int block_tokens() const { return block_tokens_; }
  int num_blocks() const { return num_blocks_; }
  int free_blocks() const { return int(free_.size()); }
  // K or V rows of a block for one layer: (block_tokens, n_kv_head * head_dim).
  float* k(int block, int layer) { return data_.data() + offset(block, layer, 0); }
  float* v(int block, int layer) { return data_.data() + offset(block, layer, 1); }
  // A free block with one reference, or an error when the pool is exhausted.
  Expected<int> allocate();
  // Takes back a freed block that still holds a cached prefix (reuse before eviction).
  Expected<int> allocate_specific(int block);
  void retain(int block) { refs_[size_t(block)]++; }
  void release(int block);
  int refs(int block) const { return refs_[size_t(block)]; }
  // Prefix cache: full blocks by the hash of every token up to their end.
  std::optional<int> lookup(uint64_t prefix_hash) const;
  void publish(uint64_t prefix_hash, int block);
  // Forgets a block's prefix entry (its positions are about to be rewritten).
  void unpublish(int block);
  size_t bytes() const { return data_.size() * sizeof(float); }

 private:
  int64_t offset(int block, int layer, int kv) const {
    return ((int64_t(block) * n_layer_ + layer) * 2 + kv) * int64_t(block_tokens_) * row_;
  }
  int block_tokens_, num_blocks_, n_layer_;
  int64_t row_;  // n_kv_head * head_dim
  std::vector<float> data_;
  std::vector<int> refs_;
  std::deque<int> free_;  // least recently freed first
  std::unordered_map<uint64_t, int> prefix_;         // hash -> block
  std::unordered_map<int, uint64_t> block_prefix_;   // block -> its hash, to forget it when freed
};

struct Sequence {
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  std::vector<int> blocks;      // block table: position p is in blocks[p / block_tokens]
  int cached = 0;               // positions [0, cached) have K and V in the cache
  int reused = 0;               // of those, how many came from the prefix cache
};

class InferenceEngine {
 public:
  // weights: a Llama-architecture Transformer holding the whole model; it must outlive
  // the engine, and may change between steps (a trainer's weight sync).
  // layers < n_layer: run only the first `layers` layers, then the final norm and the
  // head (self-speculative drafting with the target's own early layers).
  InferenceEngine(const Transformer& weights, KvCache& cache, int layers = -1);
  const ModelConfig& config() const { return cfg_; }
  // Attaches cached full blocks of s's prompt prefix (s must be fresh); returns the
  // positions reused. At least one position is always left to compute.
  int reuse_prefix(Sequence& s);
  // One forward over the uncached positions of every sequence; returns the logits (V per
  // sequence, in order) of each sequence's last position. Blocks are allocated as needed;
  // an error (pool exhausted, context too long) leaves every sequence as it was.
  Expected<const float*> step(const std::vector<Sequence*>& batch);
  // The same, returning the logits of every uncached position of every sequence, in
  // order (verification of drafted tokens: one row per drafted token, plus one).
  Expected<const float*> step_all(const std::vector<Sequence*>& batch);
  // Cuts a sequence to its first n tokens (rejected drafts): the cache keeps positions
  // [0, min(cached, n)); blocks past them go back to the pool.
  void truncate(Sequence& s, int n);
  int layers() const { return n_layers_; }
  // Returns a sequence's blocks to the pool (shared ones stay while others use them).
  void release(Sequence& s);

 private:
  const Transformer& w_;
  ModelConfig cfg_;
  KvCache& cache_;
  struct LayerW {
    const float *ln1, *qkv, *o, *ln2, *fc, *down;
  };
  std::vector<LayerW> layers_;
  const float *emb_, *lnf_, *head_;
  // Scratch, grown as needed.
  std::vector<float> x_, h_, qkv_, att_, tmp_, fc_, act_, rstd_, last_, logits_, scores_;
  int n_layers_;
  uint64_t prefix_hash(const Sequence& s, int upto) const;
  Expected<const float*> run(const std::vector<Sequence*>& batch, bool every_position);
};

}  // namespace troupe::model
