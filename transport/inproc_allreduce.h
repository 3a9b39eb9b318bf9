#pragma once
// In-process all-reduce among the data-parallel replicas of one stage: each rank offers
// its gradient buffer; when the last rank arrives it sums the buffers in rank order
// (fixed: ((g0 + g1) + g2) + ...), so every run and every rank gets the same bits, writes
// the sum into every buffer and tells each rank. The buffers are the ranks' own; the
// group only holds pointers between offer and completion.
//
// Buckets: a rank may offer several disjoint pieces of its buffer, each under a bucket
// id, as their gradients become final during backward; each bucket completes on its
// own when every rank has offered it, so early buckets are summed while later layers
// still compute. Summation is elementwise, so the bits do not depend on the bucketing.

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace troupe::transport {

class InprocAllReduce {
 public:
  InprocAllReduce(std::string name, int ranks);
  int ranks() const { return ranks_; }
  // Offers rank's buffer of n floats. `done` runs once the sum is in the buffer, on the
  // thread of whichever rank arrived last (an actor should only post itself a message).
  // done(true) once the sum is in the buffer; done(false) when the group was aborted.
  void contribute(int rank, int bucket, float* data, int64_t n, std::function<void(bool)> done);
  void contribute(int rank, float* data, int64_t n, std::function<void(bool)> done) {
    contribute(rank, 0, data, n, std::move(done));
  }
  // A member failed: every waiting and future contribution completes with done(false).
  void abort();

 private:
  std::string name_;
  int ranks_;
  struct Bucket {
    std::vector<float*> bufs;
    std::vector<std::function<void(bool)>> done;
    int64_t n = -1;
    int arrived = 0;
  };
  std::mutex mu_;
  std::map<int, Bucket> pending_;  // buckets some ranks have offered
  bool aborted_ = false;
};

}  // namespace troupe::transport
