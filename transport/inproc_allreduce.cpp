#include "transport/inproc_allreduce.h"

#include <cstring>
#include <utility>

#include "core/error.h"

namespace troupe::transport {

InprocAllReduce::InprocAllReduce(std::string name, int ranks) : name_(std::move(name)), ranks_(ranks) {
  TROUPE_CHECK(ranks > 0, "all-reduce %s: %d ranks", name_.c_str(), ranks);
}

void InprocAllReduce::contribute(int rank, int bucket, float* data, int64_t n, std::function<void(bool)> done) {
  Bucket full;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (aborted_) {
      if (done) done(false);  // the caller's own callback: short, and it never re-enters
      return;
    }
    Bucket& b = pending_[bucket];
    if (b.bufs.empty()) b.bufs.assign(size_t(ranks_), nullptr), b.done.resize(size_t(ranks_));
    TROUPE_CHECK(rank >= 0 && rank < ranks_ && !b.bufs[size_t(rank)],
                 "all-reduce %s: rank %d offered bucket %d twice or is out of range", name_.c_str(), rank, bucket);
    TROUPE_CHECK(b.n < 0 || n == b.n, "all-reduce %s: rank %d offers %lld floats in bucket %d, others %lld",
                 name_.c_str(), rank, (long long)n, bucket, (long long)b.n);
    b.n = n;
    b.bufs[size_t(rank)] = data;
    b.done[size_t(rank)] = std::move(done);
    if (++b.arrived < ranks_) return;
    full = std::move(b);  // last to arrive: this thread owns the bucket now
    pending_.erase(bucket);
  }
  // Reduce in rank order into rank 0's buffer, then broadcast; outside the lock, so other
  // buckets proceed meanwhile.
  float* acc = full.bufs[0];
  for (int r = 1; r < ranks_; r++) {
    const float* src = full.bufs[size_t(r)];
    for (int64_t i = 0; i < n; i++) acc[i] += src[i];
  }
  for (int r = 1; r < ranks_; r++) std::memcpy(full.bufs[size_t(r)], acc, size_t(n) * sizeof(float));
  for (auto& cb : full.done)
    if (cb) cb(true);
}

void InprocAllReduce::abort() {
  std::map<int, Bucket> pending;
  {
    std::lock_guard<std::mutex> lk(mu_);
    aborted_ = true;
    pending.swap(pending_);
  }
  for (auto& [id, b] : pending)
    for (auto& cb : b.done)
      if (cb) cb(false);
}

}  // namespace troupe::transport
