// `troupe data ...`: prepare corpora and token files.
//   troupe data austen --rdb DIR --out FILE        the six novels as UTF-8 text
//   troupe data tokenize --tokenizer GGUF --in TEXT --out FILE.tok
//   troupe data distill --out FILE.tok                the teacher's continuations (apps/data_distill.cpp)

#include "core/data.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "apps/commands.h"
#include "core/file_io.h"
#include "core/rdata.h"
#include "core/tokenizer.h"

namespace troupe::app {

namespace {

const char* kUsage =
    "usage:\n"
    "  troupe data austen --rdb DIR --out FILE\n"
    "      DIR is janeaustenr's data/ folder (Rdata.rdx, Rdata.rdb); writes the six novels in\n"
    "      publication order as UTF-8 text, lines joined by newlines, a blank line between books\n"
    "  troupe data tokenize --tokenizer GGUF --in TEXT --out FILE\n"
    "      encodes TEXT with the GGUF's BPE tokenizer into a token file (see core/data.h)\n"
    "  troupe data distill --out FILE.tok [--model GGUF] [--tokens FILE.tok] ...\n"
    "      a corpus of the teacher's continuations, for training a draft model (see --help)\n";

struct Opts {
  std::string rdb, out, in, tokenizer;
  bool help = false;
};

// Options come as "--name value" pairs after the subcommand; --help anywhere prints usage.
Opts parse(int argc, char** argv, int first) {
  Opts o;
  for (int i = first; i < argc; i++) {
    std::string k = argv[i];
    if (k == "--help" || k == "-h") {
      o.help = true;
      continue;
    }
    std::string* slot = k == "--rdb"         ? &o.rdb
                        : k == "--out"       ? &o.out
                        : k == "--in"        ? &o.in
                        : k == "--tokenizer" ? &o.tokenizer
                                             : nullptr;
    if (!slot) throw std::runtime_error("data: unknown option '" + k + "'\n" + kUsage);
    if (i + 1 >= argc) throw std::runtime_error("data: option " + k + " needs a value\n" + kUsage);
    *slot = argv[++i];
  }
  return o;
}

void require(const std::string& v, const char* name) {
  if (v.empty()) throw std::runtime_error(std::string("data: missing ") + name + "\n" + kUsage);
}

int austen(const Opts& o) {
  require(o.rdb, "--rdb");
  require(o.out, "--out");
  auto books = read_janeausten_rdb(o.rdb);
  if (!books) throw std::runtime_error(books.error().message);
  std::string text = join_books(*books);
  size_t lines = 0;
  for (auto& b : *books) {
    size_t bytes = 0;
    for (auto& l : b.lines) bytes += l.size() + 1;
    lines += b.lines.size();
    std::printf("  %-17s %6zu lines %8zu bytes\n", b.name.c_str(), b.lines.size(), bytes);
  }
  auto ok = write_file_atomic(o.out, {{text.data(), text.size()}});
  if (!ok) throw std::runtime_error(ok.error().message);
  std::printf("wrote %s: %zu books, %zu lines, %zu bytes\n", o.out.c_str(), books->size(), lines, text.size());
  return 0;
}

int tokenize(const Opts& o) {
  require(o.tokenizer, "--tokenizer");
  require(o.in, "--in");
  require(o.out, "--out");
  auto tok = Tokenizer::from_gguf_file(o.tokenizer);
  if (!tok) throw std::runtime_error(tok.error().message);
  auto in = MappedFile::open(o.in);
  if (!in) throw std::runtime_error(in.error().message);
  auto t0 = std::chrono::steady_clock::now();
  // Plain text, no special tokens: a corpus that happens to contain "<|im_end|>" is text.
  std::vector<int32_t> ids =
      tok->encode(std::string_view(reinterpret_cast<const char*>(in->data), in->size), /*parse_special=*/false);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto ok = data::write_token_file(o.out, ids, uint32_t(tok->vocab_size()));
  if (!ok) throw std::runtime_error(ok.error().message);
  std::printf("wrote %s: %zu tokens from %zu bytes (%.2f bytes/token, vocab %d) in %.2f s\n", o.out.c_str(), ids.size(),
              in->size, double(in->size) / double(std::max<size_t>(ids.size(), 1)), tok->vocab_size(), s);
  return 0;
}

}  // namespace

int cmd_data(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string sub = argv[1];
  if (sub == "distill") return cmd_data_distill(argc, argv);
  if (sub != "austen" && sub != "tokenize")
    throw std::runtime_error("data: unknown subcommand '" + sub + "'\n" + kUsage);
  Opts o = parse(argc, argv, 2);
  if (o.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (sub == "austen") return austen(o);
  return tokenize(o);
}

}  // namespace troupe::app
