#include "actors/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/bytes.h"
#include "core/file_io.h"
#include "core/safetensors.h"

namespace troupe::ckpt {

namespace fs = std::filesystem;

StageSnapshot snapshot_stage(const std::string& name, model::Transformer& m, model::AdamW& opt) {
  StageSnapshot s;
  s.name = name;
  s.optimizer_steps = opt.steps_taken();
  int64_t off = 0;
  for (auto& p : m.params()) {
    int64_t n = p.value.numel();
    s.tensors.push_back({p.name, p.value.clone()});
    s.tensors.push_back({"adam_m." + p.name, opt.m().slice(0, off, off + n).view(p.value.shape()).clone()});
    s.tensors.push_back({"adam_v." + p.name, opt.v().slice(0, off, off + n).view(p.value.shape()).clone()});
    off += n;
  }
  return s;
}

Expected<void> restore_stage(model::Transformer& m, model::AdamW& opt, const std::map<std::string, Tensor>& tensors,
                             int optimizer_steps) {
  int64_t off = 0;
  for (auto& p : m.params()) {
    int64_t n = p.value.numel();
    for (auto [prefix, dst] : {std::pair<std::string, Tensor>{"", p.value},
                               {"adam_m.", opt.m().slice(0, off, off + n).view(p.value.shape())},
                               {"adam_v.", opt.v().slice(0, off, off + n).view(p.value.shape())}}) {
      auto it = tensors.find(prefix + p.name);
      if (it == tensors.end()) return make_error("checkpoint has no tensor '" + prefix + p.name + "'");
      if (!(it->second.shape() == dst.shape()) || it->second.dtype() != DType::F32)
        return make_error("checkpoint tensor '" + prefix + p.name + "' is " + it->second.str() + ", expected " +
                          dst.str());
      dst.copy_from(it->second);
    }
    off += n;
  }
  opt.set_steps_taken(optimizer_steps);
  return {};
}

static Expected<uint64_t> file_checksum(const std::string& path) {
  auto m = MappedFile::open(path);
  if (!m) return m.error();
  return fnv1a64(m->data, m->size);
}

Expected<std::string> write_checkpoint(const std::string& dir, const Manifest& manifest,
                                       const std::vector<StageSnapshot>& stages, int keep,
                                       const std::function<void(const std::string& shard)>& after_shard) {
  std::string name = strformat("step-%08lld", (long long)manifest.step);
  fs::path final_dir = fs::path(dir) / name, tmp = fs::path(dir) / (name + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return make_error(tmp.string() + ": cannot create: " + ec.message());
  nlohmann::json j = {{"step", manifest.step},
                      {"layout", manifest.layout},
                      {"data_seed", manifest.data_seed},
                      {"optimizer_steps", manifest.optimizer_steps},
                      {"shards", nlohmann::json::array()}};
  for (auto& s : stages) {
    std::string file = s.name + ".safetensors";
    auto ok = write_safetensors((tmp / file).string(), s.tensors, {{"stage", s.name}});
    if (!ok) return ok.error();
    auto sum = file_checksum((tmp / file).string());
    if (!sum) return sum.error();
    j["shards"].push_back({{"file", file}, {"fnv1a64", strformat("%016llx", (unsigned long long)*sum)}});
    if (after_shard) after_shard(s.name);
  }
  std::string text = j.dump(2);
  if (auto ok = write_file_atomic((tmp / "manifest.json").string(), {{text.data(), text.size()}}); !ok) return ok.error();
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);  // publish: the folder appears whole or not at all
  if (ec) return make_error(tmp.string() + ": cannot rename to " + final_dir.string() + ": " + ec.message());
  // Keep the newest `keep`.
  std::vector<std::string> all;
  for (auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0 &&
        e.path().extension() != ".tmp")
      all.push_back(e.path().string());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + size_t(std::max(keep, 1)) < all.size(); i++) fs::remove_all(all[i], ec);
  return final_dir.string();
}

static Expected<Loaded> load_one(const std::string& path) {
  Loaded out;
  out.path = path;
  std::string mpath = path + "/manifest.json";
  auto mf = MappedFile::open(mpath);
  if (!mf) return mf.error();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(mf->data, mf->data + mf->size);
    out.manifest.step = j.at("step").get<int64_t>();
    out.manifest.layout = j.at("layout").get<std::string>();
    out.manifest.data_seed = j.at("data_seed").get<int64_t>();
    out.manifest.optimizer_steps = j.at("optimizer_steps").get<int>();
    for (auto& s : j.at("shards"))
      out.manifest.shards.push_back(
          {s.at("file").get<std::string>(), std::stoull(s.at("fnv1a64").get<std::string>(), nullptr, 16)});
  } catch (const std::exception& e) {
    return make_error(mpath + ": " + e.what());
  }
  for (auto& [file, sum] : out.manifest.shards) {
    std::string fpath = path + "/" + file;
    auto got = file_checksum(fpath);
    if (!got) return got.error();
    if (*got != sum)
      return make_error(strformat("%s: checksum %016llx does not match the manifest's %016llx (damaged or truncated)",
                                  fpath.c_str(), (unsigned long long)*got, (unsigned long long)sum));
    auto st = SafetensorsFile::open(fpath);
    if (!st) return st.error();
    for (auto& e : st->entries()) out.tensors[e.name] = st->tensor(e.name).value();
  }
  return out;
}

Expected<Loaded> load_latest_checkpoint(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> all;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && n.find(".tmp") == std::string::npos) all.push_back(e.path().string());
  }
  if (ec) return make_error(dir + ": cannot list checkpoints: " + ec.message());
  std::sort(all.rbegin(), all.rend());
  std::vector<std::string> warnings;
  for (auto& path : all) {
    auto l = load_one(path);
    if (l) {
      l->warnings = warnings;
      return l;
    }
    warnings.push_back("skipping checkpoint " + path + ": " + l.error().message);
  }
  std::string why;
  for (auto& w : warnings) why += "\n  " + w;
  return make_error(dir + ": no usable checkpoint" + (why.empty() ? std::string(" (none written)") : why));
}

}  // namespace troupe::ckpt
