#include "core/log.h"

#include "core/error.h"

namespace troupe {

LogBook::LogBook(size_t capacity) : capacity_(capacity ? capacity : 1) {}

void LogBook::add(std::string source, std::string text) {
  std::function<void(const LogLine&)> sink;
  LogLine line;
  {
    std::lock_guard lk(mu_);
    line.seq = ++seq_;
    line.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    line.source = std::move(source);
    line.text = std::move(text);
    lines_.push_back(line);
    if (lines_.size() > capacity_) lines_.pop_front();
    sink = sink_;
  }
  cv_.notify_all();
  if (sink) sink(line);
}

bool LogBook::matches(const std::string& source, const std::string& filter) {
  if (filter.empty() || source == filter) return true;
  return source.size() > filter.size() && source.compare(0, filter.size(), filter) == 0 && source[filter.size()] == '.';
}

std::vector<LogLine> LogBook::since(uint64_t after, const std::string& source, size_t max) const {
  std::lock_guard lk(mu_);
  std::vector<LogLine> out;
  for (auto it = lines_.rbegin(); it != lines_.rend() && it->seq > after && out.size() < max; ++it)
    if (matches(it->source, source)) out.push_back(*it);
  return {out.rbegin(), out.rend()};
}

bool LogBook::wait(uint64_t after, std::chrono::milliseconds timeout) const {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, timeout, [&] { return seq_ > after; });
}

uint64_t LogBook::last() const {
  std::lock_guard lk(mu_);
  return seq_;
}

void LogBook::set_sink(std::function<void(const LogLine&)> f) {
  std::lock_guard lk(mu_);
  sink_ = std::move(f);
}

std::string LogBook::format(const LogLine& l) {
  return strformat("[%9.3f] %s: %s", l.seconds, l.source.c_str(), l.text.c_str());
}

}  // namespace troupe
