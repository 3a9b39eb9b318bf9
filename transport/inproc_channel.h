#pragma once
// In-process data-plane channel: a bounded FIFO of tensors handed from one actor to
// another by moving ownership (no copy: the receiver gets the sender's storage).
// Flow control is credit-based: a channel of N slots gives the producer N credits; each
// send spends one and each receive returns one, so at most N payloads are in flight and
// a pipeline schedule's memory bound follows from the slot counts.
//
// Actors never block on a channel: they use try_send / try_recv and register
// callbacks, called when the channel becomes readable or writable again (the callback
// typically sends the actor a small control message). Plain threads may use the
// blocking send / recv.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "core/tensor.h"

namespace troupe::transport {

// What travels: a tensor plus the small header that names it.
struct Envelope {
  int64_t step = 0;
  int microbatch = 0;
  int chunk = 0;
  Tensor payload;
};

class InprocChannel {
 public:
  InprocChannel(std::string name, int slots);
  InprocChannel(const InprocChannel&) = delete;
  InprocChannel& operator=(const InprocChannel&) = delete;

  const std::string& name() const { return name_; }
  int slots() const { return slots_; }

  // Non-blocking: false (and the envelope untouched) when no credit is left or the
  // channel is closed.
  bool try_send(Envelope& e);
  std::optional<Envelope> try_recv();

  // Blocking: send waits for a credit, recv for a payload. Both give up (false /
  // nullopt) once the channel is closed; recv still drains what was sent before.
  bool send(Envelope e);
  std::optional<Envelope> recv();

  // Called, outside the channel's lock, when a send makes an empty channel readable
  // and when a receive gives a credit back to a producer that found none.
  void on_readable(std::function<void()> f);
  void on_writable(std::function<void()> f);

  // Closes the channel (a peer failed or the graph is torn down) and calls both
  // callbacks, so that whoever waits on it looks again and finds it closed.
  void close();
  bool closed() const;
  int credits() const;  // free slots
  size_t depth() const; // payloads waiting

 private:
  std::string name_;
  int slots_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Envelope> queue_;
  bool closed_ = false;
  bool producer_starved_ = false;  // a try_send failed for lack of credit
  std::function<void()> on_readable_, on_writable_;
};

}  // namespace troupe::transport
