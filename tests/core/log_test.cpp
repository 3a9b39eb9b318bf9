// The job's log book: bounded, ordered, filtered by actor, and waitable.

#include "core/log.h"

#include <thread>

#include "test_util.h"

using namespace troupe;

TEST_CASE("log book: newest lines, filters by actor, drops the oldest past capacity", "[core][log]") {
  LogBook log(4);
  log.add("stage1.replica0", "a");
  log.add("stage1", "b");
  log.add("stage10", "c");
  log.add("writer", "d");
  log.add("stage1.replica1", "e");
  CHECK(log.last() == 5);
  auto all = log.since(0);
  REQUIRE(all.size() == 4);  // "a" dropped
  CHECK(all.front().text == "b");
  CHECK(all.back().seq == 5);
  std::vector<std::string> s1;
  for (auto& l : log.since(0, "stage1")) s1.push_back(l.text);
  CHECK(s1 == std::vector<std::string>{"b", "e"});  // not stage10
  CHECK(log.since(0, "", 2).front().text == "d");    // the newest two
  CHECK(log.since(4).size() == 1);
  CHECK(LogBook::format(all.back()).find("] stage1.replica1: e") != std::string::npos);
}

TEST_CASE("log book: a follower wakes on a new line, or times out", "[core][log]") {
  LogBook log;
  CHECK(!log.wait(0, std::chrono::milliseconds(20)));
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    log.add("coordinator", "step 1");
  });
  CHECK(log.wait(0, std::chrono::seconds(10)));
  t.join();
  std::vector<std::string> sunk;
  log.set_sink([&](const LogLine& l) { sunk.push_back(l.text); });
  log.add("x", "y");
  CHECK(sunk == std::vector<std::string>{"y"});
}
