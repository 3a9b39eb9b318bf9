#include "core/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "core/file_io.h"

namespace troupe {

namespace {

using nlohmann::json;

// Headers above this are refused outright (the format's own reference caps at 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

const char* st_dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::BF16:
      return "BF16";
    case DType::F16:
      return "F16";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
  }
  return "?";
}

bool st_dtype_from(const std::string& s, DType* out) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64})
    if (s == st_dtype_name(t)) {
      *out = t;
      return true;
    }
  return false;
}

}  // namespace

Expected<SafetensorsFile> SafetensorsFile::parse(const uint8_t* data, size_t size, std::string name) {
  auto err = [&](const std::string& what) { return make_error(name + ": " + what); };
  if (size < 8) return err(strformat("file of %zu bytes is shorter than the 8-byte header length", size));
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | data[i];
  if (hlen > kMaxHeaderBytes)
    return err(strformat("offset 0: header length %llu exceeds the limit of %llu bytes", (unsigned long long)hlen,
                         (unsigned long long)kMaxHeaderBytes));
  if (hlen > size - 8)
    return err(strformat("offset 0: header length %llu runs past the end of the file (%zu bytes)",
                         (unsigned long long)hlen, size));
  json h;
  std::set<std::string> keys;
  std::string duplicate;
  // nlohmann keeps the last of duplicate keys silently; a header naming a tensor twice is
  // ambiguous, so the parse callback catches it.
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && !keys.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  try {
    h = json::parse(data + 8, data + 8 + hlen, on_event);
  } catch (const json::parse_error& e) {
    return err(strformat("offset %llu: header is not valid JSON: %s", (unsigned long long)(8 + e.byte - 1), e.what()));
  }
  if (!h.is_object()) return err("offset 8: header is not a JSON object");
  if (!duplicate.empty()) return err("header names '" + duplicate + "' twice");

  SafetensorsFile f;
  f.name_ = name;
  f.data_ = data + 8 + hlen;
  const size_t data_size = size - 8 - size_t(hlen);
  for (auto& [key, val] : h.items()) {
    if (key == "__metadata__") {
      if (!val.is_object()) return err("__metadata__: expected an object of strings");
      for (auto& [mk, mv] : val.items()) {
        if (!mv.is_string()) return err("__metadata__." + mk + ": expected a string");
        f.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { return err("tensor '" + key + "': " + what); };
    if (!val.is_object()) return bad("expected an object with dtype, shape and data_offsets");
    for (auto& [fk, fv] : val.items())
      if (fk != "dtype" && fk != "shape" && fk != "data_offsets") return bad("unknown field '" + fk + "'");
    SafetensorsEntry e;
    e.name = key;
    if (!val.contains("dtype") || !val["dtype"].is_string()) return bad("dtype: missing or not a string");
    std::string dt = val["dtype"].get<std::string>();
    if (!st_dtype_from(dt, &e.dtype)) return bad("dtype: '" + dt + "' is not one of F32, BF16, F16, I32, I64");
    if (!val.contains("shape") || !val["shape"].is_array()) return bad("shape: missing or not an array");
    std::vector<int64_t> dims;
    uint64_t numel = 1;
    for (auto& d : val["shape"]) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        return bad("shape: dimensions must be non-negative integers");
      uint64_t v = d.get<uint64_t>();
      if (v > (1ull << 40) || (v && numel > (1ull << 62) / v)) return bad("shape: element count overflows");
      numel *= v;
      dims.push_back(int64_t(v));
    }
    if (dims.size() > size_t(kMaxDims)) return bad(strformat("shape: rank %zu exceeds %d", dims.size(), kMaxDims));
    e.shape = Shape(dims);
    auto& off = val["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      return bad("data_offsets: expected [begin, end] as non-negative integers");
    uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    if (b > en)
      return bad(strformat("data_offsets: begin %llu > end %llu", (unsigned long long)b, (unsigned long long)en));
    if (en > data_size)
      return bad(strformat("data_offsets: [%llu, %llu) past the end of the data section (%zu bytes)",
                           (unsigned long long)b, (unsigned long long)en, data_size));
    const uint64_t esize = dtype_size(e.dtype);
    if (numel > UINT64_MAX / esize)  // checked before multiplying: a wrapped product could match
      return bad(strformat("shape %s x %s needs more than 2^64 bytes", e.shape.str().c_str(), st_dtype_name(e.dtype)));
    if (en - b != numel * esize)
      return bad(strformat("data_offsets: %llu bytes, but shape %s x %s needs %llu", (unsigned long long)(en - b),
                           e.shape.str().c_str(), st_dtype_name(e.dtype), (unsigned long long)(numel * esize)));
    e.begin = size_t(b);
    e.end = size_t(en);
    f.entries_.push_back(std::move(e));
  }
  // No two tensors may share bytes.
  std::vector<const SafetensorsEntry*> by_offset;
  for (auto& e : f.entries_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  const SafetensorsEntry* reach = nullptr;  // the tensor reaching furthest so far
  for (auto* e : by_offset) {
    if (e->end == e->begin) continue;  // empty tensors occupy no bytes
    if (reach && e->begin < reach->end) return err("tensors '" + reach->name + "' and '" + e->name + "' overlap");
    if (!reach || e->end > reach->end) reach = e;
  }
  return f;
}

Expected<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto m = MappedFile::open(path);
  if (!m) return m.error();
  auto f = parse(m->data, m->size, path);
  if (f) f->mapping_ = std::move(m->owner);
  return f;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  for (auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

Expected<Tensor> SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (!e) return make_error(name_ + ": no tensor named '" + name + "'");
  Tensor t = Tensor::empty(e->shape, e->dtype);
  if (e->end > e->begin) std::memcpy(t.raw(), data_ + e->begin, e->end - e->begin);
  return t;
}

std::string encode_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  size_t off = 0;
  std::vector<Tensor> dense;
  for (auto& [name, t] : tensors) {
    TROUPE_CHECK(t.device().is_cpu(), "write_safetensors: tensor '%s' is on %s", name.c_str(),
                 t.device().str().c_str());
    TROUPE_CHECK(!h.contains(name), "write_safetensors: tensor name '%s' appears twice", name.c_str());
    dense.push_back(t.contiguous());
    h[name] = {
        {"dtype", st_dtype_name(t.dtype())}, {"shape", t.shape().vec()}, {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  std::string hs = h.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');  // pad so the data section starts 8-byte aligned
  std::string out(8, '\0');
  uint64_t n = hs.size();
  for (int i = 0; i < 8; i++) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  out += hs;
  for (auto& t : dense) out.append(static_cast<const char*>(t.raw()), t.nbytes());
  return out;
}

Expected<void> write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  std::string bytes = encode_safetensors(tensors, metadata);
  return write_file_atomic(path, {{bytes.data(), bytes.size()}});
}

}  // namespace troupe
