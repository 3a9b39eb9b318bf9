// The model against PyTorch: tests/reference/make_fixtures.py writes, for a small GPT-2
// and a small Llama, the parameters, a batch, logits, loss, every gradient and the
// losses of 10 AdamW steps. Tolerances (fp32 both sides, different summation orders):
// logits and loss 1e-4 absolute, each gradient within 1e-3 of that tensor's largest
// reference magnitude, the 10 losses 1e-4 absolute.

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "ops/model/optimizer.h"
#include "ops/model/transformer.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::model;

namespace {

ModelConfig config_from_json(const nlohmann::json& j) {
  ModelConfig c;
  c.arch = j["arch"] == "gpt2" ? Arch::GPT2 : Arch::Llama;
  c.vocab_size = j["vocab_size"];
  c.max_seq_len = j["max_seq_len"];
  c.n_layer = j["n_layer"];
  c.n_head = j["n_head"];
  c.n_kv_head = j["n_kv_head"];
  c.d_model = j["d_model"];
  c.d_ff = j["d_ff"];
  c.norm_eps = j["norm_eps"];
  c.rope_theta = j["rope_theta"];
  c.tied_embeddings = c.arch == Arch::GPT2;
  return c;
}

void check_against_fixture(const std::string& name) {
  auto file = SafetensorsFile::open(test::fixture_path("model_" + name + ".safetensors"));
  REQUIRE(file.ok());
  auto meta = file->metadata();
  auto jc = nlohmann::json::parse(meta.at("config"));
  auto hp = nlohmann::json::parse(meta.at("hparams"));
  ModelConfig cfg = config_from_json(jc);
  const int B = jc["B"], T = jc["T"], V = cfg.vocab_size, N = B * T;

  auto load = [&](Transformer& m) {
    for (auto& p : m.params()) {
      INFO(p.name);
      auto t = file->tensor(p.name);
      REQUIRE(t.ok());
      REQUIRE(t->shape() == p.value.shape());
      p.value.copy_from(*t);
    }
  };
  Transformer m(cfg);
  load(m);
  auto tokens = file->tensor("tokens").value();
  auto targets = file->tensor("targets").value();
  const int32_t* x = tokens.data<int32_t>();
  const int32_t* y = targets.data<int32_t>();

  SECTION("logits, loss and every gradient") {
    m.zero_grad();
    float loss = m.forward(x, nullptr, y, B, T);
    CHECK(loss == Approx(std::stod(meta.at("loss"))).margin(1e-4));
    auto ref_logits = file->tensor("logits").value();
    CHECK_CLOSE_ARRAYS(m.logits(), ref_logits.data<float>(), size_t(N) * V, 1e-4);
    m.backward(nullptr, 1.0f / float(N));
    for (auto& p : m.params()) {
      INFO("grad of " << p.name);
      auto g = file->tensor("grad." + p.name).value();
      double scale = test::max_abs(g.data<float>(), size_t(g.numel()));
      CHECK_CLOSE_ARRAYS(p.grad.data<float>(), g.data<float>(), size_t(g.numel()), 1e-3 * scale);
    }
  }

  SECTION("losses of 10 AdamW steps with clipping") {
    OptimConfig oc;
    oc.lr = hp["lr"];
    oc.beta1 = hp["beta1"];
    oc.beta2 = hp["beta2"];
    oc.eps = hp["eps"];
    oc.weight_decay = hp["weight_decay"];
    oc.grad_clip = hp["grad_clip"];
    AdamW opt(m.params(), oc);
    auto ref = nlohmann::json::parse(meta.at("losses"));
    REQUIRE(ref.size() == 10);
    for (int s = 0; s < 10; s++) {
      m.zero_grad();
      float loss = m.forward(x, nullptr, y, B, T);
      INFO("step " << s);
      CHECK(loss == Approx(ref[size_t(s)].get<double>()).margin(1e-4));
      m.backward(nullptr, 1.0f / float(N));
      opt.step(oc.lr, opt.clip_scale(std::sqrt(opt.grad_sum_squares())));
    }
  }
}

}  // namespace

TEST_CASE("GPT-2 matches PyTorch", "[model][fixture]") { check_against_fixture("gpt2"); }
TEST_CASE("Llama matches PyTorch", "[model][fixture]") { check_against_fixture("llama"); }
