#include "transport/inproc_allreduce.h"

#include <cstring>
#include <utility>

#include "core/error.h"

namespace troupe::transport {

InprocAllReduce::InprocAllReduce(std::string name, int ranks)
    : name_(std::move(name)), ranks_(ranks), bufs_(size_t(ranks), nullptr), done_(size_t(ranks)) {
  TROUPE_CHECK(ranks > 0, "all-reduce %s: %d ranks", name_.c_str(), ranks);
}

void InprocAllReduce::contribute(int rank, float* data, int64_t n, std::function<void(bool)> done) {
  std::vector<std::function<void(bool)>> callbacks;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (aborted_) {
      if (done) done(false);  // no lock needed for the caller's own callback, but it is short
      return;
    }
    TROUPE_CHECK(rank >= 0 && rank < ranks_ && !bufs_[size_t(rank)], "all-reduce %s: rank %d offered twice or out of range",
                 name_.c_str(), rank);
    TROUPE_CHECK(n_ < 0 || n == n_, "all-reduce %s: rank %d offers %lld floats, others %lld", name_.c_str(), rank,
                 (long long)n, (long long)n_);
    n_ = n;
    bufs_[size_t(rank)] = data;
    done_[size_t(rank)] = std::move(done);
    if (++arrived_ < ranks_) return;
    // Last to arrive: reduce in rank order into rank 0's buffer, then broadcast.
    float* acc = bufs_[0];
    for (int r = 1; r < ranks_; r++) {
      const float* b = bufs_[size_t(r)];
      for (int64_t i = 0; i < n; i++) acc[i] += b[i];
    }
    for (int r = 1; r < ranks_; r++) std::memcpy(bufs_[size_t(r)], acc, size_t(n) * sizeof(float));
    callbacks.swap(done_);
    done_.assign(size_t(ranks_), nullptr);
    bufs_.assign(size_t(ranks_), nullptr);
    arrived_ = 0;
    n_ = -1;
  }
  for (auto& cb : callbacks)
    if (cb) cb(true);
}

void InprocAllReduce::abort() {
  std::vector<std::function<void(bool)>> callbacks;
  {
    std::lock_guard<std::mutex> lk(mu_);
    aborted_ = true;
    callbacks.swap(done_);
    done_.assign(size_t(ranks_), nullptr);
    bufs_.assign(size_t(ranks_), nullptr);
    arrived_ = 0;
  }
  for (auto& cb : callbacks)
    if (cb) cb(false);
}

}  // namespace troupe::transport
