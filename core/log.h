#pragma once
// LogBook: a job's log, kept in memory for consoles (`logs [ACTOR] [-f]`). Each line has
// a sequence number, a time since the book was opened and a source (an actor's name:
// "stage1", "stage1.replica0", "training", "writer", "coordinator"). Lines are kept in a
// bounded ring (oldest dropped first); followers wait for lines after the last they saw.
// Thread-safe: actors, the job's driver and console sessions all write and read it.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace troupe {

struct LogLine {
  uint64_t seq = 0;      // 1, 2, ...
  double seconds = 0;    // since the book was opened
  std::string source;    // who it is about
  std::string text;
};

class LogBook {
 public:
  explicit LogBook(size_t capacity = 20000);
  void add(std::string source, std::string text);
  // Lines after `after` (a sequence number; 0: from the oldest kept), at most `max` of the
  // newest, about `source` (empty: all; "stage1" also matches "stage1.replica0").
  std::vector<LogLine> since(uint64_t after, const std::string& source = {}, size_t max = SIZE_MAX) const;
  // Waits until a line after `after` exists (true) or the timeout passes (false).
  bool wait(uint64_t after, std::chrono::milliseconds timeout) const;
  uint64_t last() const;
  // Also hands every line to `f` (e.g. stdout when no console owns the terminal).
  void set_sink(std::function<void(const LogLine&)> f);
  static bool matches(const std::string& source, const std::string& filter);
  static std::string format(const LogLine& l);  // "[   12.345] stage1: text"

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::deque<LogLine> lines_;
  size_t capacity_;
  uint64_t seq_ = 0;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  std::function<void(const LogLine&)> sink_;
};

}  // namespace troupe
