// The model split into pipeline stages, or run with activation recomputation, must give
// bitwise the same loss and gradients as the whole model: the actor runtime relies on it.

#include <cstring>
#include <vector>

#include "core/rng.h"
#include "ops/model/optimizer.h"
#include "ops/model/transformer.h"
#include "test_util.h"

using namespace troupe;
using namespace troupe::model;

namespace {

struct Batch {
  int B = 2, T = 12;
  std::vector<int32_t> tokens, targets;
};

Batch make_batch(int V, uint64_t seed) {
  Batch b;
  RngStream r(seed, {99});
  for (int i = 0; i < b.B * b.T; i++) {
    b.tokens.push_back(int32_t(r.bits(uint64_t(2 * i)) % uint32_t(V)));
    b.targets.push_back(int32_t(r.bits(uint64_t(2 * i + 1)) % uint32_t(V)));
  }
  return b;
}

// Gradient of `name` in whichever stage holds it.
const Param* find_in(std::vector<Transformer*> stages, const std::string& name) {
  for (auto* s : stages)
    if (auto* p = s->find_param(name)) return p;
  return nullptr;
}

void check_split_matches_whole(const ModelConfig& cfg, std::vector<int> cuts) {
  Batch b = make_batch(cfg.vocab_size, 5);
  const int N = b.B * b.T;
  Transformer whole(cfg);
  whole.init_weights(42);
  whole.zero_grad();
  float loss_whole = whole.forward(b.tokens.data(), nullptr, b.targets.data(), b.B, b.T);
  whole.backward(nullptr, 1.0f / float(N));

  std::vector<std::unique_ptr<Transformer>> stages;
  for (size_t s = 0; s + 1 < cuts.size(); s++) {
    StageRange r{cuts[s], cuts[s + 1], s == 0, s + 2 == cuts.size()};
    stages.push_back(std::make_unique<Transformer>(cfg, r));
    stages.back()->init_weights(42);
    stages.back()->zero_grad();
  }
  float loss_split = 0;
  for (size_t s = 0; s < stages.size(); s++) {
    const float* in = s == 0 ? nullptr : stages[s - 1]->output();
    loss_split = stages[s]->forward(b.tokens.data(), in, b.targets.data(), b.B, b.T);
  }
  for (size_t s = stages.size(); s-- > 0;) {
    const float* dout = s + 1 == stages.size() ? nullptr : stages[s + 1]->input_grad();
    stages[s]->backward(dout, 1.0f / float(N));
  }
  CHECK(std::memcmp(&loss_whole, &loss_split, 4) == 0);
  std::vector<Transformer*> ptrs;
  for (auto& s : stages) ptrs.push_back(s.get());
  for (auto& p : whole.params()) {
    const Param* q = find_in(ptrs, p.name);
    REQUIRE(q != nullptr);
    INFO(p.name);
    CHECK(std::memcmp(p.value.raw(), q->value.raw(), p.value.nbytes()) == 0);
    if (cfg.tied_embeddings && (p.name == "wte.weight" || p.name == "embed_tokens.weight")) {
      // The tied matrix's gradient is split between the first stage (embedding) and the
      // last (head); their sum is the whole model's gradient, up to summation order.
      const Param* last = stages.back()->find_param(p.name);
      std::vector<float> sum(size_t(p.grad.numel()));
      for (size_t i = 0; i < sum.size(); i++) sum[i] = q->grad.data<float>()[i] + last->grad.data<float>()[i];
      CHECK_CLOSE_ARRAYS(sum.data(), p.grad.data<float>(), sum.size(), 1e-7);
    } else {
      CHECK(std::memcmp(p.grad.raw(), q->grad.raw(), p.grad.nbytes()) == 0);
    }
  }
}

}  // namespace

TEST_CASE("pipeline stages reproduce the whole model bitwise", "[model][stage]") {
  ModelConfig gpt = ModelConfig::gpt2(4, 4, 32, 97, 16);
  ModelConfig llama = ModelConfig::llama(4, 4, 2, 32, 48, 97, 16);
  check_split_matches_whole(gpt, {0, 2, 4});
  check_split_matches_whole(gpt, {0, 1, 2, 3, 4});
  check_split_matches_whole(llama, {0, 3, 4});
  check_split_matches_whole(llama, {0, 0, 4});  // an embedding-only first stage
}

TEST_CASE("activation recomputation gives bitwise the same gradients", "[model][recompute]") {
  for (ModelConfig cfg : {ModelConfig::gpt2(3, 2, 32, 61, 16), ModelConfig::llama(3, 4, 1, 32, 40, 61, 16)}) {
    Batch b = make_batch(cfg.vocab_size, 8);
    Transformer a(cfg), r(cfg);
    a.init_weights(3);
    r.init_weights(3);
    r.set_recompute(true);
    for (auto* m : {&a, &r}) {
      m->zero_grad();
      m->forward(b.tokens.data(), nullptr, b.targets.data(), b.B, b.T);
      m->backward(nullptr, 1.0f / float(b.B * b.T));
    }
    CHECK(r.activation_bytes() < a.activation_bytes());
    CHECK(std::memcmp(a.grad_data(), r.grad_data(), size_t(a.num_params()) * 4) == 0);
  }
}

TEST_CASE("model config validation names the field", "[model][config]") {
  ModelConfig c = ModelConfig::gpt2(2, 3, 32, 10, 8);
  auto e = c.validate();
  REQUIRE_FALSE(e.ok());
  CHECK_THAT(e.error().message, Catch::Contains("d_model"));
  c = ModelConfig::llama(2, 4, 3, 32, 40, 10, 8);
  CHECK_THAT(c.validate().error().message, Catch::Contains("n_kv_head"));
  c = ModelConfig::llama(2, 4, 2, 32, 40, 10, 8);
  CHECK(c.validate().ok());
  Transformer m(c);
  std::vector<int32_t> toks(8, 3), bad(8, 3);
  bad[5] = 10;
  CHECK_THROWS_WITH(m.forward(bad.data(), nullptr, toks.data(), 1, 8), Catch::Contains("outside vocabulary"));
  CHECK_THROWS_WITH(m.forward(toks.data(), nullptr, toks.data(), 1, 9), Catch::Contains("max_seq_len"));
}

TEST_CASE("training on a fixed batch lowers the loss", "[model][train]") {
  ModelConfig cfg = ModelConfig::llama(2, 4, 2, 32, 48, 50, 16);
  Transformer m(cfg);
  m.init_weights(1);
  OptimConfig oc;
  oc.lr = 3e-3f;
  AdamW opt(m.params(), oc);
  Batch b = make_batch(cfg.vocab_size, 2);
  float first = 0, last = 0;
  for (int s = 0; s < 30; s++) {
    m.zero_grad();
    last = m.forward(b.tokens.data(), nullptr, b.targets.data(), b.B, b.T);
    if (s == 0) first = last;
    m.backward(nullptr, 1.0f / float(b.B * b.T));
    opt.step(oc.lr, opt.clip_scale(std::sqrt(opt.grad_sum_squares())));
  }
  INFO("first " << first << " last " << last);
  CHECK(first == Approx(std::log(50.0)).epsilon(0.05));  // near-uniform at init
  CHECK(last < 0.5f * first);                            // memorizes the batch
}

TEST_CASE("activation slots hold several microbatches between forward and backward", "[model][slots]") {
  // 1F1B order on one stage: F0 F1 B0 F2 B1 B2, against the plain F0 B0 F1 B1 F2 B2.
  for (ModelConfig cfg : {ModelConfig::gpt2(2, 2, 32, 53, 16), ModelConfig::llama(2, 4, 2, 32, 40, 53, 16)}) {
    std::vector<Batch> mb;
    for (int i = 0; i < 3; i++) mb.push_back(make_batch(cfg.vocab_size, 20 + uint64_t(i)));
    const float scale = 1.0f / float(3 * mb[0].B * mb[0].T);
    Transformer seq(cfg), slotted(cfg);
    seq.init_weights(9);
    slotted.init_weights(9);
    seq.zero_grad();
    slotted.zero_grad();
    std::vector<float> loss_seq, loss_slot(3);
    for (auto& b : mb) {
      loss_seq.push_back(seq.forward(b.tokens.data(), nullptr, b.targets.data(), b.B, b.T));
      seq.backward(nullptr, scale);
    }
    auto F = [&](int i) { loss_slot[size_t(i)] = slotted.forward(mb[size_t(i)].tokens.data(), nullptr, mb[size_t(i)].targets.data(), mb[size_t(i)].B, mb[size_t(i)].T, i); };
    auto Bw = [&](int i) { slotted.backward(nullptr, scale, i); };
    F(0), F(1), Bw(0), F(2), Bw(1), Bw(2);
    CHECK(loss_seq == loss_slot);
    CHECK(std::memcmp(seq.grad_data(), slotted.grad_data(), size_t(seq.num_params()) * 4) == 0);
    CHECK_THROWS_WITH(slotted.backward(nullptr, scale, 7), Catch::Contains("slot 7 before its forward"));
  }
}

TEST_CASE("gradient readiness: groups tile the buffer backwards and are final when announced", "[model][grad_ready]") {
  // Whole models and middle / first / last stages; tied (GPT-2) and untied (Llama) heads.
  for (ModelConfig cfg : {ModelConfig::gpt2(3, 2, 32, 53, 16), ModelConfig::llama(3, 4, 2, 32, 40, 53, 16)}) {
    for (StageRange range : {StageRange::full(), StageRange{0, 1, true, false}, StageRange{1, 2, false, false},
                             StageRange{2, 3, false, true}}) {
      INFO(cfg.str() << " layers [" << range.first_layer << ", " << range.last_layer << ")");
      Transformer m(cfg, range);
      m.init_weights(4);
      m.zero_grad();
      Batch b = make_batch(cfg.vocab_size, 31);
      const int64_t N = int64_t(b.B) * b.T, C = cfg.d_model;
      std::vector<float> input(static_cast<size_t>(N * C)), dout(static_cast<size_t>(N * C));
      RngStream r(8, {1});
      r.fill_normal(input.data(), N * C, 0, 1);
      r.fill_normal(dout.data(), N * C, 0, 0.1f);
      auto fwd = [&] {
        m.forward(b.tokens.data(), range.embedding ? nullptr : input.data(), range.head ? b.targets.data() : nullptr,
                  b.B, b.T);
      };
      fwd();
      m.backward(range.head ? nullptr : dout.data(), 0.01f);  // a first microbatch: no announcements
      struct Group {
        int64_t off, n;
        std::vector<float> at_announce;
      };
      std::vector<Group> groups;
      m.set_grad_ready_hook([&](int64_t off, int64_t n) {
        groups.push_back({off, n, std::vector<float>(m.grad_data() + off, m.grad_data() + off + n)});
      });
      fwd();
      m.backward(range.head ? nullptr : dout.data(), 0.01f);
      m.set_grad_ready_hook(nullptr);
      REQUIRE(!groups.empty());
      int64_t end = m.num_params();
      for (auto& g : groups) {  // contiguous, from the end of the buffer to its start
        CHECK(g.off + g.n == end);
        CHECK(g.n > 0);
        end = g.off;
        CHECK(std::memcmp(g.at_announce.data(), m.grad_data() + g.off, size_t(g.n) * 4) == 0);
      }
      CHECK(end == 0);
      const StageRange& st = m.stage();  // full() resolved to [0, L)
      CHECK(groups.size() == size_t(st.last_layer - st.first_layer) + (st.embedding ? 1 : 0) + (st.head ? 1 : 0));
    }
  }
}

TEST_CASE("zero-copy forward and backward give the copying forms' bits", "[model][zerocopy]") {
  // A middle stage, and a chunk without layers (it only passes activations through).
  ModelConfig cfg = ModelConfig::llama(3, 4, 2, 32, 40, 53, 16);
  for (StageRange range : {StageRange{1, 2, false, false}, StageRange{2, 2, false, false}}) {
    INFO("layers [" << range.first_layer << ", " << range.last_layer << ")");
    Transformer a(cfg, range), b(cfg, range);
    a.init_weights(6);
    b.init_weights(6);
    a.zero_grad();
    b.zero_grad();
    const int B = 2, T = 12;
    const size_t NC = size_t(B) * T * size_t(cfg.d_model);
    std::vector<float> input(NC), dout(NC), out(NC, -1.0f), dx(NC, -1.0f);
    RngStream r(21, {2});
    r.fill_normal(input.data(), int64_t(NC), 0, 1);
    r.fill_normal(dout.data(), int64_t(NC), 0, 0.1f);
    const std::vector<float> input_before = input;
    a.forward(nullptr, input.data(), nullptr, B, T, 0);
    b.forward(nullptr, input.data(), nullptr, B, T, 0, /*borrow_input=*/true, out.data());
    CHECK(std::memcmp(a.output(0), out.data(), NC * 4) == 0);
    if (range.last_layer > range.first_layer) CHECK(b.output(0) == out.data());  // a chunk without layers copies
    a.backward(dout.data(), 1.0f, 0);
    b.backward(dout.data(), 1.0f, 0, dx.data());
    CHECK(std::memcmp(a.input_grad(0), dx.data(), NC * 4) == 0);
    CHECK(std::memcmp(a.grad_data(), b.grad_data(), size_t(a.num_params()) * 4) == 0);
    CHECK(input == input_before);  // borrowed, never written
  }
}
