#include "core/job.h"

#include <toml++/toml.h>

#include <fstream>
#include <limits>
#include <sstream>

namespace troupe {

namespace {

enum class Kind { Int, Int64, Float, Str, StrList };

struct Field {
  const char* section;
  const char* key;
  Kind kind;
  void* ptr;
};

std::vector<Field> fields_of(JobConfig& c) {
  return {
      {"model", "arch", Kind::Str, &c.model.arch},
      {"model", "n_layer", Kind::Int, &c.model.n_layer},
      {"model", "n_head", Kind::Int, &c.model.n_head},
      {"model", "n_kv_head", Kind::Int, &c.model.n_kv_head},
      {"model", "d_model", Kind::Int, &c.model.d_model},
      {"model", "d_ff", Kind::Int, &c.model.d_ff},
      {"model", "vocab_size", Kind::Int, &c.model.vocab_size},
      {"model", "max_seq_len", Kind::Int, &c.model.max_seq_len},
      {"model", "norm_eps", Kind::Float, &c.model.norm_eps},
      {"model", "rope_theta", Kind::Float, &c.model.rope_theta},
      {"data", "tokens", Kind::Str, &c.data.tokens},
      {"data", "tokenizer", Kind::Str, &c.data.tokenizer},
      {"data", "batch_size", Kind::Int, &c.data.batch_size},
      {"data", "seq_len", Kind::Int, &c.data.seq_len},
      {"data", "val_fraction", Kind::Float, &c.data.val_fraction},
      {"data", "seed", Kind::Int64, &c.data.seed},
      {"optimizer", "lr", Kind::Float, &c.optimizer.lr},
      {"optimizer", "min_lr", Kind::Float, &c.optimizer.min_lr},
      {"optimizer", "warmup_steps", Kind::Int, &c.optimizer.warmup_steps},
      {"optimizer", "weight_decay", Kind::Float, &c.optimizer.weight_decay},
      {"optimizer", "beta1", Kind::Float, &c.optimizer.beta1},
      {"optimizer", "beta2", Kind::Float, &c.optimizer.beta2},
      {"optimizer", "eps", Kind::Float, &c.optimizer.eps},
      {"optimizer", "grad_clip", Kind::Float, &c.optimizer.grad_clip},
      {"train", "steps", Kind::Int, &c.train.steps},
      {"train", "val_every", Kind::Int, &c.train.val_every},
      {"train", "val_batches", Kind::Int, &c.train.val_batches},
      {"train", "threads", Kind::Int, &c.train.threads},
      {"parallel", "dp", Kind::Int, &c.parallel.dp},
      {"parallel", "pp", Kind::Int, &c.parallel.pp},
      {"parallel", "microbatches", Kind::Int, &c.parallel.microbatches},
      {"parallel", "schedule", Kind::Str, &c.parallel.schedule},
      {"parallel", "virtual_stages", Kind::Int, &c.parallel.virtual_stages},
      {"checkpoint", "dir", Kind::Str, &c.checkpoint.dir},
      {"checkpoint", "snapshot_every", Kind::Int, &c.checkpoint.snapshot_every},
      {"checkpoint", "disk_every", Kind::Int, &c.checkpoint.disk_every},
      {"checkpoint", "keep", Kind::Int, &c.checkpoint.keep},
      {"supervision", "strategy", Kind::Str, &c.supervision.strategy},
      {"supervision", "max_restarts", Kind::Int, &c.supervision.max_restarts},
      {"supervision", "within_seconds", Kind::Float, &c.supervision.within_seconds},
      {"fault", "kill", Kind::StrList, &c.fault.kill},
      {"fault", "random_count", Kind::Int, &c.fault.random_count},
      {"fault", "random_seed", Kind::Int64, &c.fault.random_seed},
  };
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Int: case Kind::Int64: return "an integer";
    case Kind::Float: return "a number";
    case Kind::Str: return "a string";
    case Kind::StrList: return "a string or an array of strings";
  }
  return "?";
}

std::string node_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date/time";
  }
}

std::string where(const std::string& source, const toml::node& n) {
  return n.source().begin.line ? strformat("%s:%u", source.c_str(), unsigned(n.source().begin.line)) : source;
}

// Stores node into the field, or explains why it cannot.
Expected<void> assign(const Field& f, const toml::node& n, const std::string& at) {
  std::string name = std::string(f.section) + "." + f.key;
  auto wrong = [&]() {
    return make_error(at + ": " + name + ": expected " + kind_name(f.kind) + ", got " + node_type_name(n));
  };
  switch (f.kind) {
    case Kind::Int: {
      if (!n.is_integer()) return wrong();
      int64_t v = n.as_integer()->get();
      if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
        return make_error(at + ": " + name + ": " + std::to_string(v) + " is out of range");
      *static_cast<int*>(f.ptr) = int(v);
      return {};
    }
    case Kind::Int64:
      if (!n.is_integer()) return wrong();
      *static_cast<int64_t*>(f.ptr) = n.as_integer()->get();
      return {};
    case Kind::Float:
      if (n.is_integer()) *static_cast<double*>(f.ptr) = double(n.as_integer()->get());
      else if (n.is_floating_point()) *static_cast<double*>(f.ptr) = n.as_floating_point()->get();
      else return wrong();
      return {};
    case Kind::Str:
      if (!n.is_string()) return wrong();
      *static_cast<std::string*>(f.ptr) = n.as_string()->get();
      return {};
    case Kind::StrList: {
      auto* out = static_cast<std::vector<std::string>*>(f.ptr);
      if (n.is_string()) {
        *out = {n.as_string()->get()};
        return {};
      }
      if (!n.is_array()) return wrong();
      out->clear();
      for (auto& e : *n.as_array()) {
        if (!e.is_string())
          return make_error(at + ": " + name + ": array elements must be strings, got " + node_type_name(e));
        out->push_back(e.as_string()->get());
      }
      return {};
    }
  }
  return wrong();
}

std::string known_keys(const std::vector<Field>& fs, const std::string& section) {
  std::string s;
  for (auto& f : fs)
    if (section.empty() ? s.find(f.section) == std::string::npos : section == f.section)
      s += (s.empty() ? "" : ", ") + std::string(section.empty() ? f.section : f.key);
  return s;
}

}  // namespace

Expected<JobConfig> JobConfig::parse(const std::string& text, const std::string& source) {
  JobConfig c;
  c.source = source;
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return make_error(strformat("%s:%u:%u: syntax error: ", source.c_str(), unsigned(e.source().begin.line),
                                unsigned(e.source().begin.column)) +
                      std::string(e.description()));
  }
  auto fs = fields_of(c);
  for (auto& [skey, snode] : root) {
    std::string section(skey.str());
    bool known = false;
    for (auto& f : fs) known |= section == f.section;
    if (!known)
      return make_error(where(source, snode) + ": " + section + ": unknown section (known: " + known_keys(fs, "") + ")");
    if (!snode.is_table())
      return make_error(where(source, snode) + ": " + section + ": expected a table [" + section + "], got " +
                        node_type_name(snode));
    for (auto& [kkey, knode] : *snode.as_table()) {
      std::string key(kkey.str());
      const Field* f = nullptr;
      for (auto& x : fs)
        if (section == x.section && key == x.key) f = &x;
      std::string at = where(source, knode);
      if (!f)
        return make_error(at + ": " + section + "." + key + ": unknown key (known in [" + section +
                          "]: " + known_keys(fs, section) + ")");
      if (auto ok = assign(*f, knode, at); !ok) return ok.error();
      c.lines[section + "." + key] = int(knode.source().begin.line);
    }
  }
  if (auto ok = c.validate(); !ok) return ok.error();
  return c;
}

Expected<JobConfig> JobConfig::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(path + ": cannot open job file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

Expected<void> JobConfig::set(const std::string& assignment) {
  auto eq = assignment.find('=');
  auto dot = assignment.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq)
    return make_error("--set " + assignment + ": expected section.key=value");
  std::string section = assignment.substr(0, dot), key = assignment.substr(dot + 1, eq - dot - 1);
  std::string value = assignment.substr(eq + 1);
  auto fs = fields_of(*this);
  const Field* f = nullptr;
  for (auto& x : fs)
    if (section == x.section && key == x.key) f = &x;
  if (!f) return make_error("--set " + assignment + ": " + section + "." + key + ": unknown field");
  toml::table t;
  try {
    t = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    t = toml::table{{"v", value}};  // a bare word: take it as a string
  }
  if (auto ok = assign(*f, *t.get("v"), "--set"); !ok) return ok.error();
  lines.erase(section + "." + key);
  return validate();
}

Expected<FaultSpec> parse_fault_spec(const std::string& s) {
  // target@stepN:phase
  auto at = s.find("@step");
  auto colon = s.rfind(':');
  if (at == std::string::npos || at == 0 || colon == std::string::npos || colon < at)
    return make_error("'" + s + "': expected ACTOR@stepN:PHASE, e.g. stage1@step7:backward");
  FaultSpec f;
  f.target = s.substr(0, at);
  std::string step = s.substr(at + 5, colon - at - 5);
  if (step.empty() || step.find_first_not_of("0123456789") != std::string::npos || step.size() > 9)
    return make_error("'" + s + "': step '" + step + "' is not a non-negative integer");
  f.step = std::stoi(step);
  f.phase = s.substr(colon + 1);
  if (f.phase != "forward" && f.phase != "backward" && f.phase != "optimizer" && f.phase != "checkpoint")
    return make_error("'" + s + "': phase '" + f.phase + "' is not forward, backward, optimizer or checkpoint");
  return f;
}

Expected<void> JobConfig::validate() const {
  auto at = [&](const std::string& field) {
    auto it = lines.find(field);
    return (it != lines.end() ? strformat("%s:%d", source.c_str(), it->second) : source) + ": " + field + ": ";
  };
  auto positive = [&](const std::string& field, double v) -> Expected<void> {
    if (!(v > 0)) return make_error(at(field) + "must be positive, got " + strformat("%g", v));
    return {};
  };
  for (auto [name, v] : std::vector<std::pair<const char*, double>>{
           {"model.n_layer", model.n_layer}, {"model.n_head", model.n_head}, {"model.d_model", model.d_model},
           {"model.max_seq_len", model.max_seq_len}, {"data.batch_size", data.batch_size},
           {"data.seq_len", data.seq_len}, {"optimizer.lr", optimizer.lr}, {"train.steps", train.steps},
           {"train.val_every", train.val_every}, {"parallel.dp", parallel.dp}, {"parallel.pp", parallel.pp},
           {"parallel.microbatches", parallel.microbatches}, {"parallel.virtual_stages", parallel.virtual_stages},
           {"checkpoint.keep", checkpoint.keep}, {"supervision.within_seconds", supervision.within_seconds}})
    if (auto ok = positive(name, v); !ok) return ok;
  if (model.arch != "gpt2" && model.arch != "llama")
    return make_error(at("model.arch") + "'" + model.arch + "' is not gpt2 or llama");
  if (parallel.schedule != "gpipe" && parallel.schedule != "1f1b" && parallel.schedule != "interleaved")
    return make_error(at("parallel.schedule") + "'" + parallel.schedule + "' is not gpipe, 1f1b or interleaved");
  if (supervision.strategy != "one_for_one" && supervision.strategy != "one_for_all" &&
      supervision.strategy != "rest_for_one")
    return make_error(at("supervision.strategy") + "'" + supervision.strategy +
                      "' is not one_for_one, one_for_all or rest_for_one");
  if (data.val_fraction <= 0 || data.val_fraction >= 1)
    return make_error(at("data.val_fraction") + "must be in (0, 1)");
  if (data.seq_len > model.max_seq_len)
    return make_error(at("data.seq_len") + strformat("%d exceeds model.max_seq_len %d", data.seq_len, model.max_seq_len));
  if (data.batch_size % (parallel.dp * parallel.microbatches) != 0)
    return make_error(at("data.batch_size") + strformat("%d must divide evenly into dp (%d) x microbatches (%d)",
                                                        data.batch_size, parallel.dp, parallel.microbatches));
  int chunks = parallel.pp * (parallel.schedule == "interleaved" ? parallel.virtual_stages : 1);
  if (model.n_layer < chunks)
    return make_error(at("parallel.pp") + strformat("%d pipeline chunks need at least as many layers (model has %d)",
                                                    chunks, model.n_layer));
  if (parallel.schedule == "interleaved" && parallel.virtual_stages < 2)
    return make_error(at("parallel.virtual_stages") + "the interleaved schedule needs at least 2");
  if (parallel.schedule == "interleaved" && parallel.microbatches % parallel.pp != 0)
    return make_error(at("parallel.microbatches") +
                      strformat("%d must be a multiple of pp (%d) for the interleaved schedule",
                                parallel.microbatches, parallel.pp));
  for (auto& k : fault.kill)
    if (auto f = parse_fault_spec(k); !f) return make_error(at("fault.kill") + f.error().message);
  if (supervision.max_restarts < 0) return make_error(at("supervision.max_restarts") + "must be >= 0");
  return {};
}

std::string JobConfig::to_toml() const {
  JobConfig copy = *this;
  auto fs = fields_of(copy);
  std::string out, section;
  for (auto& f : fs) {
    if (section != f.section) {
      section = f.section;
      out += (out.empty() ? "[" : "\n[") + section + "]\n";
    }
    out += std::string(f.key) + " = ";
    switch (f.kind) {
      case Kind::Int: out += std::to_string(*static_cast<int*>(f.ptr)); break;
      case Kind::Int64: out += std::to_string(*static_cast<int64_t*>(f.ptr)); break;
      case Kind::Float: out += strformat("%.17g", *static_cast<double*>(f.ptr)); break;
      case Kind::Str: {
        std::stringstream ss;
        ss << toml::value<std::string>(*static_cast<std::string*>(f.ptr));
        out += ss.str();
        break;
      }
      case Kind::StrList: {
        toml::array arr;
        for (auto& s : *static_cast<std::vector<std::string>*>(f.ptr)) arr.push_back(s);
        std::stringstream ss;
        ss << arr;
        out += ss.str();
        break;
      }
    }
    out += "\n";
  }
  return out;
}

}  // namespace troupe
