#include "transport/inproc_channel.h"

#include <atomic>
#include <thread>

#include "test_util.h"

using namespace troupe;
using namespace troupe::transport;

TEST_CASE("payloads are handed off without a copy, in order", "[channel]") {
  InprocChannel ch("stage0->stage1", 2);
  Tensor t = Tensor::from_vector({1, 2, 3}, {3});
  const float* storage = t.data<float>();
  Envelope e{7, 3, 0, std::move(t)};
  REQUIRE(ch.try_send(e));
  auto got = ch.try_recv();
  REQUIRE(got);
  CHECK(got->payload.data<float>() == storage);  // same bytes, ownership moved
  CHECK(got->payload.use_count() == 1);
  CHECK(got->step == 7);
  CHECK(got->microbatch == 3);
  CHECK_FALSE(ch.try_recv());
}

TEST_CASE("credits bound the payloads in flight", "[channel]") {
  InprocChannel ch("c", 3);
  int readable = 0, writable = 0;
  ch.on_readable([&] { readable++; });
  ch.on_writable([&] { writable++; });
  for (int i = 0; i < 3; i++) {
    Envelope e{0, i, 0, Tensor::zeros({1})};
    REQUIRE(ch.try_send(e));
  }
  CHECK(readable == 1);  // only the empty -> non-empty transition notifies
  CHECK(ch.credits() == 0);
  Envelope extra{0, 3, 0, Tensor::zeros({1})};
  CHECK_FALSE(ch.try_send(extra));
  CHECK(extra.payload.defined());  // refused sends leave the payload with the sender
  CHECK(writable == 0);
  CHECK(ch.try_recv()->microbatch == 0);
  CHECK(writable == 1);  // the starved producer is told a credit came back
  CHECK(ch.try_send(extra));
  for (int i = 1; i <= 3; i++) CHECK(ch.try_recv()->microbatch == i);
  CHECK(writable == 1);
  CHECK_THROWS_WITH(InprocChannel("bad", 0), Catch::Contains("0 slots"));
}

TEST_CASE("blocking send and recv across threads keep order and the bound", "[channel]") {
  InprocChannel ch("c", 4);
  constexpr int kN = 20000;
  std::atomic<int> max_depth{0};
  std::atomic<bool> send_failed{false};  // Catch assertions are not thread-safe
  std::thread producer([&] {
    for (int i = 0; i < kN; i++) {
      if (!ch.send({i, 0, 0, Tensor::zeros({1})})) send_failed = true;
      int d = int(ch.depth());
      if (d > max_depth) max_depth = d;
    }
    ch.close();
  });
  int expect = 0;
  while (auto e = ch.recv()) {
    if (e->step != expect) break;
    expect++;
  }
  producer.join();
  CHECK_FALSE(send_failed);
  CHECK(expect == kN);
  CHECK(max_depth <= 4);
  Envelope late{0, 0, 0, Tensor::zeros({1})};
  CHECK_FALSE(ch.try_send(late));  // closed
  CHECK_FALSE(ch.recv());
}
