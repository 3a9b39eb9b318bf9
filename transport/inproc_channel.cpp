#include "transport/inproc_channel.h"

#include <utility>

namespace troupe::transport {

InprocChannel::InprocChannel(std::string name, int slots) : name_(std::move(name)), slots_(slots) {
  TROUPE_CHECK(slots > 0, "channel %s: %d slots (need at least 1)", name_.c_str(), slots);
}

bool InprocChannel::try_send(Envelope& e) {
  std::function<void()> notify;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return false;
    if (int(queue_.size()) >= slots_) {
      producer_starved_ = true;
      return false;
    }
    bool was_empty = queue_.empty();
    queue_.push_back(std::move(e));
    if (was_empty) notify = on_readable_;
  }
  cv_.notify_all();
  if (notify) notify();
  return true;
}

std::optional<Envelope> InprocChannel::try_recv() {
  std::function<void()> notify;
  std::optional<Envelope> out;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (queue_.empty()) return std::nullopt;
    out = std::move(queue_.front());
    queue_.pop_front();
    if (producer_starved_) {
      producer_starved_ = false;
      notify = on_writable_;
    }
  }
  cv_.notify_all();
  if (notify) notify();
  return out;
}

bool InprocChannel::send(Envelope e) {
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return closed_ || int(queue_.size()) < slots_; });
    if (closed_) return false;
  }
  // Only one producer per channel, so the credit seen above is still there.
  return try_send(e);
}

std::optional<Envelope> InprocChannel::recv() {
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return closed_ || !queue_.empty(); });
    if (queue_.empty()) return std::nullopt;
  }
  return try_recv();  // one consumer per channel: the payload seen above is still there
}

void InprocChannel::on_readable(std::function<void()> f) {
  std::lock_guard<std::mutex> lk(mu_);
  on_readable_ = std::move(f);
}

void InprocChannel::on_writable(std::function<void()> f) {
  std::lock_guard<std::mutex> lk(mu_);
  on_writable_ = std::move(f);
}

void InprocChannel::close() {
  std::function<void()> r, w;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    closed_ = true;
    r = on_readable_;
    w = on_writable_;
  }
  cv_.notify_all();
  // Wake both ends so that an actor waiting on this channel sees it closed.
  if (r) r();
  if (w) w();
}

bool InprocChannel::closed() const {
  std::lock_guard<std::mutex> lk(mu_);
  return closed_;
}

int InprocChannel::credits() const {
  std::lock_guard<std::mutex> lk(mu_);
  return slots_ - int(queue_.size());
}

size_t InprocChannel::depth() const {
  std::lock_guard<std::mutex> lk(mu_);
  return queue_.size();
}

}  // namespace troupe::transport
