#pragma once
// Reader for the R data that ships Jane Austen's novels in Debian's r-cran-janeaustenr,
// without R. The package's data/ folder is an R lazy-load database:
//   Rdata.rdx  a gzip-compressed R serialization of
//              list(variables = list(<name> = c(offset, length), ...), references, compressed)
//   Rdata.rdb  the values, one block per variable at (offset, length). How a block is
//              wrapped depends on `compressed` (R's R_compress1/2/3 in connections.c):
//                TRUE/1: 4-byte big-endian uncompressed length, then a zlib stream
//                2 or 3: the length, a type byte ('1' zlib, '0' stored, '2' bzip2,
//                        'Z' raw LZMA2), then the payload
//              janeaustenr uses 1 (checked on r-cran-janeaustenr 1.0.0: no type byte).
// Each block inflates to an XDR serialization ("X\n", version 2 or 3) of a character
// vector, one string per line of the book.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace troupe {

// The subset of R's serialized values these files use.
struct RValue {
  int type = 0;                      // R SEXPTYPE: 0 NULL, 1 SYMSXP, 2 LISTSXP, 9 CHARSXP, 10 LGLSXP,
                                     // 13 INTSXP, 16 STRSXP, 19 VECSXP
  std::vector<std::string> strings;  // STRSXP elements as UTF-8 (NA as "", flagged in na)
  std::vector<uint8_t> na;           // STRSXP: 1 where the element is NA
  std::vector<int32_t> ints;         // INTSXP / LGLSXP
  std::vector<RValue> items;         // VECSXP
  std::vector<std::pair<std::string, RValue>> attributes;  // also a LISTSXP's (tag, value) cells
  const RValue* attribute(const std::string& name) const;
};

// Parses an XDR ("X\n") serialization, version 2 or 3. Strings flagged Latin-1 (or
// unflagged in a version-3 stream whose native encoding is Latin-1) become UTF-8.
// Errors read "NAME: offset N: ..." with N = base + the offset within data.
Expected<RValue> parse_r_serialized(const uint8_t* data, size_t size, const std::string& name, size_t base = 0);

// Inflates a zlib (or, with gzip = true, gzip) stream that must end exactly at the end of
// the input, expecting exactly `expected` bytes out when expected > 0 (at most 1 GiB
// otherwise). `what` starts every error message.
Expected<std::string> inflate_bytes(const uint8_t* data, size_t size, size_t expected, bool gzip,
                                    const std::string& what);

// Unwraps one lazy-load block (see above) stored with the index's `compressed` value.
// `file` and `base` (the block's offset in it) go into error messages.
Expected<std::string> decode_lazyload_block(const uint8_t* block, size_t size, int compressed, const std::string& file,
                                            size_t base);

struct Book {
  std::string name;                // janeaustenr's variable name, e.g. "prideprejudice"
  std::vector<std::string> lines;  // UTF-8, one per line of the book; blank lines are ""
};

// The six novels in publication order, the order read_janeausten_rdb returns them in.
inline constexpr const char* kAustenBooks[6] = {"sensesensibility", "prideprejudice", "mansfieldpark", "emma",
                                                "northangerabbey",  "persuasion"};

// Reads all six novels from janeaustenr's data/ folder (Rdata.rdx + Rdata.rdb). Any
// malformed input is an Error naming the file and byte offset at fault.
Expected<std::vector<Book>> read_janeausten_rdb(const std::string& data_dir);

// The corpus as one UTF-8 text: each book's lines joined by '\n' (each line, the last
// included, ends with '\n'), and one blank line between books. `troupe data austen`
// writes exactly this.
std::string join_books(const std::vector<Book>& books);

}  // namespace troupe
