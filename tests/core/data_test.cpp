#include "core/data.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/bytes.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::data;

namespace {

std::string tmp_path(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / "troupe_data_test";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::string read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void write_all(const std::string& p, const std::string& s) {
  std::ofstream(p, std::ios::binary) << s;
}

template <class T>
void put_le(std::string& s, size_t at, T v) {
  std::memcpy(s.data() + at, &v, sizeof v);
}

// A token file whose token i is i: a token's value says where it came from.
TokenDataset positional_dataset(const std::string& name, int n, double val_fraction) {
  std::vector<int32_t> toks(static_cast<size_t>(n));
  for (int i = 0; i < n; i++) toks[size_t(i)] = i;
  std::string p = tmp_path(name);
  REQUIRE(write_token_file(p, toks, 65536).ok());
  auto f = TokenFile::open(p);
  REQUIRE(f.ok());
  return TokenDataset(std::move(*f), val_fraction);
}

}  // namespace

TEST_CASE("token files round trip and reject corruption", "[data]") {
  std::vector<int32_t> toks;
  for (int i = 0; i < 1000; i++) toks.push_back((i * 7919) % 49152);
  std::string p = tmp_path("a.tok");
  REQUIRE(write_token_file(p, toks, 49152).ok());
  CHECK_FALSE(std::filesystem::exists(p + ".tmp"));
  CHECK(std::filesystem::file_size(p) == kTokenFileHeaderBytes + 2 * toks.size());  // 2-byte tokens
  auto f = TokenFile::open(p);
  REQUIRE(f.ok());
  CHECK(f->size() == 1000);
  CHECK(f->vocab_size() == 49152);
  for (int i = 0; i < 1000; i++) REQUIRE((*f)[i] == toks[size_t(i)]);
  // 4-byte tokens for vocabularies past 65536.
  REQUIRE(write_token_file(p + "4", {70000, 1, 99999}, 100000).ok());
  CHECK(std::filesystem::file_size(p + "4") == kTokenFileHeaderBytes + 4 * 3);
  auto f4 = TokenFile::open(p + "4");
  REQUIRE(f4.ok());
  CHECK(((*f4)[0] == 70000 && (*f4)[1] == 1 && (*f4)[2] == 99999));
  // An empty token file is valid.
  REQUIRE(write_token_file(p + "0", {}, 10).ok());
  CHECK(TokenFile::open(p + "0")->size() == 0);

  std::string good = read_all(p);
  auto err = [&](const std::string& bytes) {
    write_all(p + ".bad", bytes);
    auto g = TokenFile::open(p + ".bad");
    REQUIRE_FALSE(g.ok());
    CHECK_THAT(g.error().message, Catch::StartsWith(p + ".bad: "));
    return g.error().message;
  };
  std::string flipped = good;
  flipped[100] ^= 1;  // one bit of token 30
  CHECK_THAT(err(flipped), Catch::Contains("offset 32: checksum"));
  std::string sum_flipped = good;
  sum_flipped[35] ^= 0x40;
  CHECK_THAT(err(sum_flipped), Catch::Contains("offset 32: checksum"));
  CHECK_THAT(err("TRPTOK2" + good.substr(7)), Catch::Contains("offset 0: magic"));
  std::string v2 = good;
  put_le<uint32_t>(v2, 8, 2);
  CHECK_THAT(err(v2), Catch::Contains("offset 8: version: 2 is not supported"));
  std::string width = good;
  put_le<uint32_t>(width, 16, 4);
  CHECK_THAT(err(width), Catch::Contains("offset 16: bytes per token: 4 does not fit vocab_size 49152"));
  std::string count = good;
  put_le<uint64_t>(count, 24, uint64_t(1) << 62);  // would overflow count * width
  CHECK_THAT(err(count), Catch::Contains("offset 24: token count"));
  CHECK_THAT(err(good.substr(0, good.size() - 2)), Catch::Contains("offset 24: token count"));
  CHECK_THAT(err(good.substr(0, 20)), Catch::Contains("shorter than the 40-byte header"));
  CHECK_THAT(err(""), Catch::Contains("shorter than the 40-byte header"));
  // A vocabulary shrunk after the fact: the checksum still holds, the range check catches it.
  std::string small_vocab = good;
  put_le<uint32_t>(small_vocab, 12, 7919);
  CHECK_THAT(err(small_vocab), Catch::Contains("token 7919 is outside the vocabulary of 7919"));

  CHECK_THAT(write_token_file(p, {5, 50000}, 50000).error().message,
             Catch::Contains("token 50000 at index 1 is outside the vocabulary of 50000"));
  CHECK_THAT(write_token_file(p, {-1}, 50000).error().message, Catch::Contains("token -1 at index 0"));
  CHECK(TokenFile::open(p)->size() == 1000);  // the failed writes left the old file alone
  CHECK_THAT(TokenFile::open(p + ".missing").error().message, Catch::Contains("cannot open"));
  CHECK_FALSE(write_token_file(tmp_path("no/such/dir.tok"), {1}, 10).ok());
}

TEST_CASE("the validation split is the tail of the token stream", "[data]") {
  TokenDataset ds = positional_dataset("split.tok", 5000, 0.1);
  CHECK(ds.begin(Split::Train) == 0);
  CHECK(ds.end(Split::Train) == 4500);
  CHECK(ds.begin(Split::Val) == 4500);
  CHECK(ds.end(Split::Val) == 5000);
  CHECK(ds.token(4500) == 4500);
  TokenDataset d5 = positional_dataset("split5.tok", 1001, 0.05);  // default fraction, rounded toward train
  CHECK(d5.num_tokens(Split::Val) == 50);
  CHECK(d5.num_tokens(Split::Train) == 951);
  CHECK_THROWS_WITH(positional_dataset("split0.tok", 10, 0.0), Catch::Contains("val_fraction"));
}

TEST_CASE("batches are a pure function of (seed, step)", "[data]") {
  const int B = 4, T = 16;
  TokenDataset ds = positional_dataset("b.tok", 5000, 0.1);
  BatchSampler a(ds, Split::Train, B, T, 42), c(ds, Split::Train, B, T, 43);
  const int64_t W = (4500 - 1) / T;  // 281 windows: an epoch ends mid-batch
  REQUIRE(a.windows() == W);
  std::vector<int32_t> x, y, x2, y2;

  // `a` walks through ~3 epochs; a fresh sampler asked for one step agrees with it.
  std::map<int64_t, std::pair<std::vector<int32_t>, std::vector<int32_t>>> walked;
  for (int64_t s = 0; s < 200; s++) {
    a.batch(s, x, y);
    REQUIRE(x.size() == size_t(B * T));
    REQUIRE(y.size() == size_t(B * T));
    for (int b = 0; b < B; b++) {
      int32_t start = x[size_t(b * T)];
      CHECK(start % T == 0);    // a window start
      CHECK(start + T < 4500);  // whose T+1 tokens lie in the train split
      for (int t = 0; t < T; t++) {
        CHECK(x[size_t(b * T + t)] == start + t);      // contiguous
        CHECK(y[size_t(b * T + t)] == start + t + 1);  // every target is the next token
      }
    }
    walked[s] = {x, y};
  }
  for (int64_t s : {0, 37, 70, 140, 199}) {  // 70 and 140 straddle epoch ends (281 = 70*4 + 1)
    BatchSampler fresh(ds, Split::Train, B, T, 42);
    fresh.batch(s, x2, y2);
    CHECK(x2 == walked[s].first);
    CHECK(y2 == walked[s].second);
  }
  a.batch(37, x, y);  // asked again after moving on: the same
  CHECK(x == walked[37].first);
  c.batch(37, x2, y2);
  CHECK(x2 != walked[37].first);  // another seed, another order

  // Each epoch visits every window exactly once, in an order that changes per epoch.
  std::vector<std::vector<int32_t>> order(3);
  for (int64_t s = 0; s < 200; s++)
    for (int b = 0; b < B; b++) {
      int64_t seq = s * B + b;
      if (seq < 2 * W) order[size_t(seq / W)].push_back(walked[s].first[size_t(b * T)]);
    }
  for (int e = 0; e < 2; e++) {
    REQUIRE(int64_t(order[size_t(e)].size()) == W);
    CHECK(int64_t(std::set<int32_t>(order[size_t(e)].begin(), order[size_t(e)].end()).size()) == W);
  }
  CHECK(order[0] != order[1]);
  std::vector<int32_t> identity;
  for (int64_t w = 0; w < W; w++) identity.push_back(int32_t(w * T));
  CHECK(order[0] != identity);  // shuffled, not sequential

  CHECK_THROWS_WITH(a.batch(-1, x, y), Catch::Contains("negative step"));
}

TEST_CASE("eval batches cover the validation split in order", "[data]") {
  const int B = 2, T = 16;
  TokenDataset ds = positional_dataset("v.tok", 5000, 0.1);
  BatchSampler v(ds, Split::Val, B, T, 1), v_other_seed(ds, Split::Val, B, T, 999);
  const int64_t W = (500 - 1) / T;  // 31 windows in the 500 validation tokens
  CHECK(v.windows() == W);
  REQUIRE(v.num_eval_batches() == int(W / B));
  std::vector<int32_t> x, y, x2, y2;
  for (int i = 0; i < v.num_eval_batches(); i++) {
    v.eval_batch(i, x, y);
    v_other_seed.eval_batch(i, x2, y2);
    CHECK(x == x2);  // the seed plays no part
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        CHECK(x[size_t(b * T + t)] == 4500 + (i * B + b) * T + t);
        CHECK(y[size_t(b * T + t)] == 4500 + (i * B + b) * T + t + 1);
      }
  }
  CHECK_THROWS_WITH(v.eval_batch(v.num_eval_batches(), x, y), Catch::Contains("eval batch"));
  CHECK_THROWS_WITH(BatchSampler(ds, Split::Val, 64, T, 1), Catch::Contains("too few"));
  CHECK_THROWS_WITH(BatchSampler(ds, Split::Train, 0, T, 1), Catch::Contains("batch B=0"));
}
