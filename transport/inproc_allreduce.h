#pragma once
// In-process all-reduce among the data-parallel replicas of one stage: each rank offers
// its gradient buffer; when the last rank arrives it sums the buffers in rank order
// (fixed: ((g0 + g1) + g2) + ...), so every run and every rank gets the same bits, writes
// the sum into every buffer and tells each rank. The buffers are the ranks' own; the
// group only holds pointers between offer and completion.

#include <cstdint>
#include <functional>
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
  void contribute(int rank, float* data, int64_t n, std::function<void(bool)> done);
  // A member failed: every waiting and future contribution completes with done(false).
  void abort();

 private:
  std::string name_;
  int ranks_;
  std::mutex mu_;
  std::vector<float*> bufs_;
  std::vector<std::function<void(bool)>> done_;
  bool aborted_ = false;
  int64_t n_ = -1;
  int arrived_ = 0;
};

}  // namespace troupe::transport
