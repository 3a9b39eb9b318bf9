#pragma once
// Runs one pipeline stage's plan for a step as a resumable state machine: advance()
// executes instructions until the plan is done or the next one needs an input that has
// not arrived (or an output channel has no credit), and returns Blocked. An actor calls
// it again when a channel callback wakes it; a test can drive all stages round-robin
// on one thread. No blocking, no locks around stage state.
//
// Forward F(mb): input from act_in (or the microbatch's tokens on the first stage) ->
// Transformer::forward into activation slot mb -> output to act_out (or the loss on the
// last stage). Backward B(mb): gradient from grad_in (or the loss on the last stage) ->
// Transformer::backward of slot mb -> input gradient to grad_out.

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <vector>

#include "actors/pipeline_schedule.h"
#include "ops/model/transformer.h"
#include "transport/inproc_channel.h"

namespace troupe::pipeline {

struct Microbatch {
  int B = 0, T = 0;
  std::vector<int32_t> tokens, targets;  // (B*T) each
};

struct StageLinks {
  transport::InprocChannel* act_in = nullptr;    // from the previous stage
  transport::InprocChannel* act_out = nullptr;   // to the next stage
  transport::InprocChannel* grad_in = nullptr;   // from the next stage
  transport::InprocChannel* grad_out = nullptr;  // to the previous stage
};

// One executed instruction, for traces and the measured bubble: compute time only
// (waiting for an input is idle time).
struct Span {
  Op op;
  int microbatch;
  int64_t start_ns, end_ns;  // steady clock
};

// Thrown when a channel this stage needs was closed because a peer failed.
struct PeerFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class StageExecutor {
 public:
  enum class Progress { Done, Blocked };

  StageExecutor(model::Transformer& model, StageLinks links);
  // Starts a step. microbatches must outlive the step; dloss_scale is d(step loss)/
  // d(per-token loss), i.e. 1 / (tokens in the whole step).
  void begin_step(int64_t step, const StagePlan& plan, const std::vector<Microbatch>* microbatches,
                  float dloss_scale);
  Progress advance();
  bool done() const { return next_ >= plan_.size() && !pending_; }
  size_t position() const { return next_; }
  // Last stage: the mean loss of each microbatch, in microbatch order.
  const std::vector<float>& microbatch_losses() const { return losses_; }
  // The instructions run in this step, with their compute times.
  const std::vector<Span>& spans() const { return spans_; }
  // Called before each instruction runs (fault injection uses it to fail on cue).
  void set_before_op(std::function<void(const Instr&, int64_t step)> f) { before_op_ = std::move(f); }

 private:
  bool try_flush();  // sends the pending envelope; false when the channel has no credit
  model::Transformer& model_;
  StageLinks links_;
  StagePlan plan_;
  const std::vector<Microbatch>* mbs_ = nullptr;
  float dloss_scale_ = 1;
  int64_t step_ = 0;
  size_t next_ = 0;
  std::optional<transport::Envelope> pending_;  // an output waiting for credit
  transport::InprocChannel* pending_to_ = nullptr;
  std::vector<float> losses_;
  std::vector<Span> spans_;
  std::function<void(const Instr&, int64_t)> before_op_;
  // Inputs that arrived for later microbatches (channels are FIFO, plans may differ in order).
  std::vector<std::optional<transport::Envelope>> early_act_, early_grad_;
};

}  // namespace troupe::pipeline
