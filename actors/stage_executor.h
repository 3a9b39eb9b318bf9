#pragma once
// Runs one pipeline stage's plan for a step as a resumable state machine: advance()
// executes instructions until the plan is done or the next one needs an input that has
// not arrived (or an output channel has no credit), and returns Blocked. An actor calls
// it again when a channel callback wakes it; a test can drive all stages round-robin
// on one thread. No blocking, no locks around stage state.
//
// Forward F(mb): input from act_in (or the microbatch's tokens on the first stage) ->
// Transformer::forward into a free activation slot -> output to act_out (or the loss on
// the last stage). Backward B(mb): gradient from grad_in (or the loss on the last stage)
// -> Transformer::backward of mb's slot, which is then free again -> input gradient to
// grad_out. Slots are reused, so a stage holds activations for the microbatches it has
// in flight (1F1B: at most p - s), as the schedule intends.
//
// Interleaved schedules: a stage owns v model chunks, each a Transformer over its own
// layer range with its own links; Instr.chunk picks one. Global chunk g = c * p + s is
// local chunk c of stage s (Megatron's layout), so with G = p * v global chunks, chunk g
// takes its input from chunk g - 1 (on stage (s - 1 + p) % p) and sends its output to
// chunk g + 1 (on stage (s + 1) % p); gradients go the other way. Every edge
// g -> g + 1 has its own activation channel and its own gradient channel (chunk_links
// below), so each channel is FIFO in microbatch order for interleaved plans.

#include <climits>
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
  transport::InprocChannel* act_in = nullptr;    // from the previous stage (chunk g - 1)
  transport::InprocChannel* act_out = nullptr;   // to the next stage (chunk g + 1)
  transport::InprocChannel* grad_in = nullptr;   // from the next stage (chunk g + 1)
  transport::InprocChannel* grad_out = nullptr;  // to the previous stage (chunk g - 1)
};

// Layers of global chunk g when L layers are split into stages * chunks contiguous
// chunks: [g L / G, (g + 1) L / G) with G = stages * chunks; the embedding on chunk 0,
// the final norm and head on chunk G - 1. With chunks = 1 it is stage g's range.
model::StageRange chunk_layers(int n_layer, int stages, int chunks, int global_chunk);

// Links of global chunk g given one pipeline replica's channels: act[e] carries the
// output of chunk e to chunk e + 1, grad[e] the input gradient of chunk e + 1 back to
// chunk e (e = 0 .. G - 2; G - 1 channels of each kind).
StageLinks chunk_links(const std::vector<transport::InprocChannel*>& act,
                       const std::vector<transport::InprocChannel*>& grad, int global_chunk);

// Slots per channel that the schedule's plans need to finish when every edge has its
// own channels (as chunk_links wires them) and stages run the plans as StageExecutor
// does: an output waits for a credit before the next instruction starts, and a stage
// takes inputs from a channel only up to the one it needs. With fewer slots the stages
// deadlock, whatever their interleaving: when a stage takes which envelope is fixed by
// its plan, so the run is deterministic. GPipe, 1F1B and interleaved 1F1B need 1 (the
// tests check p <= 8, v <= 4, m <= 32), so the coordinator's p slots are more than
// enough; the check is for new schedules. Error when the plans deadlock regardless.
Expected<int> required_slots(const Schedule& s);
// Whether the plans finish with channels of this many slots (the check behind
// required_slots; names the stages that wait when they do not).
Expected<void> check_slots(const Schedule& s, int slots);

// One executed instruction, for traces and the measured bubble: compute time only
// (waiting for an input is idle time).
struct Span {
  Op op;
  int microbatch;
  int64_t start_ns, end_ns;  // steady clock
  int chunk = 0;             // local model chunk (Instr.chunk)
};

// Thrown when a channel this stage needs was closed because a peer failed.
struct PeerFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class StageExecutor {
 public:
  // Blocked: waiting for an input or credit; Yielded: max_ops instructions ran and more
  // are ready (an actor returns to its mailbox, then calls advance again).
  enum class Progress { Done, Blocked, Yielded };

  // One model chunk of this stage and the channels it talks on.
  struct Chunk {
    model::Transformer* model = nullptr;
    StageLinks links;
  };

  // One chunk per stage (GPipe, 1F1B). Envelopes carry chunk 0 and their chunk is not
  // checked: the executor does not know its stage.
  StageExecutor(model::Transformer& model, StageLinks links);
  // Stage `stage` of `stages`, chunks[c] being local chunk c (global c * stages + stage).
  // Envelopes carry the sender's global chunk and receivers check it. Throws when a
  // chunk's embedding / head or links do not match its place in the pipeline.
  StageExecutor(std::vector<Chunk> chunks, int stage, int stages);

  // Starts a step. microbatches must outlive the step; dloss_scale is d(step loss)/
  // d(per-token loss), i.e. 1 / (tokens in the whole step).
  void begin_step(int64_t step, const StagePlan& plan, const std::vector<Microbatch>* microbatches, float dloss_scale);
  Progress advance(int max_ops = INT_MAX);
  bool done() const { return next_ >= plan_.size() && !pending_; }
  size_t position() const { return next_; }
  int chunks() const { return int(chunks_.size()); }
  model::Transformer& chunk_model(int c) { return *chunks_[size_t(c)].model; }
  // Whether one of this stage's chunks holds the head (and so computes the losses).
  bool has_head() const;
  // Stage with the head: the mean loss of each microbatch, in microbatch order (NaN
  // elsewhere).
  const std::vector<float>& microbatch_losses() const { return losses_; }
  // The instructions run in this step, with their compute times.
  const std::vector<Span>& spans() const { return spans_; }
  // Called before each instruction runs (fault injection uses it to fail on cue).
  void set_before_op(std::function<void(const Instr&, int64_t step)> f) { before_op_ = std::move(f); }

 private:
  struct ChunkState {
    model::Transformer* model = nullptr;
    StageLinks links;
    int global = -1;  // global chunk index; -1 when the stage is not known (one-chunk form)
    // Inputs that arrived before the microbatch that needs them, per microbatch.
    std::vector<std::optional<transport::Envelope>> early_act, early_grad;
    // Activation slots: microbatch -> slot between its forward and backward (-1 outside),
    // and which slots are taken. A forward takes the lowest free slot, so a chunk holds
    // as many activation sets as it has microbatches in flight, not m.
    std::vector<int> slot_of;
    std::vector<char> slot_taken;
    // Zero copy: the received input of each slot's microbatch, read in place by the
    // model until that microbatch's backward, then released.
    std::vector<Tensor> held_input;
  };
  bool try_flush();  // sends the pending envelope; false when the channel has no credit
  std::vector<ChunkState> chunks_;
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
};

}  // namespace troupe::pipeline
