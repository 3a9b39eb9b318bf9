#include "transport/inproc_allreduce.h"

#include <atomic>
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
  CHECK_THROWS_WITH(g.contribute(1, b.data(), 3, nullptr), Catch::Contains("offers 3 floats, others 4"));
  CHECK_THROWS_WITH(g.contribute(0, a.data(), 4, nullptr), Catch::Contains("offered twice"));
}
