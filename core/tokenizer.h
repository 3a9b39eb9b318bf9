#pragma once
// Byte-level BPE tokenizer (GPT-2 style) built from a GGUF file's tokenizer metadata, matching
// Hugging Face `tokenizers` on SmolLM2 token for token:
//
//   1. special tokens: control tokens (<|im_start|>, ...) are cut out of the text first when
//      parse_special is set; user-defined tokens always are (leftmost, then longest match);
//   2. pre-tokenization of each stretch between them, as SmolLM2's tokenizer.json does:
//      Digits(individual_digits) isolates every number character, then ByteLevel's GPT-2 regex
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      splits each stretch between them (hand-written below; Unicode classes in core/unicode.h);
//   3. BPE over the bytes of each piece, lowest merge rank first (leftmost on ties), exactly as
//      tokenizers' BPE model does. A byte with no token in the vocabulary is dropped (SmolLM2 has
//      no unk token and lacks 21 of the 256 byte tokens, e.g. 0x04 and 0xF5..0xFF).
//
// decode() concatenates the raw bytes of each token, so decode(encode(s)) == s for any s whose
// bytes all have tokens. The Tokenizer is immutable after construction: share it across threads.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/gguf.h"

namespace troupe {

class Tokenizer {
 public:
  // Needs tokenizer.ggml.model = "gpt2", a supported tokenizer.ggml.pre ("smollm" and the other
  // llama.cpp names for the same Digits + GPT-2 split, or "gpt2" for the plain GPT-2 split),
  // tokenizer.ggml.tokens and tokenizer.ggml.merges.
  static Expected<Tokenizer> from_gguf(const GgufFile& f);
  static Expected<Tokenizer> from_gguf_file(const std::string& path);

  // Token ids of text; adds no BOS (SmolLM2's add_bos_token is false; see add_bos()).
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // Concatenated bytes of the tokens; ids outside the vocabulary are skipped.
  std::string decode(const std::vector<int32_t>& ids) const;
  // Raw bytes of one token (possibly part of a UTF-8 character: stream by concatenating);
  // empty for an id outside the vocabulary.
  const std::string& token_bytes(int32_t id) const;
  // The token as the vocabulary spells it ("Ġthe" for " the"); empty outside the vocabulary.
  const std::string& token_text(int32_t id) const;
  // Looks up a token by its vocabulary spelling ("Ġthe", "<|im_start|>").
  std::optional<int32_t> token_id(std::string_view token_text) const;

  int32_t vocab_size() const { return int32_t(text_.size()); }
  int32_t bos_id() const { return bos_id_; }  // -1 when the file names none
  int32_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }
  bool is_control(int32_t id) const;  // special tokens such as <|im_end|>
  const std::string& chat_template() const { return chat_template_; }
  const std::string& pre_type() const { return pre_type_; }

  // The pieces that BPE sees for one stretch of text without special tokens (step 2 above).
  std::vector<std::string_view> pre_tokenize(std::string_view text) const;

 private:
  struct Special {
    std::string bytes;
    int32_t id;
    bool control;  // matched only when parse_special; user-defined tokens always are
  };
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  struct Scratch;

  size_t piece_end(std::string_view s, size_t i) const;
  void encode_stretch(std::string_view s, Scratch& scratch, std::vector<int32_t>& out) const;
  void bpe(std::string_view piece, Scratch& scratch, std::vector<int32_t>& out) const;
  const Merge* find_merge(int32_t left, int32_t right) const;

  std::vector<std::string> text_;   // vocabulary spelling per id
  std::vector<std::string> bytes_;  // raw bytes per id
  std::vector<uint8_t> control_;    // per id: 1 for control tokens
  std::unordered_map<std::string, int32_t> id_of_text_;
  std::array<int32_t, 256> byte_id_{};          // token of each single byte, -1 if none
  std::unordered_map<uint64_t, Merge> merges_;  // key: left id << 32 | right id
  std::vector<Special> specials_;               // longest first
  std::array<bool, 256> special_first_byte_{};
  bool split_digits_ = true;
  int32_t bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = false;
  std::string chat_template_;
  std::string pre_type_;
};

}  // namespace troupe
