#include "core/rdata.h"

#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"

using namespace troupe;

namespace {

// A little writer of R's XDR serialization, enough to build lazy-load databases that
// look like janeaustenr's (and damaged ones).
std::string be(int32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; i++) s[size_t(i)] = char(uint32_t(v) >> (24 - 8 * i));
  return s;
}
std::string header() {
  return "X\n" + be(3) + be(0x40201) + be(0x30500) + be(5) + "UTF-8";
}
std::string chr(const std::string& s, int32_t flags = 0x40009) {
  return be(flags) + be(int32_t(s.size())) + s;
}
std::string na_chr() {
  return be(9) + be(-1);
}
// As R writes them: ASCII strings flagged ASCII, others flagged UTF-8.
std::string str_vec(const std::vector<std::string>& v) {
  std::string s = be(16) + be(int32_t(v.size()));
  for (auto& e : v) {
    bool ascii = std::all_of(e.begin(), e.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    s += chr(e, ascii ? 0x40009 : 0x8009);
  }
  return s;
}
std::string int_vec(const std::vector<int32_t>& v, int type = 13) {
  std::string s = be(type) + be(int32_t(v.size()));
  for (int32_t e : v) s += be(e);
  return s;
}
// list(name1 = item1, ...): a VECSXP with a names attribute.
std::string named_list(const std::vector<std::string>& names, const std::vector<std::string>& items) {
  std::string s = be(19 | 1 << 9) + be(int32_t(items.size()));
  for (auto& it : items) s += it;
  return s + be(2 | 1 << 10) + be(1) + chr("names") + str_vec(names) + be(254);
}

std::string zlib_compress(const std::string& in) {
  uLongf n = compressBound(uLong(in.size()));
  std::string out(n, '\0');
  REQUIRE(compress(reinterpret_cast<Bytef*>(out.data()), &n, reinterpret_cast<const Bytef*>(in.data()),
                   uLong(in.size())) == Z_OK);
  out.resize(n);
  return out;
}
std::string gzip_compress(const std::string& in) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&zs, uLong(in.size())), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = uInt(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = uInt(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// A janeaustenr-shaped data folder: one block per book, the index in alphabetical order
// (as R writes it), blocks wrapped as R_compress1 (compressed = 1) or R_compress3 with
// type byte '1' (compressed = 3).
struct FakeRdata {
  std::vector<std::string> names = {"emma",       "mansfieldpark",  "northangerabbey",
                                    "persuasion", "prideprejudice", "sensesensibility"};
  std::vector<std::string> blocks;  // wrapped, in `names` order
  int compressed;

  explicit FakeRdata(int compressed_ = 1) : compressed(compressed_) {
    for (auto& n : names) set_book(n, {n + " line 1", "", n + " line 3"});
  }
  void set_block_payload(const std::string& name, const std::string& serialized) {
    std::string len = be(int32_t(serialized.size()));
    std::string block = compressed == 1 ? len + zlib_compress(serialized) : len + "1" + zlib_compress(serialized);
    blocks.resize(names.size());
    blocks[index(name)] = block;
  }
  void set_book(const std::string& name, const std::vector<std::string>& lines) {
    set_block_payload(name, header() + str_vec(lines));
  }
  size_t index(const std::string& name) const {
    return size_t(std::find(names.begin(), names.end(), name) - names.begin());
  }
  std::string rdb() const {
    std::string s;
    for (auto& b : blocks) s += b;
    return s;
  }
  std::string rdx_payload() const {
    std::vector<std::string> positions;
    int32_t off = 0;
    for (auto& b : blocks) {
      positions.push_back(int_vec({off, int32_t(b.size())}));
      off += int32_t(b.size());
    }
    return header() + named_list({"variables", "references", "compressed"},
                                 {named_list(names, positions), named_list({}, {}), int_vec({compressed}, 10)});
  }
  // Writes Rdata.rdx / Rdata.rdb into a fresh folder and returns it.
  std::string write(const std::string& tag, const std::string* rdb_override = nullptr,
                    const std::string* rdx_override = nullptr) const {
    auto dir = std::filesystem::temp_directory_path() / ("troupe_rdata_test_" + tag);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "Rdata.rdb", std::ios::binary) << (rdb_override ? *rdb_override : rdb());
    std::ofstream(dir / "Rdata.rdx", std::ios::binary) << (rdx_override ? *rdx_override : gzip_compress(rdx_payload()));
    return dir.string();
  }
};

std::string read_error(const std::string& dir) {
  auto r = read_janeausten_rdb(dir);
  REQUIRE_FALSE(r.ok());
  return r.error().message;
}

}  // namespace

TEST_CASE("R serialization: strings, NA, encodings, and every truncation rejected", "[rdata]") {
  // c("Hello", NA, "", "caf\xe9" flagged Latin-1, "\xc3\xa9t\xc3\xa9" flagged UTF-8)
  std::string x = header() + be(16) + be(5) + chr("Hello") + na_chr() + chr("") + chr("caf\xe9", 0x4009) +
                  chr("\xc3\xa9t\xc3\xa9", 0x8009);
  auto v = parse_r_serialized(reinterpret_cast<const uint8_t*>(x.data()), x.size(), "t.rds");
  REQUIRE(v.ok());
  CHECK(v->type == 16);
  CHECK(v->strings == std::vector<std::string>{"Hello", "", "", "caf\xc3\xa9", "\xc3\xa9t\xc3\xa9"});
  CHECK(v->na == std::vector<uint8_t>{0, 1, 0, 0, 0});
  for (size_t n = 0; n < x.size(); n++) {
    auto cut = parse_r_serialized(reinterpret_cast<const uint8_t*>(x.data()), n, "t.rds");
    REQUIRE_FALSE(cut.ok());
    CHECK_THAT(cut.error().message, Catch::StartsWith("t.rds: offset "));
  }
  // A version-2 stream has no native-encoding field.
  std::string v2 = "X\n" + be(2) + be(0x30500) + be(0x20300) + str_vec({"a"});
  CHECK(parse_r_serialized(reinterpret_cast<const uint8_t*>(v2.data()), v2.size(), "v2")->strings[0] == "a");

  auto err = [](const std::string& bytes, size_t base = 0) {
    auto r = parse_r_serialized(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "t.rds", base);
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  const size_t first_elem = header().size() + 8;  // flags of element 0
  std::string wrong = x;
  wrong[first_elem + 3] = 7;  // element 0 claims type 7, not CHARSXP
  CHECK_THAT(err(wrong),
             Catch::Contains(strformat("t.rds: offset %zu: string vector element 0 has type 7", first_elem)));
  CHECK_THAT(err(wrong, 1000), Catch::Contains(strformat("offset %zu:", 1000 + first_elem)));
  CHECK_THAT(err("RDX3\n" + x.substr(2)), Catch::Contains("offset 0: not an XDR"));
  CHECK_THAT(err("X\n" + be(4) + x.substr(6)), Catch::Contains("serialization version 4"));
  CHECK_THAT(err(header() + be(14) + be(1) + std::string(8, '\0')), Catch::Contains("unsupported R type 14"));
  CHECK_THAT(err(header() + be(16) + be(1000) + chr("a")), Catch::Contains("length 1000 exceeds the remaining bytes"));
  CHECK_THAT(err(header() + be(16) + be(1) + be(0x40009) + be(99) + "ab"),
             Catch::Contains("string length 99 exceeds the remaining bytes"));
  CHECK_THAT(err(header() + be(16) + be(1) + chr("caf\xe9", 0x40009)), Catch::Contains("flagged ASCII"));
  CHECK_THAT(err(header() + be(255 | 3 << 8)), Catch::Contains("reference 3 to an unknown symbol"));
}

TEST_CASE("R serialization: any damaged byte of an index is parsed or refused, never a crash", "[rdata]") {
  // Meaningful under scripts/sanitize.sh: ASan/UBSan turn an out-of-bounds read into a failure.
  std::string index = FakeRdata().rdx_payload();
  size_t refused = 0;
  for (size_t i = 0; i < index.size(); i++)
    for (char c : {'\x00', '\x7f', '\xff'}) {
      std::string bad = index;
      bad[i] = c;
      auto r = parse_r_serialized(reinterpret_cast<const uint8_t*>(bad.data()), bad.size(), "idx");
      if (!r.ok()) {
        refused++;
        CHECK_THAT(r.error().message, Catch::StartsWith("idx: offset "));
      }
    }
  CHECK(refused > index.size());  // most damage is caught by the parser itself
}

TEST_CASE("inflate_bytes checks the stated length and the stream's end", "[rdata]") {
  std::string z = zlib_compress("abcdef");
  auto u = [](const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); };
  CHECK(*inflate_bytes(u(z), z.size(), 6, false, "blk") == "abcdef");
  CHECK(*inflate_bytes(u(z), z.size(), 0, false, "blk") == "abcdef");
  CHECK_THAT(inflate_bytes(u(z), z.size(), 5, false, "blk").error().message,
             Catch::Contains("more data than the stated length"));
  CHECK_THAT(inflate_bytes(u(z), z.size(), 7, false, "blk").error().message,
             Catch::Contains("inflated to 6 bytes, the header says 7"));
  CHECK_THAT(inflate_bytes(u(z), z.size() - 3, 6, false, "blk").error().message,
             Catch::StartsWith("blk: truncated stream"));
  std::string trailing = z + "xx";
  CHECK_THAT(inflate_bytes(u(trailing), trailing.size(), 6, false, "blk").error().message,
             Catch::Contains("2 trailing bytes"));
  std::string garbage = "garbage!";
  CHECK_THAT(inflate_bytes(u(garbage), garbage.size(), 0, false, "blk").error().message,
             Catch::StartsWith("blk: incorrect header check"));
  std::string gz = gzip_compress("hello");
  CHECK(*inflate_bytes(u(gz), gz.size(), 0, true, "gz") == "hello");
  CHECK_FALSE(inflate_bytes(u(gz), gz.size(), 0, false, "gz").ok());  // gzip is not bare zlib
}

TEST_CASE("lazy-load blocks: R_compress1 and R_compress3 wrappings", "[rdata]") {
  std::string payload = header() + str_vec({"x"});
  std::string z = zlib_compress(payload);
  auto dec = [](const std::string& block, int compressed) {
    return decode_lazyload_block(reinterpret_cast<const uint8_t*>(block.data()), block.size(), compressed, "f.rdb",
                                 100);
  };
  CHECK(*dec(be(int32_t(payload.size())) + z, 1) == payload);
  CHECK(*dec(be(int32_t(payload.size())) + "1" + z, 3) == payload);
  CHECK(*dec(be(int32_t(payload.size())) + "0" + payload, 3) == payload);
  CHECK(*dec(payload, 0) == payload);
  CHECK_THAT(dec(be(int32_t(payload.size())) + "Z" + z, 3).error().message,
             Catch::Contains("f.rdb: offset 104: block is xz/LZMA2-compressed"));
  CHECK_THAT(dec(be(int32_t(payload.size())) + "2" + z, 2).error().message, Catch::Contains("bzip2"));
  CHECK_THAT(dec(be(int32_t(payload.size())) + "q" + z, 3).error().message,
             Catch::Contains("offset 104: unknown compression type byte 0x71"));
  // A 'Z' type byte where R_compress1 has none is not zlib.
  CHECK_THAT(dec(be(int32_t(payload.size())) + "Z" + z, 1).error().message,
             Catch::Contains("f.rdb: offset 104: zlib stream: incorrect header check"));
  CHECK_THAT(dec(be(int32_t(payload.size())) + "0" + payload + "!", 3).error().message,
             Catch::Contains("stored block holds"));
  CHECK_THAT(dec(be(-1) + z, 1).error().message, Catch::Contains("offset 100: length 4294967295 cannot come from"));
  CHECK_THAT(dec("abc", 1).error().message, Catch::Contains("offset 100: block of 3 bytes is too short"));
}

TEST_CASE("read_janeausten_rdb reads a database shaped like janeaustenr's", "[rdata]") {
  for (int compressed : {1, 3}) {
    FakeRdata fake(compressed);
    fake.set_book("emma", {"EMMA", "", "caf\xc3\xa9"});
    fake.set_block_payload("persuasion", header() + be(16) + be(2) + chr("Persuasion") + na_chr());
    auto books = read_janeausten_rdb(fake.write("ok" + std::to_string(compressed)));
    INFO((books.ok() ? "" : books.error().message));
    REQUIRE(books.ok());
    REQUIRE(books->size() == 6);
    for (size_t i = 0; i < 6; i++) CHECK((*books)[i].name == kAustenBooks[i]);  // publication order
    CHECK((*books)[0].lines == std::vector<std::string>{"sensesensibility line 1", "", "sensesensibility line 3"});
    CHECK((*books)[3].lines == std::vector<std::string>{"EMMA", "", "caf\xc3\xa9"});
    CHECK((*books)[5].lines == std::vector<std::string>{"Persuasion", ""});  // NA reads as an empty line
    std::string text = join_books(*books);
    CHECK_THAT(text,
               Catch::StartsWith("sensesensibility line 1\n\nsensesensibility line 3\n\nprideprejudice line 1\n"));
    CHECK_THAT(text, Catch::EndsWith("EMMA\n\ncaf\xc3\xa9\n\nnorthangerabbey line 1\n\nnorthangerabbey line 3\n\n"
                                     "Persuasion\n\n"));
  }
}

TEST_CASE("read_janeausten_rdb names the file and offset of damage", "[rdata]") {
  FakeRdata fake;
  const std::string rdb = fake.rdb();
  const size_t emma = 0, persuasion = fake.index("persuasion");
  size_t persuasion_off = 0;
  for (size_t i = 0; i < persuasion; i++) persuasion_off += fake.blocks[i].size();

  SECTION("a missing folder") {
    CHECK_THAT(read_error("/nonexistent/ja"), Catch::Contains("Rdata.rdx: cannot open"));
  }
  SECTION("a truncated database") {
    std::string cut = rdb.substr(0, rdb.size() - 10);
    std::string dir = fake.write("trunc", &cut);
    CHECK_THAT(read_error(dir),
               Catch::Contains(dir + "/Rdata.rdb: offset " + std::to_string(rdb.size() - fake.blocks.back().size())) &&
                   Catch::Contains("runs past the end of the file"));
  }
  SECTION("a corrupt zlib stream") {
    std::string bad = rdb;
    bad[emma + 20] = char(bad[emma + 20] ^ 0x5a);
    bad[emma + 21] = char(bad[emma + 21] ^ 0xa5);
    std::string dir = fake.write("zlib", &bad);
    CHECK_THAT(read_error(dir),
               Catch::Contains(dir + "/Rdata.rdb: offset 4: zlib stream") && Catch::Contains("(block for 'emma')"));
  }
  SECTION("a block whose length header lies") {
    std::string bad = rdb;
    bad[persuasion_off + 3] = char(bad[persuasion_off + 3] + 1);
    CHECK_THAT(read_error(fake.write("len", &bad)),
               Catch::Contains(strformat("Rdata.rdb: offset %zu: zlib stream", persuasion_off + 4)) &&
                   Catch::Contains("(block for 'persuasion')"));
  }
  SECTION("a type byte where R_compress1 has none") {
    fake.blocks[persuasion].insert(4, "Z");
    CHECK_THAT(read_error(fake.write("Z")),
               Catch::Contains(strformat("offset %zu: zlib stream: incorrect header check", persuasion_off + 4)));
  }
  SECTION("a block that is not a character vector") {
    fake.set_block_payload("mansfieldpark", header() + int_vec({1, 2, 3}));
    CHECK_THAT(read_error(fake.write("type")), Catch::Contains("'mansfieldpark' is R type 13, not a character vector"));
  }
  SECTION("a damaged serialization inside a block") {
    fake.set_block_payload("emma", header() + be(16) + be(5) + chr("EMMA"));
    CHECK_THAT(read_error(fake.write("xdr")),
               Catch::Contains("Rdata.rdb: block for 'emma' at offset 0, inflated: offset 31: length 5 exceeds"));
  }
  SECTION("a line that is not UTF-8") {
    fake.set_block_payload("emma", header() + str_vec({"ok", "bad \xff byte"}));
    CHECK_THAT(read_error(fake.write("utf8")), Catch::Contains("'emma' line 2 is not valid UTF-8"));
  }
  SECTION("an index without a book") {
    fake.names[0] = "emma2";
    CHECK_THAT(read_error(fake.write("noemma")), Catch::Contains("Rdata.rdx: no variable 'emma' in the index"));
  }
  SECTION("an index that is not gzip") {
    std::string raw = fake.rdx_payload();
    CHECK_THAT(read_error(fake.write("rdxraw", nullptr, &raw)), Catch::Contains("Rdata.rdx: gzip stream"));
  }
  SECTION("an index that is not a lazy-load index") {
    std::string other = gzip_compress(header() + str_vec({"a"}));
    CHECK_THAT(read_error(fake.write("rdxother", nullptr, &other)), Catch::Contains("no 'variables' list"));
  }
  SECTION("an unknown compression setting") {
    fake.compressed = 7;
    CHECK_THAT(read_error(fake.write("comp7")), Catch::Contains("'compressed' is not TRUE, FALSE, 2 or 3"));
  }
}

// The real corpus, fetched by scripts/setup.sh (which also writes data/austen.txt).
TEST_CASE("the Austen corpus reads as six books", "[rdata][austen]") {
  std::string dir = test::data_path("janeaustenr/usr/lib/R/site-library/janeaustenr/data");
  if (!std::filesystem::exists(dir + "/Rdata.rdb")) FAIL("missing " << dir << ": run scripts/setup.sh");
  auto books = read_janeausten_rdb(dir);
  REQUIRE(books.ok());
  REQUIRE(books->size() == 6);
  const char* first_lines[6] = {"SENSE AND SENSIBILITY", "PRIDE AND PREJUDICE", "MANSFIELD PARK", "EMMA",
                                "NORTHANGER ABBEY",      "Persuasion"};
  const size_t line_counts[6] = {12624, 13030, 15349, 16235, 7856, 8328};
  for (size_t i = 0; i < 6; i++) {
    CHECK((*books)[i].name == kAustenBooks[i]);
    CHECK((*books)[i].lines[0] == first_lines[i]);
    CHECK((*books)[i].lines.size() == line_counts[i]);
  }
  CHECK((*books)[1].lines[9] == "It is a truth universally acknowledged, that a single man in possession");
}

TEST_CASE("data/austen.txt holds the six books as setup wrote them", "[rdata][austen]") {
  std::string path = test::data_path("austen.txt");
  if (!std::filesystem::exists(path)) FAIL("missing " << path << ": run scripts/setup.sh");
  std::ifstream f(path, std::ios::binary);
  std::string text{std::istreambuf_iterator<char>(f), {}};
  CHECK(text.size() == 4025034);
  CHECK(std::count(text.begin(), text.end(), '\n') == 73422 + 5);  // every line, plus 5 blank lines between books
  CHECK_THAT(text, Catch::StartsWith("SENSE AND SENSIBILITY\n"));
  for (const char* title : {"\n\nPRIDE AND PREJUDICE\n", "\n\nMANSFIELD PARK\n", "\n\nEMMA\n", "\n\nNORTHANGER ABBEY\n",
                            "\n\nPersuasion\n"})
    CHECK(text.find(title) != std::string::npos);
  std::string dir = test::data_path("janeaustenr/usr/lib/R/site-library/janeaustenr/data");
  auto books = read_janeausten_rdb(dir);
  REQUIRE(books.ok());
  CHECK(text == join_books(*books));  // byte for byte what `troupe data austen` writes
}
