#include "core/data.h"

#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/rdata.h"
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
void write_all(const std::string& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

}  // namespace

TEST_CASE("token files round trip and reject corruption", "[data]") {
  std::vector<int32_t> toks;
  for (int i = 0; i < 1000; i++) toks.push_back((i * 7919) % 49152);
  std::string p = tmp_path("a.tok");
  REQUIRE(write_token_file(p, toks, 49152).ok());
  auto f = TokenFile::open(p);
  REQUIRE(f.ok());
  CHECK(f->size() == 1000);
  for (int i = 0; i < 1000; i++) REQUIRE((*f)[i] == toks[size_t(i)]);
  // 4-byte tokens for big vocabularies
  REQUIRE(write_token_file(p + "4", {70000, 1, 2}, 100000).ok());
  CHECK((*TokenFile::open(p + "4"))[0] == 70000);

  std::string good = read_all(p);
  auto err = [&](std::string bytes) {
    write_all(p + ".bad", bytes);
    auto g = TokenFile::open(p + ".bad");
    REQUIRE_FALSE(g.ok());
    return g.error().message;
  };
  std::string flipped = good;
  flipped[100] ^= 1;
  CHECK_THAT(err(flipped), Catch::Contains("offset 32: checksum"));
  CHECK_THAT(err("TRPTOK2" + good.substr(7)), Catch::Contains("offset 0: magic"));
  CHECK_THAT(err(good.substr(0, good.size() - 2)), Catch::Contains("offset 24: token count"));
  CHECK_THAT(err(good.substr(0, 20)), Catch::Contains("shorter than the 40-byte header"));
  CHECK_THAT(write_token_file(p, {5, 50000}, 50000).error().message,
             Catch::Contains("token 50000 at index 1 is outside the vocabulary of 50000"));
  CHECK_THAT(TokenFile::open(p + ".missing").error().message, Catch::Contains("cannot open"));
}

TEST_CASE("batches are a pure function of (seed, step)", "[data]") {
  std::vector<int32_t> toks;
  for (int i = 0; i < 5000; i++) toks.push_back(i % 997);
  std::string p = tmp_path("b.tok");
  REQUIRE(write_token_file(p, toks, 1000).ok());
  TokenDataset ds(*TokenFile::open(p), 0.1);
  CHECK(ds.num_tokens(Split::Train) == 4500);
  CHECK(ds.num_tokens(Split::Val) == 500);
  BatchSampler a(ds, Split::Train, 4, 16, 42), b(ds, Split::Train, 4, 16, 42), c(ds, Split::Train, 4, 16, 43);
  std::vector<int32_t> x1, y1, x2, y2, x3, y3;
  for (int s = 0; s < 40; s++) a.batch(s, x1, y1);  // a walks through several epochs
  a.batch(37, x1, y1);
  b.batch(37, x2, y2);  // b jumps straight there
  CHECK(x1 == x2);
  CHECK(y1 == y2);
  c.batch(37, x3, y3);
  CHECK(x1 != x3);
  for (size_t i = 0; i < x1.size(); i++) {
    // targets are the next tokens; windows are whole and inside the train split
    if (i % 16 != 15) CHECK(y1[i] == x1[i + 1]);
    CHECK(y1[i] == (x1[i] + 1) % 997);
  }
  // One epoch visits every window exactly once.
  std::set<int32_t> firsts;
  int64_t per_epoch = a.windows() / 4;
  for (int64_t s = 0; s < per_epoch; s++) {
    a.batch(s, x1, y1);
    for (int k = 0; k < 4; k++) firsts.insert(x1[size_t(k) * 16]);
  }
  CHECK(int64_t(firsts.size()) == per_epoch * 4);
  // Validation batches are fixed, in order, from the validation split.
  BatchSampler v(ds, Split::Val, 2, 16, 1);
  CHECK(v.num_eval_batches() == (499 / 16) / 2);
  v.eval_batch(0, x1, y1);
  CHECK(x1[0] == 4500 % 997);
  CHECK_THROWS_WITH(BatchSampler(ds, Split::Val, 64, 16, 1), Catch::Contains("too few"));
}

TEST_CASE("R serialization reader handles the janeaustenr layout and rejects damage", "[rdata]") {
  // A tiny XDR version-3 STRSXP: c("Hello", NA, "")
  auto be = [](int32_t v) {
    std::string s(4, '\0');
    for (int i = 0; i < 4; i++) s[size_t(i)] = char(uint32_t(v) >> (24 - 8 * i));
    return s;
  };
  std::string x = "X\n" + be(3) + be(0x40201) + be(0x30500) + be(5) + "UTF-8" + be(16) + be(3) + be(0x40009) + be(5) +
                  "Hello" + be(9) + be(-1) + be(0x40009) + be(0);
  auto v = parse_r_serialized(reinterpret_cast<const uint8_t*>(x.data()), x.size(), "t.rds");
  REQUIRE(v.ok());
  CHECK(v->strings == std::vector<std::string>{"Hello", "", ""});
  CHECK(v->na == std::vector<uint8_t>{0, 1, 0});
  for (size_t n = 0; n < x.size(); n++) {
    auto cut = parse_r_serialized(reinterpret_cast<const uint8_t*>(x.data()), n, "t.rds");
    CHECK_FALSE(cut.ok());
  }
  std::string wrong = x;
  wrong[23 + 8 + 3] = 7;  // low byte of the first element's flags: type 7, not CHARSXP
  CHECK_THAT(parse_r_serialized(reinterpret_cast<const uint8_t*>(wrong.data()), wrong.size(), "t.rds").error().message,
             Catch::Contains("t.rds: offset"));
  CHECK_THAT(inflate_bytes(reinterpret_cast<const uint8_t*>("garbage!"), 8, 0, false, "blk").error().message,
             Catch::StartsWith("blk: "));
  // A zlib stream that inflates to a different length than stated.
  std::string z(64, '\0');
  uLongf zn = z.size();
  compress(reinterpret_cast<Bytef*>(z.data()), &zn, reinterpret_cast<const Bytef*>("abcdef"), 6);
  CHECK(*inflate_bytes(reinterpret_cast<const uint8_t*>(z.data()), zn, 6, false, "blk") == "abcdef");
  CHECK_THAT(inflate_bytes(reinterpret_cast<const uint8_t*>(z.data()), zn, 5, false, "blk").error().message,
             Catch::Contains("more data than the stated length"));
  CHECK_THAT(inflate_bytes(reinterpret_cast<const uint8_t*>(z.data()), zn - 3, 6, false, "blk").error().message,
             Catch::StartsWith("blk: "));
}

TEST_CASE("the Austen corpus fetched by setup reads as six books", "[rdata][austen]") {
  std::string dir = test::data_path("janeaustenr/usr/lib/R/site-library/janeaustenr/data");
  if (!std::filesystem::exists(dir + "/Rdata.rdb")) FAIL("run scripts/setup.sh to fetch " << dir);
  auto books = read_janeausten(dir);
  REQUIRE(books.ok());
  REQUIRE(books->size() == 6);
  CHECK((*books)[0].name == "sensesensibility");
  CHECK((*books)[0].lines[0] == "SENSE AND SENSIBILITY");
  CHECK((*books)[1].lines[0] == "PRIDE AND PREJUDICE");
  CHECK((*books)[2].lines[0] == "MANSFIELD PARK");
  CHECK((*books)[3].lines[0] == "EMMA");
  CHECK((*books)[4].lines[0] == "NORTHANGER ABBEY");
  CHECK((*books)[5].lines[0] == "Persuasion");
  CHECK((*books)[3].lines.size() == 16235);
  size_t lines = 0;
  for (auto& b : *books) lines += b.lines.size();
  CHECK(lines == 73422);
}
