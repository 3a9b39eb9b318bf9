#pragma once
// Reader for the R data that ships Jane Austen's novels in Debian's r-cran-janeaustenr
// (no R needed): data/Rdata.rdx is a gzip-compressed serialized index (variable name ->
// offset, length into Rdata.rdb), and each Rdata.rdb block is a 4-byte big-endian
// uncompressed length, an optional compression-type byte 'Z', then a zlib stream of R's
// XDR serialization of a character vector, one string per line of the book.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace troupe {

// The subset of R's serialized values these files use.
struct RValue {
  int type = 0;                      // R SEXPTYPE: 0 NULL, 9 CHARSXP, 10 LGLSXP, 13 INTSXP, 16 STRSXP, 19 VECSXP, ...
  std::vector<std::string> strings;  // STRSXP elements (NA as empty, flagged in na)
  std::vector<uint8_t> na;           // STRSXP: 1 where the element is NA
  std::vector<int32_t> ints;         // INTSXP / LGLSXP
  std::vector<RValue> items;         // VECSXP
  std::vector<std::pair<std::string, RValue>> attributes;
  const RValue* attribute(const std::string& name) const;
};

// Parses an XDR ("X\n") serialization, version 2 or 3. `name` and `base` (the offset
// of data within its file) go into error messages.
Expected<RValue> parse_r_serialized(const uint8_t* data, size_t size, const std::string& name, size_t base = 0);

// Inflates a zlib (or, with gzip = true, gzip) stream, expecting exactly `expected`
// bytes out when expected > 0.
Expected<std::string> inflate_bytes(const uint8_t* data, size_t size, size_t expected, bool gzip,
                                    const std::string& what);

struct Book {
  std::string name;  // janeaustenr's variable name, e.g. "prideprejudice"
  std::vector<std::string> lines;
};

// Reads all six novels from janeaustenr's data/ folder (Rdata.rdx + Rdata.rdb), in
// publication order: sensesensibility, prideprejudice, mansfieldpark, emma,
// northangerabbey, persuasion.
Expected<std::vector<Book>> read_janeausten(const std::string& data_dir);

}  // namespace troupe
