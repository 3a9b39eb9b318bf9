#include "transport/inproc_allreduce.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "test_util.h"

using namespace troupe::transport;

TEST_CASE("all-reduce sums in rank order into every buffer, whoever arrives last", "[allreduce]") {
  const int R = 3;
  const int64_t n = 1000;
  for (int trial = 0; trial < 20; trial++) {
    InprocAllReduce g("stage0.grads", R);
    std::vector<std::vector<float>> bufs(R, std::vector<float>(size_t(n)));
    for (int r = 0; r < R; r++)
      for (int64_t i = 0; i < n; i++) bufs[size_t(r)][size_t(i)] = 1.0f / float(1 + i + 7 * r) * (r == 1 ? 1e7f : 1.0f);
    std::vector<float> expect(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++)
      expect[size_t(i)] = (bufs[0][size_t(i)] + bufs[1][size_t(i)]) + bufs[2][size_t(i)];  // the fixed order
    std::atomic<int> done{0};
    std::vector<std::thread> ts;
    for (int r = 0; r < R; r++)
      ts.emplace_back([&, r] { g.contribute(r, bufs[size_t(r)].data(), n, [&](bool ok) { done += ok ? 1 : 100; }); });
    for (auto& t : ts) t.join();
    REQUIRE(done == R);
    for (int r = 0; r < R; r++) CHECK(bufs[size_t(r)] == expect);
  }
  {
    InprocAllReduce g("aborted", 2);
    std::vector<float> a(4, 1.0f);
    int fails = 0;
    g.contribute(0, a.data(), 4, [&](bool ok) { fails += !ok; });
    g.abort();
    CHECK(fails == 1);
    g.contribute(1, a.data(), 4, [&](bool ok) { fails += !ok; });
    CHECK(fails == 2);
  }
  InprocAllReduce g("x", 2);
  std::vector<float> a(4, 1.0f), b(3, 1.0f);
  g.contribute(0, a.data(), 4, nullptr);
  CHECK_THROWS_WITH(g.contribute(1, b.data(), 3, nullptr), Catch::Contains("offers 3 floats in bucket 0, others 4"));
  CHECK_THROWS_WITH(g.contribute(0, a.data(), 4, nullptr), Catch::Contains("offered bucket 0 twice"));
}

TEST_CASE("bucketed all-reduce: buckets complete independently, with the bits of one whole reduction",
          "[allreduce]") {
  const int R = 3, K = 7;
  const int64_t n = 7000, piece = n / K;
  for (int trial = 0; trial < 10; trial++) {
    InprocAllReduce whole("whole", R), bucketed("bucketed", R);
    std::vector<std::vector<float>> a(R, std::vector<float>(static_cast<size_t>(n))), b;
    for (int r = 0; r < R; r++)
      for (int64_t i = 0; i < n; i++) a[size_t(r)][size_t(i)] = std::sin(float(i * (r + 3))) * (r == 2 ? 1e5f : 1.0f);
    b = a;
    std::vector<std::thread> ts;
    for (int r = 0; r < R; r++) ts.emplace_back([&, r] { whole.contribute(r, a[size_t(r)].data(), n, nullptr); });
    for (auto& t : ts) t.join();
    ts.clear();
    // Buckets offered from the end of the buffer to its start (as backward finishes
    // layers), each rank at its own pace; count completions per bucket.
    std::vector<std::atomic<int>> completed(K);
    for (int r = 0; r < R; r++)
      ts.emplace_back([&, r] {
        for (int k = K - 1; k >= 0; k--) {
          if ((k + r + trial) % 3 == 0) std::this_thread::yield();
          bucketed.contribute(r, k, b[size_t(r)].data() + k * piece, piece, [&, k](bool ok) { completed[size_t(k)] += ok; });
        }
      });
    for (auto& t : ts) t.join();
    for (int k = 0; k < K; k++) CHECK(completed[size_t(k)] == R);
    for (int r = 0; r < R; r++) CHECK(std::memcmp(a[size_t(r)].data(), b[size_t(r)].data(), size_t(n) * 4) == 0);
  }
  // An abort fails the buckets still waiting and everything after.
  InprocAllReduce g("aborted", 2);
  std::vector<float> x(8, 1.0f);
  int ok = 0, failed = 0;
  auto count = [&](bool good) { good ? ok++ : failed++; };
  g.contribute(0, 0, x.data(), 4, count);
  g.contribute(1, 0, x.data(), 4, count);  // bucket 0 completes for both ranks
  g.contribute(0, 1, x.data() + 4, 4, count);
  g.abort();
  g.contribute(1, 1, x.data() + 4, 4, count);
  CHECK(ok == 2);
  CHECK(failed == 2);
}
